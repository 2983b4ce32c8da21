"""Train the four models of the paper's BadNets experiments and write benchmarks/results/train.json.

BadNets MNIST and GTSRB (4x4 white square, bottom-right corner, 10% poisoned) and a clean model of each, with
the CLI's defaults. Paper (Table I): MNIST 98.5% clean accuracy / 99.9% attack success, GTSRB 96.5% / 97.4%.

    python benchmarks/train_models.py
"""

from __future__ import annotations

import time

from common import SUITE, TARGETS, machine, markdown_table, model_dir, write_results

from neuralcleanse.io import load_saved_model
from neuralcleanse.workflows import train_model

PAPER = {("mnist", True): (0.985, 0.999), ("gtsrb", True): (0.965, 0.974)}


def main() -> None:
    from common import TRIGGER

    rows = []
    for name, dataset, infected in SUITE:
        start = time.perf_counter()
        specs, targets = ([TRIGGER], [TARGETS[dataset]]) if infected else ([], [])
        train_model(dataset, dataset, model_dir(name), specs, targets, seed=0, overwrite=True)
        meta = load_saved_model(model_dir(name)).metadata
        rows.append(
            {
                "model": name,
                "dataset": dataset,
                "infected": infected,
                "clean_accuracy": meta["clean_accuracy"],
                "attack_success": meta["attack_success"] if infected else None,
                "target": TARGETS[dataset] if infected else None,
                "epochs": meta["epochs"],
                "seconds": time.perf_counter() - start,
                "machine": machine(),
            }
        )
        print(rows[-1], flush=True)
    table = "# Training the paper's BadNets models\n\n" + markdown_table(
        ["model", "clean accuracy", "attack success", "paper (acc / success)", "epochs", "seconds"],
        [
            [
                r["model"],
                r["clean_accuracy"],
                r["attack_success"],
                " / ".join(f"{v:.1%}" for v in PAPER.get((r["dataset"], r["infected"]), ())) or None,
                r["epochs"],
                r["seconds"],
            ]
            for r in rows
        ],
    )
    table += f"\nMachine: {rows[0]['machine']['processor']}, {rows[0]['machine']['torch_threads']} torch threads.\n"
    write_results("train", rows, table)


if __name__ == "__main__":
    main()
