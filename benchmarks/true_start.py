"""Does the mask search miss small triggers, or are the missed targets' triggers as large as it says? Searches
started from each target's true trigger, beside the default's searches from random starts.

    python benchmarks/true_start.py [--only NAME,...] [--threads 1]
    python benchmarks/true_start.py report

For every model of the zoo on disk (``zoo.py train``) whose attack stamps a patch or pattern (the patch, pixel and
random-pattern families, two and three targets; required families only), the default scan's mask search (seed 0,
the zoo scan's clean images; blend search and stimulation off, which run after it and leave its norms as they
are), then one search per target started from the target's true trigger (the same settings; the mask and pattern
pulled into [0.02, 0.98] so that no pixel starts in tanh's flat ends) and kept only if it reaches the attack-success
threshold. Per target: its norm over the median label's as the scan found it and from the true trigger, the true
trigger's L1 and attack success, and whether the default scan of the model as a user runs it (rescan.json, seed 0)
flags it. No setting of the scan is chosen here: the table says where the misses come from. Writes
benchmarks/results/true_start.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
import zoo
from common import machine, markdown_table, read_results, replace_rows, rewrite_report

from neuralcleanse import NeuralCleanse, ScanConfig, load_model, parse_trigger
from neuralcleanse.metrics import attack_success_rate
from neuralcleanse.reverse import reverse_engineer

RESULTS_FILE = "true_start"
FAMILIES = ("patch", "pixel", "random-pattern", "two-targets", "three-targets")
EDGE = 0.02  # how far the true trigger's values are pulled in from 0 and 1
SEED = 0


def models() -> list[str]:
    return [
        r["name"]
        for r in zoo.recipes()
        if r["family"] in FAMILIES and r["required"] and "digits" not in r and zoo.is_trained(r["name"])
    ]


def default_flagged() -> dict[str, list[int]]:
    """rescan.json's verdicts of seed 0: the default scan as it ships, by model."""
    return {r["model"]: r["flagged"] for r in read_results("rescan") if r["seed"] == SEED}


def rows_of(name: str, flagged: list[int] | None) -> list[dict[str, Any]]:
    recipe = zoo.recipe(name)
    model = load_model(zoo.model_path(name)).model
    clean = zoo.scan_images(recipe, SEED)
    config = ScanConfig(min_clean_accuracy=None, blend=False, stimulation=False)
    start = time.perf_counter()
    report = NeuralCleanse(model, config).scan(clean.images, clean.labels, seed=SEED)
    norms = [r.mask_l1 for r in report.labels]
    median = statistics.median(norms)
    probabilities = report.outputs_probabilities
    targets = zoo.scan_targets(recipe, len(norms))
    rows = []
    for attack in recipe["attacks"]:
        trigger, target = parse_trigger(attack["trigger"], clean.image_shape), attack["target"]
        starts = (trigger.mask.clamp(EDGE, 1 - EDGE)[None], trigger.pattern.clamp(EDGE, 1 - EDGE)[None])
        generator = torch.Generator().manual_seed(SEED)
        found = reverse_engineer(
            model, clean.images, [target], config.reverse, generator, probabilities, starts=starts
        )  # fmt: skip
        from_true = float(found.norms[0]) if bool(found.found[0]) else None
        rows.append(
            {
                "model": name,
                "half": zoo.half(recipe),
                "arch": recipe["arch"],
                "family": recipe["family"],
                "trigger": attack["trigger"],
                "target": target,
                "targets": targets,
                "median": median,
                "scan_norm": norms[target],
                "true_start_norm": from_true,
                "true_l1": trigger.l1,
                "true_attack_success": attack_success_rate(model, clean.images, clean.labels, trigger, target),
                "natural_smallest": min(n for i, n in enumerate(norms) if i not in targets),
                "flagged_by_default": None if flagged is None else target in flagged,
                "seconds": time.perf_counter() - start,
                "machine": machine(),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def ratio(value: float | None, row: dict[str, Any]) -> str:
        return "—" if value is None else f"{value / row['median']:.2f}"

    body = [
        [
            r["model"],
            r["half"],
            r["arch"],
            r["target"],
            r["trigger"].split(",seed")[0],
            f"{r['true_l1']:.0f}",
            f"{r['true_attack_success']:.2f}",
            ratio(r["scan_norm"], r),
            ratio(r["true_start_norm"], r),
            ratio(r["natural_smallest"], r),
            {True: "yes", False: "no", None: "—"}[r["flagged_by_default"]],
        ]
        for r in rows
    ]
    header = [
        "model",
        "half",
        "arch",
        "target",
        "trigger",
        "true L1",
        "true attack success",
        "scan / median",
        "from true trigger / median",
        "smallest natural / median",
        "flagged by default",
    ]
    summary = []
    for label, group in (
        ("flagged by default", [r for r in rows if r["flagged_by_default"]]),
        ("left by default", [r for r in rows if r["flagged_by_default"] is False]),
    ):
        known = [r for r in group if r["true_start_norm"] is not None]
        smaller = [r for r in known if r["true_start_norm"] < 0.75 * r["scan_norm"]]
        under = [r for r in known if min(r["true_start_norm"], r["scan_norm"]) < 0.5 * r["natural_smallest"]]
        gains = [r["true_start_norm"] / r["scan_norm"] for r in known]
        summary.append(
            [
                label,
                len(group),
                len(known),
                len(smaller),
                "—" if not gains else f"{statistics.median(gains):.2f}",
                len(under),
            ]
        )
    return (
        "# Searches from the true trigger beside the default's (benchmarks/true_start.py)\n\n"
        "Each target of the zoo's patch, pixel, random-pattern and several-target models on disk: its norm as the "
        "default mask search found it (seed 0; two searches from random starts) and from one search started at the "
        "true trigger, both over the median label's norm; the smallest natural label's beside them; whether the "
        "default scan (rescan.json, seed 0) flags the target. A search from the true trigger stops as the others "
        "do and is no proof of the smallest trigger: a smaller norm from it shows one the default's searches "
        "missed.\n\n"
        + markdown_table(
            [
                "targets",
                "count",
                "true-start search valid",
                "true start under 0.75 of the scan's norm",
                "median true start / scan",
                "best of both under half the smallest natural",
            ],
            summary,
        )
        + "\n"
        + markdown_table(header, body)
    )


def main() -> None:
    if rewrite_report(RESULTS_FILE, table):
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated model names (default: every saved model of FAMILIES)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    order = models()
    names = args.only.split(",") if args.only else order
    verdicts = default_flagged()
    for name in names:
        if not args.only and any(r["model"] == name for r in read_results(RESULTS_FILE)):
            continue  # measured by an earlier run: --only measures it again
        new = rows_of(name, verdicts.get(name))
        for r in new:
            print(json.dumps({k: r[k] for k in ("model", "target", "scan_norm", "true_start_norm", "median")}))
        replace_rows(
            RESULTS_FILE,
            new,
            lambda r: r["model"],
            lambda r: (order.index(r["model"]) if r["model"] in order else len(order), r["target"]),
            table,
        )


if __name__ == "__main__":
    main()
