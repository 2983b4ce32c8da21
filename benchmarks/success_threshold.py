"""The zoo scanned with a lower attack-success threshold for the search, beside the default's scans.

Each label's trigger must send 99% of the clean images to the label (the original code's threshold), so its norm
hangs on the hardest hundredth of the images, a handful of them, and moves with the clean sample and the search's
starts (benchmarks/results/seed_noise.md). With a lower threshold it hangs on more images. Here the zoo's models of
one half (those whose attack took, trained on this machine) are scanned on both seeds with ``THRESHOLD``, with
every other setting the default, and compared with their default scans as zoo_report.py decides them today: per
dataset, required infected scans flagging exactly their targets, clean scans flagging anything, and models whose
two seeds reach the same verdict. The decision's settings were chosen on norms searched at 0.99, so this asks
whether the lower threshold is worth choosing them again, on the tune half first.

    python benchmarks/success_threshold.py [--half tune] [--only name,...]
"""

from __future__ import annotations

import argparse
import functools
import statistics
from collections import defaultdict
from typing import Any

import torch
import zoo
import zoo_report
from common import machine, markdown_table, read_results

STEM = "success_threshold"
THRESHOLD = 0.9  # a trigger may miss the hardest tenth of the images (seed_noise.md: the norms' noise falls by a fifth)
SEEDS = (0, 1)


def same_scan(row: dict[str, Any], name: str, seed: int) -> bool:
    return row["model"] == name and row["seed"] == seed


def summary(rows: list[dict[str, Any]], before: dict[tuple[str, int], dict[str, Any]]) -> list[list[Any]]:
    """Per half and dataset: exact required infected scans, clean scans flagged and models whose seeds agree on the
    verdict, at 0.99 (the default's scans of the same models and seeds) and at ``THRESHOLD``."""
    groups: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for r in rows:
        if "norms" in r and r["required"] and (r["model"], r["seed"]) in before:
            groups[(r["half"], r["dataset"])].append((before[(r["model"], r["seed"])], r))
    body = []
    for (half, dataset), pairs in sorted(groups.items()):
        cells = []
        for side in (0, 1):
            scans = [p[side] for p in pairs]
            infected = [s for s in scans if s["infected"]]
            clean = [s for s in scans if not s["infected"]]
            verdicts: dict[str, set[bool]] = defaultdict(set)
            for s in scans:
                verdicts[s["model"]].add(bool(s["flagged"]))
            cells.append(
                [
                    f"{sum(s['flagged'] == s['targets'] for s in infected)}/{len(infected)}",
                    f"{sum(bool(s['flagged']) for s in clean)}/{len(clean)}",
                    f"{sum(len(v) == 1 for v in verdicts.values())}/{len(verdicts)}",
                    statistics.median(s["seconds"] for s in scans),
                ]
            )
        body.append([half, dataset, *(c for pair in zip(*cells, strict=True) for c in pair)])
    return body


def table(rows: list[dict[str, Any]], before: dict[tuple[str, int], dict[str, Any]]) -> str:
    header = ["half", "dataset"]
    for what in ("exact infected", "clean flagged", "seeds agree", "median s"):
        header += [f"{what} 0.99", f"{what} {THRESHOLD:g}"]
    return (
        f"# The zoo searched at an attack-success threshold of {THRESHOLD:g} (benchmarks/success_threshold.py)\n\n"
        + (__doc__ or "").split("\n\n")[1].replace("\n", " ")
        + "\n\n"
        + markdown_table(header, summary(rows, before))
        + "\nThe 0.99 scans' seconds are those of the zoo's scans (other loads, other days); the others' were "
        "scanned two at a time on two cores.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--half", default="tune", choices=("tune", "test"))
    parser.add_argument("--only", help="comma-separated zoo model names")
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = zoo_report.default_scans()[1]
    trained = {r["name"]: r for r in read_results(zoo.MODELS_FILE)}
    only = set(args.only.split(",")) if args.only else None
    for recipe in zoo.recipes():
        name = recipe["name"]
        model_row = trained.get(name)
        if only is not None and name not in only:
            continue
        if zoo.half(recipe) != args.half or model_row is None or model_row["took"] is False:
            continue
        if not zoo.is_trained(name) or "digits" in recipe:  # the many-label models: hours per scan
            continue
        for seed in SEEDS:
            same = functools.partial(same_scan, name=name, seed=seed)
            if any(same(r) for r in read_results(STEM)):
                continue
            row = {**zoo.scan_row(recipe, model_row, seed, "auto", THRESHOLD), "machine": machine()}
            row["success_threshold"] = THRESHOLD
            zoo.add_row(STEM, row, "model", same, functools.partial(table, before=before))
            print({k: row.get(k) for k in ("model", "seed", "targets", "flagged", "seconds")}, flush=True)


if __name__ == "__main__":
    main()
