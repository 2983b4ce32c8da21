"""The zoo's models on disk scanned again with today's default, against the verdicts zoo.json recorded for them.

    python benchmarks/rescan.py [--half test] [--seed 0] [--only NAME,...] [--threads 1]
    python benchmarks/rescan.py report

zoo.json holds each model's scans as they were made, with the mask search of their time; the blend search and
neuron stimulation came later and are joined to those verdicts by replays (stimulation.py, blend_search.py). Here
every model of the half that ``zoo.py train`` has saved under runs/zoo/models/ (but the 1000-label task's, whose scan
takes hours: ``--only`` names it) is scanned as a user's scan runs
(the default ``ScanConfig``: mask search, blend search, stimulation; TorchScript models stimulated through their
ONNX export), on the clean images and with the seed of the zoo's scan. The table: per task, the required infected
scans with exactly their targets and the clean scans flagged, now and as recorded for the same scans; and each scan
whose verdict changed; and the models scanned with both seeds. ``report`` rewrites the tables from the stored rows.
Writes benchmarks/results/rescan.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import zoo
from common import machine, markdown_table, read_results, replace_rows, rewrite_report

from neuralcleanse import NeuralCleanse, ScanConfig, load_model

RESULTS_FILE = "rescan"
TASKS = ("mnist", "gtsrb", "cifar10", "numbers2")  # numbers2: the 100-label task (two-digit numbers)


def task(recipe: dict[str, Any]) -> str:
    return f"numbers{recipe['digits']}" if "digits" in recipe else str(recipe["dataset"])


def scan_row(name: str, seed: int, more_searches: int = 0) -> dict[str, Any]:
    recipe = zoo.recipe(name)
    model = load_model(zoo.model_path(name)).model
    clean = zoo.scan_images(recipe, seed)
    start = time.perf_counter()
    # As zoo.py scans: some CIFAR-10 models (trained on 9,000 images) stay under the sanity check's accuracy.
    config = ScanConfig(min_clean_accuracy=None, allow_few_images="digits" in recipe, more_searches=more_searches)
    d = NeuralCleanse(model, config).scan(clean.images, clean.labels, seed=seed).to_dict()
    targets = zoo.scan_targets(recipe, len(d["labels"]))
    return {
        "model": name,
        "task": task(recipe),
        **{k: recipe[k] for k in ("arch", "family", "required")},
        "half": zoo.half(recipe),
        "seed": seed,
        "more_searches": more_searches,
        "targets": targets,
        "flagged": sorted(d["flagged"]),
        "mask_flagged": sorted(d["mask_flagged"]),
        "blend_flagged": sorted(d["blend_flagged"]),
        "stimulation_flagged": sorted(d["stimulation_flagged"]),
        "correct": sorted(d["flagged"]) == targets,
        "seconds": time.perf_counter() - start,
        "machine": machine(),
    }


def recorded() -> dict[tuple[str, int], dict[str, Any]]:
    """zoo.json's scans of one thread and the default arithmetic, by (model, seed)."""
    rows = json.loads((Path(__file__).parent / "results" / "zoo.json").read_text())
    return {(r["model"], r["seed"]): r for r in rows if r["threads"] == 1 and r.get("precision", "auto") == "auto"}


def retrained(names: set[str]) -> tuple[int, int]:
    """Of ``names`` on disk with a recorded training: how many have the clean accuracy zoo_models.json recorded for
    the zoo's first training of the recipe (the same model), and how many there are."""
    first = {r["name"]: r for r in json.loads((Path(__file__).parent / "results" / "zoo_models.json").read_text())}
    same = total = 0
    for name in names:
        path = zoo.model_dir(name) / "model.json"
        if name not in first or not path.is_file():
            continue
        accuracy, recorded_accuracy = json.loads(path.read_text()).get("clean_accuracy"), first[name]["clean_accuracy"]
        if accuracy is not None and recorded_accuracy is not None:
            total += 1
            same += abs(accuracy - recorded_accuracy) < 1e-6
    return same, total


def table(rows: list[dict[str, Any]]) -> str:
    before = recorded()
    same, total = retrained({r["model"] for r in rows})
    body = []
    for half in ("tune", "test"):
        for name in (*TASKS, "all"):
            group = [r for r in rows if r["half"] == half and name in (r["task"], "all")]
            infected = [r for r in group if r["targets"] and r["required"]]
            clean = [r for r in group if not r["targets"]]
            if not group:
                continue
            then = [before.get((r["model"], r["seed"])) for r in infected]
            clean_then = [before.get((r["model"], r["seed"])) for r in clean]
            body.append(
                [
                    half,
                    name,
                    f"{sum(r['correct'] for r in infected)}/{len(infected)}",
                    f"{sum(bool(t and t['correct']) for t in then)}/{len(infected)}",
                    f"{sum(bool(r['flagged']) for r in clean)}/{len(clean)}",
                    f"{sum(bool(t and t['flagged']) for t in clean_then)}/{len(clean)}",
                    f"{sum(r['seconds'] for r in group) / 60:.0f}",
                ]
            )
    changed = [
        [
            r["model"],
            r["half"],
            r["seed"],
            r["targets"],
            before[(r["model"], r["seed"])]["flagged"],
            r["flagged"],
            r["mask_flagged"],
            r["blend_flagged"],
            r["stimulation_flagged"],
        ]
        for r in rows
        if (r["model"], r["seed"]) in before and r["flagged"] != before[(r["model"], r["seed"])]["flagged"]
    ]
    header = ["half", "task", "infected exact, now", "as recorded", "clean flagged, now", "as recorded", "minutes"]
    agreement = []
    for half in ("tune", "test"):
        seeds: dict[str, dict[int, dict[str, Any]]] = {}
        for r in rows:
            if r["half"] == half:
                seeds.setdefault(r["model"], {})[r["seed"]] = r
        pairs = [(v[0], v[1]) for v in seeds.values() if 0 in v and 1 in v]
        then = [(before.get((a["model"], 0)), before.get((a["model"], 1))) for a, _ in pairs]
        if pairs:
            agreement.append(
                [
                    half,
                    f"{sum(bool(a['flagged']) == bool(b['flagged']) for a, b in pairs)}/{len(pairs)}",
                    f"{sum(bool(a and b and bool(a['flagged']) == bool(b['flagged'])) for a, b in then)}/{len(pairs)}",
                    f"{sum(a['flagged'] == b['flagged'] for a, b in pairs)}/{len(pairs)}",
                ]
            )
    return (
        "# The zoo's models on disk scanned again with today's default (benchmarks/rescan.py)\n\n"
        f"{len(rows)} scans: the default `ScanConfig` (mask search, blend search, neuron stimulation), on the clean "
        "images and with the seed of the zoo's scan, one thread; against zoo.json's recorded verdict of the scan "
        "with the same seed (the mask search of its time). Required families only among the infected. The models "
        "on disk were trained again from their recipes and seeds (`zoo.py train`); of the "
        f"{total} with a recorded first training, {same} reach its clean accuracy to the sixth digit and the others "
        "differ in the fourth: for those the comparison is between two trainings of the recipe, not two scans of "
        "one model.\n\n"
        + markdown_table(header, body)
        + "\n## Seeds 0 and 1\n\nModels scanned with both seeds: the same verdict (infected or clean) on both, now "
        "and as recorded, and the same flagged labels now.\n\n"
        + markdown_table(["half", "same verdict, now", "as recorded", "same labels, now"], agreement)
        + "\n## Scans whose verdict changed\n\n"
        + markdown_table(
            ["model", "half", "seed", "targets", "recorded", "now", "mask search", "blend search", "stimulation"],
            changed,
        )
    )


def main() -> None:
    if rewrite_report(RESULTS_FILE, table):
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", choices=("tune", "test"), default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="comma-separated model names (default: every saved one of the half)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    order = [r["name"] for r in zoo.recipes()]
    names = args.only.split(",") if args.only else [
        n for n in order if zoo.half(zoo.recipe(n)) == args.half and zoo.is_trained(n) and task(zoo.recipe(n)) in TASKS
    ]  # fmt: skip
    for name in names:
        if not args.only and any((r["model"], r["seed"]) == (name, args.seed) for r in read_results(RESULTS_FILE)):
            continue  # scanned by an earlier run: --only scans it again
        row = scan_row(name, args.seed)
        print(json.dumps({k: row[k] for k in ("model", "seed", "targets", "flagged", "seconds")}), flush=True)
        replace_rows(
            RESULTS_FILE,
            [row],
            lambda r: (r["model"], r["seed"]),
            lambda r: (r["seed"], order.index(r["model"])),
            table,
        )


if __name__ == "__main__":
    main()
