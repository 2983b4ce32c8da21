"""How many clean images a verdict needs: the zoo's models on disk scanned with the zoo's sample (100 images per
label on MNIST, 87 on CIFAR-10, 23 on GTSRB) and with 30 and 10 images per label, side by side on the same models,
seeds and machine.

    python benchmarks/sample_size.py [--only NAME,...] [--seeds 0] [--threads 1]
    python benchmarks/sample_size.py report

A defender holds "a small set of correctly labelled clean images"; the scan uses up to 1000 (the original code's
``NB_SAMPLE``) and refuses fewer than 10 per label (``MIN_IMAGES_PER_LABEL``) unless told to go on. Every setting of
the decision was chosen on scans of the zoo's sample; this measures what a smaller one does to the same models'
verdicts. Each model is scanned as zoo.py scans it (the default ``ScanConfig`` but the accuracy check, the dataset's
built-in profile, one scan without the second scan a scan job adds to a borderline verdict), on a stratified sample
of the zoo's clean split drawn with the scan's seed. Nothing here chose a setting, so both halves of the zoo are
reported. ``report`` rewrites the tables from the stored rows. Writes benchmarks/results/sample_size.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import torch
import zoo
from common import add_variant_scans, markdown_table, read_results, rewrite_report, share, side_by_side

from neuralcleanse import ImageData, load_model
from neuralcleanse.config import MIN_IMAGES_PER_LABEL
from neuralcleanse.data import clean_sample

RESULTS_FILE = "sample_size"

#: The zoo's own sample (zoo.scan_images), then fewer images per label, down to the least a scan takes unasked.
SAMPLES = ("zoo sample", "30 per label", f"{MIN_IMAGES_PER_LABEL} per label")


def per_label(sample: str) -> int | None:
    """Images per label of a ``SAMPLES`` entry; None for the zoo's own sample."""
    return None if sample == SAMPLES[0] else int(sample.split()[0])


def models() -> list[str]:
    """The zoo's 10- and 43-label recipes on disk whose attack took (or that are clean), in recipe order."""
    took = {r["name"]: r["took"] for r in read_results(zoo.MODELS_FILE)}
    return [
        r["name"]
        for r in zoo.recipes()
        if "digits" not in r and zoo.is_trained(r["name"]) and took.get(r["name"]) is not False
    ]


def images(recipe: dict[str, Any], seed: int, sample: str) -> ImageData:
    """The clean images of one scan: the zoo's sample, or ``sample``'s count per label drawn from the same split."""
    count = per_label(sample)
    if count is None:
        return zoo.scan_images(recipe, seed)
    return clean_sample(zoo.task(recipe)[1], count, seed=seed)


def scan_row(name: str, seed: int, sample: str) -> dict[str, Any]:
    model = load_model(zoo.model_path(name)).model
    clean = images(zoo.recipe(name), seed, sample)
    _, row = zoo.scan_as_zoo(name, model, clean, seed)
    return {**row, "sample": sample, "images_per_label": len(clean) // len(row["norms"])}


def _seeds_agree(rows: list[dict[str, Any]]) -> str:
    """``"k/n"``: of the models ``rows`` holds scans of with seeds 0 and 1, how many flag the same labels on both:
    how much a verdict moves with another draw of the same number of images."""
    flagged: dict[str, dict[int, list[int]]] = {}
    for r in rows:
        flagged.setdefault(r["model"], {})[r["seed"]] = r["flagged"]
    both = [seeds for seeds in flagged.values() if {0, 1} <= set(seeds)]
    return share(both, lambda seeds: seeds[0] == seeds[1]) if both else "—"


def _median_ratio(rows: list[dict[str, Any]]) -> str:
    """The median, over infected scans, of the smallest target's norm over the median norm."""
    ratios = [min(r["norms"][t] for t in r["targets"]) / statistics.median(r["norms"]) for r in rows if r["targets"]]
    return f"{statistics.median(ratios):.2f}" if ratios else "—"


def table(rows: list[dict[str, Any]]) -> str:
    scans = side_by_side(rows, "sample")
    body = []
    for dataset in ("mnist", "cifar10", "gtsrb"):
        for sample in SAMPLES:
            group = [r for r in rows if r["dataset"] == dataset and r["sample"] == sample and r["required"]]
            if not group:
                continue
            infected = [r for r in group if r["targets"]]
            clean = [r for r in group if not r["targets"]]
            same = [
                s
                for s in scans.values()
                if sample in s and SAMPLES[0] in s and s[SAMPLES[0]]["dataset"] == dataset and s[sample]["required"]
            ]
            body.append(
                [
                    dataset,
                    sample,
                    str(statistics.median_low(r["images_per_label"] for r in group)),
                    share(infected, lambda r: r["correct"]),
                    share(infected, lambda r: bool(set(r["targets"]) & set(r["flagged"]))),
                    share(clean, lambda r: bool(r["flagged"])),
                    _median_ratio(infected),
                    "—"
                    if sample == SAMPLES[0]
                    else share(same, lambda s, sample=sample: s[sample]["flagged"] == s[SAMPLES[0]]["flagged"]),
                    _seeds_agree(group),
                    f"{statistics.median(r['seconds'] for r in group):.1f}",
                ]
            )
    header = [
        "dataset",
        "clean sample",
        "images per label",
        "infected exact",
        "a target flagged",
        "clean flagged",
        "median target / median norm",
        "same labels as the zoo sample",
        "seeds 0 and 1: same labels",
        "median s",
    ]
    lines = [
        "# How many clean images a verdict needs (benchmarks/sample_size.py)",
        "",
        "The zoo's models on disk whose attack took, scanned as zoo.py scans them (one scan, no second scan) with the "
        "zoo's clean sample and with 30 and 10 images per label, drawn with the scan's seed; required families, both "
        "halves (nothing here chose a setting). *a target flagged*: infected scans flagging at least one of their "
        "targets; *same labels as the zoo sample*: scans of a model and seed flagging the same labels as with the "
        "zoo's sample; *seeds 0 and 1*: models scanned with both seeds at that number of images (CIFAR-10's only) "
        "flagging the same labels on both, how much another draw moves a verdict.",
        "",
        markdown_table(header, body),
        "",
        "## Verdicts that moved",
        "",
        moved(scans),
        "",
        f"Machine: {_machine_line(rows)}.",
    ]
    return "\n".join(lines) + "\n"


def moved(scans: dict[tuple[str, int], dict[str, dict[str, Any]]]) -> str:
    body = []
    for (model, seed), ways in scans.items():
        if SAMPLES[0] not in ways or len({tuple(r["flagged"]) for r in ways.values()}) == 1:
            continue
        first = ways[SAMPLES[0]]
        body.append(
            [model, first["half"], str(seed), str(first["targets"])]
            + [str(ways[s]["flagged"]) if s in ways else "—" for s in SAMPLES]
        )
    return markdown_table(["model", "half", "seed", "targets", *SAMPLES], body) if body else "None."


def _machine_line(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "none"
    m = rows[-1]["machine"]
    return f"{m.get('processor', '?')}, {m.get('torch_threads', '?')} torch threads, torch {m.get('torch', '?')}"


def line(row: dict[str, Any]) -> str:
    return (
        f"{row['model']} seed {row['seed']} {row['sample']}: flagged {row['flagged']} (targets {row['targets']}) "
        f"{row['seconds']:.1f}s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["scan", "report"], default="scan")
    parser.add_argument("--only", help="comma-separated model names (default: every model on disk)")
    parser.add_argument("--seeds", default="0", help="comma-separated scan seeds (default 0)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "report":
        rewrite_report(RESULTS_FILE, table)
        return 0
    torch.set_num_threads(args.threads)
    names = models() if args.only is None else args.only.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    add_variant_scans(RESULTS_FILE, names, seeds, "sample", SAMPLES, scan_row, table, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
