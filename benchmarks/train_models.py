"""Train the models of the paper's BadNets experiments and write benchmarks/results/train.json.

BadNets MNIST and GTSRB (4x4 white square, bottom-right corner) and a clean model of each, with the CLI's
defaults except GTSRB's poisoning rate (``POISON_RATES`` in common.py), plus a BadNets GTSRB model poisoned at the
paper's 10% for the scan benchmark. Paper (Table I): MNIST 98.5% clean accuracy / 99.9% attack success, GTSRB
96.5% / 97.4%.
The results file lists every model saved so far (figures from its metadata), so an interrupted run keeps what
it finished; ``--models`` trains a subset, ``--collect`` only rewrites the results from the saved models.

    python benchmarks/train_models.py [--models mnist-badnets,...] [--collect]
"""

from __future__ import annotations

import argparse

from common import SUITE, TARGETS, ensure_model, machine, markdown_table, model_dir, read_results, write_results

from neuralcleanse.store.model_dir import is_saved_model_dir, load_saved_model

PAPER = {("mnist", True): (0.985, 0.999), ("gtsrb", True): (0.965, 0.974)}


def collect() -> None:
    previous = {row["model"]: row for row in read_results("train")}
    rows = []
    for name, dataset, infected in SUITE:
        if not is_saved_model_dir(model_dir(name)):
            if name in previous:  # trained on an earlier run whose models are not here: keep its figures
                rows.append(previous[name])
            continue
        meta = load_saved_model(model_dir(name)).metadata
        rows.append(
            {
                "model": name,
                "dataset": dataset,
                "infected": infected,
                "clean_accuracy": meta["clean_accuracy"],
                "attack_success": meta["attack_success"] if infected else None,
                "target": TARGETS[dataset] if infected else None,
                "poison_rate": meta.get("poison_rate") if infected else None,
                "epochs": meta["epochs"],
                "seconds": meta["seconds"],
                "machine": machine(),
            }
        )
    table = "# Training the paper's BadNets models\n\n" + markdown_table(
        ["model", "clean accuracy", "attack success", "poison rate", "paper (acc / success)", "epochs", "seconds"],
        [
            [
                r["model"],
                r["clean_accuracy"],
                r["attack_success"],
                r.get("poison_rate"),
                " / ".join(f"{v:.1%}" for v in PAPER.get((r["dataset"], r["infected"]), ())) or None,
                r["epochs"],
                r["seconds"],
            ]
            for r in rows
        ],
    )
    if rows:
        m = rows[0]["machine"]
        table += f"\nMachine: {m['processor']}, {m['torch_threads']} torch threads, CUDA: {m['cuda']}.\n"
    write_results("train", rows, table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(name for name, _, _ in SUITE))
    parser.add_argument("--collect", action="store_true", help="only rewrite the results from saved models")
    args = parser.parse_args()
    if not args.collect:
        for name, dataset, infected in SUITE:
            if name not in args.models.split(","):
                continue
            ensure_model(name, dataset, infected, retrain=True)
            collect()
    collect()


if __name__ == "__main__":
    main()
