"""Where should a scan spend its searches? Uniform searches per label against K-Arm-style allocations.

The fast scan searches every label twice and keeps each label's smallest valid mask (2K searches for K
labels). An allocation that spends the same 2K searches unevenly was the detection issue's idea: search every
label once, then give the second round to the labels that decide the verdict, as K-Arm's bandit gives its
optimisation steps to the most promising labels (Shen et al., ICML 2021). This benchmark tries such allocations
without new scans, on the stored norms of benchmarks/searches_per_label.py: every label of five models searched
six times from independent starts. An allocation is replayed by drawing, per label, a random order of its six
searches and reading the norms it would have kept:

- ``uniform-1``, ``uniform-2`` (the default), ``uniform-3``: every label searched 1, 2 or 3 times (K, 2K, 3K);
- ``smallest-half``: once each, then the half with the smallest norms twice more (2K): the candidates refined;
- ``smallest-quarter``: once each, then the quarter with the smallest norms four times more (2K);
- ``middle-half``: once each, then the half nearest the median twice more (2K): the null refined.

Per model and allocation: the share of 400 replays whose verdict is exactly right with the k-aware test at its
default threshold (the library's default decision when this was measured: the target alone for the infected
models, nothing for the clean ones), the mean and spread of its score, and the paper's index. The replays of one
model reuse six searches, so they show the spread between allocations, not an independent probability.

    python benchmarks/search_allocation.py [--replays 400]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Callable
from typing import Any

import torch
from common import TARGETS, markdown_table, read_results, write_results

from neuralcleanse.decision import decide

SEARCHES = 6  # searches per label stored by searches_per_label.py (its --copies default)

Allocation = Callable[[list[list[float]], random.Random], list[float]]


def replay(norms: list[list[float]], rng: random.Random, extra: Callable[[list[float]], dict[int, int]]) -> list[float]:
    """One replayed scan: a random order of each label's searches, the first search of every label, then
    ``extra(first)[label]`` more searches of the labels it names; each label keeps its smallest norm."""
    k = len(norms[0])
    orders = [rng.sample(range(SEARCHES), SEARCHES) for _ in range(k)]
    first = [norms[orders[label][0]][label] for label in range(k)]
    more = extra(first)
    return [min(norms[i][label] for i in orders[label][: 1 + more.get(label, 0)]) for label in range(k)]


def uniform(searches: int) -> Callable[[list[float]], dict[int, int]]:
    return lambda first: dict.fromkeys(range(len(first)), searches - 1)


def by_rank(lo: float, hi: float, searches: int) -> Callable[[list[float]], dict[int, int]]:
    """``searches`` more for the labels whose first norm ranks in [lo, hi) of all labels (0: the smallest)."""

    def extra(first: list[float]) -> dict[int, int]:
        ranked = sorted(range(len(first)), key=first.__getitem__)
        return {label: searches for r, label in enumerate(ranked) if lo <= r / len(first) < hi}

    return extra


ALLOCATIONS = {
    "uniform-1": (uniform(1), 1),
    "uniform-2": (uniform(2), 2),
    "uniform-3": (uniform(3), 3),
    "smallest-half": (by_rank(0.0, 0.5, 2), 2),
    "smallest-quarter": (by_rank(0.0, 0.25, 4), 2),
    "middle-half": (by_rank(0.25, 0.75, 2), 2),
}


def model_row(stored: dict[str, Any], name: str, replays: int) -> dict[str, Any]:
    norms, (extra, budget) = stored["norms"], ALLOCATIONS[name]
    expected = [TARGETS[stored["dataset"]]] if stored["infected"] else []
    rng = random.Random(0)
    scores, papers, right = [], [], 0
    for _ in range(replays):
        kept = torch.tensor(replay(norms, rng, extra))
        verdict = decide(kept, "k-aware")
        right += sorted(verdict.flagged) == expected
        scores.append(verdict.score)
        papers.append(decide(kept, "paper").score)
    return {
        "model": stored["model"],
        "allocation": name,
        "searches_per_label": budget,
        "replays": replays,
        "right": right / replays,
        "score_mean": statistics.fmean(scores),
        "score_sd": statistics.pstdev(scores),
        "score_p10": sorted(scores)[math.floor(0.1 * replays)],
        "paper_index_mean": statistics.fmean(papers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replays", type=int, default=400)
    args = parser.parse_args()
    stored = [r for r in read_results("searches_per_label") if r["searches"] == 1 and len(r["norms"]) == SEARCHES]
    rows = [model_row(s, name, args.replays) for s in stored for name in ALLOCATIONS]
    header = ["model", "allocation", "searches per label", "verdict right", "k-aware score mean", "sd", "p10"]
    header.append("paper index mean")
    table = markdown_table(
        header,
        [
            [r["model"], r["allocation"], r["searches_per_label"], r["right"], r["score_mean"], r["score_sd"]]
            + [r["score_p10"], r["paper_index_mean"]]
            for r in rows
        ],
    )
    text = (
        "# Searches per label: uniform against K-Arm-style allocations (replayed)\n\n"
        "Replays of the six stored searches per label of benchmarks/searches_per_label.py; the k-aware test at its "
        "default threshold (the default decision when measured). *verdict right*: share of replays flagging "
        "exactly the target (infected) or nothing (clean). Allocations of 2 searches per label spend the default's "
        "budget.\n\n" + table
    )
    write_results("search_allocation", rows, text)


if __name__ == "__main__":
    main()
