"""The model-level decision: which labels' smallest triggers are too small to be natural.

The paper flags a label whose norm lies more than 2 MADs below the median (:func:`~neuralcleanse.outliers.
anomaly_index`, kept as ``"paper"``). That test reads raw norms on a linear scale and ignores how many labels
there are. The decisions here differ in five ways:

- **log scale** (``"log-mad"``, ``"k-aware"``): trigger norms spread multiplicatively (a label needing twice the
  pixels of another is as different at 10 against 20 as at 50 against 100), so the robust null is fitted to
  log norms;
- **order statistic** (``"k-aware"``): the smallest of K natural labels lies further below the median the larger
  K is. With the null's CDF ``F``, the probability that the smallest of K draws falls as low as the observed
  norm is ``p = 1 - (1 - F(x))^K`` (the correction MM-BD applies, Wang et al., 2024), so one threshold on p holds
  for 10 labels and for 1000;
- **step-down** (``"k-aware"``): after flagging the smallest label, the null is refitted without it and the next
  smallest is tested among the K - 1 left, so several infected labels are found one after another, and each one
  found no longer drags the median and the MAD;
- **size** (``"k-aware-ratio"``, the default): with ten labels the null's spread comes from nine natural norms,
  which can span a factor of ten, and a target whose trigger is a tenth of the median's then looks ordinary. The
  default also flags the smallest one, two or three labels under :data:`SMALL_RATIO` of the median norm when
  the block of them (which may reach up to :data:`BLOCK_REACH`, for a second target a little larger than the
  first) is unusual for K natural labels (``P(at least j of K draws lie this low) < 0.05``, divided by the
  number of labels under the ratio), which keeps many-label models, whose smallest natural label lies far below
  the median, from being flagged by size alone; the step-down, whose null is as narrow as the natural norms are
  alike, flags no label over :data:`STEP_DOWN_RATIO` of the median;
- **favour** (``"k-aware-ratio"`` given the clean gaps of :mod:`neuralcleanse.favour`): a poisoned training set
  leaves the model leaning towards its target on clean images. The smallest labels under :data:`FAVOUR_RATIO` of
  the median that the other criteria leave, in a block not ordinary by norm (p < 0.2), are also flagged when
  their clean gap lies unusually far below what their norm predicts from the other labels (a robust line of log
  gap on log norm; p < 0.05 divided by the labels tested), so natural labels that are both easy to reach and
  close on clean images, as many are, stay clean; and only when every smaller label is flagged too (a target is
  the easiest label to reach, so a favoured label above a smaller natural one is the model's taste);
- **companions** (``"k-aware-ratio"``): once the smallest labels are flagged, the next smallest joins them when
  it lies under :data:`COMPANION_RATIO` of the median and nearer, in log norm, to the largest flagged label than
  to the next label above it, the gap below counted as at most :data:`COMPANION_GAP` (a pixel-sized first
  target leaves any second one far above it): a second or third target whose trigger is larger than the
  first's (a bigger or fainter sticker) sits in the gap between the flagged labels and the natural ones, where
  neither the size nor the order statistic can call it on its own. It acts only on a model already flagged, so
  it cannot flag a clean one.
- **tiny triggers** (``"k-aware-ratio"`` given the images' size): a backdoor trained with a trigger of a few
  pixels can leave every label reachable with a few pixels, so that its target, though the smallest, is no
  outlier among them. A label whose trigger covers under :data:`TINY_SHARE` of the image's pixels is flagged
  whatever the others need: no clean model of the benchmark zoo has a natural label under six times that.

``score`` is higher for more suspicious models: the paper's index for ``"paper"`` and ``"log-mad"``,
``-log10(p)`` of the smallest label for ``"k-aware"``, and for ``"k-aware-ratio"`` the largest of its
criteria, each over its own default: the k-aware score over 3, the halvings from the median to the smallest
norm over 2 (counted only for the labels of the unusual block) and the favour criterion's ``-log10`` p over 1.3
(counted only for the labels it tests); a companion's score is its gap above over its gap below, capped at the
score of the labels it joins; a tiny trigger's score is :data:`TINY_SHARE` of the image's pixels over its norm; a
threshold of 1 is every default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import torch

from .favour import gap_residual_p
from .outliers import CONSISTENCY, anomaly_index

__all__ = [
    "BLOCK_REACH",
    "COMPANION_GAP",
    "COMPANION_RATIO",
    "DECISIONS",
    "DEFAULT_THRESHOLDS",
    "FAVOUR_FLOOR",
    "FAVOUR_GATE",
    "FAVOUR_RATIO",
    "MAX_BLOCK",
    "MIN_LABELS",
    "RATIO_FLOOR",
    "SMALL_RATIO",
    "STEP_DOWN_RATIO",
    "TINY_SHARE",
    "Decision",
    "DecisionMethod",
    "decide",
]

DecisionMethod = Literal["paper", "log-mad", "k-aware", "k-aware-ratio"]
DECISIONS: tuple[str, ...] = get_args(DecisionMethod)

#: Default thresholds on ``score``. ``paper``: an index of 2 (paper, Section IV-C). ``log-mad``: the same 2 on the
#: log scale. ``k-aware``: p < 0.001, a score of 3 (ours, chosen on the tune half of the benchmark zoo:
#: docs/detection.md). ``k-aware-ratio``: 1, each criterion at its own default.
DEFAULT_THRESHOLDS: dict[str, float] = {"paper": 2.0, "log-mad": 2.0, "k-aware": 3.0, "k-aware-ratio": 1.0}

#: A label whose trigger is under a quarter of the median label's is flagged by size (ours, chosen on the tune
#: half of the benchmark zoo, with a margin under the smallest natural labels of most of its clean models:
#: docs/detection.md).
SMALL_RATIO = 0.25
#: ... provided the block of labels up to it is unusual among K natural ones at p < 0.05 (-log10 p > 1.3; the
#: usual level), divided by the number of labels under the ratio (among the MAX_BLOCK smallest). It keeps the size
#: criterion off the natural tail of models with many labels or widely spread norms, where size alone flags up to
#: all clean models (benchmarks/results/decision_null.md).
RATIO_FLOOR = 1.3
#: The blocks tried are the smallest one, two or three labels (ours, for backdoors with up to three targets; more
#: targets are left to the step-down): larger blocks reach into the natural tail of many-label models, whose
#: top labels then fit a null too narrow for them (on simulated clean models with 1000 labels and a log spread
#: of 1, trying every block flags 76.5% of them: benchmarks/results/decision_variants.md).
MAX_BLOCK = 3

#: The fewest labels a null can be fitted to (a median and a spread beside the label judged); with fewer, the
#: decisions here flag nothing, and the paper's index of the smaller of two labels is always 1 / 1.4826.
MIN_LABELS = 3

_MAX_SURPRISE = 300.0  # -log10 of the smallest p-value reported (p underflows beyond)
_FLOOR = 1e-6  # norms are clamped to this before the log: a mask of L1 norm 0 is no trigger at all

#: The search's own repeatability: the standard deviation of one label's log norm between two scans with
#: different seeds (ours, measured on the tune half of the benchmark zoo: docs/detection.md). It is added in
#: quadrature to the null's spread, so that labels whose norms agree within the search's noise (a tight cluster
#: collapses the MAD) cannot make a small difference look significant.
SEARCH_NOISE = 0.07

#: The favour criterion tests the smallest labels (at most :data:`MAX_BLOCK`) under this share of the median norm
#: (ours, chosen on the tune half of the benchmark zoo's first five rounds, the best of 0.3 to 0.5 there:
#: docs/detection.md) ...
FAVOUR_RATIO = 0.4
#: ... up to the largest block of them whose :func:`_block_surprise` exceeds this (p < 0.2; ours: the tune half is
#: indifferent from 0.2 to no gate at all, and the gate keeps the criterion off clean models whose smallest
#: labels are ordinary by norm, about halving what it adds to the false positives of simulated clean models:
#: docs/detection.md) ...
FAVOUR_GATE = 0.7
#: ... and each is flagged when its gap residual's one-sided p (:func:`~neuralcleanse.favour.gap_residual_p`) is
#: under 0.05 (-log10 p > 1.3; the usual level, as :data:`RATIO_FLOOR`) divided by the labels tested.
FAVOUR_FLOOR = 1.3

#: A companion of the flagged labels lies under this share of the median norm (ours, chosen on the tune half of the
#: benchmark zoo's fourteen rounds with the norms read through the natural label profiles, with :data:`COMPANION_GAP`:
#: 0.45 makes 4 to 5 more scans exact than 0.4 and none less, 0.5 no more than 0.45; docs/detection.md). Read as
#: they are, 0.45 added a natural label beside a Trojan's target; the profile discounts such labels first.
COMPANION_RATIO = 0.45
#: ... and its log-norm gap to the label below counts as at most this factor (ours, chosen with
#: :data:`COMPANION_RATIO` on the same scans, where 1.5 and 1.75 are alike at 0.45 and 1.75 relies on no symmetric
#: check the zoo could not run: docs/detection.md): beside a first target of a few pixels, a second needing a fifth
#: of the median's trigger is nearer to the natural labels than to the first, yet well below them.
COMPANION_GAP = 1.75

#: The step-down flags no label over this share of the median norm (ours, chosen on the tune half of the benchmark
#: zoo's first seven rounds, where 0.5 to 0.6 are alike and best: docs/detection.md). Its null is fitted to the
#: labels left, whose spread may be no more than the search's noise: beside a target a tenth of the median, a
#: natural label at two thirds of it can then look significant, though no trigger that large tells a backdoor.
STEP_DOWN_RATIO = 0.6

#: The size criterion's blocks may reach up to this share of the median norm, the smallest label under
#: :data:`SMALL_RATIO` (ours: the companions' region as it was then, chosen with :data:`STEP_DOWN_RATIO` on the
#: tune half of the benchmark zoo's first seven rounds, where 0.35 to 0.5 are alike: docs/detection.md). A first
#: target under a quarter of the median beside a second one a little over it widens the null that judges the first
#: alone; the pair is judged together. At :data:`SMALL_RATIO`, every label of a block is under it.
BLOCK_REACH = 0.4

#: A label whose trigger's mask covers less than this share of the image's pixels (0.2%: two pixels of a 32x32
#: image) is flagged by size alone (ours, chosen on the tune half of the benchmark zoo's sixteen rounds: the smallest
#: share that gains a scan, as any up to 0.3% does while losing none; the smallest natural label of any of its clean
#: models needs 1.2% of the pixels, of an infected one 0.18%: docs/detection.md).
TINY_SHARE = 0.002


@dataclass(frozen=True)
class Decision:
    """A model-level decision over K labels' norms.

    Attributes:
        method: one of :data:`DECISIONS`.
        flagged: positions (in the norms) of the flagged labels, most suspicious first.
        score: the model's score (higher is more suspicious); it is flagged when ``score > threshold``.
        threshold: the threshold on ``score``.
        per_label: (K,) what the method computed per label: the anomaly index (``paper``, ``log-mad``),
            ``-log10`` of the label's step-down p-value (``k-aware``; 0 for labels the step-down never reached), or
            the largest of that over 3, the label's halvings below the median over 2 (only for the labels of
            the unusual block), its favour score and its companion score (``k-aware-ratio``).
    """

    method: str
    flagged: list[int]
    score: float
    threshold: float
    per_label: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    norms: torch.Tensor,
    method: DecisionMethod = "k-aware-ratio",
    threshold: float | None = None,
    gaps: torch.Tensor | None = None,
    pixels: int | None = None,
) -> Decision:
    """Decide which labels are infected from their smallest-trigger norms.

    Args:
        norms: (K,) L1 norms of the reversed masks, K >= 2 (zeros are clamped to a tiny floor). ``"k-aware"``
            and ``"k-aware-ratio"`` need 3 labels to fit their null and flag nothing with 2.
        method: ``"paper"`` (MAD index of raw norms), ``"log-mad"`` (MAD index of log norms), ``"k-aware"``
            (step-down order-statistic test on log norms) or ``"k-aware-ratio"`` (that test, or a norm under
            :data:`SMALL_RATIO` of the median, or a small label the model favours on clean images).
        threshold: on ``score``; :data:`DEFAULT_THRESHOLDS` by default.
        gaps: (K,) the labels' clean gaps (:func:`~neuralcleanse.favour.clean_gaps`; NaN where unknown), in the
            order of ``norms``; ``"k-aware-ratio"`` applies its favour criterion only when they are given.
        pixels: the number of pixels (H * W) of the images the masks cover; ``"k-aware-ratio"`` flags tiny
            triggers (:data:`TINY_SHARE`) only when it is given.
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
    if method == "k-aware":
        return _step_down(log_norms, limit)
    if pixels is not None and pixels < 1:
        raise ValueError(f"pixels must be the images' H * W, at least 1, got {pixels}")
    tiny = None if pixels is None else math.log(TINY_SHARE * pixels)
    if gaps is None:
        return _k_aware_or_small(log_norms, limit, tiny=tiny)
    gaps = torch.as_tensor(gaps, dtype=torch.float64).flatten()
    if gaps.shape != norms.shape or bool(gaps.isinf().any()) or bool((gaps < 0).any()):
        raise ValueError(f"gaps must be {norms.numel()} values >= 0 (NaN: unknown), one per norm, got {gaps.tolist()}")
    return _k_aware_or_small(log_norms, limit, gaps.clamp_min(_FLOOR).log(), tiny)


def _step_down(log_norms: torch.Tensor, threshold: float) -> Decision:
    """Test the smallest remaining label against a normal null fitted (median, MAD) to the remaining ones,
    as the smallest of them; flag it and go on while ``-log10(p)`` exceeds ``threshold``."""
    remaining = list(range(log_norms.numel()))
    per_label = [0.0] * log_norms.numel()
    flagged: list[int] = []
    score = None
    while len(remaining) >= MIN_LABELS:
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


def _k_aware_or_small(
    log_norms: torch.Tensor, threshold: float, log_gaps: torch.Tensor | None = None, tiny: float | None = None
) -> Decision:
    """The k-aware step-down at ``threshold`` times its default (over :data:`STEP_DOWN_RATIO` of the median its
    score is capped there, so that it flags no label), joined by the labels flagged by size and, with the clean
    gaps, by favour. Size counts for the labels of the unusual block (:func:`_unusual_block`); among them, a label
    is flagged, from the smallest up, while it lies more than ``threshold * log2(1 / SMALL_RATIO)`` halvings below
    the median norm (under a quarter of it at threshold 1); and, given ``tiny`` (the log of the norm of
    :data:`TINY_SHARE` of the image), a label whose norm is under it by more than a factor ``threshold``. Favour
    (:func:`_favour`) flags a label whose score exceeds ``threshold``; then the flagged labels' companions
    (:func:`_companions`) join."""
    k_aware = _step_down(log_norms, threshold * DEFAULT_THRESHOLDS["k-aware"])
    ceiling = float(log_norms.quantile(0.5)) + math.log(STEP_DOWN_RATIO)
    over = {i for i in range(log_norms.numel()) if float(log_norms[i]) >= ceiling}
    surprises = [min(s, k_aware.threshold) if i in over else s for i, s in enumerate(k_aware.per_label)]
    unusual, size = _by_size(log_norms)
    small = []
    for label in unusual:
        if size[label] <= threshold:
            break
        small.append(label)
    counted = set(unusual)
    flagged = [i for i in k_aware.flagged if i not in over] + [i for i in small if i not in k_aware.flagged]
    tininess = [0.0] * log_norms.numel() if tiny is None else (tiny - log_norms).exp().tolist()
    flagged += [i for i in log_norms.argsort().tolist() if tininess[i] > threshold and i not in flagged]
    favour = {} if log_gaps is None else _favour(log_norms, log_gaps, set(flagged))
    favour = _below_the_flagged(log_norms, set(flagged), favour, threshold)
    per_label = [
        max(
            surprise / DEFAULT_THRESHOLDS["k-aware"],
            size[i] if i in counted else 0.0,
            favour.get(i, 0.0),
            tininess[i],
        )
        for i, surprise in enumerate(surprises)
    ]
    flagged += [i for i, score in favour.items() if score > threshold]
    score = max(per_label)
    for label, joins in _companions(log_norms, flagged, score, threshold).items():
        per_label[label] = max(per_label[label], joins)
        if joins > threshold:
            flagged.append(label)
    return Decision("k-aware-ratio", flagged, score, threshold, per_label)


def _below_the_flagged(
    log_norms: torch.Tensor, flagged: set[int], favour: dict[int, float], threshold: float
) -> dict[int, float]:
    """``favour`` with the score of every label above a smaller one left unflagged capped at ``threshold``: a
    target is the easiest label to reach, so the labels a decision flags are the smallest ones (as the norm
    criteria and the companions flag them), and a favoured label above a smaller natural one is the model's
    taste, not a trigger."""
    capped = dict(favour)
    unflagged_below = False
    for label in log_norms.argsort().tolist():
        if label in capped and unflagged_below:
            capped[label] = min(capped[label], threshold)
        unflagged_below |= label not in flagged and capped.get(label, 0.0) <= threshold
    return capped


def _by_size(log_norms: torch.Tensor) -> tuple[list[int], list[float]]:
    """The size criterion's evidence: the labels of the unusual block (:func:`_unusual_block`), and every label's
    size score, its halvings below the median norm over ``log2(1 / SMALL_RATIO)`` (over 1: under a quarter of the
    median)."""
    halvings = (float(log_norms.quantile(0.5)) - log_norms) / math.log(2)
    return _unusual_block(log_norms), (halvings / math.log2(1 / SMALL_RATIO)).tolist()


def _companions(log_norms: torch.Tensor, flagged: list[int], score: float, threshold: float) -> dict[int, float]:
    """The labels tried as companions of ``flagged``, the smallest labels of a model with ``score``, with their
    scores: from the next smallest up (to :data:`MAX_BLOCK` labels in all, and while each scores over
    ``threshold``), a label under :data:`COMPANION_RATIO` of the median scores its log-norm gap to the label
    above over its gap to the label below (counted as at most ``log(COMPANION_GAP)``), capped at ``score`` (a
    companion is never more suspicious than the labels it joins). Nothing joins labels that are not the smallest
    ones."""
    ascending, order = log_norms.sort()
    if not flagged or sorted(flagged) != sorted(order[: len(flagged)].tolist()):
        return {}
    cutoff = float(ascending.quantile(0.5)) + math.log(COMPANION_RATIO)
    out: dict[int, float] = {}
    for j in range(len(flagged), min(MAX_BLOCK, log_norms.numel() - 2)):
        x = float(ascending[j])
        if x >= cutoff:
            break
        below, above = x - float(ascending[j - 1]), float(ascending[j + 1]) - x
        out[int(order[j])] = joins = min(score, above / max(min(below, math.log(COMPANION_GAP)), _FLOOR))
        if joins <= threshold:
            break
    return out


def _favour(log_norms: torch.Tensor, log_gaps: torch.Tensor, flagged: set[int]) -> dict[int, float]:
    """Per label tested, its favour score: ``-log10`` of (the one-sided p of its clean gap's residual,
    :func:`~neuralcleanse.favour.gap_residual_p`, times the labels tested), over :data:`FAVOUR_FLOOR` (above 1:
    p < 0.05 / tested).

    The labels tested are the smallest ones under :data:`FAVOUR_RATIO` of the median norm, up to the largest
    block of them whose norms are not ordinary (:data:`FAVOUR_GATE`), but for those the norm criteria have
    ``flagged`` already; each is judged against the labels above the :data:`MAX_BLOCK` smallest. Unknown gaps
    (NaN) are left out of both; with fewer than three known above, nothing is tested."""
    k = log_norms.numel()
    ascending, order = log_norms.sort()
    cutoff = float(ascending.quantile(0.5)) + math.log(FAVOUR_RATIO)
    blocks = [
        j
        for j in range(1, min(MAX_BLOCK, k - 2) + 1)
        if float(ascending[j - 1]) < cutoff and _block_surprise(ascending, j) > FAVOUR_GATE
    ]
    known = ~log_gaps.isnan()
    tested = [label for label in order[: max(blocks, default=0)].tolist() if label not in flagged and known[label]]
    reference = order[min(MAX_BLOCK, k - 2) :]
    reference = reference[known[reference]]
    if not tested or reference.numel() < 3:
        return {}
    p_values = gap_residual_p(log_norms, log_gaps, tested, reference)
    return {label: _surprise(p * len(tested)) / FAVOUR_FLOOR for label, p in p_values.items()}


def _surprise(p: float) -> float:
    """``-log10 p``, from 0 (p >= 1) to :data:`_MAX_SURPRISE`."""
    return min(_MAX_SURPRISE, max(0.0, -math.log10(max(p, 10**-_MAX_SURPRISE))))


def _unusual_block(log_norms: torch.Tensor) -> list[int]:
    """The labels of the largest unusual block among the smallest: of the blocks of the j = 1 .. :data:`MAX_BLOCK`
    smallest labels, the smallest of them under :data:`SMALL_RATIO` of the median and all under
    :data:`BLOCK_REACH`, the largest whose :func:`_block_surprise` exceeds :data:`RATIO_FLOOR` plus ``log10`` of
    the number of labels under :data:`SMALL_RATIO` among them (Bonferroni). A block is judged on its own, so two
    targets of the same norm, each ordinary beside the other, are found together; and a target under the ratio
    beside a second one a little over it is judged with it, not against it."""
    ascending, order = log_norms.sort()
    median = float(ascending.quantile(0.5))
    smallest = ascending[: min(MAX_BLOCK, log_norms.numel() - 2)].tolist()
    small = sum(x < median + math.log(SMALL_RATIO) for x in smallest)
    if not small:
        return []
    reach = sum(x < median + math.log(BLOCK_REACH) for x in smallest)
    floor = RATIO_FLOOR + math.log10(small)
    unusual = [j for j in range(1, reach + 1) if _block_surprise(ascending, j) > floor]
    return order[: max(unusual, default=0)].tolist()


def _block_surprise(ascending: torch.Tensor, j: int) -> float:
    """``-log10 P(at least j of K draws <= x_(j))`` for the j-th smallest of the K ``ascending`` log norms, under
    the normal null of :func:`_null_cdf` fitted to the labels from the j-th up (the labels below it, suspects
    themselves, do not drag the null, as in the step-down)."""
    return _at_least(ascending.numel(), j, _null_cdf(float(ascending[j - 1]), ascending[j - 1 :]))


def _at_least(k: int, j: int, tail: float) -> float:
    """``-log10 P(X >= j)`` for ``X ~ Binomial(k, tail)``."""
    if tail <= 0:
        return _MAX_SURPRISE
    log_f, log_rest = math.log(tail), math.log1p(-min(tail, 1 - 1e-16))
    terms = [
        math.lgamma(k + 1) - math.lgamma(i + 1) - math.lgamma(k - i + 1) + i * log_f + (k - i) * log_rest
        for i in range(j, k + 1)
    ]
    top = max(terms)
    log_p = top + math.log(sum(math.exp(t - top) for t in terms))
    return min(_MAX_SURPRISE, max(0.0, -log_p / math.log(10)))


def _null_cdf(x: float, values: torch.Tensor) -> float:
    """F(x) of the normal null fitted to ``values``: their median, and a spread of their consistent MAD and the
    search's noise (:data:`SEARCH_NOISE`) in quadrature."""
    median = float(values.quantile(0.5))
    scale = math.hypot(CONSISTENCY * float((values - median).abs().quantile(0.5)), SEARCH_NOISE)
    return 0.5 * math.erfc(-(x - median) / scale / math.sqrt(2))


def _min_surprise(x: float, values: torch.Tensor) -> float:
    """``-log10 p`` with ``p = 1 - (1 - F(x))^K``: how unlikely it is that the smallest of the K ``values`` lies
    as low as ``x``, under a normal null with the values' median and a spread of their consistent MAD and the
    search's noise (:data:`SEARCH_NOISE`) in quadrature."""
    tail = _null_cdf(x, values)
    return _surprise(-math.expm1(values.numel() * math.log1p(-min(tail, 1 - 1e-16))))
