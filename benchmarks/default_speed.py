"""The default scan's time against the previous default's, side by side in one run on the zoo's models.

The detection issue's baseline decided by the paper's MAD index (``ScanConfig(decision="paper")``, which never
searches blends nor stimulates neurons); the previous default, the k-aware-ratio decision on the mask search and the
blend search, one more search of every label with one opacity over the whole image (blends.py;
``ScanConfig(stimulation=False)``); the default (``ScanConfig()``) adds neuron stimulation (stimulation.py). The last
two run the symmetric check for every label they flag.
Each model is scanned with every configuration, alternating, with the same seeds, in one process on ``--threads``
torch threads; the rows give each scan's seconds, the flagged labels and how many symmetric checks ran. Every
configuration's scan includes the clean-gap pass of the favour criterion (``favour.clean_gaps`` of one forward pass
over the clean images, which the scan shares with its accuracy check), timed alone beside each scan.
Each row also records the seconds of each phase of its scan (mask search, trigger success, symmetric checks, blend
search, stimulation), from the scan's progress events.

    python benchmarks/default_speed.py [--models mnist-clean-01,...] [--seeds 0,1] [--threads 2]

Models come from the detection zoo (benchmarks/zoo.py, trained under runs/zoo/models) or, for names it does not
have, from held_out.py's models under runs/models; the default list holds the paper's MNIST network, infected and
clean, and the paper's GTSRB network, clean (held_out.py's victim) and a clean GTSRB batch-norm CNN of the zoo
(TorchScript: never stimulated). Writes benchmarks/results/default_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections import defaultdict
from typing import Any

import held_out
import torch
import zoo
from common import machine, markdown_table, write_results

from neuralcleanse import NeuralCleanse, ScanConfig, load_model
from neuralcleanse.favour import clean_gaps
from neuralcleanse.metrics import outputs_of
from neuralcleanse.progress import ProgressEvent

#: The scan's progress phases, as the phase table groups them: time up to each progress event counts to its phase
#: (the accuracy check's pass, the searches' epochs, the trigger-success pass, the symmetric checks, the stimulation),
#: and what follows the last event (the steadiness redraws, the report) to "rest".
PHASES = {
    "check": "accuracy check",
    "reverse": "mask search",
    "restart": "mask search",
    "measure": "trigger success",
    "pairs": "symmetric checks",
    "blend": "blend search",
    "stimulate": "stimulation",
}
PHASE_COLUMNS = ("accuracy check", "mask search", "trigger success", "symmetric checks", "blend search", "stimulation",
                 "rest")  # fmt: skip
MODELS = ("mnist-clean-01", "mnist-trojan-01", "mnist-patch-00", "gtsrb-clean", "gtsrb-clean-02")
CONFIGS = {
    "paper": ScanConfig(decision="paper"),
    "previous default (mask and blend searches)": ScanConfig(stimulation=False),
    "default (and neuron stimulation)": ScanConfig(),
}


def _in_zoo(name: str) -> bool:
    return any(r["name"] == name for r in zoo.recipes())


def scan_row(name: str, label: str, config: ScanConfig, seed: int) -> dict[str, Any]:
    if _in_zoo(name):
        recipe = zoo.recipe(name)
        dataset, model, clean = recipe["dataset"], load_model(zoo.model_path(name)).model, zoo.scan_images(recipe, seed)
    else:
        loaded = load_model(held_out.model_dir(name))
        dataset, model = loaded.metadata["dataset"], loaded.model
        clean = held_out.scan_images(dataset)
    start = time.perf_counter()
    clean_gaps(outputs_of(model, clean.images))
    gap_seconds = time.perf_counter() - start
    phases: dict[str, float] = defaultdict(float)
    start = last = time.perf_counter()

    def clock(event: ProgressEvent) -> None:
        nonlocal last
        now = time.perf_counter()
        phases[PHASES.get(event.phase, event.phase)] += now - last
        last = now

    report = NeuralCleanse(model, config, progress=clock).scan(clean.images, clean.labels, seed=seed)
    phases["rest"] += time.perf_counter() - last
    return {
        "model": name,
        "dataset": dataset,
        "config": label,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "gap_seconds": gap_seconds,
        "flagged": report.flagged,
        "pair_checks": len(report.pairs),
        "compute_dtype": report.config["compute_dtype"],
        "stimulated": report.stimulation_layer is not None,
        "phases": dict(phases),
    }


@functools.cache
def _architecture(name: str) -> str:
    return zoo.recipe(name)["arch"] if _in_zoo(name) else load_model(held_out.model_dir(name)).metadata["architecture"]


def phase_table(rows: list[dict[str, Any]]) -> str:
    """Median seconds per phase, per dataset and network and configuration (rows that recorded their phases)."""
    timed = [r for r in rows if "phases" in r]
    body = []
    for where in sorted({(r["dataset"], _architecture(r["model"])) for r in timed}):
        for config in CONFIGS:
            same = [r for r in timed if (r["dataset"], _architecture(r["model"])) == where and r["config"] == config]
            if same:
                medians = [statistics.median(r["phases"].get(p, 0.0) for r in same) for p in PHASE_COLUMNS]
                body.append([", ".join(where), config, *(round(v, 1) for v in medians)])
    return markdown_table(["dataset, network", "configuration", *PHASE_COLUMNS], body)


def render(rows: list[dict[str, Any]], threads: int) -> str:
    table = markdown_table(
        ["model", "seed", "configuration", "seconds", "clean-gap pass s", "flagged", "symmetric checks", "arithmetic",
         "stimulated"],
        [[r["model"], r["seed"], r["config"], r["seconds"], r.get("gap_seconds", "—"), r["flagged"], r["pair_checks"],
          r["compute_dtype"], "yes" if r.get("stimulated") else "no"]
         for r in rows],
    )  # fmt: skip
    names = list(CONFIGS)
    lines = [
        "| dataset, network | "
        + " | ".join(f"{c} median s" for c in names)
        + " | default / paper | default / previous |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for dataset in sorted({r["dataset"] for r in rows}):
        for group in sorted({r["model"] for r in rows if r["dataset"] == dataset}, key=_architecture):
            same = [r for r in rows if r["dataset"] == dataset and _architecture(r["model"]) == _architecture(group)]
            if group != min((r["model"] for r in same), key=str):
                continue
            medians = [statistics.median(r["seconds"] for r in same if r["config"] == c) for c in names]
            cells = " | ".join(f"{m:.1f}" for m in medians)
            where = f"{dataset}, {_architecture(group)}"
            lines.append(f"| {where} | {cells} | {medians[-1] / medians[0]:.2f} | {medians[-1] / medians[-2]:.2f} |")
    m = machine()
    return (
        "# The default scan's time beside the previous defaults' (one run, same seeds)\n\n"
        "Fast mode; *paper*: the paper's decision on the mask search; *previous default*: the k-aware-ratio decision "
        "on the mask search, then the blend search (one more search of every label, one opacity over the whole "
        "image); *default*: that, then neuron stimulation (the zoo's batch-norm CNN, TorchScript, is not "
        "stimulated: column *stimulated*). The last two run the symmetric check of each flagged label; every scan "
        f"includes the clean-gap pass (timed alone in its own column). {threads} torch threads.\n\n"
        + "\n".join(lines)
        + "\n\n## Where the time goes\n\nMedian seconds per phase of the scan (time up to each progress event counted "
        "to its phase; *rest*: the steadiness redraws and the report, after the last event).\n\n"
        + phase_table(rows)
        + "\n"
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
        if _in_zoo(name) and not zoo.is_trained(name):
            raise SystemExit(f"{name} is not trained: run `python benchmarks/zoo.py train --only {name}`")
        for seed in (int(s) for s in args.seeds.split(",")):
            for label, config in CONFIGS.items():
                rows.append(scan_row(name, label, config, seed))
                print(rows[-1], flush=True)
    write_results("default_speed", [{**r, "machine": machine()} for r in rows], render(rows, args.threads))


if __name__ == "__main__":
    main()
