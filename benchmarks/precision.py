"""Does the fast scan's bfloat16 arithmetic change its verdicts? Write benchmarks/results/precision.json.

``--precision auto`` runs the network in bfloat16 on CPUs that compute it natively (see
``neuralcleanse._torch.compute_dtype``): about twice as fast. This scans the same models with the same seeds in
float32 and in bfloat16 and compares the anomaly indices and verdicts. Each row's ``transfer_gap`` asks whether
the kept triggers themselves depend on the precision: the largest difference, over the labels, between the share
of the scan images a label's kept trigger sends to that label in float32 and in bfloat16. A small gap with
different verdicts means the search's path differs (which local minimum each label ends in), not the triggers.

    python benchmarks/precision.py [--models mnist-badnets,...] [--seeds 0,1,2,3,4] [--redo]

Rows already in the results file (same model, seed and precision) are kept unless ``--redo``, so the script can
be rerun to add models or seeds. Models come from train_models.py and held_out.py (trained when missing).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from typing import Any

import held_out
import torch
from common import SUITE, TARGETS, ensure_model, machine, markdown_table, model_dir, read_results, write_results

from neuralcleanse._torch import autocast
from neuralcleanse.config import FAST, ScanConfig
from neuralcleanse.metrics import predict
from neuralcleanse.scan import NeuralCleanse, ScanReport
from neuralcleanse.store.model_dir import load_saved_model

PRECISIONS = ("float32", "bfloat16")
DEFAULT_MODELS = "mnist-badnets,mnist-clean,gtsrb-badnets,gtsrb-clean,cifar10-badnets,cifar10-trojan,cifar10-clean"


def model_targets(name: str) -> tuple[str, list[int]]:
    """``(dataset, true targets)`` of a benchmark model, trained first when missing."""
    suite = {n: (dataset, infected) for n, dataset, infected in SUITE}
    if name in suite:
        dataset, infected = suite[name]
        ensure_model(name, dataset, infected)
        return dataset, [TARGETS[dataset]] if infected else []
    held_out.ensure(name)
    dataset, _, pairs, _ = held_out.MODELS[name]
    return dataset, [target for _, target in pairs]


def transfer_gap(model: torch.nn.Module, images: torch.Tensor, report: ScanReport) -> float:
    """The largest difference, over the labels, of the share of ``images`` the label's kept trigger sends to the
    label in float32 and in bfloat16 (CPU autocast, as the scan computes)."""
    gaps = []
    for row in report.labels:
        trigger = report.trigger(row.label)
        shares = []
        for dtype in (torch.float32, torch.bfloat16):
            with autocast(torch.device("cpu"), dtype):
                shares.append(float((predict(model, images, trigger=trigger) == row.label).float().mean()))
        gaps.append(abs(shares[0] - shares[1]))
    return max(gaps)


def scan_row(name: str, seed: int, precision: str) -> dict[str, Any]:
    dataset, targets = model_targets(name)
    model = load_saved_model(model_dir(name)).model
    clean = held_out.scan_images(dataset)
    scanner = NeuralCleanse(model, ScanConfig(search=replace(FAST, precision=precision)))  # type: ignore[arg-type]
    report = scanner.scan(clean.images, clean.labels, seed=seed)
    return {
        "model": name,
        "dataset": dataset,
        "targets": targets,
        "seed": seed,
        "precision": precision,
        "compute_dtype": report.config["compute_dtype"],
        "anomaly_index": report.anomaly_index,
        "flagged": report.flagged,
        "correct": sorted(report.flagged) == sorted(targets),
        "median_l1": report.median_l1,
        "mad_l1": report.mad_l1,
        "norms": [r.mask_l1 for r in report.labels],
        "seconds": report.seconds,
        "transfer_gap": transfer_gap(model, clean.images, report),
    }


def render(rows: list[dict[str, Any]]) -> str:
    summary = []
    for name in dict.fromkeys(r["model"] for r in rows):
        cells: list[Any] = [name]
        for precision in PRECISIONS:
            mine = [r for r in rows if r["model"] == name and r["precision"] == precision]
            indices = [r["anomaly_index"] for r in mine]
            cells += [
                " / ".join(f"{v:.2f}" for v in indices),
                statistics.mean(indices) if indices else None,
                f"{sum(r['correct'] for r in mine)} of {len(mine)}",
            ]
        gaps = [r["transfer_gap"] for r in rows if r["model"] == name and "transfer_gap" in r]
        cells.append(max(gaps) if gaps else None)
        summary.append(cells)
    head = ["model"] + [f"{p} {what}" for p in PRECISIONS for what in ("indices (seeds)", "mean", "right")]
    head.append("largest transfer gap")
    text = "# The fast scan in float32 and in bfloat16 (same models, same seeds)\n\n" + markdown_table(head, summary)
    if rows:
        m = rows[0]["machine"]
        text += f"\nMachine: {m['processor']}, {m['torch_threads']} torch threads, CUDA: {m['cuda']}.\n"
    return text


def _order(name: str) -> int:
    names = DEFAULT_MODELS.split(",")
    return names.index(name) if name in names else len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--redo", action="store_true", help="rescan rows already in the results file")
    args = parser.parse_args()
    models, seeds = args.models.split(","), [int(s) for s in args.seeds.split(",")]
    rows = read_results("precision")
    if args.redo:
        rows = [r for r in rows if r["model"] not in models or r["seed"] not in seeds]
    done = {(r["model"], r["seed"], r["precision"]) for r in rows}
    for name in models:
        for seed in seeds:
            for precision in PRECISIONS:
                if (name, seed, precision) in done:
                    continue
                rows.append({**scan_row(name, seed, precision), "machine": machine()})
                print({k: v for k, v in rows[-1].items() if k not in ("machine", "norms")}, flush=True)
                rows.sort(key=lambda r: (_order(r["model"]), r["seed"], r["precision"]))
                write_results("precision", rows, render(rows))


if __name__ == "__main__":
    main()
