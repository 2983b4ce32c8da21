"""The zoo's backdoors that did not take, scanned anyway: is a weaker backdoor still found?

    python benchmarks/weak_attacks.py [--seeds 0,1]

The zoo leaves out of its detection figures every recipe whose attack success stays under 90% for some trigger
(zoo.TOOK, the detection issue's rule). Such a model is still backdoored: a trigger that sends 70% of the images
to its target is an attack a user would want named. Here every such zoo model that is on disk (runs/zoo/models)
is scanned with the library's defaults on the zoo's scan seeds, as zoo.py scans the others, and each of its
triggers is reported with its attack success, its target's norm over the scan's median norm and whether the scan
flagged the target; beside them, the other labels flagged. Writes benchmarks/results/weak_attacks.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import zoo
from common import markdown_table, read_results, write_results

#: Attack-success bands the summary groups the triggers by: the zoo's floor (zoo.TOOK) and halfway to it.
BANDS = ((0.0, 0.5), (0.5, 0.8), (0.8, zoo.TOOK), (zoo.TOOK, 1.01))


def scanned(recipe: dict[str, Any], model_row: dict[str, Any], seed: int) -> dict[str, Any]:
    row = zoo.scan_row(recipe, model_row, seed, "auto")
    median = statistics.median(row["norms"])
    triggers = [
        {
            "trigger": attack["trigger"],
            "target": attack["target"],
            "attack_success": rate,
            "norm_ratio": row["norms"][attack["target"]] / median,
            "flagged": attack["target"] in row["flagged"],
        }
        for attack, rate in zip(recipe["attacks"], model_row["attack_success"], strict=True)
    ]
    targets = {t["target"] for t in triggers}
    return {
        "model": recipe["name"],
        "arch": recipe["arch"],
        "family": recipe["family"],
        "poison_rate": recipe["poison_rate"],
        "half": row["half"],
        "seed": seed,
        "triggers": triggers,
        "flagged": row["flagged"],
        "others_flagged": [label for label in row["flagged"] if label not in targets],
        "seconds": row["seconds"],
    }


def summary(rows: list[dict[str, Any]]) -> str:
    body = []
    for low, high in BANDS:
        hits = [(t, r) for r in rows for t in r["triggers"] if low <= t["attack_success"] < high]
        if hits:
            name = f"{low:.0%}-{min(high, 1.0):.0%}"
            flagged = sum(t["flagged"] for t, _ in hits)
            ratios = sorted(t["norm_ratio"] for t, _ in hits)
            body.append([name, len(hits), f"{flagged}/{len(hits)}", f"{ratios[0]:.2f}-{ratios[-1]:.2f}"])
    scans = markdown_table(["attack success", "triggers x scans", "target flagged", "target's norm / median"], body)
    detail = markdown_table(
        ["model", "seed", "poison rate", "trigger", "target", "attack success", "norm / median", "flagged", "others"],
        [
            [
                r["model"],
                r["seed"],
                r["poison_rate"],
                t["trigger"],
                t["target"],
                f"{t['attack_success']:.1%}",
                f"{t['norm_ratio']:.2f}",
                "yes" if t["flagged"] else "no",
                r["others_flagged"] or "—",
            ]
            for r in rows
            for t in r["triggers"]
        ],
    )
    others = sum(bool(r["others_flagged"]) for r in rows)
    return (
        "# The zoo's backdoors that did not take, scanned anyway (benchmarks/weak_attacks.py)\n\n"
        f"Every zoo model on disk with a trigger under {zoo.TOOK:.0%} attack success, scanned with the defaults on "
        "the zoo's scan seeds. Per trigger (a model with several triggers has some that took): whether its target "
        f"was flagged. Scans flagging a label that is no target: {others}/{len(rows)}.\n\n"
        f"{scans}\n## Per trigger and scan\n\n{detail}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1", help="scan seeds")
    args = parser.parse_args()
    trained = {r["name"]: r for r in read_results(zoo.MODELS_FILE)}
    rows = []
    for recipe in zoo.recipes():
        model_row = trained.get(recipe["name"])
        if model_row is None or model_row["took"] is not False or not zoo.is_trained(recipe["name"]):
            continue
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(scanned(recipe, model_row, seed))
            print(
                rows[-1]["model"], seed, rows[-1]["flagged"], [t["flagged"] for t in rows[-1]["triggers"]], flush=True
            )
    write_results("weak_attacks", rows, summary(rows))


if __name__ == "__main__":
    main()
