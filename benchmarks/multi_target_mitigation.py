"""Repairing a backdoor with several targets: unlearning every flagged label's trigger against the first one's.

    python benchmarks/multi_target_mitigation.py [--only NAME,...] [--threads 1]

For every MNIST two- and three-target model of the zoo that ``zoo.py train`` has saved under runs/zoo/models/, a
default scan (seed 0); then unlearning (``Mitigation.unlearn``, seed 0) of a copy of the model with the first
flagged label's reversed trigger alone (what ``neuralcleanse mitigate`` did before) and of another copy with every
flagged label's (``other_triggers``; what it does now). Attack success is each true trigger's, on the MNIST test
images not of its target. Writes benchmarks/results/multi_target_mitigation.{json,md}.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import zoo
from blend_mitigation import models_to_run, scanned
from common import machine, markdown_table, update_results

from neuralcleanse.metrics import accuracy, attack_success_rate
from neuralcleanse.mitigate import Mitigation
from neuralcleanse.triggers import parse_trigger

RESULTS_FILE = "multi_target_mitigation"
MODELS = [
    r["name"] for r in zoo.recipes() if r["dataset"] == "mnist" and r["family"] in ("two-targets", "three-targets")
]


def rows_of(name: str) -> list[dict[str, Any]]:
    loaded, work, heldout, report = scanned(zoo.model_path(name))
    attacks = zoo.recipe(name)["attacks"]
    true = [(parse_trigger(a["trigger"], heldout.image_shape), a["target"]) for a in attacks]
    x, y = heldout.images, heldout.labels
    base = {"model": name, "targets": [t for _, t in true], "flagged": report.flagged}
    if not report.flagged:
        return [{**base, "unlearned": None}]
    first, *others = report.flagged
    bound = (loaded.model, report.trigger(first), first, work.images, work.labels, x, y)
    rows = []
    for unlearned in ([first], report.flagged):
        start = time.perf_counter()
        extra = tuple((report.trigger(label), label) for label in unlearned[1:])
        patched = Mitigation(*bound, other_triggers=extra).unlearn(generator=torch.Generator().manual_seed(0)).model
        rows.append(
            {
                **base,
                "unlearned": unlearned,
                "clean_accuracy": [accuracy(loaded.model, x, y), accuracy(patched, x, y)],
                "attack_success": [
                    [attack_success_rate(m, x, y, trigger, target) for trigger, target in true]
                    for m in (loaded.model, patched)
                ],
                "seconds": time.perf_counter() - start,
                "machine": machine(),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def rates(values: list[float]) -> str:
        return " / ".join(f"{v:.2%}" for v in values)

    body = [
        [
            r["model"],
            ", ".join(map(str, r["targets"])),
            ", ".join(map(str, r["flagged"])) or "—",
            ", ".join(map(str, r["unlearned"])) if r["unlearned"] else "not flagged",
            "—" if r["unlearned"] is None else f"{r['clean_accuracy'][0]:.2%} → {r['clean_accuracy'][1]:.2%}",
            "—" if r["unlearned"] is None else f"{rates(r['attack_success'][0])} → {rates(r['attack_success'][1])}",
        ]
        for r in rows
    ]
    header = [
        "model",
        "targets",
        "flagged",
        "unlearned",
        "clean acc. before → after",
        "true attack success per target, before → after",
    ]
    return (
        "# Unlearning a backdoor with several targets: every flagged label's trigger against the first one's\n\n"
        + markdown_table(header, body)
        + "\n\nDefault scan (seed 0) on 1000 images of MNIST's training split; unlearning (defaults, seed 0) on that "
        "split, figures on the 10,000 test images, attack success in the order of the targets.\n"
    )


def main() -> None:
    saved = [name for name in MODELS if zoo.is_trained(name)]
    update_results(RESULTS_FILE, models_to_run(__doc__.splitlines()[0], saved), MODELS, rows_of, table)


if __name__ == "__main__":
    main()
