"""How compact the reversed masks of targets and of natural labels are, on the zoo scans that recorded it.

Reads benchmarks/results/zoo_scans.json (rows with ``"compactness"``, the share of each label's mask in its
densest window a quarter of the image wide: neuralcleanse.compactness) and writes
benchmarks/results/compactness.{json,md}:

- per dataset, the compactness of targets and of natural labels (every natural label, and those whose norm is
  under SMALL of the median, the ones a norm criterion could mistake for targets);
- the targets the default verdict (as zoo_report.py decides it) left unflagged, with their norm's share of the
  median and their compactness;
- per dataset, the same measured against each model's own natural labels: a label's compactness less the largest
  among the labels at or above the median norm (its *excess*), for the unflagged labels under BASE_RATIO of the
  median, targets and natural labels apart;
- a trial rule beside the verdict: also flag an unflagged label under RATIO of the median norm whose compactness
  reaches LEVEL. LEVEL and RATIO are chosen on the tune half (most exact scans, then fewest clean ones flagged)
  and reported on the test half. The rule is a measurement, not the library's verdict.

Usage: python benchmarks/compactness.py
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from typing import Any

import zoo
import zoo_report
from common import markdown_table, read_results, write_results

from neuralcleanse.decision import DEFAULT_THRESHOLDS

SMALL = 0.7  # natural labels under this share of the median norm: the ones a norm criterion weighs
LEVELS = (0.6, 0.7, 0.8, 0.9, 0.95)  # compactness a trial-rule label must reach
RATIOS = (0.5, 0.6, 0.7)  # share of the median norm a trial-rule label must lie under
BASE_RATIO = 0.6  # unflagged labels under this share of the median norm are measured against their model's baseline
EXCESS = 0.2  # an excess over the baseline counted as standing out


def labelled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per label of every scan: its norm's share of the median, its compactness and its excess over the
    largest compactness among the labels at or above the median norm, target or not."""
    out = []
    for r in rows:
        median = statistics.median(r["norms"])
        baseline = max(c for n, c in zip(r["norms"], r["compactness"], strict=True) if n >= median)
        for label, (norm, share) in enumerate(zip(r["norms"], r["compactness"], strict=True)):
            out.append(
                {
                    "model": r["model"],
                    "seed": r["seed"],
                    "dataset": r["dataset"],
                    "half": r["half"],
                    "label": label,
                    "ratio": norm / median,
                    "compactness": share,
                    "excess": share - baseline,
                    "target": label in r["targets"],
                    "flagged": label in r["flagged"],
                }
            )
    return out


def quantiles(values: list[float]) -> list[Any]:
    if not values:
        return [0, None, None, None, None]
    q = sorted(values)
    return [len(q), q[0], q[len(q) // 10], statistics.median(q), q[-1]]


def trial(rows: list[dict[str, Any]], level: float, ratio: float) -> list[bool]:
    """Per scan, whether the verdict plus the trial rule flags exactly its targets (nothing, for clean models)."""
    exact = []
    for r in rows:
        median = statistics.median(r["norms"])
        added = {
            label
            for label, (norm, share) in enumerate(zip(r["norms"], r["compactness"], strict=True))
            if norm < ratio * median and share >= level
        }
        exact.append(sorted(set(r["flagged"]) | added) == sorted(r["targets"]))
    return exact


def score(rows: list[dict[str, Any]], exact: list[bool]) -> tuple[str, str]:
    infected = [e for r, e in zip(rows, exact, strict=True) if r["infected"]]
    clean = [not e for r, e in zip(rows, exact, strict=True) if not r["infected"]]
    return f"{sum(infected)}/{len(infected)}", f"{sum(clean)}/{len(clean)}"


def main() -> None:
    scans = [
        r
        for r in read_results(zoo.SCANS_FILE)
        if r["required"] and "compactness" in r and "norms" in r and zoo.row_variant(r) == zoo.variant("auto", 1)
    ]
    # the verdict as zoo_report.py decides it: the current default, with the cached symmetric checks
    cache = json.loads(zoo_report.PAIRS_FILE.read_text()) if zoo_report.PAIRS_FILE.exists() else {}
    decided = zoo_report.zoo_rows(scans, cache, DEFAULT_THRESHOLDS[zoo_report.DECISION])
    rows = [{**r, "flagged": d["flagged"]} for r, d in zip(scans, decided, strict=True)]
    labels = labelled(rows)
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in labels:
        by_dataset[entry["dataset"]].append(entry)
    body = []
    for name, entries in sorted(by_dataset.items()):
        groups = {
            "targets": [e["compactness"] for e in entries if e["target"]],
            "targets left unflagged": [e["compactness"] for e in entries if e["target"] and not e["flagged"]],
            "natural labels": [e["compactness"] for e in entries if not e["target"]],
            f"natural labels under {SMALL:g} of the median": [
                e["compactness"] for e in entries if not e["target"] and e["ratio"] < SMALL
            ],
        }
        body += [[name, group, *quantiles(values)] for group, values in groups.items()]
    baseline = []
    for name, entries in sorted(by_dataset.items()):
        near = [e for e in entries if not e["flagged"] and e["ratio"] < BASE_RATIO]
        for group, excess in (
            ("targets", [e["excess"] for e in near if e["target"]]),
            ("natural labels", [e["excess"] for e in near if not e["target"]]),
        ):
            baseline.append([name, group, *quantiles(excess), sum(x > EXCESS for x in excess)])
    missed = [
        [e["model"], e["seed"], e["label"], e["ratio"], e["compactness"]]
        for e in labels
        if e["target"] and not e["flagged"]
    ]
    halves = {h: [r for r in rows if r["half"] == h] for h in ("tune", "test")}
    sweep = []
    for level in LEVELS:
        for ratio in RATIOS:
            sweep.append(
                [
                    level,
                    ratio,
                    *score(halves["tune"], trial(halves["tune"], level, ratio)),
                    *score(halves["test"], trial(halves["test"], level, ratio)),
                ]
            )
    verdict = [
        "verdict alone",
        "—",
        *score(halves["tune"], [sorted(r["flagged"]) == sorted(r["targets"]) for r in halves["tune"]]),
        *score(halves["test"], [sorted(r["flagged"]) == sorted(r["targets"]) for r in halves["test"]]),
    ]
    scanned = sorted({(r["model"], r["seed"]) for r in rows})
    table = (
        "# Compactness of reversed masks (benchmarks/compactness.py)\n\n"
        f"{len(scanned)} zoo scans of required families that recorded the compactness of every label's mask (the "
        "share of its L1 mass in its densest window a quarter of the image wide), default arithmetic.\n\n"
        "## Per dataset\n\n"
        + markdown_table(["dataset", "labels", "count", "min", "10th percentile", "median", "max"], body)
        + "\n## Against the model's own natural labels\n\n"
        f"Unflagged labels under {BASE_RATIO:g} of the median norm: compactness less the largest among the labels at "
        "or above the median norm of the same scan.\n\n"
        + markdown_table(
            ["dataset", "labels", "count", "min", "10th percentile", "median", "max", f"over {EXCESS:g}"], baseline
        )
        + "\n## Targets the verdict left unflagged\n\n"
        + markdown_table(["model", "seed", "label", "norm / median", "compactness"], missed)
        + "\n## A trial rule beside the verdict\n\n"
        "Also flag an unflagged label under *ratio* of the median norm whose compactness reaches *level*. Exact: "
        "infected scans flagging exactly their targets; clean flagged: clean scans flagging anything.\n\n"
        + markdown_table(
            ["level", "ratio", "tune exact", "tune clean flagged", "test exact", "test clean flagged"],
            [verdict, *sweep],
        )
    )
    keys = ["level", "ratio", "tune exact", "tune clean flagged", "test exact", "test clean flagged"]
    write_results(
        "compactness",
        [{**dict(zip(keys, row, strict=True)), "scans": len(scanned)} for row in [verdict, *sweep]],
        table,
    )
    print(table)


if __name__ == "__main__":
    main()
