"""Decisions fitted to the tune half from the norms alone, against the default: one cut and a learned rule.

In nearly every infected zoo scan the targets are the smallest labels (zoo.md, "Are the targets the smallest
labels?"); what a decision from the norms must choose is how many of the smallest to flag, none on a clean model.
The default chooses with hand-built criteria (neuralcleanse.decision). This script asks whether a rule fitted to
the tune half chooses better, on the zoo's required families (default arithmetic; flagged labels then judged by
the cached symmetric checks, as benchmarks/zoo_report.py does; a flag without a cached check stays flagged):

- ``one cut``: every one of the three smallest labels under one share of the median norm, the share chosen on the
  tune half.
- ``learned``: a logistic rule per position among the three smallest labels (from the smallest up, flagged while
  the rule says target): the label's log ratio to the median, its log gaps to the labels above and below (below
  counted as at most one halving, as the companion criterion does), and, in the larger feature sets, its standing
  against the labels above the three smallest (their median and spread), the size criterion's block surprise and
  the clean gap against those labels'. The feature set and the L2 weight are chosen by five-fold cross-validation
  over the tune half's models; the rule fitted to the whole tune half is then applied to the test half once.

Settings are chosen on the number of right scans (infected scans flagging exactly their targets, clean scans
flagging nothing). With ``--pairs``, the symmetric checks that every rule tried needs and the cache lacks are run
first, on the models on disk, and cached (benchmarks/results/zoo_pairs.json). Writes
benchmarks/results/fitted_rules.{json,md}.

    python benchmarks/fitted_rules.py [--pairs]
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Callable
from typing import Any

import torch
import zoo_report
from common import markdown_table, write_results

from neuralcleanse import decision
from neuralcleanse.outliers import CONSISTENCY

Rule = Callable[[dict[str, Any]], list[int]]  # a scan -> the labels flagged, before the symmetric check

BLOCK = decision.MAX_BLOCK  # positions a rule may flag: the smallest three labels, as the default's blocks
CUTS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
NORM_FEATURES = ("ratio", "above", "below", "z", "spread", "block")
FEATURE_SETS = {
    "ratio and neighbours": ("ratio", "above", "below"),
    "norms": NORM_FEATURES,
    "norms and clean gap": (*NORM_FEATURES, "clean gap"),
}
L2_WEIGHTS = (0.0, 0.01, 0.1)
FOLDS = 5
SURPRISE_CAP = 10.0  # the block surprise beyond which a label is plainly small; keeps one scan from dominating


def features(scan: dict[str, Any], j: int) -> tuple[dict[str, float], int]:
    """The j-th smallest label's features (j from 1) in the scan, and the label itself."""
    ascending, order = torch.tensor(scan["norms"], dtype=torch.float64).clamp_min(1e-6).log().sort()
    x = float(ascending[j - 1])
    upper = ascending[BLOCK:]
    centre = float(upper.quantile(0.5))
    spread = math.hypot(CONSISTENCY * float((upper - centre).abs().quantile(0.5)), decision.SEARCH_NOISE)
    cap = math.log(decision.COMPANION_GAP)  # the gap below counts as at most one halving, as for the companions
    below = min(x - float(ascending[j - 2]), cap) if j > 1 else cap
    return {
        "ratio": x - float(ascending.quantile(0.5)),
        "above": float(ascending[j]) - x,
        "below": below,
        "z": (x - centre) / spread,
        "spread": spread,
        "block": min(decision._block_surprise(ascending, j), SURPRISE_CAP),
        "clean gap": clean_gap(scan, int(order[j - 1]), order[BLOCK:].tolist()),
    }, int(order[j - 1])


def clean_gap(scan: dict[str, Any], label: int, upper: list[int]) -> float:
    """The label's log clean gap (favour.clean_gaps) less the median of the labels above the three smallest; 0
    where unknown."""
    gaps = scan.get("gaps") or [None] * len(scan["norms"])
    known = [math.log(max(gaps[i], 1e-6)) for i in upper if gaps[i] is not None]
    if gaps[label] is None or not known:
        return 0.0
    return math.log(max(gaps[label], 1e-6)) - float(torch.tensor(known).median())


def cut_rule(share: float) -> Rule:
    """Flag each of the three smallest labels whose norm is under ``share`` of the median norm."""

    def rule(scan: dict[str, Any]) -> list[int]:
        norms = scan["norms"]
        median = torch.tensor(norms).quantile(0.5)
        smallest = torch.tensor(norms).argsort()[:BLOCK].tolist()
        return [label for label in smallest if norms[label] < share * float(median)]

    return rule


def fit_rule(scans: list[dict[str, Any]], names: tuple[str, ...], l2: float) -> tuple[Rule, dict[str, float]]:
    """A logistic rule over ``names`` fitted to every position of ``scans`` (target or not), features standardised,
    with an L2 penalty of ``l2`` on the weights; and its weights per raw feature and bias."""
    rows, targets = [], []
    for scan in scans:
        for j in range(1, BLOCK + 1):
            values, label = features(scan, j)
            rows.append([values[n] for n in names])
            targets.append(float(label in scan["targets"]))
    x, y = torch.tensor(rows, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-9)
    xs = (x - mean) / std
    w = torch.zeros(len(names), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=200)

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w + b, y) + l2 * (w * w).sum()
        value.backward()
        return value

    optimiser.step(loss)
    weights, bias = (w / std).detach(), float(b.detach() - ((w / std) * mean).sum().detach())

    def rule(scan: dict[str, Any]) -> list[int]:
        flagged = []
        for j in range(1, BLOCK + 1):
            values, label = features(scan, j)
            if float(torch.tensor([values[n] for n in names], dtype=torch.float64) @ weights) + bias <= 0:
                break
            flagged.append(label)
        return flagged

    return rule, {**dict(zip(names, weights.tolist(), strict=True)), "bias": bias}


def judge(scans: list[dict[str, Any]], rule: Rule, cache: dict[str, Any]) -> dict[str, Any]:
    """The rule's right scans among ``scans``, after the symmetric checks, overall and per dataset."""
    exact: dict[str, list[bool]] = {}
    clean_flagged, unchecked = [], 0
    for scan in scans:
        flagged, complete = zoo_report.checked(scan, cache, rule(scan))
        unchecked += not complete
        if scan["infected"]:
            exact.setdefault(zoo_report.task(scan), []).append(flagged == scan["targets"])
        else:
            clean_flagged.append(bool(flagged))
    hits = [hit for values in exact.values() for hit in values]
    return {
        "right": sum(hits) + clean_flagged.count(False),
        "exact": f"{sum(hits)}/{len(hits)}",
        "clean flagged": f"{sum(clean_flagged)}/{len(clean_flagged)}",
        "unchecked scans": unchecked,
        "exact by dataset": {name: f"{sum(v)}/{len(v)}" for name, v in sorted(exact.items())},
    }


def folds(scans: list[dict[str, Any]]) -> list[set[str]]:
    """The scans' models dealt into FOLDS folds, shuffled by a fixed seed (both scans of a model in one fold)."""
    models = sorted({s["model"] for s in scans})
    random.Random(0).shuffle(models)
    return [set(models[fold::FOLDS]) for fold in range(FOLDS)]


def cross_validated(scans: list[dict[str, Any]], names: tuple[str, ...], l2: float, cache: dict[str, Any]) -> int:
    """Right scans of the tune half when each fold's models are judged by the rule fitted to the other folds."""
    right = 0
    for held in folds(scans):
        rule, _ = fit_rule([s for s in scans if s["model"] not in held], names, l2)
        right += judge([s for s in scans if s["model"] in held], rule, cache)["right"]
    return right


def rules_tried(tune: list[dict[str, Any]]) -> list[Rule]:
    """Every rule the script tries: each cut, and each learned rule fitted to the whole tune half or to four of its
    five folds."""
    tried = [cut_rule(share) for share in CUTS]
    for names in FEATURE_SETS.values():
        for l2 in L2_WEIGHTS:
            tried.append(fit_rule(tune, names, l2)[0])
            tried += [fit_rule([s for s in tune if s["model"] not in held], names, l2)[0] for held in folds(tune)]
    return tried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", action="store_true", help="run the symmetric checks the rules need first")
    args = parser.parse_args()
    scans, rows = zoo_report.default_scans()
    cache = json.loads(zoo_report.PAIRS_FILE.read_text())
    zoo_report.cache_scan_pairs(scans, cache)
    required = [s for s in scans if rows[(s["model"], s["seed"])]["required"]]
    halves = {half: [s for s in required if s["half"] == half] for half in ("tune", "test")}
    tune = halves["tune"]
    if args.pairs:
        torch.set_num_threads(1)
        tried = rules_tried(tune)
        zoo_report.run_pairs(required, cache, lambda scan: [label for rule in tried for label in rule(scan)])

    results: list[dict[str, Any]] = []
    threshold = decision.DEFAULT_THRESHOLDS[zoo_report.DECISION]

    def default(scan: dict[str, Any]) -> list[int]:
        return zoo_report.scan_decision(scan, zoo_report.DECISION, threshold).flagged

    for half, group in halves.items():
        results.append({"decision": "default", "setting": threshold, "half": half, **judge(group, default, cache)})
    share = max(CUTS, key=lambda c: judge(tune, cut_rule(c), cache)["right"])
    for half, group in halves.items():
        results.append({"decision": "one cut", "setting": share, "half": half, **judge(group, cut_rule(share), cache)})
    trials = {
        (name, l2): cross_validated(tune, FEATURE_SETS[name], l2, cache) for name in FEATURE_SETS for l2 in L2_WEIGHTS
    }
    (name, l2), _ = max(trials.items(), key=lambda item: item[1])
    rule, weights = fit_rule(tune, FEATURE_SETS[name], l2)
    cv = [{"features": n, "l2": w, "right": right, "of": len(tune)} for (n, w), right in trials.items()]
    for half, group in halves.items():
        learned = {"decision": "learned", "setting": f"{name}, L2 {l2}", "half": half, **judge(group, rule, cache)}
        results.append({**learned, "weights": weights, "cross-validation": cv})
    write_results("fitted_rules", results, report(results))


def report(results: list[dict[str, Any]]) -> str:
    datasets = sorted({d for r in results for d in r.get("exact by dataset", {})})
    table = markdown_table(
        [
            "decision",
            "setting",
            "half",
            "exact",
            *datasets,
            "clean flagged",
            "right scans",
            "scans with an unchecked flag",
        ],
        [
            [
                r["decision"],
                r["setting"],
                r["half"],
                r["exact"],
                *(r["exact by dataset"].get(d) for d in datasets),
                r.get("clean flagged"),
                r.get("right"),
                r.get("unchecked scans"),
            ]
            for r in results
        ],
    )
    trials = results[-1]["cross-validation"]
    cv = markdown_table(
        ["features", "L2 weight", "right scans (cross-validated)"],
        [[t["features"], t["l2"], f"{t['right']}/{t['of']}"] for t in trials],
    )
    return (
        "# Decisions fitted to the tune half (benchmarks/fitted_rules.py)\n\n"
        "The zoo's required families, default arithmetic, flagged labels judged by the cached symmetric checks. "
        "*one cut*: the three smallest labels under a share of the median, the share chosen "
        "on the tune half. *learned*: a logistic rule per position among the three smallest, chosen by five-fold "
        "cross-validation on the tune half, fitted to it and applied once to the test half. *right scans*: infected "
        "scans exact plus clean scans unflagged.\n\n"
        f"{table}\n## Cross-validation of the learned rule (tune half)\n\n{cv}"
    )


if __name__ == "__main__":
    main()
