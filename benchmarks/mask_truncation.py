"""Do a reversed mask's faint pixels carry the seed-to-seed noise? The zoo's stored masks cut to their strongest
pixels, measured and decided again.

For every label of a default zoo scan whose masks and patterns are stored (runs/zoo/masks) and whose model is on
disk: the label's reversed mask keeps only its k largest pixels (their values unchanged), for k on a geometric grid
from one pixel to the whole image, and each cut mask is stamped with the label's reversed pattern on up to 300 clean
images of the other labels (IMAGES, from the scan's own sample). The truncated norm at fraction q is the L1 norm of
the smallest cut whose attack success reaches q times the whole mask's. Per half: the noise between the two seeds
(as benchmarks/steadiness.py measures it) of the search's norms and of the truncated ones, and the default decision
(zoo_report.py, its cached symmetric checks) on each: required infected scans exact, clean scans flagged, models
whose seeds agree on the verdict and on the flagged labels.

    python benchmarks/mask_truncation.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import steadiness
import torch
import zoo
import zoo_report
from common import RESULTS, markdown_table, write_results

from neuralcleanse.loading import load_model
from neuralcleanse.metrics import predict
from neuralcleanse.triggers import Trigger

FRACTIONS = (0.9, 0.97)  # of the whole mask's own attack success
IMAGES = 300  # clean images of the other labels per label
GRID_POINTS = 30  # cuts per label, geometric from 1 pixel to the whole image


def attack_success(
    model: torch.nn.Module, images: torch.Tensor, target: int, mask: torch.Tensor, pattern: torch.Tensor
) -> float:
    return int((predict(model, images, trigger=Trigger(mask, pattern)) == target).sum()) / len(images)


def truncated_norms(
    model: torch.nn.Module, images: torch.Tensor, target: int, mask: torch.Tensor, pattern: torch.Tensor
) -> tuple[float, dict[str, float]]:
    """The whole mask's attack success and, per fraction, the L1 norm of the smallest cut reaching that share of
    it (the whole mask's norm when no smaller cut does)."""
    flat = mask.flatten()
    order = flat.argsort(descending=True)
    pixels = flat.numel()
    grid = sorted({max(1, round(pixels ** (i / (GRID_POINTS - 1)))) for i in range(GRID_POINTS)})
    whole = attack_success(model, images, target, mask, pattern)
    curve = []
    for k in grid:
        cut = torch.zeros_like(flat)
        cut[order[:k]] = flat[order[:k]]
        curve.append((float(cut.sum()), attack_success(model, images, target, cut.view_as(mask), pattern)))
    norms = {f"{q:g}": next((n for n, s in curve if s >= q * whole), float(flat.sum())) for q in FRACTIONS}
    return whole, norms


def stored(scan: dict[str, Any]) -> tuple[Path, Path]:
    """Where zoo.py kept the scan's masks and patterns (default arithmetic, one thread)."""
    stem = f"{scan['model']}-{scan['seed']}-auto-1"
    return zoo.MASKS_DIR / f"{stem}.pt", zoo.MASKS_DIR / f"{stem}.patterns.pt"


def measure(scan: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    masks, patterns = (torch.load(path).float() for path in stored(scan))
    model = load_model(zoo.model_path(scan["model"])).model.eval()
    clean = zoo.scan_images(recipe, scan["seed"])
    generator = torch.Generator().manual_seed(0)
    row: dict[str, Any] = {
        "model": scan["model"],
        "seed": scan["seed"],
        "half": scan["half"],
        "dataset": scan["dataset"],
        "norms": scan["norms"],
        "success": [],
        "truncated": {f"{q:g}": [] for q in FRACTIONS},
    }
    for label in range(len(masks)):
        others = clean.images[clean.labels != label]
        others = others[torch.randperm(len(others), generator=generator)[:IMAGES]]
        whole, norms = truncated_norms(model, others, label, masks[label], patterns[label])
        row["success"].append(whole)
        for q, n in norms.items():
            row["truncated"][q].append(n)
    return row


def measured_scans(scans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every stored scan measured, resuming from the results file."""
    path = RESULTS / "mask_truncation.json"
    done = {(r["model"], r["seed"]): r for r in json.loads(path.read_text())} if path.exists() else {}
    recipes = {r["name"]: r for r in zoo.recipes()}
    rows = []
    for scan in scans:
        key = (scan["model"], scan["seed"])
        if key not in done and stored(scan)[1].exists() and zoo.is_trained(scan["model"]):
            done[key] = measure(scan, recipes[scan["model"]])
            path.write_text(json.dumps(list(done.values()), indent=1) + "\n")
            print(*key, flush=True)
        if key in done:
            rows.append(done[key])
    return rows


def judged(scans: list[dict[str, Any]], cache: dict[str, Any]) -> list[str]:
    """Per half: exact infected scans, clean scans flagged, seeds agreeing on the verdict and on the flags."""
    rows = [
        r
        for r in zoo_report.zoo_rows(scans, cache, zoo_report.DEFAULT_THRESHOLDS[zoo_report.DECISION])
        if r["required"]
    ]
    cells = []
    for half in ("tune", "test"):
        mine = [r for r in rows if r["half"] == half]
        infected = [r for r in mine if r["infected"]]
        clean = [r for r in mine if not r["infected"]]
        flags: dict[str, list[list[int]]] = {}
        for r in mine:
            flags.setdefault(r["model"], []).append(r["flagged"])
        pairs = [f for f in flags.values() if len(f) == 2]
        cells += [
            f"{sum(r['correct'] for r in infected)}/{len(infected)}",
            f"{sum(bool(r['flagged']) for r in clean)}/{len(clean)}",
            f"{sum(bool(a) == bool(b) for a, b in pairs)}/{len(pairs)}",
            f"{sum(a == b for a, b in pairs)}/{len(pairs)}",
        ]
    return cells


def main() -> None:
    scans, _ = zoo_report.default_scans()
    rows = measured_scans([s for s in scans if s["dataset"] in ("mnist", "gtsrb", "cifar10")])
    by_key = {(r["model"], r["seed"]): r for r in rows}
    chosen = [s for s in scans if (s["model"], s["seed"]) in by_key]
    both = [s for s in chosen if (s["model"], 0) in by_key and (s["model"], 1) in by_key]
    cache = json.loads(zoo_report.PAIRS_FILE.read_text())
    zoo_report.cache_scan_pairs(scans, cache)
    body = []
    for name in ("search", *(f"{q:g}" for q in FRACTIONS)):

        def norms(s: dict[str, Any], name: str = name) -> dict[str, Any]:
            r = by_key[(s["model"], s["seed"])]
            return {**s, "norms": r["norms"] if name == "search" else r["truncated"][name]}

        noise = [steadiness.noise_between_seeds([norms(s) for s in both], half) for half in ("tune", "test")]
        label = "the search's norms" if name == "search" else f"cut to {name} of the mask's success"
        body.append([label, *noise, *judged([norms(s) for s in chosen], cache)])
    header = ["norms", "noise tune", "noise test"]
    for half in ("tune", "test"):
        header += [f"{half} exact", f"{half} clean flagged", f"{half} verdicts agree", f"{half} flags agree"]
    table = (
        "# The zoo's masks cut to their strongest pixels (benchmarks/mask_truncation.py)\n\n"
        + (__doc__ or "").split("\n\n")[1].replace("\n", " ")
        + f"\n\n{len(rows)} scans ({len(both) // 2} models with both seeds).\n\n"
        + markdown_table(header, body)
    )
    write_results("mask_truncation", rows, table)


if __name__ == "__main__":
    main()
