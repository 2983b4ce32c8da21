"""The scan as it ships, second scan included, on zoo models: what a user of ``neuralcleanse scan`` gets.

Each model and seed is scanned as the scan job scans it (``neuralcleanse.jobs.scan_model``): the default scan
(mask search and its decision, symmetric checks, blend search, neuron stimulation) on the zoo's clean sample of that
seed, and, when its verdict is borderline, a second scan with the next seed on that seed's sample, the two joined
(``neuralcleanse.second_scan``). The zoo's own figures replay the mask search's decision on stored norms; these are
the whole scan's verdicts, taken afresh.

Models (default): the fourteenth round (zoo_make_recipes.FOURTEENTH) whose attacks took, planned and trained after
every setting but the second scan was fixed, both halves; the second scan was chosen on the tune half of every round,
the fourteenth's included, so its test half is the fair figure. ``--models`` adds others: the test half's earlier
rounds on disk are tabulated apart, as every round has reported earlier defaults on them. One thread; rows are kept
in benchmarks/results/shipped.json and a rerun scans only what is missing.

Scans read the norms through their dataset's natural label profile, as the scan job does (``neuralcleanse.profiles``);
the fourteenth round's rows and the earlier rounds' were scanned before there were profiles. ``--round 13`` scans the
fifteenth round (zoo_make_recipes.FIFTEENTH), planned and trained after the profiles were fixed, ``--round 14`` the
sixteenth (SIXTEENTH, scattered pixel triggers), ``--round 15`` the seventeenth (SEVENTEENTH, the tiny-trigger
criterion's test), ``--round 16`` the eighteenth (EIGHTEENTH, the test of the clean gaps read over their class's).

    python benchmarks/shipped.py [--models name,...] [--seeds 0,1] [--round N]
    python benchmarks/shipped.py report
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from typing import Any

import torch
import zoo
import zoo_report
from common import add_scans, machine, markdown_table, rewrite_report

from neuralcleanse import NeuralCleanse, ScanConfig, builtin_profile, join_scans, load_model, wants_second_scan
from neuralcleanse.probe import probe_outputs

STEM = "shipped"
#: The rounds tabulated on their own (zoo_report.round_names), each planned and trained after the default it tests.
ROUNDS = {
    12: "fourteenth round",
    13: "fifteenth round (profiles)",
    14: "sixteenth round (scattered pixels)",
    15: "seventeenth round (tiny triggers)",
    16: "eighteenth round (gap profiles)",
    17: "nineteenth round (GTSRB's missing families)",
}
#: Scans read the norms through their dataset's natural label profile, as the scan job does. The rows of the
#: fourteenth round and of the earlier rounds were scanned before the profiles existed (their ``profile`` is absent).
PROFILE = True
CONFIG = ScanConfig(min_clean_accuracy=None)  # the zoo's CIFAR-10 models are recorded, not checked (zoo.py)


def scan_row(name: str, seed: int) -> dict[str, Any]:
    recipe = zoo.recipe(name)
    model = load_model(zoo.model_path(name)).model
    images, labels = _sample(recipe, seed)
    # the profile `neuralcleanse scan --data <dataset>` reads (none for the many-label tasks)
    profile = builtin_profile(recipe["dataset"], probe_outputs(model, images[:32]).num_outputs) if PROFILE else None
    start = time.perf_counter()
    first = NeuralCleanse(model, CONFIG, profile=profile).scan(images, labels, seed=seed)
    report = first
    if wants_second_scan(first, CONFIG):
        second = NeuralCleanse(model, CONFIG, profile=profile).scan(*_sample(recipe, seed + 1), seed=seed + 1)
        report = join_scans(first, second)
    return {
        "model": name,
        "seed": seed,
        "half": zoo.half(recipe),
        "dataset": recipe["dataset"],
        "arch": recipe["arch"],
        "family": recipe["family"],
        "required": recipe["required"],
        "targets": zoo.scan_targets(recipe, len(first.labels)),
        "first_flagged": sorted(first.flagged),
        "steadiness": first.steadiness,
        "second_flagged": None if report.second_scan is None else sorted(report.second_scan.flagged),
        "flagged": sorted(report.flagged),
        "profile": None if profile is None else profile.name,
        "seconds": time.perf_counter() - start,
        "machine": machine(),
    }


def _sample(recipe: dict[str, Any], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    clean = zoo.scan_images(recipe, seed)
    return clean.images, clean.labels


def took(name: str) -> bool:
    """Whether zoo model ``name`` is trained and its attack took (the zoo leaves the others out of its figures)."""
    meta = json.loads((zoo.model_dir(name) / "model.json").read_text()) if zoo.is_trained(name) else {}
    return zoo.is_trained(name) and meta.get("took") is not False  # a clean model has no attack to take


def render(rows: list[dict[str, Any]]) -> str:
    rounds = {name: zoo_report.round_names(index) for index, name in ROUNDS.items()}
    body = []
    groups = [
        (f"{half}, {name}", [r for r in rows if r["half"] == half and r["model"] in names])
        for name, names in rounds.items()
        for half in ("tune", "test")
    ]
    later = set().union(*rounds.values())
    earlier = [r for r in rows if r["half"] == "test" and r["model"] not in later]
    groups.append(("test, earlier rounds", earlier))
    for group, members in groups:
        rs = [r for r in members if r["required"]]
        if not rs:
            continue
        infected = [r for r in rs if r["targets"]]
        clean = [r for r in rs if not r["targets"]]
        seeds: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for r in rs:
            seeds[r["model"]][r["seed"]] = r
        pairs = [list(s.values()) for s in seeds.values() if len(s) == 2]
        for label, key in (("first scan", "first_flagged"), ("as shipped (second scan where borderline)", "flagged")):
            body.append(
                [
                    group,
                    label,
                    f"{sum(r[key] == r['targets'] for r in infected)}/{len(infected)}",
                    f"{sum(bool(r[key]) for r in clean)}/{len(clean)}",
                    f"{sum(bool(a[key]) == bool(b[key]) for a, b in pairs)}/{len(pairs)}",
                    f"{sum(r['second_flagged'] is not None for r in rs)}/{len(rs)}" if key == "flagged" else "—",
                ]
            )
    changed = [
        [r["model"], r["half"], r["seed"], r["targets"], r["first_flagged"], r["second_flagged"], r["flagged"]]
        for r in rows
        if r["flagged"] != r["first_flagged"]
    ]
    return (
        "# The scan as it ships, second scan included (benchmarks/shipped.py)\n\n"
        "Each model and seed scanned as `neuralcleanse scan` scans it: the default scan (mask search, symmetric "
        "checks, blend search, neuron stimulation) and, where its verdict is borderline, a second scan with the next "
        "seed and that seed's clean sample, joined (the labels either scan flags). *first scan*: the verdict before "
        "the second scan. Required families; infected scans flagging exactly their targets, clean scans flagging "
        "anything, models whose two seeds agree on the verdict (the second scan of seed 0 is seed 1's sample, so "
        "the seeds' shipped verdicts can share a scan). One thread.\n\n"
        + markdown_table(
            ["models", "verdict", "infected exact", "clean flagged", "models, seeds agree", "second scans"], body
        )
        + "\n## Scans the second scan changed\n\n"
        + markdown_table(["model", "half", "seed", "targets", "first scan", "second scan", "shipped"], changed)
    )


def main() -> None:
    if rewrite_report(STEM, render):
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated zoo models (default: the fourteenth round's)")
    parser.add_argument(
        "--round", type=int, default=12, help="the round of the default models (zoo_report.round_names)"
    )
    parser.add_argument("--seeds", default="0,1", help="scan seeds (default 0,1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    chosen = [r["name"] for r in zoo.recipes() if r["name"] in zoo_report.round_names(args.round) and took(r["name"])]
    names = args.models.split(",") if args.models else chosen
    seeds = [int(s) for s in args.seeds.split(",")]
    add_scans(STEM, names, seeds, scan_row, render, lambda r: f"{r['model']} {r['seed']} {r['flagged']}")


if __name__ == "__main__":
    main()
