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
blend suspect, with a mask no smaller than the suspect's own and not suspects themselves, are its
companions by size (the blend target's spread-out mask sits among the smallest natural labels) and are cleared.
"""

from __future__ import annotations

import torch

from .decision import decide

__all__ = ["BLEND_RATIO", "blend_companions", "blend_suspects"]

#: Largest blend norm, as a share of the median label's, that the blend verdict flags (ours: chosen on the tune
#: half of zoo models retrained for it, benchmarks/results/blend_search.md; natural labels of clean MNIST, CIFAR-10
#: and GTSRB models lie above half the median but for the classes a model gives to content-free inputs).
BLEND_RATIO = 0.3


def blend_suspects(norms: torch.Tensor, ratio: float = BLEND_RATIO) -> list[int]:
    """Positions of the labels whose blend norm (K,) is flagged by the step-down test and lies under ``ratio`` of
    the median."""
    median = float(norms.median())
    return sorted(i for i in decide(norms, "k-aware").flagged if float(norms[i]) < ratio * median)


def blend_companions(mask_norms: torch.Tensor, mask_flagged: list[int], suspects: list[int]) -> list[int]:
    """Positions among ``mask_flagged`` that are not blend ``suspects`` and whose mask norm is no smaller than the
    smallest suspect's: flagged by the mask search for their size beside a blend target."""
    if not suspects:
        return []
    floor = min(float(mask_norms[i]) for i in suspects)
    return sorted(i for i in mask_flagged if i not in suspects and float(mask_norms[i]) >= floor)
