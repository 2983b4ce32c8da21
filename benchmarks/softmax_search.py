"""The trigger search on models that end in a softmax: their probabilities clamped at 1e-12 (the scan before) against
the clamp at the dtype's smallest normal number (the default), side by side on the same models and machine.

    python benchmarks/softmax_search.py [--only NAME,...] [--seeds 0,1] [--threads 1]
    python benchmarks/softmax_search.py report

A confident network sends the noisy images a search starts from (masks drawn uniform on [0, 1]) to one label and
leaves the others far below 1e-12; clamped there, the search for such a label has no gradient and may never start
(``neuralcleanse.preprocess.log_probabilities``). Every MNIST model of the zoo that ends in a softmax (trained first
when not on disk: a retraining of its recipe), scanned as zoo.py scans (the default ``ScanConfig``, MNIST's built-in
profile) once per clamp, on the zoo's clean sample of each seed. Per scan: the labels whose search never reached the
attack-success threshold, the labels flagged, whether exactly the targets, the time. ``report`` rewrites the tables
from the stored rows. Writes benchmarks/results/softmax_search.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

import torch
import zoo
from common import add_variant_scans, markdown_table, rewrite_report, share, side_by_side

from neuralcleanse import load_model
from neuralcleanse.preprocess import log_probabilities

RESULTS_FILE = "softmax_search"


def clamped_at_1e12(outputs: torch.Tensor, outputs_probabilities: bool) -> torch.Tensor:
    """``log_probabilities`` as the scan had it: probabilities clamped at 1e-12 (or the dtype's smallest normal
    number, where that is larger)."""
    if outputs_probabilities:
        return outputs.clamp_min(max(1e-12, torch.finfo(outputs.dtype).tiny)).log()
    return torch.log_softmax(outputs, dim=-1)


CLAMPS: dict[str, Callable[[torch.Tensor, bool], torch.Tensor]] = {
    "1e-12 (before)": clamped_at_1e12,
    "smallest normal (default)": log_probabilities,
}


def models() -> list[str]:
    """The zoo's MNIST recipes whose network ends in a softmax, in recipe order."""
    return [r["name"] for r in zoo.recipes() if r["dataset"] == "mnist" and r["arch"].endswith("-softmax")]


def scan_row(name: str, seed: int, clamp: str) -> dict[str, Any]:
    model = load_model(zoo.model_path(name)).model
    clean = zoo.scan_images(zoo.recipe(name), seed)
    with patch("neuralcleanse.reverse.log_probabilities", CLAMPS[clamp]):
        report, row = zoo.scan_as_zoo(name, model, clean, seed)
    return {
        **row,
        "clamp": clamp,
        "mask_flagged": sorted(report.mask_flagged),
        "unreached": [r.label for r in report.labels if not r.found],
    }


def table(rows: list[dict[str, Any]]) -> str:
    body = []
    for clamp, half in ((c, h) for c in CLAMPS for h in ("tune", "test", "both")):
        group = [r for r in rows if r["clamp"] == clamp and half in (r["half"], "both")]
        infected = [r for r in group if r["targets"] and r["required"]]
        clean = [r for r in group if not r["targets"]]
        body.append(
            [
                clamp,
                half,
                share(infected, lambda r: r["correct"]),
                share(infected, lambda r: bool(set(r["targets"]) & set(r["flagged"]))),
                share(clean, lambda r: bool(r["flagged"])),
                share(group, lambda r: bool(r["unreached"])),
                share(infected, lambda r: bool(set(r["targets"]) & set(r["unreached"]))),
                f"{sum(r['seconds'] for r in group) / 60:.1f}",
            ]
        )
    before, after = CLAMPS
    scans = []
    for (model, seed), both in side_by_side(rows, "clamp").items():
        if before in both and after in both:
            a, b = both[before], both[after]
            scans.append(
                [
                    model,
                    a["arch"],
                    a["half"],
                    seed,
                    a["targets"],
                    a["flagged"],
                    b["flagged"],
                    a["unreached"],
                    b["unreached"],
                ]
            )
    machines = sorted({json.dumps(r["machine"], sort_keys=True) for r in rows})
    return (
        "# The search on models that end in a softmax (benchmarks/softmax_search.py)\n\n"
        "The zoo's MNIST models whose network ends in a softmax (retrained from their recipes where not on disk), "
        "scanned with the default `ScanConfig` and MNIST's profile, their probabilities clamped at 1e-12 before the "
        "log (the scan before) and at the dtype's smallest normal number (the default), side by side on one machine "
        "and one thread. *Unreached*: labels whose search never reached the attack-success threshold (their norm is "
        "where the search gave up, not a trigger). Infected scans: required families.\n\n"
        + markdown_table(
            [
                "clamp",
                "half",
                "infected exact",
                "a target flagged",
                "clean flagged",
                "scans with a label unreached",
                "scans with a target unreached",
                "minutes",
            ],
            body,
        )
        + "\n## Every scan\n\n"
        + markdown_table(
            [
                "model",
                "arch",
                "half",
                "seed",
                "targets",
                "flagged, 1e-12",
                "flagged, default",
                "unreached, 1e-12",
                "unreached, default",
            ],
            scans,
        )
        + "\nMachines: "
        + "; ".join(machines)
        + "\n"
    )


def main() -> None:
    if rewrite_report(RESULTS_FILE, table):
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated model names (default: every MNIST softmax model)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.only.split(",") if args.only else models()
    for name in names:
        zoo.ensure(name)
    add_variant_scans(
        RESULTS_FILE,
        names,
        [int(s) for s in args.seeds.split(",")],
        "clamp",
        list(CLAMPS),
        scan_row,
        table,
        lambda row: json.dumps({k: row[k] for k in ("model", "seed", "clamp", "flagged", "unreached")}),
    )


if __name__ == "__main__":
    main()
