"""How the fast scan's verdict depends on the number of searches per label, and what more searches could give.

For each model, every label is searched COPIES times from independent random starts (fast-mode settings, all
searches in one batch). A scan with k searches per label keeps each label's smallest valid mask among its k
searches (``ReverseResult.best_of_restarts``, as ``NeuralCleanse`` does), so every k-subset of the COPIES
searches is one possible k-search scan: the table gives, per k, the spread of the anomaly index over all
k-subsets and how often the verdict is exactly right (the target alone for BadNets models, nothing for clean
ones). k = COPIES is the smallest norm this search finds for every label: the ceiling of what more searches
alone can do. (The searches of one run share their mini-batches and are correlated through them; separate
scans draw other batches. The benchmark shows the spread, not a calibrated probability.)

    python benchmarks/searches_per_label.py [--models gtsrb-badnets,...] [--copies 6] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Any

import torch
from common import MODEL_ORDER, SUITE, TARGETS, ensure_model, machine, markdown_table, model_dir, write_results

from neuralcleanse.config import FAST
from neuralcleanse.data import clean_sample, load_dataset
from neuralcleanse.outliers import CONSISTENCY, anomaly_index
from neuralcleanse.reverse import reverse_engineer
from neuralcleanse.store.model_dir import load_saved_model

SAMPLES = 1000  # clean images, as scan_speed.py and the original code's NB_SAMPLE


def model_rows(name: str, dataset: str, infected: bool, copies: int, seed: int) -> list[dict[str, Any]]:
    saved = load_saved_model(model_dir(name))
    data = load_dataset(dataset, "test")
    clean = clean_sample(data, max(1, SAMPLES // data.num_classes), seed=0)
    k_labels = data.num_classes
    start = time.perf_counter()
    result = reverse_engineer(
        saved.model,
        clean.images,
        list(range(k_labels)) * copies,
        FAST,
        torch.Generator().manual_seed(seed),
    )
    seconds = time.perf_counter() - start
    expected = [TARGETS[dataset]] if infected else []
    rows = []
    for k in range(1, copies + 1):
        indices, right, medians, mads = [], 0, [], []
        for subset in itertools.combinations(range(copies), k):
            positions = torch.tensor([c * k_labels + j for c in subset for j in range(k_labels)])
            best = result.rows(positions).best_of_restarts(k)
            outliers = anomaly_index(best.norms)
            indices.append(outliers.model_index)
            medians.append(outliers.median)
            mads.append(CONSISTENCY * outliers.mad)
            right += outliers.flagged == expected
        rows.append(
            {
                "model": name,
                "dataset": dataset,
                "infected": infected,
                "searches": k,
                "scans": len(indices),
                "index_min": min(indices),
                "index_median": statistics.median(indices),
                "index_max": max(indices),
                "above_3": sum(i > 3 for i in indices) / len(indices),
                "verdict_right": right / len(indices),
                "median_l1": statistics.median(medians),
                "scaled_mad_l1": statistics.median(mads),
                "copies": copies,
                "seed": seed,
                "search_seconds": seconds,
            }
        )
    rows[0]["norms"] = result.norms.view(copies, k_labels).tolist()  # every search's norm, for re-analysis
    rows[0]["found"] = result.found.view(copies, k_labels).tolist()
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    head = [
        "model",
        "searches per label",
        "scans (subsets)",
        "anomaly index min / median / max",
        "share > 3",
        "verdict right",
        "median norm",
        "1.4826 x MAD",
    ]
    body = [
        [
            r["model"],
            r["searches"],
            r["scans"],
            f"{r['index_min']:.2f} / {r['index_median']:.2f} / {r['index_max']:.2f}",
            r["above_3"],
            r["verdict_right"],
            r["median_l1"],
            r["scaled_mad_l1"],
        ]
        for r in rows
    ]
    text = "# Verdicts by number of searches per label (fast mode)\n\n" + markdown_table(head, body)
    if rows:
        m = rows[0]["machine"]
        text += (
            f"\n{rows[0]['copies']} searches per label from seed {rows[0]['seed']}; a k-search scan is any k of them."
            f" Machine: {m['processor']}, {m['torch_threads']} torch threads, CUDA: {m['cuda']}.\n"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODEL_ORDER))
    parser.add_argument("--copies", type=int, default=6, help="independent searches per label")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="searches_per_label", help="results file stem under benchmarks/results")
    args = parser.parse_args()
    if args.copies < 1:
        parser.error(f"--copies must be >= 1, got {args.copies}")
    wanted = args.models.split(",")
    unknown = sorted(set(wanted) - set(MODEL_ORDER))
    if unknown:
        parser.error(f"unknown models {unknown}; expected some of {MODEL_ORDER}")
    rows: list[dict[str, Any]] = []
    for name, dataset, infected in SUITE:
        if name not in wanted:
            continue
        ensure_model(name, dataset, infected)
        rows += [{**r, "machine": machine()} for r in model_rows(name, dataset, infected, args.copies, args.seed)]
        print({k: v for k, v in rows[-1].items() if k not in ("machine", "norms", "found")}, flush=True)
        write_results(args.output, rows, render(rows))


if __name__ == "__main__":
    main()
