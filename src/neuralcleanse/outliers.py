"""The MAD anomaly index Neural Cleanse computes over the K reversed-trigger norms (paper, Section IV-C)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["CONSISTENCY", "AnomalyResult", "anomaly_index"]

CONSISTENCY = 1.4826  # makes the MAD a consistent estimator of the standard deviation of a normal (paper, IV-C)


@dataclass(frozen=True)
class AnomalyResult:
    """Anomaly indices of K norms.

    Attributes:
        indices: (K,) ``|norm - median| / (CONSISTENCY * MAD)`` per label.
        median: the median norm.
        mad: the median absolute deviation (before the consistency constant).
        model_index: the index of the smallest norm: the model's anomaly index.
        flagged: labels (positions in the norms) below the median whose index exceeds the threshold, most
            anomalous first.
    """

    indices: torch.Tensor
    median: float
    mad: float
    model_index: float
    flagged: list[int]


def anomaly_index(norms: torch.Tensor, threshold: float = 2.0) -> AnomalyResult:
    """MAD outlier test over mask norms. ``threshold`` 2 is the paper's (a > 95% confidence outlier).

    The median is the mean of the two middle values for an even count (numpy's, as the original uses).
    When all deviations are zero the MAD is 0: every index is then 0 (nothing stands out) rather than
    a division by zero.

    Shape:
        norms: (K,) with K >= 2.
    """
    norms = torch.as_tensor(norms, dtype=torch.float64).flatten()
    if norms.numel() < 2:
        raise ValueError(f"the anomaly index needs at least 2 norms, got {norms.numel()}")
    if not torch.isfinite(norms).all():
        raise ValueError("norms must be finite")
    median = float(norms.quantile(0.5))
    deviations = (norms - median).abs()
    mad = float(deviations.quantile(0.5))
    scale = CONSISTENCY * mad
    indices = deviations / scale if scale > 0 else torch.zeros_like(deviations)
    below = norms < median
    candidates = torch.nonzero(below & (indices > threshold)).flatten().tolist()
    flagged = sorted(candidates, key=lambda i: -float(indices[i]))
    return AnomalyResult(indices.float(), median, mad, float(indices[int(norms.argmin())]), flagged)
