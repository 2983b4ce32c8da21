"""Neuron stimulation on the zoo's models on disk and the held-out models: how far below the median label a target's
stimulation level lies, against the natural labels', and what flagging it adds to the zoo's verdicts.

    python benchmarks/stimulation.py [--only NAME,...] [--seed 0] [--threads 1] [--formats]
    python benchmarks/stimulation.py report

For every model of the zoo that ``zoo.py train`` has saved under runs/zoo/models/ and every held-out model of
held_out.py saved under runs/models/, :func:`~neuralcleanse.stimulation.scan_stimulation` as a scan with seed 0
runs it (on the clean images of the zoo's scan with ``--seed``, 0 by default, or held_out.py's, which has one set
of clean images for every seed). Every model is loaded as a scan loads it: the zoo's own architectures (batch-norm
CNNs, ResNets, MLPs) are TorchScript, stimulated through their ONNX export
(:mod:`neuralcleanse.formats.unscript`). ``--formats`` stimulates the held-out models (saved as PyTorch modules)
once more as the TorchScript and ONNX files a user might bring instead, exported here and loaded as a scan loads
them. ``report`` rewrites the tables from the stored rows.

The tables: per half (the zoo's tune half chose STIMULATION_RATIO; the test half and the held-out models are
reported) and per ratio, the clean models with a label at or under it, the infected models with a target, with a
label that is no target, and with exactly the targets; the natural labels' smallest ratios; and the zoo's recorded
verdicts (the mask search's, zoo.json) joined with the labels stimulation flags. Writes
benchmarks/results/stimulation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import blend_search
import held_out
import torch
import zoo
from common import machine, markdown_table, replace_rows, rewrite_report

from neuralcleanse import load_model
from neuralcleanse.blends import BLEND_RATIO
from neuralcleanse.metrics import outputs_of
from neuralcleanse.stimulation import STIMULATION_RATIO, Stimulation, scan_stimulation, stimulation_suspects

RESULTS_FILE = "stimulation"
RATIOS = [2 ** (-k / 2) for k in (6, 5, 4, 3, 2)]  # 0.125 to 0.5, the levels' half octaves
HELD_OUT = [*held_out.MODELS, "mnist-clean", "gtsrb-clean"]
NATIVE = "native"  # a model as saved: a neuralcleanse folder, or the zoo's TorchScript
FORMATS = ("torchscript", "onnx")  # the held-out models' other files (--formats)
LIBRARY = ("mnist", "gtsrb")  # the library's architectures, the paper's networks (the others are the zoo's own)


def order() -> list[str]:
    return [r["name"] for r in zoo.recipes()] + HELD_OUT


def saved() -> list[str]:
    on_disk = [r["name"] for r in zoo.recipes() if zoo.is_trained(r["name"])]
    return on_disk + [name for name in HELD_OUT if (held_out.model_dir(name) / "model.json").is_file()]


def loaded_model(name: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model as a scan loads it, and what is known of it: dataset, arch, family, half, targets."""
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
    return load_model(zoo.model_path(name)).model, info


def scan_images(name: str, dataset: str, seed: int) -> Any:
    return held_out.scan_images(dataset) if name in HELD_OUT else zoo.scan_images(zoo.recipe(name), seed=seed)


def exported(model: torch.nn.Module, example: torch.Tensor, file_format: str, folder: Path) -> torch.nn.Module:
    """``model`` written as a TorchScript (traced) or ONNX file and loaded back as a scan loads a file."""
    path = folder / ("model.pt" if file_format == "torchscript" else "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if file_format == "torchscript":
            torch.jit.trace(model, example).save(str(path))
        else:
            torch.onnx.export(model, (example,), path, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "N"}})
    return load_model(path).model


def row_of(name: str, seed: int, file_format: str = NATIVE) -> dict[str, Any]:
    model, info = loaded_model(name)
    clean = scan_images(name, info["dataset"], seed)
    with tempfile.TemporaryDirectory() as folder:
        if file_format != NATIVE:
            model = exported(model.eval(), clean.images[:2], file_format, Path(folder))
        start = time.perf_counter()
        stimulation = scan_stimulation(model, clean.images, outputs_of(model, clean.images))
        seconds = time.perf_counter() - start
    base = {"model": name, "seed": seed, "format": file_format, **info, "seconds": seconds, "machine": machine()}
    if stimulation is None:
        return {**base, "layer": None}
    return {**base, **stimulation.to_dict(), "ratios": stimulation.ratios}


def _flags(row: dict[str, Any] | None, ratio: float = STIMULATION_RATIO) -> set[int]:
    """The labels the library's rule flags at ``ratio`` from a stored row (none without one)."""
    if row is None or not row.get("layer"):
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


STAGES = ("mask search", "and blend search", "and stimulation")


def _replay(rows: list[dict[str, Any]]) -> str:
    """Every recorded zoo scan (zoo.json: the mask search's verdict) decided as the default decides now: joined with
    the blend search's verdict where blend_search.py scanned the model (its scan with the same seed, replayed at the
    library's settings: a complete default scan of the time, mask search included) and with the labels stimulation
    flags where the model is on disk (the row of the same clean images, else the seed-0 row)."""
    stimulated = {(r["model"], r.get("seed", 0)): r for r in rows if r.get("layer") and r["half"] != "held-out"}
    blends = {(r["model"], r["seed"]): r for r in blend_search.read_rows()}
    recorded = json.loads((Path(__file__).parent / "results" / "zoo.json").read_text())
    counts: Counter[tuple[str, ...]] = Counter()
    verdicts: dict[tuple[str, str], dict[str, set[bool]]] = {}
    changed = []
    for scan in recorded:
        if not scan["required"] or scan["threads"] != 1 or scan.get("precision", "auto") != "auto":
            continue
        key = (scan["model"], scan["seed"])
        blend, stimulation = blends.get(key), stimulated.get(key) or stimulated.get((scan["model"], 0))
        searched = set(blend_search.verdict(blend, BLEND_RATIO)) if blend else set(scan["flagged"])
        stages = dict(zip(STAGES, (set(scan["flagged"]), searched, searched | _flags(stimulation)), strict=True))
        targets, half = set(scan["targets"]), scan["half"]
        kind = "infected" if targets else "clean"
        counts[(half, kind)] += 1
        counts[(half, kind, "blend scanned")] += blend is not None
        counts[(half, kind, "stimulated")] += stimulation is not None
        for stage, flagged in stages.items():
            counts[(half, kind, stage)] += flagged == targets
            verdicts.setdefault((half, scan["model"]), {}).setdefault(stage, set()).add(bool(flagged))
        if stages[STAGES[-1]] != stages[STAGES[0]]:
            changed.append([scan["model"], half, scan["seed"], sorted(targets), *(sorted(f) for f in stages.values())])
    body = []
    for half in ("tune", "test"):
        models = [v for (h, _), v in verdicts.items() if h == half]
        for kind in ("infected", "clean"):
            body.append(
                [
                    half,
                    f"{kind} ({counts[(half, kind)]}; blend-scanned {counts[(half, kind, 'blend scanned')]}, "
                    f"stimulated {counts[(half, kind, 'stimulated')]})",
                    *(f"{counts[(half, kind, stage)]}/{counts[(half, kind)]}" for stage in STAGES),
                ]
            )
        body.append(
            [
                half,
                "models whose seeds agree",
                *(f"{sum(len(v[s]) == 1 for v in models)}/{len(models)}" for s in STAGES),
            ]
        )
    header = ["half", "scans (required families)", *(f"right: {s}" for s in STAGES)]
    return (
        markdown_table(header, body)
        + "\nScans whose flagged labels change (targets; mask search; with the blend search; with stimulation):\n\n"
        + markdown_table(["model", "half", "seed", "targets", *STAGES], changed)
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


def _formats(rows: list[dict[str, Any]]) -> str:
    native = {r["model"]: r for r in rows if r.get("seed", 0) == 0 and r.get("format", NATIVE) == NATIVE}
    body = []
    for r in rows:
        if r.get("format", NATIVE) == NATIVE or r["model"] not in native:
            continue
        own = native[r["model"]]
        body.append(
            [
                r["model"],
                r["format"],
                ", ".join(map(str, r["targets"])) or "—",
                r.get("layer") or "not stimulated",
                str(sorted(_flags(r, STIMULATION_RATIO))),
                str(sorted(_flags(own, STIMULATION_RATIO))),
                "yes" if r.get("levels") == own.get("levels") else "no",
            ]
        )
    header = ["model", "file", "targets", "layer", "flagged", "flagged as saved", "same levels"]
    return markdown_table(header, body)


def table(all_rows: list[dict[str, Any]]) -> str:
    exports = [r for r in all_rows if r.get("format", NATIVE) != NATIVE]
    all_rows = [r for r in all_rows if r.get("format", NATIVE) == NATIVE]
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
        f"= {STIMULATION_RATIO}, chosen on the tune half as one octave under its smallest natural label. Every model "
        "is loaded as a scan loads it; the zoo's own architectures (bn-cnn, resnet, mlp) are TorchScript, stimulated "
        "through their ONNX export.\n\n## Flagged at each ratio\n\n"
        + _sweep(rows)
        + "\n## The natural labels' smallest ratios\n\n"
        + _natural(rows)
        + "\n## The zoo's recorded scans decided as the default decides\n\n"
        "Each scan of zoo.json (required families, seeds 0 and 1, one thread, default arithmetic) right or not under "
        "its mask search's verdict as recorded; joined with the blend search's where blend_search.py scanned the "
        "model with the same seed (a complete default scan of the time, its own mask search included, replayed at the "
        "library's settings); and with the labels stimulation flags at the default ratio where the model is on disk "
        "(the clean images of the same seed). Scans of models neither rescanned nor on disk keep the stage before.\n\n"
        + _replay(all_rows)
        + "\n## The clean images of another seed\n\nThe zoo's models, stimulated again on the clean images of the "
        "zoo's seed-1 scan; the labels flagged at the default ratio.\n\n"
        + _seeds(all_rows)
        + "\n## The held-out models as TorchScript and ONNX files\n\n"
        "Each held-out model exported here (traced TorchScript; ONNX through torch's TorchScript exporter) and loaded "
        "as a scan loads a file; the labels flagged at the default ratio, beside those of the model as saved.\n\n"
        + _formats([*rows, *exports])
        + "\n## Per model (the four smallest ratios; * a target)\n\n"
        + markdown_table(["model", "arch", "family", "half", "targets", "layer", "smallest ratios", "s"], per_model)
    )


def main() -> None:
    if rewrite_report(RESULTS_FILE, table):
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated model names (default: every saved one)")
    parser.add_argument("--seed", type=int, default=0, help="the zoo scan's clean images (default 0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--formats", action="store_true", help="the held-out models as TorchScript and ONNX files")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.only.split(",") if args.only else saved()
    runs = [(n, f) for n in names if n in HELD_OUT for f in FORMATS] if args.formats else [(n, NATIVE) for n in names]

    def key(r: dict[str, Any]) -> tuple[str, int, str]:
        return r["model"], r.get("seed", 0), r.get("format", NATIVE)

    for name, file_format in runs:
        row = row_of(name, args.seed, file_format)
        print(json.dumps({k: row.get(k) for k in ("model", "layer", "ratios", "seconds")})[:300], flush=True)
        replace_rows(
            RESULTS_FILE,
            [row],
            key,
            lambda r: (r.get("seed", 0), r.get("format", NATIVE) != NATIVE, order().index(r["model"])),
            table,
        )


if __name__ == "__main__":
    main()
