"""Neuron stimulation on the zoo's models on disk and the held-out models: how far below the median label a target's
stimulation level lies, against the natural labels', and what flagging it adds to the zoo's verdicts.

    python benchmarks/stimulation.py [--only NAME,...] [--seed 0] [--threads 1]
    python benchmarks/stimulation.py report

For every model of the zoo that ``zoo.py train`` has saved under runs/zoo/models/ and every held-out model of
held_out.py saved under runs/models/, :func:`~neuralcleanse.stimulation.scan_stimulation` as a scan with seed 0
runs it (on the clean images of the zoo's scan with ``--seed``, 0 by default, or held_out.py's, which has one set
of clean images for every seed). The zoo's own architectures are saved as
TorchScript, whose activations no hook can read (a scan of them decides without stimulation); here they are
rebuilt as the PyTorch modules they were trained as and given the saved weights, to measure the signal on
batch-norm CNNs, ResNets and MLPs as users bring them. ``report`` rewrites the tables from the stored rows.

The tables: per half (the zoo's tune half chose STIMULATION_RATIO; the test half and the held-out models are
reported) and per ratio, the clean models with a label at or under it, the infected models with a target, with a
label that is no target, and with exactly the targets; the natural labels' smallest ratios; and the zoo's recorded
verdicts (the mask search's, zoo.json) joined with the labels stimulation flags, for the models a scan would
stimulate (the library's architectures, saved as PyTorch modules). Writes benchmarks/results/stimulation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import held_out
import torch
import zoo
import zoo_archs
from common import machine, markdown_table, read_results, write_results

from neuralcleanse import load_model
from neuralcleanse.metrics import outputs_of
from neuralcleanse.stimulation import STIMULATION_RATIO, Stimulation, scan_stimulation, stimulation_suspects

RESULTS_FILE = "stimulation"
RATIOS = [2 ** (-k / 2) for k in (6, 5, 4, 3, 2)]  # 0.125 to 0.5, the levels' half octaves
HELD_OUT = [*held_out.MODELS, "mnist-clean", "gtsrb-clean"]
LIBRARY = ("mnist", "gtsrb")  # the zoo's architectures a scan can stimulate: the library's, saved as modules


def order() -> list[str]:
    return [r["name"] for r in zoo.recipes()] + HELD_OUT


def saved() -> list[str]:
    on_disk = [r["name"] for r in zoo.recipes() if zoo.is_trained(r["name"])]
    return on_disk + [name for name in HELD_OUT if (held_out.model_dir(name) / "model.json").is_file()]


def python_model(name: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model as a PyTorch module, and what is known of it: dataset, arch, family, half, targets."""
    if name in HELD_OUT:
        loaded = load_model(held_out.model_dir(name))
        meta = loaded.metadata
        targets = [t["target"] for t in meta.get("triggers", [])]
        info = {"dataset": meta["dataset"], "arch": meta["architecture"], "family": meta.get("attack") or "clean"}
        return loaded.model, {**info, "half": "held-out", "targets": targets}
    recipe = zoo.recipe(name)
    info = {
        "dataset": recipe["dataset"],
        "arch": recipe["arch"],
        "family": recipe["family"],
        "half": zoo.half(recipe),
        "targets": [a["target"] for a in recipe["attacks"]],
    }
    path = zoo.model_path(name)
    if path.suffix != ".pt":
        return load_model(path).model, info
    script = torch.jit.load(str(path), map_location="cpu")
    train = zoo.task(recipe)[0]
    net = zoo_archs.build(recipe["arch"], train.image_shape, train.num_classes, train.images[:2])
    net.load_state_dict(script.state_dict())
    return net.eval(), info


def scan_images(name: str, dataset: str, seed: int) -> Any:
    return held_out.scan_images(dataset) if name in HELD_OUT else zoo.scan_images(zoo.recipe(name), seed=seed)


def row_of(name: str, seed: int) -> dict[str, Any]:
    model, info = python_model(name)
    clean = scan_images(name, info["dataset"], seed)
    start = time.perf_counter()
    stimulation = scan_stimulation(model, clean.images, outputs_of(model, clean.images))
    seconds = time.perf_counter() - start
    base = {"model": name, "seed": seed, **info, "seconds": seconds, "machine": machine()}
    if stimulation is None:
        return {**base, "layer": None}
    return {**base, **stimulation.to_dict(), "ratios": stimulation.ratios}


def _flags(row: dict[str, Any], ratio: float) -> set[int]:
    """The labels the library's rule flags at ``ratio`` from a stored row."""
    if not row.get("layer"):
        return set()
    levels = [math.inf if v is None else v for v in row["levels"]]
    return set(stimulation_suspects(Stimulation(row["layer"], levels, row["neurons"], row["scale"]), ratio))


def _sweep(rows: list[dict[str, Any]]) -> str:
    body = []
    for half in ("tune", "test", "held-out"):
        group = [r for r in rows if r["half"] == half and r.get("layer")]
        for ratio in RATIOS:
            clean = [r for r in group if not r["targets"]]
            infected = [r for r in group if r["targets"]]
            flags = {r["model"]: _flags(r, ratio) for r in group}
            body.append(
                [
                    half,
                    f"{ratio:.3f}" + (" (default)" if math.isclose(ratio, STIMULATION_RATIO) else ""),
                    f"{sum(bool(flags[r['model']]) for r in clean)}/{len(clean)}",
                    f"{sum(bool(flags[r['model']] & set(r['targets'])) for r in infected)}/{len(infected)}",
                    f"{sum(bool(flags[r['model']] - set(r['targets'])) for r in infected)}/{len(infected)}",
                    f"{sum(flags[r['model']] == set(r['targets']) for r in infected)}/{len(infected)}",
                ]
            )
    header = ["half", "flagged at ratio <=", "clean flagged", "a target flagged", "a non-target flagged", "exact"]
    return markdown_table(header, body)


def _natural(rows: list[dict[str, Any]]) -> str:
    body = []
    for half in ("tune", "test", "held-out"):
        for arch_kind in ("library", "own"):
            ratios = [
                (ratio, r["model"], k, k in r["targets"])
                for r in rows
                if r["half"] == half and r.get("layer") and (r["arch"] in LIBRARY) == (arch_kind == "library")
                for k, ratio in enumerate(r["ratios"])
                if ratio is not None
            ]
            values = sorted((v, m, k) for v, m, k, target in ratios if not target)
            targets = [v for v, _, _, target in ratios if target]
            if not values:
                continue
            smallest = ", ".join(f"{m} label {k}: {v:.2f}" for v, m, k in values[:3])
            under = sum(v <= STIMULATION_RATIO * (1 + 1e-6) for v in targets)
            body.append([half, arch_kind, smallest, f"{under}/{len(targets)}"])
    header = ["half", "architectures", "smallest natural labels (ratio to the median)", "targets at or under the ratio"]
    return markdown_table(header, body)


def _replay(rows: list[dict[str, Any]]) -> str:
    by_model = {r["model"]: r for r in rows if r.get("layer") and r["arch"] in LIBRARY and r["half"] != "held-out"}
    recorded = json.loads((Path(__file__).parent / "results" / "zoo.json").read_text())
    counts: Counter[tuple[str, str]] = Counter()
    changed = []
    for scan in recorded:
        row = by_model.get(scan["model"])
        if row is None or not scan["required"] or scan["threads"] != 1 or scan.get("precision", "auto") != "auto":
            continue
        targets = set(scan["targets"])
        joined = set(scan["flagged"]) | _flags(row, STIMULATION_RATIO)
        kind = "infected" if targets else "clean"
        counts[(scan["half"], kind + " scans")] += 1
        counts[(scan["half"], kind + " right before")] += set(scan["flagged"]) == targets
        counts[(scan["half"], kind + " right after")] += joined == targets
        if joined != set(scan["flagged"]):
            changed.append(
                [scan["model"], scan["half"], scan["seed"], sorted(targets), scan["flagged"], sorted(joined)]
            )
    body = [
        [
            half,
            f"{counts[(half, 'infected right before')]}/{counts[(half, 'infected scans')]}",
            f"{counts[(half, 'infected right after')]}/{counts[(half, 'infected scans')]}",
            f"{counts[(half, 'clean right before')]}/{counts[(half, 'clean scans')]}",
            f"{counts[(half, 'clean right after')]}/{counts[(half, 'clean scans')]}",
        ]
        for half in ("tune", "test")
    ]
    header = ["half", "infected exact, recorded", "joined with stimulation", "clean right, recorded", "joined"]
    return (
        markdown_table(header, body)
        + "\nScans whose flagged labels change:\n\n"
        + markdown_table(["model", "half", "seed", "targets", "recorded", "joined"], changed)
    )


def _seeds(rows: list[dict[str, Any]]) -> str:
    second = {r["model"]: r for r in rows if r.get("seed", 0) == 1 and r.get("layer")}
    body = []
    for half in ("tune", "test"):
        pairs = [(r, second[r["model"]]) for r in rows if r.get("seed", 0) == 0 and r["model"] in second]
        pairs = [(a, b) for a, b in pairs if a["half"] == half]
        same = sum(_flags(a, STIMULATION_RATIO) == _flags(b, STIMULATION_RATIO) for a, b in pairs)
        moved = [
            f"{a['model']}: {sorted(_flags(a, STIMULATION_RATIO))} / {sorted(_flags(b, STIMULATION_RATIO))}"
            for a, b in pairs
            if _flags(a, STIMULATION_RATIO) != _flags(b, STIMULATION_RATIO)
        ]
        body.append([half, f"{same}/{len(pairs)}", "; ".join(moved) or "—"])
    return markdown_table(["half", "same labels flagged, seed 0 and 1", "differ (seed 0 / seed 1)"], body)


def table(all_rows: list[dict[str, Any]]) -> str:
    rows = [r for r in all_rows if r.get("seed", 0) == 0]
    per_model = [
        [
            r["model"],
            r["arch"],
            r["family"],
            r["half"],
            ", ".join(map(str, r["targets"])) or "—",
            r.get("layer") or "not stimulated",
            "—"
            if not r.get("layer")
            else ", ".join(
                f"{k}{'*' if k in r['targets'] else ''}: {v:.2f}"
                for k, v in sorted(((k, v) for k, v in enumerate(r["ratios"]) if v is not None), key=lambda kv: kv[1])[
                    :4
                ]
            ),
            f"{r['seconds']:.1f}",
        ]
        for r in rows
    ]
    return (
        "# Neuron stimulation: the level at which one neuron hands a label the clean images\n\n"
        f"{len(rows)} models: the zoo's models on disk and the held-out models. A label's ratio: its stimulation "
        "level over the median label's (`Stimulation.ratios`); a label is flagged at or under STIMULATION_RATIO "
        f"= {STIMULATION_RATIO}, chosen on the tune half as one octave under its smallest natural label. The zoo's "
        "own architectures (bn-cnn, resnet, mlp) are TorchScript in the zoo, which a scan cannot stimulate; they are "
        "measured here rebuilt as PyTorch modules.\n\n## Flagged at each ratio\n\n"
        + _sweep(rows)
        + "\n## The natural labels' smallest ratios\n\n"
        + _natural(rows)
        + "\n## The zoo's recorded verdicts joined with stimulation (the library's architectures)\n\n"
        "The mask search's verdict of each scan in zoo.json, seeds 0 and 1, one thread, default arithmetic, and the "
        "labels stimulation flags at the default ratio (once per model: it does not depend on the scan's seed "
        "beyond the clean images, here the seed-0 scan's).\n\n"
        + _replay(rows)
        + "\n## The clean images of another seed\n\nThe zoo's models of the library's architectures, stimulated "
        "again on the clean images of the zoo's seed-1 scan; the labels flagged at the default ratio.\n\n"
        + _seeds(all_rows)
        + "\n## Per model (the four smallest ratios; * a target)\n\n"
        + markdown_table(["model", "arch", "family", "half", "targets", "layer", "smallest ratios", "s"], per_model)
    )


def main() -> None:
    if sys.argv[1:] == ["report"]:
        rows = read_results(RESULTS_FILE)
        write_results(RESULTS_FILE, rows, table(rows))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated model names (default: every saved one)")
    parser.add_argument("--seed", type=int, default=0, help="the zoo scan's clean images (default 0)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.only.split(",") if args.only else saved()
    rows = [r for r in read_results(RESULTS_FILE) if r["model"] not in names or r.get("seed", 0) != args.seed]
    for name in names:
        rows.append(row_of(name, args.seed))
        print(json.dumps({k: rows[-1].get(k) for k in ("model", "layer", "ratios", "seconds")})[:300], flush=True)
        rows.sort(key=lambda r: (r.get("seed", 0), order().index(r["model"])))
        write_results(RESULTS_FILE, rows, table(rows))


if __name__ == "__main__":
    main()
