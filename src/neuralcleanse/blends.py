"""The blend verdict: labels that a faint pattern over the whole image reaches.

A blend backdoor (Chen et al., 2017, "blended injection") is trained on images mixed with a full-size pattern at
an opacity of about 0.1-0.2. The paper's per-pixel mask pays for such a trigger at every pixel, so the target's
mask norm lies among the natural labels' (a quarter to two fifths of the median on the zoo's faintly poisoned
MNIST models, where a natural digit 8 lies too). The scan therefore also searches every label for its smallest
*blend* trigger, one opacity over the whole image (:mod:`~neuralcleanse.reverse`, shape ``"blend"``). To turn
a clean image into another label with one opacity, the pattern has to paint over the image's content, and the
labels need opacities close to one another; a blend target needs a fraction of theirs.

A label is a blend suspect when the step-down order-statistic test (``decide(norms, "k-aware")``) flags its
blend norm and that norm lies under :data:`BLEND_RATIO` of the median. Labels the mask search flags beside a
blend suspect, not suspects themselves, are its companions by size (the blend target's spread-out mask sits among
the smallest natural labels) and are cleared when they look natural but for that: a mask no smaller than the
suspect's own and not small enough to be flagged by size alone (under the decision's ``SMALL_RATIO`` of the
median), and a blend norm as large as a natural label's (:data:`NATURAL_BLEND_RATIO`). A flagged label whose mask
or blend norm is small is another target of a model with several (the blend search also flags patch targets,
whose pattern painted faintly over the whole image still works) and stays flagged.
"""

from __future__ import annotations

import torch

from .decision import SMALL_RATIO, decide

__all__ = ["BLEND_RATIO", "NATURAL_BLEND_RATIO", "blend_companions", "blend_suspects"]

#: Largest blend norm, as a share of the median label's, that the blend verdict flags (ours: chosen on the tune
#: half of zoo models retrained for it, benchmarks/results/blend_search.md; natural labels of clean MNIST, CIFAR-10
#: and GTSRB models lie above half the median but for the classes a model gives to content-free inputs).
BLEND_RATIO = 0.3
#: Smallest blend norm, as a share of the median label's, of a label the blend verdict clears beside a blend target
#: (ours: the natural labels of the clean models there lie above half the median, the classes a model gives to
#: content-free inputs aside, while a second or third patch target of a several-target model may lie at a third of
#: it: benchmarks/results/blend_search.md).
NATURAL_BLEND_RATIO = 0.5


def blend_suspects(norms: torch.Tensor, ratio: float = BLEND_RATIO) -> list[int]:
    """Positions of the labels whose blend norm (K,) is flagged by the step-down test and lies under ``ratio`` of
    the median."""
    median = float(norms.median())
    return sorted(i for i in decide(norms, "k-aware").flagged if float(norms[i]) < ratio * median)


def blend_companions(
    mask_norms: torch.Tensor,
    mask_flagged: list[int],
    suspects: list[int],
    blend_norms: torch.Tensor,
    natural: float = NATURAL_BLEND_RATIO,
    small: float = SMALL_RATIO,
) -> list[int]:
    """Positions among ``mask_flagged`` that are not blend ``suspects`` and look natural but for their mask's
    size: a mask norm no smaller than the smallest suspect's and at least ``small`` of the median mask norm, and a
    blend norm at least ``natural`` of the median blend norm (the norms (K,) in the order of the positions)."""
    if not suspects:
        return []
    floor = max(min(float(mask_norms[i]) for i in suspects), small * float(mask_norms.median()))
    level = natural * float(blend_norms.median())
    return sorted(
        i
        for i in mask_flagged
        if i not in suspects and float(mask_norms[i]) >= floor and float(blend_norms[i]) >= level
    )
