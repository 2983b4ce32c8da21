"""More searches for the smallest labels (``ScanConfig.more_searches``), against the default's scans of the same
models and seeds (rescan.json).

    python benchmarks/more_searches.py [--half tune] [--seed 0] [--more 2] [--only NAME,...] [--threads 1]
    python benchmarks/more_searches.py report

Every zoo model on disk of the half (the 10-label tasks: the smallest labels' extra searches are a sliver of a
100-label scan's) scanned as rescan.py scans it, the default ``ScanConfig`` with ``more_searches`` set; beside the
same scan without them (rescan.json, the default as it ships, same machine kind, one thread). The tables: per half
and task, the required infected scans flagging exactly their targets and the clean scans flagging anything, with and
without; the models whose verdict is the same on both seeds; the scans' time; and every scan whose flagged labels
changed. The tune half chooses; the test half reports. Writes benchmarks/results/more_searches.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import rescan
import torch
import zoo
from common import markdown_table, read_results, replace_rows, rewrite_report

RESULTS_FILE = "more_searches"
TASKS = ("mnist", "gtsrb", "cifar10")


def table(rows: list[dict[str, Any]]) -> str:
    default = {(r["model"], r["seed"]): r for r in read_results(rescan.RESULTS_FILE)}
    rows = [r for r in rows if (r["model"], r["seed"]) in default]
    body, agreement, changed = [], [], []
    for more in sorted({r["more_searches"] for r in rows}):
        for half in ("tune", "test"):
            for task in (*TASKS, "all"):
                group = [
                    r for r in rows if (r["more_searches"], r["half"]) == (more, half) and task in (r["task"], "all")
                ]
                if not group:
                    continue
                infected = [r for r in group if r["targets"] and r["required"]]
                clean = [r for r in group if not r["targets"]]
                base = [default[(r["model"], r["seed"])] for r in group]
                body.append(
                    [
                        more,
                        half,
                        task,
                        f"{sum(r['correct'] for r in infected)}/{len(infected)}",
                        f"{sum(default[(r['model'], r['seed'])]['correct'] for r in infected)}/{len(infected)}",
                        f"{sum(bool(r['flagged']) for r in clean)}/{len(clean)}",
                        f"{sum(bool(default[(r['model'], r['seed'])]['flagged']) for r in clean)}/{len(clean)}",
                        f"{sum(r['seconds'] for r in group) / sum(b['seconds'] for b in base):.2f}",
                    ]
                )
            seeds: dict[str, dict[int, tuple[dict[str, Any], dict[str, Any]]]] = {}
            for r in rows:
                if (r["more_searches"], r["half"]) == (more, half):
                    seeds.setdefault(r["model"], {})[r["seed"]] = (r, default[(r["model"], r["seed"])])
            pairs = [(v[0], v[1]) for v in seeds.values() if 0 in v and 1 in v]
            if pairs:
                agreement.append(
                    [
                        more,
                        half,
                        f"{sum(bool(a[0]['flagged']) == bool(b[0]['flagged']) for a, b in pairs)}/{len(pairs)}",
                        f"{sum(bool(a[1]['flagged']) == bool(b[1]['flagged']) for a, b in pairs)}/{len(pairs)}",
                    ]
                )
        for r in rows:
            before = default[(r["model"], r["seed"])]["flagged"]
            if r["more_searches"] == more and r["flagged"] != before:
                changed.append([more, r["model"], r["half"], r["seed"], r["targets"], before, r["flagged"]])
    return (
        "# More searches for the smallest labels, against the default (benchmarks/more_searches.py)\n\n"
        "The zoo's 10-label models on disk scanned with the default `ScanConfig` and `more_searches` set (the "
        "smallest labels, up to three under 0.8 of the median norm, searched that many times more), beside "
        "rescan.json's scans of the same models and seeds without them (the default as it ships). Required families "
        "only among the infected; *time*: the scans' total seconds over the default's (one thread each, measured "
        "in separate runs on the same machine kind).\n\n"
        + markdown_table(
            [
                "more searches",
                "half",
                "task",
                "infected exact",
                "default",
                "clean flagged",
                "default",
                "time / default",
            ],
            body,
        )
        + "\n## Seeds 0 and 1\n\nModels scanned with both seeds: the same verdict (infected or clean) on both.\n\n"
        + markdown_table(["more searches", "half", "same verdict", "default"], agreement)
        + "\n## Scans whose flagged labels changed\n\n"
        + markdown_table(["more searches", "model", "half", "seed", "targets", "default", "now"], changed)
    )


def main() -> None:
    if rewrite_report(RESULTS_FILE, table):
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", choices=("tune", "test"), default="tune")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--more", type=int, default=2, help="more searches for each of the smallest labels")
    parser.add_argument("--only", help="comma-separated model names (default: every saved one of the half)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    order = [r["name"] for r in zoo.recipes()]
    default = {(r["model"], r["seed"]) for r in read_results(rescan.RESULTS_FILE)}
    names = args.only.split(",") if args.only else [
        n for n in order
        if zoo.half(zoo.recipe(n)) == args.half and rescan.task(zoo.recipe(n)) in TASKS and (n, args.seed) in default
    ]  # fmt: skip
    key = (args.seed, args.more)
    for name in names:
        done = read_results(RESULTS_FILE)
        if not args.only and any((r["model"], r["seed"], r["more_searches"]) == (name, *key) for r in done):
            continue  # scanned by an earlier run: --only scans it again
        row = rescan.scan_row(name, args.seed, args.more)
        print(json.dumps({k: row[k] for k in ("model", "seed", "targets", "flagged", "seconds")}), flush=True)
        replace_rows(
            RESULTS_FILE,
            [row],
            lambda r: (r["model"], r["seed"], r["more_searches"]),
            lambda r: (r["more_searches"], r["seed"], order.index(r["model"])),
            table,
        )


if __name__ == "__main__":
    main()
