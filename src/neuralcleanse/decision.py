"""The model-level decision: which labels' smallest triggers are too small to be natural.

The paper flags a label whose norm lies more than 2 MADs below the median (:func:`~neuralcleanse.outliers.
anomaly_index`, kept as ``"paper"``). That test reads raw norms on a linear scale and ignores how many labels
there are. The decisions here differ in three ways:

- **log scale** (``"log-mad"``, ``"k-aware"``): trigger norms spread multiplicatively (a label needing twice the
  pixels of another is as different at 10 against 20 as at 50 against 100), so the robust null is fitted to
  log norms;
- **order statistic** (``"k-aware"``): the smallest of K natural labels lies further below the median the larger
  K is. With the null's CDF ``F``, the probability that the smallest of K draws falls as low as the observed
  norm is ``p = 1 - (1 - F(x))^K`` (the correction MM-BD applies, Wang et al., 2024), so one threshold on p holds
  for 10 labels and for 1000;
- **step-down** (``"k-aware"``): after flagging the smallest label, the null is refitted without it and the next
  smallest is tested among the K - 1 left, so several infected labels are found one after another, and each one
  found no longer drags the median and the MAD.

``score`` is higher for more suspicious models: the paper's index for ``"paper"`` and ``"log-mad"``, and
``-log10(p)`` of the smallest label for ``"k-aware"``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import torch

from .outliers import CONSISTENCY, anomaly_index

__all__ = ["DECISIONS", "DEFAULT_THRESHOLDS", "Decision", "DecisionMethod", "decide"]

DecisionMethod = Literal["paper", "log-mad", "k-aware"]
DECISIONS: tuple[str, ...] = get_args(DecisionMethod)

#: Default thresholds on ``score``. ``paper``: an index of 2 (paper, Section IV-C). ``log-mad``: the same 2 on the
#: log scale. ``k-aware``: p < 0.001, a score of 3 (ours, chosen on the tune half of the benchmark zoo:
#: docs/detection.md).
DEFAULT_THRESHOLDS: dict[str, float] = {"paper": 2.0, "log-mad": 2.0, "k-aware": 3.0}

_FLOOR = 1e-6  # norms are clamped to this before the log: a mask of L1 norm 0 is no trigger at all

#: The search's own repeatability: the standard deviation of one label's log norm between two scans with
#: different seeds (ours, measured on the tune half of the benchmark zoo: docs/detection.md). It is added in
#: quadrature to the null's spread, so that labels whose norms agree within the search's noise (a tight cluster
#: collapses the MAD) cannot make a small difference look significant.
SEARCH_NOISE = 0.07


@dataclass(frozen=True)
class Decision:
    """A model-level decision over K labels' norms.

    Attributes:
        method: one of :data:`DECISIONS`.
        flagged: positions (in the norms) of the flagged labels, most suspicious first.
        score: the model's score (higher is more suspicious); it is flagged when ``score > threshold``.
        threshold: the threshold on ``score``.
        per_label: (K,) what the method computed per label: the anomaly index (``paper``, ``log-mad``) or
            ``-log10`` of the label's step-down p-value (``k-aware``; 0 for labels the step-down never reached).
    """

    method: str
    flagged: list[int]
    score: float
    threshold: float
    per_label: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(norms: torch.Tensor, method: DecisionMethod = "k-aware", threshold: float | None = None) -> Decision:
    """Decide which labels are infected from their smallest-trigger norms.

    Args:
        norms: (K,) L1 norms of the reversed masks, K >= 2 (zeros are clamped to a tiny floor). ``"k-aware"``
            needs 3 labels to fit its null and flags nothing with 2.
        method: ``"paper"`` (MAD index of raw norms), ``"log-mad"`` (MAD index of log norms) or ``"k-aware"``
            (step-down order-statistic test on log norms).
        threshold: on ``score``; :data:`DEFAULT_THRESHOLDS` by default.
    """
    if method not in DECISIONS:
        raise ValueError(f"method must be one of {', '.join(DECISIONS)}, got {method!r}")
    norms = torch.as_tensor(norms, dtype=torch.float64).flatten()
    if norms.numel() < 2 or not torch.isfinite(norms).all() or bool((norms < 0).any()):
        raise ValueError(f"norms must be at least 2 finite values >= 0, got {norms.tolist()}")
    limit = DEFAULT_THRESHOLDS[method] if threshold is None else float(threshold)
    if method == "paper":
        result = anomaly_index(norms, limit)
        return Decision(method, result.flagged, result.model_index, limit, result.indices.tolist())
    log_norms = norms.clamp_min(_FLOOR).log()
    if method == "log-mad":
        result = anomaly_index(log_norms, limit)
        return Decision(method, result.flagged, result.model_index, limit, result.indices.tolist())
    return _step_down(log_norms, limit)


def _step_down(log_norms: torch.Tensor, threshold: float) -> Decision:
    """Test the smallest remaining label against a normal null fitted (median, MAD) to the remaining ones,
    as the smallest of them; flag it and go on while ``-log10(p)`` exceeds ``threshold``."""
    remaining = list(range(log_norms.numel()))
    per_label = [0.0] * log_norms.numel()
    flagged: list[int] = []
    score = None
    while len(remaining) >= 3:
        values = log_norms[remaining]
        smallest = remaining[int(values.argmin())]
        surprise = _min_surprise(float(log_norms[smallest]), values)
        per_label[smallest] = surprise
        score = surprise if score is None else score
        if surprise <= threshold:
            break
        flagged.append(smallest)
        remaining.remove(smallest)
    return Decision("k-aware", flagged, 0.0 if score is None else score, threshold, per_label)


def _min_surprise(x: float, values: torch.Tensor) -> float:
    """``-log10 p`` with ``p = 1 - (1 - F(x))^K``: how unlikely it is that the smallest of the K ``values`` lies
    as low as ``x``, under a normal null with the values' median and a spread of their consistent MAD and the
    search's noise (:data:`SEARCH_NOISE`) in quadrature."""
    median = float(values.quantile(0.5))
    scale = math.hypot(CONSISTENCY * float((values - median).abs().quantile(0.5)), SEARCH_NOISE)
    z = (x - median) / scale
    tail = 0.5 * math.erfc(-z / math.sqrt(2))  # F(x) = Phi(z)
    p = -math.expm1(values.numel() * math.log1p(-min(tail, 1 - 1e-16)))
    return -math.log10(max(p, 1e-300))
