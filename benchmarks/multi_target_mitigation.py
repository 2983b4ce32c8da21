"""Repairing a backdoor with several targets: every flagged label's trigger against the first one's.

    python benchmarks/multi_target_mitigation.py [--only NAME,...] [--threads 1]
    python benchmarks/multi_target_mitigation.py report

For every MNIST two- and three-target model of the zoo that ``zoo.py train`` has saved under runs/zoo/models/, a
default scan (seed 0); then unlearning (``Mitigation.unlearn``, seed 0), pruning (``Mitigation.prune``) and the input
filter (``Mitigation.filter``) with the first flagged label's reversed trigger alone (what ``neuralcleanse mitigate``
did before) and with every flagged label's (``other_triggers``; what it does now). Attack success is each true
trigger's, on the MNIST test images not of its target; behind the filter, a rejected image counts as neither correct
nor sent to the target. Writes benchmarks/results/multi_target_mitigation.{json,md}.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import zoo
from blend_mitigation import models_to_run, scanned
from common import machine, markdown_table, rewrite_report, update_results

from neuralcleanse.metrics import accuracy, attack_success_rate
from neuralcleanse.mitigate import Mitigation
from neuralcleanse.triggers import parse_trigger

RESULTS_FILE = "multi_target_mitigation"
METHODS = ("unlearn", "prune", "filter")
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
        return [{**base, "repaired": None}]
    first = report.flagged[0]
    bound = (loaded.model, report.trigger(first), first, work.images, work.labels, x, y)
    rows = []
    for method in METHODS:
        for repaired in ([first], report.flagged):
            start = time.perf_counter()
            mitigation = Mitigation(*bound, other_triggers=tuple((report.trigger(t), t) for t in repaired[1:]))
            if method == "unlearn":
                patched = mitigation.unlearn(generator=torch.Generator().manual_seed(0)).model
            elif method == "prune":
                patched = mitigation.prune().model
            else:
                # A TorchScript model (the zoo's own architectures) is filtered through its ONNX copy, whose layers
                # take hooks; the copy gives the model's outputs.
                filtered = mitigation.filter().filter.wrap(mitigation.layered)
                patched = Rejecting(filtered, heldout.num_classes)
            rows.append(_row(base, method, repaired, loaded.model, patched, true, x, y, time.perf_counter() - start))
    return rows


class Rejecting(torch.nn.Module):
    """A filtered model as a classifier with one more label, "rejected" (``num_labels``), that no image has and no
    trigger targets, so that accuracy and attack success count a rejected image as neither correct nor sent to the
    target."""

    def __init__(self, filtered: torch.nn.Module, num_labels: int) -> None:
        super().__init__()
        self.filtered, self.num_labels = filtered, num_labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        predictions, rejected = self.filtered(x)
        labels = torch.where(rejected, self.num_labels, predictions)
        return torch.nn.functional.one_hot(labels, self.num_labels + 1).float()


def _row(
    base: dict[str, Any],
    method: str,
    repaired: list[int],
    model: Any,
    patched: Any,
    true: list[tuple[Any, int]],
    x: torch.Tensor,
    y: torch.Tensor,
    seconds: float,
) -> dict[str, Any]:
    return {
        **base,
        "method": method,
        "repaired": repaired,
        "clean_accuracy": [accuracy(model, x, y), accuracy(patched, x, y)],
        "attack_success": [
            [attack_success_rate(m, x, y, trigger, target) for trigger, target in true] for m in (model, patched)
        ],
        "seconds": seconds,
        "machine": machine(),
    }


def table(rows: list[dict[str, Any]]) -> str:
    def rates(values: list[float]) -> str:
        return " / ".join(f"{v:.2%}" for v in values)

    body = [
        [
            r["model"],
            ", ".join(map(str, r["targets"])),
            ", ".join(map(str, r["flagged"])) or "—",
            r["method"] if r["repaired"] else "—",
            ", ".join(map(str, r["repaired"])) if r["repaired"] else "not flagged",
            "—" if r["repaired"] is None else f"{r['clean_accuracy'][0]:.2%} → {r['clean_accuracy'][1]:.2%}",
            "—" if r["repaired"] is None else f"{rates(r['attack_success'][0])} → {rates(r['attack_success'][1])}",
        ]
        for r in rows
    ]
    header = [
        "model",
        "targets",
        "flagged",
        "method",
        "labels repaired",
        "clean acc. before → after",
        "true attack success per target, before → after",
    ]
    return (
        "# Repairing a backdoor with several targets: every flagged label's trigger against the first one's\n\n"
        + markdown_table(header, body)
        + "\n\nDefault scan (seed 0) on 1000 images of MNIST's training split; unlearning (defaults, seed 0) on that "
        "split, pruning and the filter (defaults: 5% false positives) with the same images (the zoo's own "
        "architectures, TorchScript, through their ONNX copy; the rows of the first 28 models of those hold "
        "unlearning only, measured before pruning and the filter read TorchScript), figures on the 10,000 test "
        "images (behind the filter: accepted and correct, accepted and sent to the target), attack success in the "
        "order of the targets.\n"
    )


def main() -> None:
    if rewrite_report(RESULTS_FILE, table):
        return
    saved = [name for name in MODELS if zoo.is_trained(name)]
    update_results(RESULTS_FILE, models_to_run(__doc__.splitlines()[0], saved), MODELS, rows_of, table)


if __name__ == "__main__":
    main()
