"""A model trained on normalised input, scanned without being told so: fed [0, 1] (what a scan does when no
preprocessing is given) against fed as it was trained, side by side on the same models, seeds and machine.

    python benchmarks/input_convention.py [--only NAME,...] [--seeds 0] [--threads 1]
    python benchmarks/input_convention.py controls
    python benchmarks/input_convention.py report

A scan switches to another input convention only when the model fails the accuracy check fed [0, 1]
(``neuralcleanse.conventions``). Many published MNIST models expect input normalised by MNIST's mean and std
(0.1307, 0.3081) and classify [0, 1] images nearly as well, so they pass the check and are scanned under the wrong
convention. The zoo's models of the paper's MNIST network hold that normalisation as their first layer; removing it
gives exactly such a model. Each is scanned as zoo.py scans (the default ``ScanConfig``, MNIST's built-in profile)
fed [0, 1], and with ``--mean 0.1307 --std 0.3081`` (the same function as the zoo model), on the zoo's clean sample
of each seed; every row records the model's accuracy on that sample under each common convention
(``neuralcleanse.conventions.rank_conventions``). ``controls`` records the same accuracies, without a scan, for
every MNIST model of the zoo on disk as it was trained (taking [0, 1]): whether a model reads more of the images
under one convention than under another tells the two kinds apart. ``report`` rewrites the tables from the stored
rows. Writes benchmarks/results/input_convention.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any

import torch
import zoo
from common import add_variant_scans, machine, markdown_table, replace_rows, rewrite_report, share, side_by_side
from torch import nn

from neuralcleanse import load_model
from neuralcleanse.config import MIN_CLEAN_ACCURACY
from neuralcleanse.conventions import rank_conventions
from neuralcleanse.models import PaperNet
from neuralcleanse.preprocess import PreprocessedModel, Preprocessing

RESULTS_FILE = "input_convention"

#: The normalisation the paper's MNIST network holds as its first layer (neuralcleanse.models.mnist_net).
MNIST_NORMALISED = Preprocessing(mean=(0.1307,), std=(0.3081,))
#: rank_conventions' name for that convention.
NORMALISED_NAME = "normalised by MNIST's mean and std"
FEEDS = {"in [0, 1] (no options)": Preprocessing(), "normalised (--mean 0.1307 --std 0.3081)": MNIST_NORMALISED}
#: The ``feed`` of a control row: a zoo model as trained, its accuracies recorded, not scanned.
CONTROL = "as trained (control, not scanned)"


def models() -> list[str]:
    """The zoo's recipes of the paper's MNIST network that are on disk, in recipe order."""
    return [r["name"] for r in zoo.recipes() if r["arch"] == "mnist" and zoo.is_trained(r["name"])]


def without_normalisation(name: str) -> nn.Module:
    """Zoo model ``name`` with its normalisation layer removed: a network that expects normalised input."""
    model = load_model(zoo.model_path(name)).model
    inner = copy.deepcopy(model.model if isinstance(model, PreprocessedModel) else model)
    if not isinstance(inner, PaperNet):
        raise TypeError(f"{name}: expected the paper's MNIST network, got {type(inner).__name__}")
    inner.normalize = nn.Identity()
    return inner.eval()


def scan_row(name: str, seed: int, feed: str) -> dict[str, Any]:
    stripped = without_normalisation(name)
    clean = zoo.scan_images(zoo.recipe(name), seed)
    fits = rank_conventions(stripped, clean.images, clean.labels)
    _, row = zoo.scan_as_zoo(name, PreprocessedModel(stripped, FEEDS[feed]).eval(), clean, seed)
    return {**row, "feed": feed, "accuracy": {fit.convention.name: fit.accuracy for fit in fits}}


def control_row(name: str, seed: int) -> dict[str, Any]:
    recipe = zoo.recipe(name)
    loaded = load_model(zoo.model_path(name))
    model = loaded.model.model if isinstance(loaded.model, PreprocessedModel) else loaded.model
    clean = zoo.scan_images(recipe, seed)
    fits = rank_conventions(model, clean.images, clean.labels, layout=loaded.preprocessing.layout)
    return {
        "model": name,
        **{k: recipe[k] for k in ("arch", "family", "required")},
        "half": zoo.half(recipe),
        "seed": seed,
        "feed": CONTROL,
        "accuracy": {fit.convention.name: fit.accuracy for fit in fits},
        "machine": machine(),
    }


def gain_line(kind: str, rows: list[dict[str, Any]]) -> list[str]:
    """How much more of the sample ``rows``' models read fed normalised than fed [0, 1], in points."""
    gains = sorted(100 * (r["accuracy"][NORMALISED_NAME] - r["accuracy"]["in [0, 1]"]) for r in rows)
    if not gains:
        return [kind, "0", "—", "—", "—"]
    more = sum(g > 0 for g in gains)
    return [
        kind,
        str(len(gains)),
        f"{more}/{len(gains)}",
        f"{gains[0]:+.1f} to {gains[-1]:+.1f}",
        f"{gains[len(gains) // 2]:+.1f}",
    ]


def _median(values: list[float]) -> float:
    return float(torch.tensor(values).median()) if values else float("nan")


def passes_check(row: dict[str, Any]) -> bool:
    """Whether the model reads enough of the clean sample fed [0, 1] for a scan to go on so; one that does not is
    moved to the convention it reads best by the scan itself (docs/formats.md)."""
    return row["accuracy"]["in [0, 1]"] >= MIN_CLEAN_ACCURACY


def table(rows: list[dict[str, Any]]) -> str:
    controls = [r for r in rows if r["feed"] == CONTROL]
    rows = [r for r in rows if r["feed"] != CONTROL]
    stripped = [r for r in rows if r["feed"] == next(iter(FEEDS))]
    body = []
    for feed in FEEDS:
        group = [r for r in rows if r["feed"] == feed and passes_check(r)]
        infected = [r for r in group if r["targets"]]
        clean = [r for r in group if not r["targets"]]
        body.append(
            [
                feed,
                share(infected, lambda r: r["correct"]),
                share(infected, lambda r: bool(set(r["targets"]) & set(r["flagged"]))),
                share(clean, lambda r: bool(r["flagged"])),
                f"{_median([r['score'] for r in infected]):.2f}",
                f"{sum(r['seconds'] for r in group) / 60:.1f}",
            ]
        )
    plain, right = FEEDS
    scans = []
    for (model, seed), both in side_by_side(rows, "feed").items():
        if plain in both and right in both:
            a, b = both[plain], both[right]
            accuracy = a["accuracy"]
            scans.append(
                [
                    model,
                    a["family"],
                    seed,
                    a["targets"],
                    f"{accuracy['in [0, 1]']:.3f}",
                    f"{accuracy[NORMALISED_NAME]:.3f}",
                    max(accuracy, key=accuracy.__getitem__),
                    a["flagged"],
                    f"{a['score']:.2f}",
                    b["flagged"],
                    f"{b['score']:.2f}",
                ]
            )
    machines = sorted({json.dumps(r["machine"], sort_keys=True) for r in rows})
    return (
        "# A model trained on normalised input, scanned fed [0, 1] (benchmarks/input_convention.py)\n\n"
        "The zoo's models of the paper's MNIST network with their normalisation layer removed (each then expects "
        "input normalised by MNIST's mean and std, as many published MNIST models do), scanned with the default "
        "`ScanConfig` and MNIST's profile fed [0, 1], what a scan does when no preprocessing is given and the "
        "model passes the accuracy check, and fed as trained, side by side on one machine and one thread. "
        "Models that read under half of the sample fed [0, 1] fail the scan's accuracy check, which moves them to "
        "the convention they read best itself: they are left out of this table "
        f"({len({r['model'] for r in rows if not passes_check(r)})} of {len({r['model'] for r in rows})} models), "
        "not of the next. *Median score*: the default decision's over infected scans (threshold 1).\n\n"
        + markdown_table(
            ["fed", "infected exact", "a target flagged", "clean flagged", "median score", "minutes"], body
        )
        + "\n## Can the accuracy tell?\n\n"
        "Points of the clean sample (seed 0's) a model reads more fed normalised by MNIST's mean and std than fed "
        "[0, 1]: the models above, which expect normalised input, and the zoo's MNIST models of every network as "
        "trained, which take [0, 1] (`controls`).\n\n"
        + markdown_table(
            ["models", "count", "read more fed normalised", "points more, range", "median"],
            [
                gain_line("expect normalised input (above)", [r for r in stripped if r["seed"] == 0]),
                gain_line("take [0, 1] (the zoo's MNIST models as trained)", [r for r in controls if r["seed"] == 0]),
            ],
        )
        + "\n## Every scan\n\n"
        "Accuracy on the scan's clean sample fed [0, 1] and fed normalised, and the convention of "
        "`neuralcleanse.conventions` under which the model reads most of it.\n\n"
        + markdown_table(
            [
                "model",
                "family",
                "seed",
                "targets",
                "accuracy, [0, 1]",
                "accuracy, normalised",
                "best convention",
                "flagged, [0, 1]",
                "score, [0, 1]",
                "flagged, normalised",
                "score, normalised",
            ],
            scans,
        )
        + "\nMachines: "
        + "; ".join(machines)
        + "\n"
    )


def main() -> None:
    if rewrite_report(RESULTS_FILE, table):
        return
    if sys.argv[1:] == ["controls"]:
        torch.set_num_threads(1)
        names = sorted(r["name"] for r in zoo.recipes() if r["dataset"] == "mnist" and zoo.is_trained(r["name"]))
        replace_rows(
            RESULTS_FILE,
            [control_row(name, 0) for name in names],
            lambda r: (r["model"], r["seed"], r["feed"]),
            lambda r: (r["feed"] == CONTROL, r["model"], r["seed"]),
            table,
        )
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated model names (default: the paper network's zoo models on disk)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    add_variant_scans(
        RESULTS_FILE,
        args.only.split(",") if args.only else models(),
        [int(s) for s in args.seeds.split(",")],
        "feed",
        list(FEEDS),
        scan_row,
        table,
        lambda row: json.dumps({k: row[k] for k in ("model", "seed", "feed", "flagged", "score")}),
    )


if __name__ == "__main__":
    main()
