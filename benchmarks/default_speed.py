"""The default scan's time against the previous default's, side by side in one run on the zoo's models.

The detection issue's baseline decided by the paper's MAD index (``ScanConfig(decision="paper")``, which never
searches blends); the previous default decided by the k-aware-ratio decision on the mask search alone
(``ScanConfig(blend=False)``); the default (``ScanConfig()``) adds the blend search, one more search of every label
with one opacity over the whole image (blends.py). The last two run the symmetric check for every label they flag.
Each model is scanned with every configuration, alternating, with the same seeds, in one process on ``--threads``
torch threads; the rows give each scan's seconds, the flagged labels and how many symmetric checks ran. Every
configuration's scan includes the clean-gap pass of the favour criterion (``favour.clean_gaps`` of one forward pass
over the clean images, which the scan shares with its accuracy check), timed alone beside each scan.

    python benchmarks/default_speed.py [--models mnist-clean-01,...] [--seeds 0,1] [--threads 2]

Models come from the detection zoo (benchmarks/zoo.py, trained under runs/zoo/models); the default list holds the
paper's MNIST network, infected and clean, and a clean GTSRB batch-norm CNN (the paper's GTSRB network takes the
zoo about half an hour to train). Writes benchmarks/results/default_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import zoo
from common import machine, markdown_table, write_results

from neuralcleanse import NeuralCleanse, ScanConfig, load_model
from neuralcleanse.favour import clean_gaps
from neuralcleanse.metrics import outputs_of

MODELS = ("mnist-clean-01", "mnist-trojan-01", "mnist-patch-00", "gtsrb-clean-02")
CONFIGS = {
    "paper": ScanConfig(decision="paper"),
    "previous default (mask search only)": ScanConfig(blend=False),
    "default (mask and blend searches)": ScanConfig(),
}


def scan_row(name: str, label: str, config: ScanConfig, seed: int) -> dict[str, Any]:
    recipe = next(r for r in zoo.recipes() if r["name"] == name)
    model = load_model(zoo.model_path(name)).model
    clean = zoo.scan_images(recipe, seed)
    start = time.perf_counter()
    clean_gaps(outputs_of(model, clean.images))
    gap_seconds = time.perf_counter() - start
    start = time.perf_counter()
    report = NeuralCleanse(model, config).scan(clean.images, clean.labels, seed=seed)
    return {
        "model": name,
        "dataset": recipe["dataset"],
        "config": label,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "gap_seconds": gap_seconds,
        "flagged": report.flagged,
        "pair_checks": len(report.pairs),
        "compute_dtype": report.config["compute_dtype"],
    }


def render(rows: list[dict[str, Any]], threads: int) -> str:
    table = markdown_table(
        ["model", "seed", "configuration", "seconds", "clean-gap pass s", "flagged", "symmetric checks", "arithmetic"],
        [[r["model"], r["seed"], r["config"], r["seconds"], r.get("gap_seconds", "—"), r["flagged"], r["pair_checks"],
          r["compute_dtype"]]
         for r in rows],
    )  # fmt: skip
    names = list(CONFIGS)
    lines = [
        "| dataset | " + " | ".join(f"{c} median s" for c in names) + " | default / paper | default / previous |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for dataset in sorted({r["dataset"] for r in rows}):
        medians = [
            statistics.median(r["seconds"] for r in rows if r["dataset"] == dataset and r["config"] == c) for c in names
        ]
        cells = " | ".join(f"{m:.1f}" for m in medians)
        lines.append(f"| {dataset} | {cells} | {medians[-1] / medians[0]:.2f} | {medians[-1] / medians[-2]:.2f} |")
    m = machine()
    return (
        "# The default scan's time beside the previous defaults' (one run, same seeds)\n\n"
        "Fast mode; *paper*: the paper's decision on the mask search; *previous default*: the k-aware-ratio decision "
        "on the mask search; *default*: that, then the blend search (one more search of every label, one opacity "
        "over the whole image). The last two run the symmetric check of each flagged label; every scan includes the "
        f"clean-gap pass (timed alone in its own column). {threads} torch threads.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + table
        + f"\nMachine: {m['processor']}, {m['torch_threads']} torch threads, torch {m['torch']}.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        if not zoo.is_trained(name):
            raise SystemExit(f"{name} is not trained: run `python benchmarks/zoo.py train --only {name}`")
        for seed in (int(s) for s in args.seeds.split(",")):
            for label, config in CONFIGS.items():
                rows.append(scan_row(name, label, config, seed))
                print(rows[-1], flush=True)
    write_results("default_speed", [{**r, "machine": machine()} for r in rows], render(rows, args.threads))


if __name__ == "__main__":
    main()
