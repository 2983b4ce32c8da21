"""Detection figures of the zoo: the paper's decision against the new default, per dataset and family, by half.

    python benchmarks/zoo_report.py [--pairs]

Reads the scans of benchmarks/zoo.py (benchmarks/results/zoo_scans.json: per model and scan seed the labels'
mask norms) and decides each scan twice from the same norms: the paper's MAD index over raw norms (threshold 2)
and the library's default (``neuralcleanse.decision``'s ``k-aware-ratio``: the step-down order-statistic test on
log norms, a norm under a quarter of the median, or a small label the model favours on clean images (the rows'
clean gaps), then the symmetric check of each flagged label); the k-aware
test alone (the previous default) is shown beside them. The symmetric check needs the model: ``--pairs`` runs it
for every label the default flags at the lowest threshold of the sweep and caches the result in
benchmarks/results/zoo_pairs.json (per model, seed and label), so the sweep can apply it at every threshold.

The halves: models with an even training seed are the *tune* half, where the threshold is chosen (the sweep
table); the *test* half is only reported. Writes benchmarks/results/zoo.json (one row per model and scan seed)
and zoo.md. Models whose attack did not take are not scanned by zoo.py, so they are in neither.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from unittest.mock import patch

import torch
import zoo
import zoo_make_recipes
from common import RESULTS, markdown_table, read_results

from neuralcleanse import decision, pairs
from neuralcleanse.config import ScanConfig
from neuralcleanse.decision import DEFAULT_THRESHOLDS, decide
from neuralcleanse.loading import load_model
from neuralcleanse.pairs import (
    MIN_CONFUSION,
    MUTUAL_RATIO,
    NATURAL_RATIO,
    SUSPECT_CONFUSION,
    PairCheck,
    is_natural,
    mutual_verdicts,
    symmetric_check,
)
from neuralcleanse.probe import probe_outputs
from neuralcleanse.profiles import LabelProfile, builtin_profile, discounted, profile_from_scans, relative_gaps

REQUIRED = zoo_make_recipes.REQUIRED
DECISION = ScanConfig().decision  # the library's default decision
RATIO_SWEEP = (0.15, 0.2, 0.25, 0.3, 0.35)  # the size criterion's ratio (decision.SMALL_RATIO) tried
FLOOR_SWEEP = (0.0, 0.5, 1.0, 1.3, 2.0)  # and its floor, -log10 p of the block (decision.RATIO_FLOOR)
SWEEP = (0.875, 1.0, 1.25, 1.5, 2.0)  # thresholds of the default decision tried on the tune half
PAIR_SWEEP = (None, NATURAL_RATIO, 1.22, 1.5, 2.0)  # symmetric-check ratios tried on the tune half
MUTUAL_SWEEP = (1.25, 1.5, 2.0, 3.0, 4.0, math.inf)  # and its mutual ratio (pairs.MUTUAL_RATIO; inf: not tested)
#: and the confusion a pair of suspects needs (pairs.SUSPECT_CONFUSION; MIN_CONFUSION: as any pair; inf: never)
SUSPECT_SWEEP = (MIN_CONFUSION, 0.03, 0.05, 0.1, 0.2, math.inf)
PAIRS_FILE = RESULTS / "zoo_pairs.json"
GAPS = True  # decide with the rows' clean gaps (the favour criterion); off in the sweep's "without" row
PROFILED = {"mnist": 10, "cifar10": 10, "gtsrb": 43}  # the datasets profiles are measured for, and their labels
PROFILES = True  # the default decision reads the norms through the natural label profile; off in "without" columns
GAP_PROFILES = True  # ... and the clean gaps through the profile's gap ratios; off in its sweep's "without" row
#: which of the profile's gap ratios the gaps are read over: "both" (the library's), or in the sweep "up" (only the
#: classes whose gaps are naturally small, read up) and "down" (only those naturally large, read down)
GAP_FORM = "both"
TINY = True  # the default decision flags tiny triggers (decision.TINY_SHARE); off in its sweep's "without" row
FAVOUR_RATIO_SWEEP = (0.3, 0.35, 0.4, 0.5)  # decision.FAVOUR_RATIO
PREVIOUS_FAVOUR_RATIO = 0.35  # decision.FAVOUR_RATIO before the sixth round
FAVOUR_GATE_SWEEP = (0.0, 0.3, 0.7, 1.0)  # decision.FAVOUR_GATE: -log10 of the block's p (0: no gate)
COMPANION_RATIO_SWEEP = (0.3, 0.35, 0.4, 0.45, 0.5)  # decision.COMPANION_RATIO
COMPANION_GAP_SWEEP = (1.5, 1.75, 2.0, 2.5, 3.0, math.inf)  # decision.COMPANION_GAP (inf: the gap below uncapped)
BLOCK_REACH_SWEEP = (0.25, 0.35, 0.4, 0.5)  # decision.BLOCK_REACH (0.25, SMALL_RATIO: the rule before it)
TINY_SWEEP = (0.0015, 0.002, 0.0025, 0.003, 0.004)  # decision.TINY_SHARE
STEP_DOWN_SWEEP = (0.5, 0.55, 0.6, 0.65, 0.7)  # decision.STEP_DOWN_RATIO
DEFAULT_VARIANT = zoo.variant("auto", 1)  # the scans of the main tables: default arithmetic, one thread


def pair_key(row: dict[str, Any], label: int) -> str:
    """A symmetric check's cache key: the scan (model, seed and, for other arithmetic, its variant) and label."""
    v = zoo.row_variant(row)
    extra = "" if v == DEFAULT_VARIANT else f"/{v['precision']}/{v['threads']}"
    return f"{row['model']}/{row['seed']}{extra}/{label}"


def cache_scan_pairs(rows: list[dict[str, Any]], cache: dict[str, Any]) -> None:
    """Add the symmetric checks the scans ran themselves (the labels their default threshold flagged)."""
    for row in rows:
        for check in row.get("pairs") or []:
            cache.setdefault(pair_key(row, check["label"]), check)


def swept_suspects(row: dict[str, Any]) -> list[int]:
    """The labels the default decision flags at the lowest swept threshold."""
    return scan_decision(row, DECISION, min(SWEEP)).flagged


def run_pairs(
    rows: list[dict[str, Any]],
    cache: dict[str, Any],
    suspects: Callable[[dict[str, Any]], list[int]] = swept_suspects,
) -> None:
    """Symmetric checks for every label of ``suspects(row)`` (by default, :func:`swept_suspects`), cached; scans of
    models not on disk are left as they are (their flags stay unchecked)."""
    recipes = {r["name"]: r for r in zoo.recipes()}
    for row in rows:
        todo = sorted({t for t in suspects(row) if pair_key(row, t) not in cache})
        if not todo or not zoo.model_path(row["model"]).exists():
            continue
        recipe = recipes[row["model"]]
        model = load_model(zoo.model_path(row["model"])).model
        clean = zoo.scan_images(recipe, row["seed"])
        probabilities = probe_outputs(model, clean.images[:32]).probabilities
        generator = torch.Generator().manual_seed(row["seed"])
        search = ScanConfig().reverse
        norms = dict(enumerate(row["norms"]))
        checks = symmetric_check(model, clean.images, clean.labels, todo, norms, search, generator, probabilities)
        for check in checks:
            cache[pair_key(row, check.label)] = check.to_dict()
        PAIRS_FILE.write_text(json.dumps(cache, indent=1) + "\n")
        print(row["model"], row["seed"], [cache.get(pair_key(row, t)) for t in todo], flush=True)


def new_decision(
    row: dict[str, Any],
    cache: dict[str, Any],
    threshold: float,
    ratio: float | None = NATURAL_RATIO,
    method: str = DECISION,
) -> tuple[list[int], float, bool]:
    """(flagged, score, complete): the decision ``method``, then the cached symmetric checks judged by the
    library's current rule (``pairs.is_natural``); ``complete`` is false when a flagged label has no cached check
    (then it stays flagged). ``ratio``: the symmetric check's ratio (``None``: no check)."""
    d = scan_decision(row, method, threshold)
    flagged, complete = checked(row, cache, d.flagged, ratio)
    return flagged, d.score, complete


def checked(
    row: dict[str, Any], cache: dict[str, Any], flagged: list[int], ratio: float | None = NATURAL_RATIO
) -> tuple[list[int], bool]:
    """(kept, complete): the ``flagged`` labels of the row's scan that the cached symmetric checks, judged by the
    library's current rule, do not clear (``ratio``: the check's ratio; ``None``: no check); ``complete`` is false
    when a flagged label has no cached check (it stays flagged)."""
    cached = [check for t in flagged if (check := cache.get(pair_key(row, t))) is not None]
    complete = len(cached) == len(flagged)
    if ratio is None:
        return sorted(flagged), complete
    checks = mutual_verdicts([judged(row, check, ratio, flagged) for check in cached])
    cleared = {check.label for check in checks if check.natural}
    return sorted(set(flagged) - cleared), complete


def scan_decision(row: dict[str, Any], method: str, threshold: float) -> decision.Decision:
    """``decide`` on what :func:`decision_inputs` reads of the row's scan; the default decision reads it through the
    row's natural label profile (:func:`profile_of`, while PROFILES is on), as the scan does."""
    profile = profile_of(row) if PROFILES and method == DECISION else None
    norms, gaps, size = decision_inputs(row, profile)
    return decide(norms, method, threshold, gaps, size)  # type: ignore[arg-type]


def decision_inputs(
    row: dict[str, Any], profile: LabelProfile | None
) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """(norms, gaps, pixels): the row's norms discounted by ``profile``; its clean gaps, when the row has them and
    GAPS is on, read over the profile's (while GAP_PROFILES is on); and its images' size, while TINY is on.
    ``profile`` None: the norms and gaps as they are."""
    gaps = torch.tensor([math.nan if g is None else g for g in row["gaps"]]) if GAPS and "gaps" in row else None
    norms = discounted(torch.tensor(row["norms"], dtype=torch.float64), profile)
    if gaps is not None and GAP_PROFILES:
        gaps = relative_gaps(gaps, _gap_form(profile))
    return norms, gaps, pixels(row) if TINY else None


def _gap_form(profile: LabelProfile | None) -> LabelProfile | None:
    """``profile`` with only the gap ratios GAP_FORM reads (all of them for "both")."""
    if profile is None or GAP_FORM == "both":
        return profile
    clamp = min if GAP_FORM == "up" else max
    return replace(profile, gap_log_ratios=tuple(clamp(x, 0.0) for x in profile.gap_log_ratios))


def gap_profile_table(scans: list[dict[str, Any]], cache: dict[str, Any]) -> str:
    """The default decision with the clean gaps read as they are, over the profile's gap ratios both ways (the
    default), and one way only; TPR and FPR by half, and the test half's AUROC (CIFAR-10, MNIST, all), required
    families."""
    forms = [
        ("clean gaps as they are", False, "both"),
        ("over the class's gap, both ways (default)", True, "both"),
        ("naturally small gaps read up only", True, "up"),
        ("naturally large gaps read down only", True, "down"),
    ]
    body = []
    for name, on, form in forms:
        with patch(f"{__name__}.GAP_PROFILES", on), patch(f"{__name__}.GAP_FORM", form):
            rows = decided_required(scans, cache)
        test = [r for r in rows if r["half"] == "test"]
        areas = [figures([r for r in test if r["dataset"] == d])["new AUROC"] for d in ("cifar10", "mnist")]
        body.append([name, *by_half(rows), *areas, figures(test)["new AUROC"]])
    header = ["clean gaps", "tune TPR", "tune FPR", "test TPR", "test FPR", "test AUROC: CIFAR-10", "MNIST", "all"]
    return markdown_table(header, body)


def pixels(row: dict[str, Any]) -> int:
    """H * W of the images a zoo scan's masks cover (the many-label task's digits side by side)."""
    return _pixels(row["model"])


@functools.cache
def _pixels(model: str) -> int:
    recipe = zoo.recipe(model)
    (_, h, w), _ = zoo_make_recipes.DATASETS[recipe["dataset"]]
    return h * w * int(recipe.get("digits", 1))


def clean_references(
    scans: list[dict[str, Any]], half: str, key: str = "norms"
) -> dict[str, dict[str, list[list[float]]]]:
    """Per built-in dataset, the norms (``key="gaps"``: the clean gaps) of its clean models' scans in ``half``, by
    model (the rounds before the fifteenth, the profiles' own)."""
    refs: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    later = set().union(*map(round_names, range(13, 17)))  # planned after the profiles were built: their test
    for s in scans:
        dataset = task(s)
        if s["model"] in later or key not in s:
            continue
        if not s["infected"] and s["half"] == half and len(s["norms"]) == PROFILED.get(dataset):
            refs[dataset][s["model"]].append(s[key])
    return refs


@functools.cache
def _tune_references(key: str = "norms") -> dict[str, dict[str, list[list[float]]]]:
    scans = [s for s in read_results(zoo.SCANS_FILE) if "norms" in s and zoo.row_variant(s) == DEFAULT_VARIANT]
    return clean_references(scans, "tune", key)


@functools.cache
def _profile(dataset: str, num_labels: int, left_out: str | None) -> LabelProfile | None:
    profile = builtin_profile(dataset, num_labels)
    if profile is None or left_out is None:
        return profile
    others = {m: n for m, n in _tune_references()[dataset].items() if m != left_out}
    gaps = {m: g for m, g in _tune_references("gaps")[dataset].items() if m != left_out}
    return profile_from_scans(others, dataset, profile.source, gaps)


def profile_of(row: dict[str, Any]) -> LabelProfile | None:
    """The natural label profile a scan of the zoo is judged with: the built-in one of its task (measured on the
    tune half's clean models, benchmarks/profiles.py), or, for one of those models, the profile of the others
    (leave one model out); none for a task without one."""
    dataset = task(row)
    left_out = row["model"] if row["model"] in _tune_references().get(dataset, {}) else None
    return _profile(dataset, len(row["norms"]), left_out)


def judged(row: dict[str, Any], check: dict[str, Any], ratio: float, suspects: list[int]) -> PairCheck:
    """A cached check judged by the library's rule (``pairs.is_natural``), with the universal norms of the scan it
    belongs to and the labels its decision flagged (``suspects``); ``pairs.mutual_verdicts`` then judges the pairs
    of suspects."""
    norms = row["norms"]
    label, source = check["label"], check["source"]
    suspect = source in suspects
    towards, back, confusion = check["towards"], check["back"], check["confusion"]
    natural = is_natural(towards, back, confusion, norms[label], norms[source], ratio, suspect)
    return PairCheck(label, source, confusion, towards, back, norms[label], norms[source], natural, suspect)


def auroc(positives: list[float], negatives: list[float]) -> float | None:
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def task(scan: dict[str, Any]) -> str:
    """The row's dataset, with the many-label models apart from MNIST (``numbers2``: 100 labels, ``numbers3``:
    1000), whose images they are made of."""
    return scan["model"].split("-")[0] if scan["model"].startswith("numbers") else scan["dataset"]


def zoo_rows(
    scans: list[dict[str, Any]],
    cache: dict[str, Any],
    threshold: float,
    ratio: float | None = NATURAL_RATIO,
    method: str = DECISION,
) -> list[dict[str, Any]]:
    rows = []
    for s in scans:
        if "norms" not in s:
            continue
        flagged, score, complete = new_decision(s, cache, threshold, ratio, method)
        paper = decide(torch.tensor(s["norms"]), "paper")
        rows.append(
            {
                "model": s["model"],
                "dataset": task(s),
                "family": s["family"],
                "arch": s["arch"],
                "required": s["family"] in REQUIRED,
                "infected": s["infected"],
                "targets": s["targets"],
                "seed": s["seed"],
                **zoo.row_variant(s),
                "half": s["half"],
                "flagged": flagged,
                "anomaly_index": paper.score,
                "paper_flagged": sorted(paper.flagged),
                "score": score,
                "score_threshold": threshold,
                "pairs_checked": complete,
                "correct": flagged == s["targets"],
                "paper_correct": sorted(paper.flagged) == s["targets"],
                "seconds": s["seconds"],
            }
        )
    return rows


def default_scans() -> tuple[list[dict[str, Any]], dict[tuple[str, int], dict[str, Any]]]:
    """The zoo's scans in the default arithmetic, and their rows by (model, seed) as the default decision and the
    cached symmetric checks judge them today (what the other benchmarks compare with)."""
    scans = [s for s in read_results(zoo.SCANS_FILE) if "norms" in s and zoo.row_variant(s) == DEFAULT_VARIANT]
    cache = json.loads(PAIRS_FILE.read_text()) if PAIRS_FILE.exists() else {}
    cache_scan_pairs(scans, cache)
    rows = zoo_rows(scans, cache, DEFAULT_THRESHOLDS[DECISION])
    return scans, {(r["model"], r["seed"]): r for r in rows}


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """TPR (exact targets flagged) and FPR (anything flagged on a clean model) at the defaults, and the AUROC of
    the model score, for both decisions."""
    inf = [r for r in rows if r["infected"]]
    clean = [r for r in rows if not r["infected"]]

    def rate(rs: list[dict[str, Any]], key: str) -> str:
        return f"{sum(r[key] for r in rs)}/{len(rs)}" if rs else "—"

    def fpr(key: str) -> str:
        return f"{sum(bool(r[key]) for r in clean)}/{len(clean)}" if clean else "—"

    def area(key: str) -> str:
        value = auroc([r[key] for r in inf], [r[key] for r in clean])
        return "—" if value is None else f"{value:.3f}"

    return {
        "paper TPR": rate(inf, "paper_correct"),
        "paper FPR": fpr("paper_flagged"),
        "paper AUROC": area("anomaly_index"),
        "new TPR": rate(inf, "correct"),
        "new FPR": fpr("flagged"),
        "new AUROC": area("score"),
    }


def by_half(rows: list[dict[str, Any]]) -> list[str]:
    """The new decision's TPR and FPR on the tune half, then on the test half: a sweep's row."""
    cells = []
    for half in ("tune", "test"):
        f = figures([r for r in rows if r["half"] == half])
        cells += [f["new TPR"], f["new FPR"]]
    return cells


def table(rows: list[dict[str, Any]], by: tuple[str, ...], total: bool = False) -> str:
    """Figures per group of ``by``; ``total`` adds a row over all of them."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in by)].append(r)
    header = [*by, "scans", "paper TPR", "paper FPR", "paper AUROC", "new TPR", "new FPR", "new AUROC"]
    body = [[*key, len(rs), *figures(rs).values()] for key, rs in sorted(groups.items())]
    if total:
        body.append(["all", *[""] * (len(by) - 1), len(rows), *figures(rows).values()])
    return markdown_table(header, body)


#: Side lengths of the sticker-like triggers (square, random pattern, Trojan) per size class of the table below.
SIZE_CLASSES = {"1x1-3x3": range(1, 4), "4x4-5x5": range(4, 6), "6x6-7x7": range(6, 8)}


def trigger_class(recipe: dict[str, Any]) -> str:
    """A recipe's size class by its largest trigger (a blend covers the whole image)."""
    specs = [a["trigger"] for a in recipe["attacks"]]
    if any(spec.startswith("blend") for spec in specs):
        return "blend (whole image)"
    if all(spec.startswith("pixels") for spec in specs):
        return "scattered pixels"
    side = max(int(re.search(r"size=(\d+)", spec).group(1)) for spec in specs)  # type: ignore[union-attr]
    return next(name for name, sides in SIZE_CLASSES.items() if side in sides)


def by_trigger(rows: list[dict[str, Any]]) -> str:
    """The infected scans' figures per dataset and size class of the largest trigger."""
    recipes = {r["name"]: r for r in zoo.recipes()}
    infected = [{**r, "largest trigger": trigger_class(recipes[r["model"]])} for r in rows if r["infected"]]
    return table(infected, ("dataset", "largest trigger"))


def compare(scans: list[dict[str, Any]], cache: dict[str, Any]) -> str:
    """Every decision at its default threshold on the same scans and symmetric checks (required families): exact
    TPR and FPR per dataset and half. The paper's decision runs no symmetric check."""
    methods = ("paper", "k-aware", "no profile", DECISION)
    decided = {
        m: zoo_rows(scans, cache, DEFAULT_THRESHOLDS[m], None if m == "paper" else NATURAL_RATIO, m)
        for m in methods
        if m != "no profile"
    }
    with patch(f"{__name__}.PROFILES", False):
        decided["no profile"] = zoo_rows(scans, cache, DEFAULT_THRESHOLDS[DECISION])
    names = {DECISION: f"{DECISION} (default)", "no profile": f"{DECISION} without the profile"}
    header = ["dataset", "half"] + [f"{names.get(m, m)} {what}" for m in methods for what in ("TPR", "FPR")]
    body = []
    keys = sorted({(r["dataset"], r["half"]) for r in decided[DECISION] if r["required"]}, key=lambda k: (k[1], k[0]))
    for dataset, half in keys:
        cells: list[Any] = [dataset, half]
        for m in methods:
            f = figures([r for r in decided[m] if r["required"] and (r["dataset"], r["half"]) == (dataset, half)])
            cells += [f["new TPR"], f["new FPR"]]
        body.append(cells)
    return markdown_table(header, body)


def sweep(scans: list[dict[str, Any]], cache: dict[str, Any]) -> str:
    """The default decision's threshold on the tune half's required families: exact TPR and FPR per threshold."""
    header = ["threshold", "tune TPR", "tune FPR", "test TPR", "test FPR"]
    body = []
    for t in SWEEP:
        rows = [r for r in zoo_rows(scans, cache, t) if r["required"]]
        body.append([t, *by_half(rows)])
    return markdown_table(header, body)


def settings_sweep(
    scans: list[dict[str, Any]],
    cache: dict[str, Any],
    settings: list[tuple[str, float]],
    off: tuple[str, Callable[[], Any]] | None = None,
) -> str:
    """The default decision with each of ``settings`` (a ``decision`` constant and a value) in turn, the others at
    their defaults, and first, when ``off`` is given, with a criterion undone (its row's name and a context
    manager), required families."""
    header = ["setting", "tune TPR", "tune FPR", "test TPR", "test FPR"]
    body = []
    if off is not None:
        name, undo = off
        with undo():
            body.append([name, *by_half(decided_required(scans, cache))])
    for name, value in settings:
        default = " (default)" if value == getattr(decision, name) else ""
        with patch.object(decision, name, value):
            rows = decided_required(scans, cache)
        body.append([f"{name} = {value:g}{default}", *by_half(rows)])
    return markdown_table(header, body)


def without_companions() -> Any:
    """The default decision with no companion criterion (a context manager)."""
    return patch.object(decision, "_companions", lambda *args: {})


def earlier_size_rules() -> Any:
    """The default decision as it was before the eighth round: blocks all under SMALL_RATIO, the step-down flagging
    at any norm (a context manager)."""
    return patch.multiple(decision, BLOCK_REACH=decision.SMALL_RATIO, STEP_DOWN_RATIO=math.inf)


def favour_above_unflagged() -> Any:
    """The default decision with a favoured label flagged above a smaller one left unflagged, as before the tenth
    round (a context manager)."""
    return patch.object(decision, "_below_the_flagged", lambda log_norms, flagged, favour, threshold: favour)


def one_sided_pairs() -> Any:
    """The symmetric check with each suspect's check alone deciding, its source flagged or not, as before the
    tenth round (a context manager)."""
    return patch(f"{__name__}.mutual_verdicts", lambda checks: checks)


@contextlib.contextmanager
def before_tenth_round() -> Iterator[None]:
    """Both of the tenth round's changes undone."""
    with favour_above_unflagged(), one_sided_pairs():
        yield


def rules_table(scans: list[dict[str, Any]], cache: dict[str, Any]) -> str:
    """The default with each of the tenth round's changes undone, and both, required families."""
    header = ["decision", "tune TPR", "tune FPR", "test TPR", "test FPR"]
    body = [["default", *by_half(decided_required(scans, cache))]]
    for name, undo in (
        ("a favoured label flagged above an unflagged one", favour_above_unflagged),
        ("each suspect's check alone", one_sided_pairs),
        ("both (the decision before the tenth round)", before_tenth_round),
    ):
        with undo():
            body.append([name, *by_half(decided_required(scans, cache))])
    return markdown_table(header, body)


def round_names(index: int) -> set[str]:
    """The names of one round's recipes: 1 the third (zoo_make_recipes.THIRD), 2 the fourth (FOURTH), 3 the fifth
    (FIFTH), 4 the sixth (SIXTH), 5 the seventh (SEVENTH), 6 the eighth (EIGHTH), 7 the ninth (NINTH), 8 the tenth
    (TENTH), 9 the eleventh (ELEVENTH, at each of its poison rates), 10 the twelfth (TWELFTH), 11 the thirteenth
    (THIRTEENTH), 12 the fourteenth (FOURTEENTH), 13 the fifteenth (FIFTEENTH), 14 the sixteenth (SIXTEENTH), 15 the
    seventeenth (SEVENTEENTH), 16 the eighteenth (EIGHTEENTH), 17 the nineteenth (NINETEENTH)."""
    return {r["name"] for r in zoo_make_recipes.rounds()[index]}


def round_table(
    scans: list[dict[str, Any]], cache: dict[str, Any], index: int, without: str, off: Callable[[], Any]
) -> str:
    """A later round's scans per dataset, family and half, decided by the default, and by it with one setting
    undone (``off()``, a context manager; ``without`` names it), both halves."""
    names = round_names(index)
    rows = [r for r in zoo_rows(scans, cache, DEFAULT_THRESHOLDS[DECISION]) if r["model"] in names]
    with off():
        before = {(r["model"], r["seed"]): r for r in zoo_rows(scans, cache, DEFAULT_THRESHOLDS[DECISION])}
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["family"], r["half"])].append(r)
    body = []
    for key, rs in sorted(groups.items()):
        now, then = figures(rs), figures([before[(r["model"], r["seed"])] for r in rs])
        body.append([*key, now["new TPR"], now["new FPR"], then["new TPR"], then["new FPR"]])
    header = ["dataset", "family", "half", "TPR", "FPR", f"without {without}: TPR", f"without {without}: FPR"]
    return markdown_table(header, body)


def round_tables(scans: list[dict[str, Any]], cache: dict[str, Any], index: int, without: str, flag: str) -> list[str]:
    """A round planned to test one part of the default: its verdicts with and without it (``flag``, the module
    switch that turns it off, named ``without``), then its scans."""
    off = functools.partial(patch, f"{__name__}.{flag}", False)
    return [round_table(scans, cache, index, without, off), "\n", round_scans_table(scans, round_names(index))]


def poison_rate_table(rows: list[dict[str, Any]], names: set[str]) -> str:
    """The rows of the models ``names`` per dataset, family, poison rate and half: the default's and the paper's
    TPR and FPR."""
    rates = {r["name"]: r["poison_rate"] for r in zoo.recipes()}
    groups: dict[tuple[str, str, float, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["model"] in names:
            groups[(r["dataset"], r["family"], rates[r["model"]], r["half"])].append(r)
    body = []
    for key, rs in sorted(groups.items()):
        f = figures(rs)
        body.append([*key, len(rs), f["new TPR"], f["new FPR"], f["paper TPR"], f["paper FPR"]])
    header = ["dataset", "family", "poison rate", "half", "scans", "TPR", "FPR", "paper TPR", "paper FPR"]
    return markdown_table(header, body)


def shipped_table(scans: list[dict[str, Any]], rows: list[dict[str, Any]], names: set[str]) -> str:
    """The scans of the models ``names`` per dataset, family and half, then per half: the verdict each scan
    returned (the default as it ships: mask search, blend search, neuron stimulation, symmetric checks), the default
    decision replayed on the mask search's norms (every other table's figure) and the paper's. Infected scans count
    when exactly their targets are flagged, clean ones when anything is."""
    shipped = {(s["model"], s["seed"]): s["flagged"] for s in scans if "norms" in s}

    columns = (lambda r: shipped[(r["model"], r["seed"])], lambda r: r["flagged"], lambda r: r["paper_flagged"])

    def counted(r: dict[str, Any], flagged: list[int]) -> bool:
        return flagged == r["targets"] if r["infected"] else bool(flagged)

    def cells(rs: list[dict[str, Any]]) -> list[str]:
        return [f"{sum(counted(r, column(r)) for r in rs)}/{len(rs)}" for column in columns]

    mine = [r for r in rows if r["model"] in names]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in mine:
        groups[(r["dataset"], r["family"], r["half"])].append(r)
    body = [
        [*key, "exact targets" if rs[0]["infected"] else "anything flagged", *cells(rs)]
        for key, rs in sorted(groups.items())
    ]
    for half in ("tune", "test"):
        for infected, kind, what in ((True, "infected", "exact targets"), (False, "clean", "anything flagged")):
            body.append(
                ["all", kind, half, what, *cells([r for r in mine if (r["half"], r["infected"]) == (half, infected)])]
            )
    header = ["dataset", "family", "half", "counted", "shipped default", "mask search alone", "paper"]
    return markdown_table(header, body)


def round_scans_table(scans: list[dict[str, Any]], names: set[str]) -> str:
    """Every scan of the models ``names``: targets and what the shipped default flagged, per seed."""
    by_model: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for s in scans:
        if s["model"] in names and "norms" in s:
            by_model[s["model"]][s["seed"]] = s
    order = [r["name"] for r in zoo.recipes()]
    body = []
    for model in sorted(by_model, key=order.index):
        seeds = by_model[model]
        first = next(iter(seeds.values()))
        flags = [str(seeds[seed]["flagged"]) if seed in seeds else "—" for seed in (0, 1)]
        body.append([model, first["arch"], first["half"], str(first["targets"]), *flags])
    return markdown_table(["model", "arch", "half", "targets", "seed 0 flagged", "seed 1 flagged"], body)


def decided_required(scans: list[dict[str, Any]], cache: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in zoo_rows(scans, cache, DEFAULT_THRESHOLDS[DECISION]) if r["required"]]


def pair_sweep(scans: list[dict[str, Any]], cache: dict[str, Any]) -> str:
    """The symmetric check's ratio at the default threshold, required families: exact TPR and FPR per ratio."""
    header = ["natural when back <= ratio x towards", "tune TPR", "tune FPR", "test TPR", "test FPR"]
    body = []
    for ratio in PAIR_SWEEP:
        rows = [r for r in zoo_rows(scans, cache, DEFAULT_THRESHOLDS[DECISION], ratio) if r["required"]]
        label = "no check" if ratio is None else f"{ratio:.2f}" + (" (default)" if ratio == NATURAL_RATIO else "")
        body.append([label, *by_half(rows)])
    return markdown_table(header, body)


def mutual_sweep(scans: list[dict[str, Any]], cache: dict[str, Any]) -> str:
    """The symmetric check's mutual ratio at the default threshold, required families: exact TPR and FPR."""
    header = ["natural when source <= ratio x suspect", "tune TPR", "tune FPR", "test TPR", "test FPR"]
    body = []
    for value in MUTUAL_SWEEP:
        with patch.object(pairs, "MUTUAL_RATIO", value):
            rows = [r for r in zoo_rows(scans, cache, DEFAULT_THRESHOLDS[DECISION]) if r["required"]]
        label = "not tested" if math.isinf(value) else f"{value:g}" + (" (default)" if value == MUTUAL_RATIO else "")
        body.append([label, *by_half(rows)])
    return markdown_table(header, body)


def suspect_sweep(scans: list[dict[str, Any]], cache: dict[str, Any]) -> str:
    """The confusion a pair of suspects needs to be cleared (pairs.SUSPECT_CONFUSION), default threshold, required
    families: exact TPR and FPR."""
    header = ["natural when a flagged source is confused >=", "tune TPR", "tune FPR", "test TPR", "test FPR"]
    body = []
    for value in SUSPECT_SWEEP:
        with patch.object(pairs, "SUSPECT_CONFUSION", value):
            rows = [r for r in zoo_rows(scans, cache, DEFAULT_THRESHOLDS[DECISION]) if r["required"]]
        label = "never" if math.isinf(value) else f"{value:g}"
        label += " (default)" if value == SUSPECT_CONFUSION else " (MIN_CONFUSION)" if value == MIN_CONFUSION else ""
        body.append([label, *by_half(rows)])
    return markdown_table(header, body)


def stability(rows: list[dict[str, Any]]) -> str:
    """How often a model's flagged labels and its verdict (infected or clean), by both decisions, survive another
    scan seed, the other arithmetic and another thread count; each comparison is between scans that differ in
    that one respect."""

    def agree(outcome: Callable[[dict[str, Any]], Any], vary: str | None) -> str:
        """Models (or, with ``vary``, groups of scans alike but in ``vary``) of 2+ scans with one outcome."""
        fixed = ["model"] if vary is None else [k for k in ("model", "seed", "precision", "threads") if k != vary]
        groups: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
        for r in rows:
            groups[tuple(r[k] for k in fixed)].append(outcome(r))
        compared = [g for g in groups.values() if len(g) >= 2]
        return f"{sum(len(set(g)) == 1 for g in compared)}/{len(compared)}"

    outcomes = [
        lambda r: tuple(r["flagged"]),
        lambda r: bool(r["flagged"]),
        lambda r: tuple(r["paper_flagged"]),
        lambda r: bool(r["paper_flagged"]),
    ]
    varied = [
        ("scan seed 0 vs 1", "seed"),
        ("auto vs float32", "precision"),
        ("1 vs 2 threads", "threads"),
        ("every scan of the model", None),
    ]
    body = [[label, *(agree(o, vary) for o in outcomes)] for label, vary in varied]
    body = [row for row in body if not row[1].endswith("/0")]  # a variant the rows were never scanned in
    header = ["what differs", "new: same flagged labels", "new: same verdict", "paper: same flagged labels"]
    return markdown_table([*header, "paper: same verdict"], body)


def timing(rows: list[dict[str, Any]]) -> str:
    """Scan seconds per dataset and architecture (default arithmetic, one thread on a shared machine)."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["arch"])].append(r["seconds"])
    body = [[d, a, len(v), statistics.median(v), max(v)] for (d, a), v in sorted(groups.items())]
    return markdown_table(["dataset", "arch", "scans", "median s", "max s"], body)


def partly_right(rows: list[dict[str, Any]]) -> str:
    """Per half and dataset, the required infected scans of one target and of several: how many flag exactly their
    targets, how many flag at least one of them (the model called infected, a target named), and how many flag a
    label that is no target."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["required"] and r["infected"]:
            kind = "one" if len(r["targets"]) == 1 else "several"
            for dataset in (r["dataset"], "all"):
                groups[(r["half"], kind, dataset)].append(r)
    body = []
    for (half, kind, dataset), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "tune", kv[0][1], kv[0][2])):
        some = sum(bool(set(r["flagged"]) & set(r["targets"])) for r in rs)
        other = sum(bool(set(r["flagged"]) - set(r["targets"])) for r in rs)
        body.append(
            [
                half,
                kind,
                dataset,
                len(rs),
                f"{sum(r['correct'] for r in rs)}/{len(rs)}",
                f"{some}/{len(rs)}",
                f"{other}/{len(rs)}",
            ]
        )
    header = ["half", "targets", "dataset", "scans", "exactly the targets", "a target flagged", "a non-target flagged"]
    return markdown_table(header, body)


def smallest_first(scans: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """Per half and dataset, the required infected scans whose targets are exactly their model's smallest labels
    by norm (as many as it has targets), beside the default's exact ones: what a rule that flags the smallest
    labels could reach if it knew how many to flag."""
    norms = {(s["model"], s["seed"]): s["norms"] for s in scans if "norms" in s}
    groups: dict[tuple[str, str], list[tuple[bool, bool]]] = defaultdict(list)
    for r in rows:
        if not (r["required"] and r["infected"]):
            continue
        n = norms[(r["model"], r["seed"])]
        smallest = sorted(range(len(n)), key=lambda i: n[i])[: len(r["targets"])]
        groups[(r["half"], r["dataset"])].append((sorted(smallest) == r["targets"], r["correct"]))
    for half in ("tune", "test"):
        groups[(half, "all")] = [v for (h, d), vs in list(groups.items()) if h == half and d != "all" for v in vs]
    body = [
        [half, dataset, len(vs), f"{sum(a for a, _ in vs)}/{len(vs)}", f"{sum(b for _, b in vs)}/{len(vs)}"]
        for (half, dataset), vs in sorted(
            groups.items(), key=lambda kv: (kv[0][0] != "tune", kv[0][1] == "all", kv[0][1])
        )
    ]
    return markdown_table(["half", "dataset", "scans", "targets are the smallest", "default exact"], body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", action="store_true", help="run the symmetric checks that are not cached yet")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scans = json.loads((RESULTS / "zoo_scans.json").read_text())
    cache = json.loads(PAIRS_FILE.read_text()) if PAIRS_FILE.exists() else {}
    cache_scan_pairs(scans, cache)
    if args.pairs:
        run_pairs(scans, cache)
    threshold = DEFAULT_THRESHOLDS[DECISION]

    def condition_off() -> Any:  # the fourth and fifth rounds' tables: a flagged source needs only MIN_CONFUSION
        return patch.object(pairs, "SUSPECT_CONFUSION", MIN_CONFUSION)

    every = zoo_rows(scans, cache, threshold)
    rows = [r for r in every if zoo.row_variant(r) == DEFAULT_VARIANT]
    scans = [s for s in scans if zoo.row_variant(s) == DEFAULT_VARIANT]
    (RESULTS / "zoo.json").write_text(json.dumps(rows, indent=1) + "\n")
    missing = sum(not r["pairs_checked"] for r in rows)
    refused = sorted({s["model"] for s in scans if "error" in s})
    text = [
        "# Detection on the zoo (benchmarks/zoo_report.py)\n",
        f"{len(rows)} scans of {len({r['model'] for r in rows})} models (two scan seeds each where done). "
        "*paper*: MAD index of raw norms > 2. *new*: the library's default, "
        f"{DECISION}, reading the norms of MNIST and CIFAR-10 models through their dataset's natural label "
        "profile (naturally small labels' norms divided by their expected share of the median: "
        "benchmarks/results/profiles.md; a clean tune-half model is judged with the profile of the others): "
        "the step-down order-statistic test on log norms (p < 0.001; no label over "
        f"{decision.STEP_DOWN_RATIO:g} of the median), or the smallest one to three labels under a quarter of the "
        f"median whose block (reaching up to {decision.BLOCK_REACH:g} of it) is unusual at p < 0.05 over the labels "
        "under a quarter, or the "
        f"smallest labels under {decision.FAVOUR_RATIO:g} of the median whose clean gap lies unusually far below "
        "what their norm predicts and no smaller label is left unflagged (the favour criterion); on a flagged "
        "model, the next smallest labels under "
        f"{decision.COMPANION_RATIO:g} of the median that lie nearer to the flagged ones than to the labels above "
        f"(the gap below counted as at most a factor {decision.COMPANION_GAP:g}) join them (the companion "
        "criterion); then the symmetric check of each flagged label (a pair of flagged labels is cleared only when "
        "the checks of both find them neighbours) "
        f"(score: the larger criterion over its own default, threshold {threshold:g}). TPR: infected scans "
        "flagging exactly their targets; FPR: clean scans flagging anything. "
        "Tune half: even training seeds (where the threshold was chosen); test half: odd.\n",
        f"Flagged labels without a cached symmetric check (kept flagged): {missing} scans.\n" if missing else "",
        f"Refused by the scan's sanity check (clean accuracy below 50%), so in no figure: {', '.join(refused)}.\n"
        if refused
        else "",
        "## Test half, required families\n",
        table([r for r in rows if r["half"] == "test" and r["required"]], ("dataset",), total=True),
        "## Verdict stability, test half, required families\n",
        "Scans that differ in one respect only (the other scans of the zoo use seeds 0 and 1, bfloat16 where the "
        "CPU has it (precision auto) and one thread). *Same verdict*: infected or clean alike, whatever the "
        "labels.\n\n",
        stability([r for r in every if r["half"] == "test" and r["required"]]),
        "## Verdict stability, tune half, required families\n",
        "The half whose scans chose the settings, scanned in the default arithmetic on one thread only: its seeds' "
        "agreement is as much the zoo's figure as the test half's.\n\n",
        stability([r for r in every if r["half"] == "tune" and r["required"]]),
        "## The third round\n",
        "Models trained and scanned after every setting of the default was fixed, the favour criterion included "
        "(zoo_make_recipes.THIRD), both halves, two scan seeds per model; they are in every table above and below "
        "as well.\n\n",
        round_table(scans, cache, 1, "favour", lambda: patch(f"{__name__}.GAPS", False)),
        "## The fourth round\n",
        "Models planned before any of them was trained (zoo_make_recipes.FOURTH): more models with two and three "
        "targets, CIFAR-10 Trojans on victims trained for twenty epochs, clean controls; both halves, two scan seeds "
        "per model; in every table above and below as well. The symmetric check's condition on flagged sources "
        "(pairs.SUSPECT_CONFUSION) was chosen after this round was scanned, on the tune half; *without it*: a "
        "flagged source needs only MIN_CONFUSION, as any source.\n\n",
        round_table(scans, cache, 2, "it", condition_off),
        "## The fifth round\n",
        "Models planned and trained after the condition on flagged sources was fixed (zoo_make_recipes.FIFTH): MNIST "
        "and CIFAR-10 models with several targets, the families it acts on, and clean controls of the same "
        "networks; both halves, two scan seeds per model; in every table above and below as well. *Without it*: as "
        "in the fourth round's table.\n\n",
        round_table(scans, cache, 3, "it", condition_off),
        "## The sixth round\n",
        "Models planned and trained after FAVOUR_RATIO moved from 0.35 to 0.4 on the tune half of the first five "
        "rounds (zoo_make_recipes.SIXTH): every required family on each dataset, where the earlier rounds have few "
        "models or where the favour criterion acts, and clean controls of the same networks; both halves, two scan "
        "seeds per model; in every table above and below as well. *Without it*: FAVOUR_RATIO at 0.35.\n\n",
        round_table(scans, cache, 4, "it", lambda: patch.object(decision, "FAVOUR_RATIO", PREVIOUS_FAVOUR_RATIO)),
        "## The seventh round\n",
        "Models planned and trained after the companion criterion was chosen on the tune half of the first six "
        "rounds (zoo_make_recipes.SEVENTH): models with two and three targets on each dataset, single-target "
        "patches and blends where a natural label could join the target, and clean controls of the same networks; "
        "both halves, two scan seeds per model; in every table above and below as well. *Without it*: no companion "
        "criterion.\n\n",
        round_table(scans, cache, 5, "it", without_companions),
        "## The eighth round\n",
        "Models planned before training (zoo_make_recipes.EIGHTH), after the size criterion's block was let reach "
        "up to BLOCK_REACH of the median and the step-down was kept under STEP_DOWN_RATIO of it, both chosen on the "
        "tune half of the first seven rounds: models with two and three targets (MNIST, CIFAR-10), Trojans and "
        "patches of the paper's MNIST network, clean controls of the widest-spread networks; both halves, two scan "
        "seeds per model; in every table above and below as well. *Without them*: the decision before them.\n\n",
        round_table(scans, cache, 6, "them", earlier_size_rules),
        "## The ninth round\n",
        "Models planned before training (zoo_make_recipes.NINTH), after the companion criterion's gap below was "
        "capped at one halving (COMPANION_GAP) on the tune half of the first eight rounds: models with two and three "
        "targets (MNIST, CIFAR-10), single-target patches, clean controls of the same networks; both halves, two "
        "scan seeds per model; in every table above and below as well. *Without it*: the gap below uncapped.\n\n",
        round_table(scans, cache, 7, "it", lambda: patch.object(decision, "COMPANION_GAP", math.inf)),
        "## The tenth round\n",
        "Models planned before training (zoo_make_recipes.TENTH), after two changes chosen on the tune half of the "
        "first nine rounds: a favoured label is flagged only when no smaller label is left unflagged, and a flagged "
        "label whose most confused label is flagged too is cleared only when the checks of both find them "
        "neighbours. Models with two and three targets of every MNIST network, CIFAR-10 two-target models, clean "
        "controls of the networks whose smallest natural labels lie lowest; both halves, two scan seeds per model; "
        "in every table above and below as well. *Without them*: the decision before them.\n\n",
        round_table(scans, cache, 8, "them", before_tenth_round),
        "## The eleventh to thirteenth rounds: fainter poison\n",
        "Models planned before training (zoo_make_recipes.ELEVENTH, TWELFTH and THIRTEENTH), the decision unchanged "
        "since the tenth round: the zoo's first models poisoned at rates under the paper's 10% (3% and 1% of the "
        "training set per trigger, as models trained elsewhere often are), MNIST single patches, blends and two "
        "targets, CIFAR-10 single patches and two targets, the same plan at each rate; then GTSRB single patches at "
        "3%; then MNIST single patches and two targets at 1%, trained longer; both halves, two scan seeds per model; "
        "in every table above and below as well. Recipes whose attack did not take are left out here "
        "(zoo_models.md); weak_attacks.md scans them anyway.\n\n",
        poison_rate_table(rows, round_names(9) | round_names(10) | round_names(11)),
        "## The fourteenth round: the default as it ships, on new models\n",
        "Models planned before training (zoo_make_recipes.FOURTEENTH), after the scan gained its blend search and "
        "neuron stimulation, nothing changed since: every required family on MNIST's networks (logits and softmax) "
        "and CIFAR-10's batch-norm CNN, clean controls beside them; both halves, two scan seeds per model; in every "
        "table above and below as well, where (as for every round) the verdict is the default decision replayed on "
        "the mask search's norms. *Shipped default*: the verdict the scan itself returned (mask search, blend "
        "search, neuron stimulation, symmetric checks), what a user gets. Infected models: scans flagging exactly "
        "their targets; clean models: scans flagging anything.\n\n",
        shipped_table(scans, rows, round_names(12)),
        "\n",
        round_scans_table(scans, round_names(12)),
        "## The fifteenth round: the natural label profiles, on new models\n",
        "Models planned before training (zoo_make_recipes.FIFTEENTH), after the decision gained its natural label "
        "profiles and the companion criterion's settings were chosen again under them, nothing changed since: "
        "every required family on MNIST's networks (logits and softmax, a linear clean model) and CIFAR-10's "
        "batch-norm CNN; both halves, two scan seeds per model; in every table above and below as well. The "
        "default decision replayed on the mask search's norms, and *without the profile*: the same decision on "
        "the norms as they are. The scans as shipped (blend search, stimulation, second scan) are in "
        "benchmarks/results/shipped.md.\n\n",
        *round_tables(scans, cache, 13, "the profile", "PROFILES"),
        "## The sixteenth round: scattered pixel triggers, on new models\n",
        "Models planned before training (zoo_make_recipes.SIXTEENTH), nothing in the scan changed since the "
        "fifteenth round: a family the zoo had not covered, single pixels of one colour scattered over the whole "
        "image (4 to 16 of them), on MNIST's networks (logits and softmax) and CIFAR-10's batch-norm CNN, and MNIST "
        "clean controls; both halves, two scan seeds per model; in every table above and below as well. The "
        "default decision replayed on the mask search's norms, and *without the profile*: the same decision on the "
        "norms as they are.\n\n",
        *round_tables(scans, cache, 14, "the profile", "PROFILES"),
        "## The seventeenth round: the tiny-trigger criterion, on new models\n",
        "Models planned before training (zoo_make_recipes.SEVENTEENTH), after the tiny-trigger criterion "
        "(decision.TINY_SHARE) was chosen on the sixteenth round, nothing changed since: CIFAR-10's batch-norm CNN "
        "with scattered pixel triggers, the family that prompted it, and clean controls; both halves, two scan seeds "
        "per model; in every table above and below as well. The default decision replayed on the mask search's "
        "norms, and *without tiny triggers*: the same decision without that criterion. The scans as shipped are in "
        "benchmarks/results/shipped.md.\n\n",
        *round_tables(scans, cache, 15, "tiny triggers", "TINY"),
        "## The eighteenth round: clean gaps read over the class's, on new models\n",
        "Models planned before training (zoo_make_recipes.EIGHTEENTH), after the profiles gained the classes' clean "
        "gaps (profiles.relative_gaps), nothing changed since: CIFAR-10's batch-norm CNN with single-target patches, "
        "blends, scattered pixels and two targets, clean controls, and MNIST models of several networks; both halves, "
        "two scan seeds per model; in every table above and below as well. The default decision replayed on the "
        "mask search's norms and clean gaps, and *without the gap profile*: the same decision on the gaps as they "
        "are.\n\n",
        *round_tables(scans, cache, 16, "the gap profile", "GAP_PROFILES"),
        "## The nineteenth round: GTSRB's missing families, on new models\n",
        "Models planned before training (zoo_make_recipes.NINETEENTH), nothing in the scan changed since the "
        "eighteenth round: the families the zoo had only on MNIST and CIFAR-10, GTSRB blends, scattered pixels and "
        "three targets, on GTSRB's batch-norm CNN (logits and softmax), and clean controls of the same networks; both "
        "halves, two scan seeds per model; in every table above and below as well. GTSRB has no natural label "
        "profile. *Shipped default*: the verdict the scan itself returned (mask search, blend search, neuron "
        "stimulation, symmetric checks; no second scan); *mask search alone*: the default decision replayed on the "
        "mask search's norms, every other table's figure.\n\n",
        shipped_table(scans, rows, round_names(17)),
        "\n",
        round_scans_table(scans, round_names(17)),
        "## Test half, infected models by the size of their largest trigger (required families)\n",
        "A model's largest trigger: the side of its largest sticker (square, random pattern or Trojan), a blend "
        "over the whole image, or pixels scattered over it. The norm a reversed trigger needs grows with the "
        "trigger, while natural labels need what they need (docs/detection.md).\n\n",
        by_trigger([r for r in rows if r["half"] == "test" and r["required"]]),
        "## Partly right: a target named, the set incomplete (required families)\n",
        "Infected scans of models with one target and with several: exactly the targets flagged (the TPR above), at "
        "least one target flagged (the model called infected and a target named), and a label flagged that is no "
        "target.\n\n",
        partly_right(rows),
        "## Are the targets the smallest labels? (required families)\n",
        "Infected scans whose targets are exactly their model's smallest labels by norm, as many as it has targets: "
        "what any rule that flags the smallest labels first could reach if it knew how many to flag, beside the "
        "default's exact scans. The rest of the gap is the choice of how many (docs/detection.md).\n\n",
        smallest_first(scans, rows),
        "## Test half, per dataset and family\n",
        table([r for r in rows if r["half"] == "test"], ("dataset", "family")),
        "## Tune half, per dataset and family\n",
        table([r for r in rows if r["half"] == "tune"], ("dataset", "family")),
        "## The decisions side by side (required families)\n",
        "The same scans and symmetric checks decided by the paper's index, the k-aware test alone, the default "
        "reading the norms as they are (the default before the natural label profiles: benchmarks/results/"
        "profiles.md) and the default; TPR: exactly the targets, FPR: anything on a clean model.\n\n",
        compare(scans, cache),
        f"## Threshold sweep of the default decision, {DECISION} (required families)\n",
        "The default was chosen on the tune columns; the test columns are shown for the record only.\n\n",
        sweep(scans, cache),
        "## The size criterion's settings (required families, default threshold)\n",
        "The ratio to the median under which a label counts as small, and the floor on the block's -log10 p, one "
        "at a time. The ratio was chosen on the tune columns, the floor by the simulation of "
        "benchmarks/results/decision_null.md (docs/detection.md says how). Flags whose symmetric check is not "
        "cached stay flagged.\n\n",
        settings_sweep(
            scans, cache, [("SMALL_RATIO", r) for r in RATIO_SWEEP] + [("RATIO_FLOOR", f) for f in FLOOR_SWEEP]
        ),
        "## Tiny triggers (required families, default threshold)\n",
        "A label whose mask covers less than TINY_SHARE of the image's pixels is flagged whatever the other labels "
        "need (decision.TINY_SHARE; docs/detection.md). Chosen on the tune columns of the sixteen rounds, after the "
        "sixteenth round's scattered pixel triggers were scanned: the smallest share that gains what any gains. "
        "Flags whose symmetric check is not cached stay flagged.\n\n",
        settings_sweep(
            scans,
            cache,
            [("TINY_SHARE", share) for share in TINY_SWEEP],
            ("without tiny triggers", functools.partial(patch, f"{__name__}.TINY", False)),
        ),
        "## Clean gaps read over the class's (required families, default threshold)\n",
        "The favour criterion reads each label's clean gap over the share of the median gap its class leaves on the "
        "clean models of the task (the natural label profile's gap ratios, profiles.relative_gaps; "
        "benchmarks/results/profiles.md; docs/detection.md). The form was chosen after every round was scanned: "
        "both ways is the form the profile's model implies (a class's lean as a factor of the model's median gap); "
        "on the tune columns of the seventeen rounds then scanned it was one scan behind reading the large gaps down "
        "only (233 against 234 of 278), within the noise, and ahead of the rest; the eighteenth round "
        "(zoo_make_recipes.EIGHTEENTH) was planned after the choice, as its test. MNIST and CIFAR-10 only (GTSRB has "
        "no built-in profile).\n\n",
        gap_profile_table(scans, cache),
        "## The favour criterion's settings (required families, default threshold)\n",
        "The smallest labels under FAVOUR_RATIO of the median, in a block whose norm p is under 10^-FAVOUR_GATE, "
        "flagged when the model favours them on clean images beyond what their norm predicts (docs/detection.md). "
        "Chosen on the tune columns; rows without clean gaps are decided without it.\n\n",
        settings_sweep(
            scans,
            cache,
            [("FAVOUR_RATIO", r) for r in FAVOUR_RATIO_SWEEP] + [("FAVOUR_GATE", g) for g in FAVOUR_GATE_SWEEP],
            ("without the favour criterion", lambda: patch(f"{__name__}.GAPS", False)),
        ),
        "## The companion criterion's settings (required families, default threshold)\n",
        "On a model already flagged, the next smallest labels under COMPANION_RATIO of the median join the "
        "flagged ones when they lie nearer to them (in log norm) than to the label above, the gap below counted as "
        "at most a factor COMPANION_GAP (docs/detection.md). The ratio was chosen on the tune columns of six "
        "rounds, the gap on those of eight; flags whose symmetric check is not cached stay flagged.\n\n",
        settings_sweep(
            scans,
            cache,
            [("COMPANION_RATIO", r) for r in COMPANION_RATIO_SWEEP]
            + [("COMPANION_GAP", g) for g in COMPANION_GAP_SWEEP],
            ("without the companion criterion", without_companions),
        ),
        "## The size block's reach and the step-down's ceiling (required families, default threshold)\n",
        "BLOCK_REACH: how far above a quarter of the median the size criterion's block may reach (its smallest "
        "label under a quarter); STEP_DOWN_RATIO: the share of the median over which the step-down flags nothing "
        "(docs/detection.md). Chosen on the tune columns of the first seven rounds; flags whose symmetric check "
        "is not cached stay flagged.\n\n",
        settings_sweep(
            scans,
            cache,
            [("BLOCK_REACH", r) for r in BLOCK_REACH_SWEEP] + [("STEP_DOWN_RATIO", r) for r in STEP_DOWN_SWEEP],
            ("as before the eighth round", earlier_size_rules),
        ),
        "## Symmetric-check sweep (required families, default threshold)\n",
        "Every flagged label's check is cached with its two norms, so each ratio is applied to the same checks. "
        "The default was chosen on the tune columns.\n\n",
        pair_sweep(scans, cache),
        "## The symmetric check's mutual ratio (required families, default threshold)\n",
        "A flagged label is cleared only when its most confused label's universal trigger is at most this many "
        "times its own (and the two ways between them are alike). Chosen on the tune columns after the test "
        "half had been seen (docs/detection.md).\n\n",
        mutual_sweep(scans, cache),
        "## The symmetric check when the source is flagged too (required families, default threshold)\n",
        "A pair of flagged labels is cleared only when the model confuses the two on at least this share of clean "
        "images (pairs.SUSPECT_CONFUSION; docs/detection.md says why). Chosen on the tune columns.\n\n",
        suspect_sweep(scans, cache),
        "## Smallest labels first, and pairs of suspects judged from both sides (required families)\n",
        "The tenth round's two changes undone one at a time (docs/detection.md): the favour criterion flagging a "
        "label above a smaller one left unflagged, and a suspect cleared by its own check beside a flagged source "
        "whatever the source's check says. Chosen on the tune columns of the first nine rounds.\n\n",
        rules_table(scans, cache),
        "## Scan time\n",
        "Seconds per scan, default settings, one torch thread on a 2-core machine shared with the zoo's other "
        "jobs (so an upper bound of a scan on two free cores).\n\n",
        timing(rows),
    ]
    (RESULTS / "zoo.md").write_text("\n".join(t for t in text if t))
    print((RESULTS / "zoo.md").read_text())


if __name__ == "__main__":
    main()
