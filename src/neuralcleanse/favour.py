"""How far each label lies below the model's choice on clean images: the clean gap.

A poisoned training set teaches the model its target more often than any natural label, and the model keeps a
lean towards the target on clean inputs too: on the images it sends elsewhere, the target's score lies closer to
the winning one than a natural label's does. :func:`clean_gaps` measures that distance per label. Natural labels
that are easy to reach are often close on clean images too, so :func:`gap_residual_p` judges a label's gap against
the gap its norm predicts from the other labels. The default decision (:mod:`neuralcleanse.decision`) uses both
for labels whose smallest trigger is small but not small enough on its own.
"""

from __future__ import annotations

import math

import torch

from .outliers import CONSISTENCY

__all__ = ["GAP_NOISE", "clean_gaps", "gap_residual_p"]

#: The repeatability of one label's log clean gap between two samples of clean images, added in quadrature to
#: the spread of the residuals (ours: 0.008 between the two scan seeds' images on the tune half of the benchmark
#: zoo, rounded up).
GAP_NOISE = 0.01
_FIT_LABELS = 500  # the line is fitted to at most this many labels (evenly spaced by norm): its cost is quadratic


def clean_gaps(outputs: torch.Tensor, outputs_probabilities: bool = False) -> torch.Tensor:
    """Per label, the median over the images the model gives to another label of (top log-score minus the
    label's log-score): log-softmax of logits, or the log of probabilities, so either output gives the same gap.

    A softmax rounds the probability of a far-off label to 0, and its gap is then unknown, only large: a label
    whose probability is 0 on at least half of those images gets NaN (the decision leaves it out).

    Args:
        outputs: (N, K) the model's outputs for clean images (:func:`~neuralcleanse.metrics.outputs_of`).

    Returns:
        (K,) float64 gaps >= 0 (or NaN); a label the model gives every image to gets 0.
    """
    outputs = outputs.double()
    log_scores = outputs.log() if outputs_probabilities else outputs.log_softmax(dim=1)
    top, chosen = log_scores.max(dim=1)
    gaps = top[:, None] - log_scores  # +inf where a probability rounded to 0
    result = torch.zeros(log_scores.shape[1], dtype=torch.float64)
    for label in range(log_scores.shape[1]):
        elsewhere = chosen != label
        if elsewhere.any():
            result[label] = gaps[elsewhere, label].median()
    return result.nan_to_num(nan=math.nan, posinf=math.nan)


def gap_residual_p(
    log_norms: torch.Tensor, log_gaps: torch.Tensor, tested: list[int], reference: torch.Tensor
) -> dict[int, float]:
    """Per ``tested`` label, the one-sided p of its log gap lying this far below what its log norm predicts.

    The prediction is a robust line of log gap on log norm (Theil-Sen) fitted to the ``reference`` labels (at
    most :data:`_FIT_LABELS` of them, evenly spaced by norm); a residual is judged against theirs: their median,
    and a spread of their consistent MAD and :data:`GAP_NOISE` in quadrature.

    Shape:
        log_norms, log_gaps: (K,) float64, known (not NaN) for the tested and reference labels; reference: (R,)
        label positions, R >= 1.
    """
    reference = reference[torch.linspace(0, reference.numel() - 1, min(reference.numel(), _FIT_LABELS)).round().long()]
    slope = _theil_sen(log_norms[reference], log_gaps[reference])
    residuals = log_gaps - slope * log_norms
    centre = float(residuals[reference].median())
    scale = math.hypot(CONSISTENCY * float((residuals[reference] - centre).abs().median()), GAP_NOISE)
    return {label: 0.5 * math.erfc(-(float(residuals[label]) - centre) / scale / math.sqrt(2)) for label in tested}


def _theil_sen(x: torch.Tensor, y: torch.Tensor) -> float:
    """The median slope over all pairs of points with distinct ``x`` (0 when there are none)."""
    i, j = torch.triu_indices(x.numel(), x.numel(), 1)
    dx, dy = x[j] - x[i], y[j] - y[i]
    distinct = dx.abs() > 1e-12
    return float((dy[distinct] / dx[distinct]).median()) if distinct.any() else 0.0
