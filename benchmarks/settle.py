"""Searching a borderline verdict again: two more searches of every label when a scan's verdict is unsteady.

The scan says when its verdict is borderline (``neuralcleanse.steadiness``: under ``STEADY`` of the redraws of its
norms within the search's own noise keep it), and the zoo's two scan seeds disagree mostly on such verdicts. This asks
whether spending more searches there, and only there, settles them: each scan runs the default's two searches per
label (the scan's own generator sequence, ``ScanConfig()``'s search), decides with the default decision and the
symmetric check, then searches every label twice more with the same generator and decides on the smallest valid
mask of all four. The policy *settle* keeps the four-search verdict where the two-search one was borderline and the
two-search verdict elsewhere; *four* keeps it everywhere. Mask search only, as the zoo's replayed figures (no blend
search, no stimulation).

Models (default): the zoo's required models on disk whose stored default scan (seed 0 or 1, default arithmetic, one
thread) is borderline when its norms and clean gaps are decided again today, MNIST and CIFAR-10 (and GTSRB's
batch-norm CNN; the paper's GTSRB network and the softmax ResNets take too long for this run); both seeds of each,
from the zoo's clean sample of that seed. Chosen for being borderline, so the figures are of hard models, not of the
zoo. One thread; rows are kept in benchmarks/results/settle.json and a rerun scans only what is missing.

    python benchmarks/settle.py [--models name,...]
    python benchmarks/settle.py report
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
import zoo
from common import add_scans, machine, markdown_table, read_results, rewrite_report

from neuralcleanse import ScanConfig, load_model
from neuralcleanse.decision import decide
from neuralcleanse.favour import clean_gaps
from neuralcleanse.metrics import outputs_of
from neuralcleanse.pairs import symmetric_check
from neuralcleanse.probe import probe_outputs
from neuralcleanse.reverse import ReverseResult, reverse_engineer
from neuralcleanse.steadiness import STEADY, steadiness

STEM = "settle"
SEEDS = (0, 1)
#: Architectures scanned, cheapest first (the paper's GTSRB network on GTSRB and the softmax ResNets take minutes)
ARCHS = ("mlp", "mnist", "bn-cnn", "gtsrb", "resnet")
CONFIG = ScanConfig()


def borderline_models() -> list[str]:
    """The required zoo models on disk with a borderline stored default scan (see the module's docstring)."""
    chosen = set()
    for r in read_results(zoo.SCANS_FILE):
        if not r["required"] or r["seed"] not in SEEDS or r.get("precision", "auto") != "auto":
            continue
        if r.get("threads", 1) != 1 or "norms" not in r or r["arch"] not in ARCHS:
            continue
        if r["dataset"] == "gtsrb" and r["arch"] == "gtsrb" or not zoo.is_trained(r["model"]):
            continue
        gaps = None if r.get("gaps") is None else torch.tensor(r["gaps"])
        if steadiness(r["norms"], CONFIG.decision, CONFIG.decision_threshold, gaps) < STEADY:
            chosen.add(r["model"])
    return sorted(chosen, key=lambda n: (ARCHS.index(zoo.recipe(n)["arch"]), zoo.recipe(n)["dataset"] == "gtsrb", n))


def verdict(
    model: torch.nn.Module,
    clean: Any,
    result: ReverseResult,
    gaps: torch.Tensor,
    generator: torch.Generator,
    probabilities: bool,
    outputs: torch.Tensor,
) -> tuple[list[int], float]:
    """The default decision on ``result``'s norms, its flagged labels through the symmetric check, as the scan."""
    decided = decide(result.norms, CONFIG.decision, CONFIG.decision_threshold, gaps)
    suspects = [int(result.labels[i]) for i in decided.flagged]
    natural: set[int] = set()
    if suspects:
        norms = dict(zip(result.labels.tolist(), result.norms.tolist(), strict=True))
        pairs = symmetric_check(
            model,
            clean.images,
            clean.labels,
            suspects,
            norms,
            CONFIG.reverse,
            generator,
            probabilities,
            outputs=outputs,
        )
        natural = {p.label for p in pairs if p.natural}
    return [t for t in suspects if t not in natural], float(decided.score)


@dataclass
class Searched:
    """A scan's state after its first searches: what searching on from there needs."""

    model: torch.nn.Module
    clean: Any
    labels: list[int]
    searches: list[ReverseResult]
    generator: torch.Generator
    probabilities: bool
    outputs: torch.Tensor
    gaps: torch.Tensor
    start: float


def two_searches(name: str, seed: int) -> tuple[dict[str, Any], Searched]:
    """The default's two searches of every label of zoo model ``name``, on the zoo's clean sample of ``seed``, decided
    as the scan decides them: the row's two-search fields, and the state to search on from."""
    recipe = zoo.recipe(name)
    model = load_model(zoo.model_path(name)).model
    clean = zoo.scan_images(recipe, seed)
    start = time.perf_counter()
    probe = probe_outputs(model, clean.images[:32])
    outputs = outputs_of(model, clean.images)
    gaps = clean_gaps(outputs, probe.probabilities)
    labels = list(range(probe.num_outputs))
    generator = torch.Generator().manual_seed(seed)
    searches = [
        reverse_engineer(model, clean.images, labels, CONFIG.reverse, generator, probe.probabilities) for _ in range(2)
    ]
    two = ReverseResult.concat(searches).best_of_restarts(2)
    two_seconds = time.perf_counter() - start
    # The two-search verdict's symmetric checks draw from a copy, so that searches after them are those of a scan
    # that searched on without checking first.
    side = torch.Generator()
    side.set_state(generator.get_state())
    flagged2, score2 = verdict(model, clean, two, gaps, side, probe.probabilities, outputs)
    row = {
        "model": name,
        "seed": seed,
        "half": zoo.half(recipe),
        "dataset": recipe["dataset"],
        "arch": recipe["arch"],
        "family": recipe["family"],
        "targets": zoo.scan_targets(recipe, probe.num_outputs),
        "norms2": two.norms.tolist(),
        "steadiness2": steadiness(two.norms, CONFIG.decision, CONFIG.decision_threshold, gaps),
        "flagged2": flagged2,
        "score2": score2,
        "seconds2": two_seconds,
    }
    return row, Searched(model, clean, labels, searches, generator, probe.probabilities, outputs, gaps, start)


def scan_row(name: str, seed: int) -> dict[str, Any]:
    row, s = two_searches(name, seed)
    s.searches.append(
        reverse_engineer(s.model, s.clean.images, s.labels * 2, CONFIG.reverse, s.generator, s.probabilities)
    )
    four = ReverseResult.concat(s.searches).best_of_restarts(4)
    flagged4, score4 = verdict(s.model, s.clean, four, s.gaps, s.generator, s.probabilities, s.outputs)
    return {
        **row,
        "norms4": four.norms.tolist(),
        "steadiness4": steadiness(four.norms, CONFIG.decision, CONFIG.decision_threshold, s.gaps),
        "flagged4": flagged4,
        "score4": score4,
        "seconds": time.perf_counter() - s.start,
        "machine": machine(),
    }


def searched_again(row: dict[str, Any], policy: str) -> bool:
    """Whether ``policy`` (``two``, ``four``, or ``settle``: four where two was borderline) searches ``row`` again."""
    return policy == "four" or (policy == "settle" and row["steadiness2"] < STEADY)


def flagged(row: dict[str, Any], policy: str) -> list[int]:
    """The labels ``policy`` flags on ``row``."""
    return row["flagged4"] if searched_again(row, policy) else row["flagged2"]


POLICIES = {"two": "two searches (default)", "settle": "four where borderline", "four": "four searches"}


def render(rows: list[dict[str, Any]]) -> str:
    body = []
    for half in ("tune", "test", "all"):
        rs = [r for r in rows if half in ("all", r["half"])]
        seeds: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for r in rs:
            seeds[r["model"]][r["seed"]] = r
        pairs = [s for s in seeds.values() if len(s) == 2]
        infected = [r for r in rs if r["targets"]]
        clean = [r for r in rs if not r["targets"]]
        for policy, label in POLICIES.items():
            again = sum(searched_again(r, policy) for r in rs)
            seconds = sum(r["seconds"] if searched_again(r, policy) else r["seconds2"] for r in rs)
            body.append(
                [
                    half,
                    label,
                    f"{sum(sorted(flagged(r, policy)) == r['targets'] for r in infected)}/{len(infected)}",
                    f"{sum(bool(flagged(r, policy)) for r in clean)}/{len(clean)}",
                    f"{sum(bool(flagged(s[0], policy)) == bool(flagged(s[1], policy)) for s in pairs)}/{len(pairs)}",
                    f"{again}/{len(rs)}",
                    round(seconds / sum(r["seconds2"] for r in rs), 2),
                ]
            )
    changed = [
        [r["model"], r["half"], r["seed"], r["targets"], r["flagged2"], r["flagged4"], round(r["steadiness2"], 2)]
        for r in rows
        if sorted(r["flagged2"]) != sorted(r["flagged4"])
    ]
    steadier = statistics.median(r["steadiness4"] - r["steadiness2"] for r in rows) if rows else 0.0
    return (
        "# Searching a borderline verdict again (benchmarks/settle.py)\n\n"
        "Zoo models whose stored default scan is borderline (steadiness under 0.9), both seeds, scanned here with two "
        "searches per label and then two more of every label on the same draws; mask search, default decision and "
        "symmetric check, one thread. *four where borderline*: the four-search verdict only where the two-search one "
        "was borderline. *exact*: infected scans flagging exactly their targets; *time*: the scans' seconds over "
        "their two-search seconds. Chosen for being borderline: hard models, not the zoo.\n\n"
        + markdown_table(
            ["half", "searches", "infected exact", "clean flagged", "models, same verdict", "re-searched", "time"],
            body,
        )
        + f"\nMedian change of a scan's steadiness from two to four searches: {steadier:+.3f}.\n\n"
        "## Scans whose flagged labels changed with two more searches\n\n"
        + markdown_table(["model", "half", "seed", "targets", "two searches", "four searches", "steadiness"], changed)
    )


def main() -> None:
    if rewrite_report(STEM, render):
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated zoo models (default: the borderline ones)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.models.split(",") if args.models else borderline_models()
    add_scans(
        STEM,
        names,
        SEEDS,
        scan_row,
        render,
        lambda r: f"{r['model']} {r['seed']} {r['flagged2']} {r['flagged4']} {r['steadiness2']:.2f}",
    )


if __name__ == "__main__":
    main()
