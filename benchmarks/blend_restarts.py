"""One blend search per label against the smaller of two, on the models of blend_search.py.

    python benchmarks/blend_restarts.py [--only NAME,...] [--threads 1]
    python benchmarks/blend_restarts.py report

For every scan row of benchmarks/results/blend_search.json (the many-label task's aside), the blend search of
every label is run twice more (``ScanConfig().blend_search``, a fresh draw: seed 100 + the scan seed) and the
scan's verdict replayed from the row's mask search (its norms and its verdict after the symmetric checks) with the
first of the two blend searches, and with the smaller of both per label (``BLEND_SEARCHES = 2``); beside them the
verdict replayed with the scan's own blend search. Writes benchmarks/results/blend_restarts.{json,md}: whether a
second search changes a verdict, and the targets' blend norms over the median either way; ``report`` rewrites the
table from the stored rows.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import blend_search
import torch
import zoo
from common import RESULTS, machine, markdown_table, read_results, update_results, write_results

from neuralcleanse.blends import BLEND_RATIO
from neuralcleanse.config import ScanConfig
from neuralcleanse.loading import load_model
from neuralcleanse.reverse import reverse_engineer

RESULTS_FILE = "blend_restarts"
SCANS = [r for r in json.loads((RESULTS / "blend_search.json").read_text()) if "digits" not in zoo.recipe(r["model"])]
MODELS = list(dict.fromkeys(r["model"] for r in SCANS))


def verdict(row: dict[str, Any], blend_norms: torch.Tensor) -> list[int]:
    """The scan's verdict from the row's mask search and these blend norms, at the library's ratio."""
    return blend_search.verdict({**row, "blend_norms": blend_norms.tolist()}, BLEND_RATIO)


def rows_of(name: str) -> list[dict[str, Any]]:
    loaded = load_model(zoo.model_path(name))
    out = []
    for row in (r for r in SCANS if r["model"] == name):
        clean = zoo.scan_images(zoo.recipe(name), row["seed"])
        k = len(row["norms"])
        searched = reverse_engineer(
            loaded.model,
            clean.images,
            list(range(k)) * 2,
            ScanConfig().blend_search,
            torch.Generator().manual_seed(100 + row["seed"]),
            bool(loaded.outputs_probabilities),
        )
        first, second = searched.norms.view(2, k)
        both = torch.minimum(first, second)
        out.append(
            {
                "model": name,
                "dataset": row["dataset"],
                "half": row["half"],
                "seed": row["seed"],
                "targets": row["targets"],
                "one_search": verdict(row, first),
                "two_searches": verdict(row, both),
                "target_ratio_one": [float(first[t] / first.median()) for t in row["targets"]],
                "target_ratio_two": [float(both[t] / both.median()) for t in row["targets"]],
                "blend_norms": [first.tolist(), second.tolist()],
                "machine": machine(),
            }
        )
    return out


def table(rows: list[dict[str, Any]]) -> str:
    def ratios(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values) or "—"

    scanned = {(r["model"], r["seed"]): verdict(r, torch.tensor(r["blend_norms"])) for r in SCANS}
    rows = [{**r, "scanned": scanned[r["model"], r["seed"]]} for r in rows]
    changed = sum(r["one_search"] != r["two_searches"] for r in rows)
    right = {key: sum(r[key] == r["targets"] for r in rows) for key in ("scanned", "one_search", "two_searches")}
    body = [
        [
            r["model"],
            r["half"],
            r["seed"],
            r["targets"],
            r["scanned"],
            r["one_search"],
            r["two_searches"],
            ratios(r["target_ratio_one"]),
            ratios(r["target_ratio_two"]),
        ]
        for r in rows
    ]
    header = [
        "model",
        "half",
        "seed",
        "targets",
        "scan's blend search",
        "one blend search",
        "two blend searches",
        "targets' blend norm / median, one",
        "two",
    ]
    return (
        "# One blend search per label or the smaller of two\n\n"
        f"{len(rows)} scans: a second blend search changes {changed} verdicts. Exactly right (infected: the targets; "
        f"clean: nothing), each replayed from the scan's mask search at the default ratio: with the scan's own blend "
        f"search {right['scanned']}, with a fresh one {right['one_search']}, with two {right['two_searches']}.\n\n"
        + markdown_table(header, body)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=("scan", "report"), default="scan")
    parser.add_argument("--only", help="comma-separated model names (default: every one of MODELS on disk)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.command == "report":
        rows = read_results(RESULTS_FILE)
        write_results(RESULTS_FILE, rows, table(rows))
        return
    torch.set_num_threads(args.threads)
    saved = [name for name in MODELS if zoo.is_trained(name)]
    update_results(RESULTS_FILE, args.only.split(",") if args.only else saved, MODELS, rows_of, table)


if __name__ == "__main__":
    main()
