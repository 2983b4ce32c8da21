"""Filter, prune and unlearn the infected models with their reversed triggers; write benchmarks/results/mitigation.json.

For each infected model (``DATASETS``: the BadNets models of train_models.py and the Trojan models of
held_out.py; a model those scripts have not saved yet is skipped): a fast scan (seed 0), then each method
through the same function as `neuralcleanse mitigate`. Attack success is the true trigger's, on test images not
of the target label; for the filter, the share of triggered inputs that pass the filter and reach the target.
Paper (Section VI): filter FNR < 1.63% at 5% FPR (BadNets), unlearning < 6.7% attack success for < 3.6 points.

    python benchmarks/mitigation.py [--models mnist-badnets,gtsrb-badnets] [--methods unlearn] [--reuse-scan]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from common import MODEL_ORDER, SUITE, machine, markdown_table, model_dir, read_results, write_results
from held_out import MODELS as HELD_OUT

from neuralcleanse.jobs import mitigate_model, scan_model
from neuralcleanse.loading import load_model
from neuralcleanse.store.model_dir import is_saved_model_dir

RUNS = Path(__file__).resolve().parent.parent / "runs" / "mitigation"
#: The infected models (mitigation starts from the reversed trigger of the label the seed-0 scan flags), with
#: their datasets: the BadNets ones of the paper's table and the Trojan ones of held_out.py on MNIST and GTSRB
#: (CIFAR-10 has no training split here to fine-tune on apart from the images the model was trained on).
DATASETS = {name: dataset for name, dataset, infected in SUITE if infected} | {
    name: spec[0] for name, spec in HELD_OUT.items() if spec[3] is not None and spec[0] != "cifar10"
}
MODELS = list(DATASETS)
ORDER = MODEL_ORDER + [name for name in MODELS if name not in MODEL_ORDER]  # row order of the results file
TARGETS = {
    "filter": "FNR <= 1.63% at 5% FPR",
    "prune": "success <= 5%, loss <= 5 pt",
    "unlearn": "success <= 2%, loss <= 1 pt",
}


def meets(row: dict[str, Any]) -> bool:
    loss = row["clean_accuracy_before"] - row["clean_accuracy_after"]
    if row["method"] == "filter":
        return row["false_negative_rate"] <= 0.0163 and row["false_positive_rate"] <= 0.06
    if row["method"] == "prune":
        return row["attack_success_after"] <= 0.05 and loss <= 0.05
    return row["attack_success_after"] <= 0.02 and loss <= 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default="filter,prune,unlearn", help="redo these; keep earlier rows of others")
    parser.add_argument("--reuse-scan", action="store_true", help="use the scan an earlier run left in runs/")
    args = parser.parse_args()
    methods, wanted = args.methods.split(","), args.models.split(",")
    rows = [r for r in read_results("mitigation") if r["method"] not in methods or r["model"] not in wanted]
    for name, dataset in DATASETS.items():
        if name not in wanted or not is_saved_model_dir(model_dir(name)):
            continue
        loaded = load_model(model_dir(name))
        scan_dir = RUNS / name / "scan"
        if not (args.reuse_scan and (scan_dir / "report.json").exists()):
            scan_model(loaded, str(model_dir(name)), dataset, scan_dir, seed=0, overwrite=True)
        for method in methods:
            start = time.perf_counter()
            figures = mitigate_model(
                loaded, str(model_dir(name)), scan_dir, dataset, method, RUNS / name / method, overwrite=True
            )
            row = {
                **figures,
                "model": name,
                "model_dir": figures["model"],
                "dataset": dataset,
                "seconds": time.perf_counter() - start,
                "machine": machine(),
            }
            row["meets_target"] = meets(row)
            rows.append(row)
            rows.sort(key=lambda r: (ORDER.index(r["model"]), list(TARGETS).index(r["method"])))
            print(
                {
                    k: row.get(k)
                    for k in (
                        "model",
                        "method",
                        "clean_accuracy_before",
                        "clean_accuracy_after",
                        "attack_success_before",
                        "attack_success_after",
                        "false_positive_rate",
                        "false_negative_rate",
                        "meets_target",
                    )
                },
                flush=True,
            )
            write_results("mitigation", rows, render(rows))


def render(rows: list[dict[str, Any]]) -> str:
    def pct(v: Any) -> str:
        return "—" if v is None else f"{100 * v:.2f}%"

    table = markdown_table(
        [
            "model",
            "method",
            "clean acc. before → after",
            "attack success before → after",
            "FPR",
            "FNR",
            "target",
            "met",
        ],
        [
            [
                r["model"],
                r["method"],
                f"{pct(r['clean_accuracy_before'])} → {pct(r['clean_accuracy_after'])}",
                f"{pct(r['attack_success_before'])} → {pct(r['attack_success_after'])}",
                pct(r.get("false_positive_rate")),
                pct(r.get("false_negative_rate")),
                TARGETS[r["method"]],
                "yes" if r["meets_target"] else "NO",
            ]
            for r in rows
        ],
    )
    return (
        "# Mitigation with the reversed trigger\n\nPaper (Section VI): filter FNR < 1.63% at 5% FPR on BadNets; "
        "unlearning < 6.7% attack success for < 3.6 points of accuracy.\n\n" + table
    )


if __name__ == "__main__":
    main()
