"""How steady a verdict is: the share of scans redrawn within the search's own noise that reach the same verdict.

Two scans of one model with other seeds (other random starts, other clean images) give each label a norm that
differs from one scan to the next, relative to the median, by about :data:`NORM_NOISE` in log, half of it from the
search and half from the clean images (``benchmarks/results/seed_noise.md``). A model whose labels lie near one
of the decision's thresholds can thus be called infected by one scan and clean by the next. A scan cannot see its
next draw, but it can ask the decision what such a draw would do: every label's log norm is moved by normal noise
of that size and decided again, :data:`DRAWS` times; the share of redraws with the same verdict (infected or clean)
is the verdict's steadiness. The symmetric checks are not run again on the redrawn norms (each costs two
searches), so it is the steadiness of the decision over the norms; the clean gaps are kept as they are. A scan
that searched blend triggers too redraws their norms with the same noise and calls a redraw infected when either
verdict flags a label (:mod:`~neuralcleanse.blends`).
"""

from __future__ import annotations

import torch

from .blends import blend_suspects
from .decision import DecisionMethod, decide

__all__ = ["DRAWS", "NORM_NOISE", "STEADY", "steadiness"]

#: How far one label's log(norm / median norm) moves from one scan to another with other seeds, the search's and
#: the clean images' noise together: the robust standard deviation of the two scan seeds' differences over the
#: square root of 2 (ours, measured on the tune half of the benchmark zoo: docs/detection.md, "How steady a verdict
#: is").
NORM_NOISE = 0.13
#: Redraws per verdict: the share is known to about 0.03 (a binomial's standard deviation at 0.8), and 200
#: decisions take a second or so at 1000 labels.
DRAWS = 200
#: A verdict kept by fewer redraws than this share is borderline (ours, chosen on the tune half of the benchmark
#: zoo, where it marks most scans whose model gets the other verdict from its other scan seed and few of the rest:
#: docs/detection.md, "How steady a verdict is").
STEADY = 0.9


def steadiness(
    norms: torch.Tensor,
    method: DecisionMethod = "k-aware-ratio",
    threshold: float | None = None,
    gaps: torch.Tensor | None = None,
    noise: float = NORM_NOISE,
    draws: int = DRAWS,
    seed: int = 0,
    blend_norms: torch.Tensor | None = None,
    pixels: int | None = None,
) -> float:
    """The share of ``draws`` redraws of ``norms`` (each label's log norm moved by normal noise of standard
    deviation ``noise``) that :func:`~neuralcleanse.decision.decide` (``method``, ``threshold``, ``gaps``,
    ``pixels``) gives the verdict it gives ``norms``, with ``blend_norms`` redrawn and judged beside them when
    given; the same arguments give the same share."""
    if noise < 0 or draws < 1:
        raise ValueError(f"noise must be >= 0 and draws >= 1, got noise={noise} and draws={draws}")
    norms = torch.as_tensor(norms, dtype=torch.float64).flatten()
    blends = None if blend_norms is None else torch.as_tensor(blend_norms, dtype=torch.float64).flatten()

    def infected(n: torch.Tensor, b: torch.Tensor | None) -> bool:
        return bool(decide(n, method, threshold, gaps, pixels).flagged) or (b is not None and bool(blend_suspects(b)))

    verdict = infected(norms, blends)
    generator = torch.Generator().manual_seed(seed)
    same = 0
    for _ in range(draws):
        moved = norms * torch.exp(noise * torch.randn(norms.shape, generator=generator, dtype=torch.float64))
        moved_blends = None
        if blends is not None:
            moved_blends = blends * torch.exp(
                noise * torch.randn(blends.shape, generator=generator, dtype=torch.float64)
            )
        same += infected(moved, moved_blends) == verdict
    return same / draws
