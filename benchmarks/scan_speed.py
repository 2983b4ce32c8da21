"""Scan the four BadNets-table models in fast and reference mode; write benchmarks/results/scan_speed.json.

Each (model, mode) row: seconds, anomaly index, flagged labels, image passes (stamped images forward and
backward) per label, and the IoU of the target's reversed mask with the true trigger. Fast mode also runs with
seeds 1 and 2 to show the verdict does not hang on one seed. Reference mode is the original code's schedule
one label at a time; on this 2-core CPU a full GTSRB reference scan takes hours, so ``--reference-labels N``
runs it on the target plus N-1 other labels and extrapolates its time (the row says so, and gives no verdict).

    python benchmarks/scan_speed.py [--models mnist-badnets,...] [--modes fast,reference] [--reference-labels N]
        [--reference-full gtsrb] [--seeds 0,1,2] [--reference-seeds 0]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from common import (
    MODEL_ORDER,
    SUITE,
    TARGETS,
    ensure_model,
    machine,
    markdown_table,
    model_dir,
    read_results,
    write_results,
)

from neuralcleanse.config import ScanConfig
from neuralcleanse.data import clean_sample, load_dataset
from neuralcleanse.metrics import true_trigger_overlap
from neuralcleanse.outliers import anomaly_index
from neuralcleanse.reverse import ReverseResult, reverse_engineer
from neuralcleanse.scan import NeuralCleanse
from neuralcleanse.store.model_dir import load_saved_model

SAMPLES = 1000  # clean images, as the original code's NB_SAMPLE


def scan_row(
    name: str,
    dataset: str,
    infected: bool,
    mode: str,
    seed: int,
    reference_labels: int | None,
    success_threshold: float | None = None,
    searches: int | None = None,
) -> dict[str, Any]:
    saved = load_saved_model(model_dir(name))
    data = load_dataset(dataset, "test")
    clean = clean_sample(data, max(1, SAMPLES // data.num_classes), seed=0)
    target = TARGETS[dataset]
    scan_config = ScanConfig(mode=mode, searches=searches, success_threshold=success_threshold)  # type: ignore[arg-type]
    config = scan_config.reverse
    row: dict[str, Any] = {
        "model": name,
        "dataset": dataset,
        "infected": infected,
        "mode": mode,
        "seed": seed,
        "num_labels": data.num_classes,
        "num_images": len(clean),
        "success_threshold": config.threshold,
        "searches": searches,
    }
    cpu_start = time.process_time()
    if mode == "reference" and reference_labels is not None and reference_labels < data.num_classes:
        # A subset of labels, the original schedule one at a time: time per label, extrapolated to all.
        others = [label for label in range(data.num_classes) if label != target][: reference_labels - 1]
        labels = [target, *others]
        start = time.perf_counter()
        parts: list[ReverseResult] = []
        g = torch.Generator().manual_seed(seed)
        for label in labels:
            parts.append(reverse_engineer(saved.model, clean.images, [label], config, g))
        seconds = time.perf_counter() - start
        result = ReverseResult.concat(parts)
        row.update(
            {
                "seconds": seconds / len(labels) * data.num_classes,
                "cpu_seconds": (time.process_time() - cpu_start) / len(labels) * data.num_classes,
                "seconds_measured": seconds,
                "labels_measured": labels,
                "extrapolated": True,
                "anomaly_index": None,
                "flagged": None,
                "mask_l1": dict(zip(labels, result.norms.tolist(), strict=True)),
                "image_passes_per_label": float(result.image_passes.float().mean()),
                "target_iou": true_trigger_overlap(result.masks[0], saved.triggers[0][0].mask) if infected else None,
            }
        )
        return row
    scanner = NeuralCleanse(saved.model, scan_config)
    report = scanner.scan(clean.images, clean.labels, seed=seed)
    d = report.to_dict()
    row.update(
        {
            "seconds": report.seconds,
            "cpu_seconds": time.process_time() - cpu_start,
            "extrapolated": False,
            "anomaly_index": report.anomaly_index,
            "flagged": report.flagged,
            "median_l1": report.median_l1,
            "target_l1": report.labels[target].mask_l1,
            # success of every kept trigger on the whole sample, measured after the search
            "attack_success_min": min(r.attack_success for r in report.labels),
            "attack_success_median": statistics.median(r.attack_success for r in report.labels),
            "target_attack_success": report.labels[target].attack_success,
            "image_passes_per_label": d["image_passes_per_label"],
            "target_iou": true_trigger_overlap(report.masks[target], saved.triggers[0][0].mask) if infected else None,
            "correct": report.flagged == ([target] if infected else []),
        }
    )
    assert anomaly_index(torch.tensor([r.mask_l1 for r in report.labels])).model_index == report.anomaly_index
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(name for name, _, _ in SUITE))
    parser.add_argument("--modes", default="fast,reference")
    parser.add_argument("--seeds", default="0,1,2", help="fast-mode seeds")
    parser.add_argument("--reference-seeds", default="0", help="reference-mode seeds (a full GTSRB one takes hours)")
    parser.add_argument(
        "--reference-labels", type=int, help="run reference mode on this many labels only (extrapolated)"
    )
    parser.add_argument("--reference-full", default="", help="datasets whose reference scan runs on all labels")
    parser.add_argument("--success-threshold", type=float, help="attack-success threshold for both modes")
    parser.add_argument("--searches", type=int, help="searches per label (default: the mode's)")
    parser.add_argument("--output", default="scan_speed", help="results file stem under benchmarks/results")
    args = parser.parse_args()
    wanted, modes = args.models.split(","), args.modes.split(",")
    seeds = {
        "fast": [int(s) for s in args.seeds.split(",")],
        "reference": [int(s) for s in args.reference_seeds.split(",")],
    }
    # Rows of the (model, mode, seed) runs not rerun are kept from the previous results, so long reference
    # scans can be added one at a time.
    rows = [
        r
        for r in read_results(args.output)
        if r["model"] not in wanted or r["mode"] not in modes or r["seed"] not in seeds[r["mode"]]
    ]
    for name, dataset, infected in SUITE:
        if name not in wanted:
            continue
        ensure_model(name, dataset, infected)
        for mode in modes:
            for seed in seeds[mode]:
                subset = None if dataset in args.reference_full.split(",") else args.reference_labels
                rows.append(
                    scan_row(name, dataset, infected, mode, seed, subset, args.success_threshold, args.searches)
                )
                rows[-1]["machine"] = machine()
                print({k: v for k, v in rows[-1].items() if k not in ("machine", "mask_l1")}, flush=True)
                rows.sort(key=lambda r: (MODEL_ORDER.index(r["model"]), r["mode"], r["seed"]))
                write_results(args.output, rows, render(rows))


def render(rows: list[dict[str, Any]]) -> str:
    fast = {(r["model"]): r for r in rows if r["mode"] == "fast" and r["seed"] == 0}
    table_rows = []
    for r in rows:
        ratio = None
        if r["mode"] == "reference" and r["model"] in fast:
            ratio = r["cpu_seconds"] / fast[r["model"]]["cpu_seconds"]
        table_rows.append(
            [
                r["model"],
                r["mode"],
                r.get("searches") or "default",
                r["seed"],
                r["seconds"] if not r["extrapolated"] else f"{r['seconds']:.0f} (extrapolated)",
                r["cpu_seconds"],
                ratio,
                r["anomaly_index"],
                r["flagged"],
                r["image_passes_per_label"],
                r["target_iou"],
            ]
        )
    head = [
        "model",
        "mode",
        "searches per label",
        "seed",
        "seconds",
        "CPU seconds",
        "reference / fast (CPU)",
        "anomaly index",
        "flagged",
        "image passes per label",
        "target mask IoU",
    ]
    text = "# Scan speed and verdicts\n\n" + markdown_table(head, table_rows)
    if rows:
        m = rows[0]["machine"]
        text += f"\nMachine: {m['processor']}, {m['torch_threads']} torch threads, CUDA: {m['cuda']}.\n"
    return text


if __name__ == "__main__":
    main()
