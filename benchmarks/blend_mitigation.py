"""Repairing blend backdoors: unlearning with the target's blend trigger against its mask trigger.

    python benchmarks/blend_mitigation.py [--only NAME,...] [--threads 1]

For every MNIST blend model of the zoo that ``zoo.py train`` has saved under runs/zoo/models/ (and the held-out
``mnist-blend`` of held_out.py when saved), a default scan (seed 0) finds the target; its two reversed triggers,
the mask search's and the blend search's, each unlearn a copy of the model (``Mitigation.unlearn``, seed 0: the
same fine-tuning images, the same share stamped). Attack success is the true trigger's, on the held-out MNIST
test images not of the target (as benchmarks/mitigation.py). Writes benchmarks/results/blend_mitigation.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import zoo
from common import machine, markdown_table, model_dir, update_results

from neuralcleanse import NeuralCleanse
from neuralcleanse.data import ImageData
from neuralcleanse.loading import LoadedModel, load_model
from neuralcleanse.mitigate import Mitigation
from neuralcleanse.scan import ScanReport
from neuralcleanse.splits import mitigation_split
from neuralcleanse.triggers import Trigger, parse_trigger

RESULTS_FILE = "blend_mitigation"
MODELS = [f"mnist-blend-0{i}" for i in range(10)] + ["mnist-blend"]
SCAN_IMAGES = 1000  # the scan's clean sample, as the zoo's


def path_of(name: str) -> Any:
    return model_dir(name) if name == "mnist-blend" else zoo.model_path(name)


def scanned(path: Any) -> tuple[LoadedModel, ImageData, ImageData, ScanReport]:
    """The MNIST model at ``path``, the mitigation split (work, held-out) and a default scan (seed 0) of
    :data:`SCAN_IMAGES` work images."""
    loaded = load_model(path)
    work, heldout = mitigation_split("mnist", 0)
    sample = work.subset(torch.randperm(len(work), generator=torch.Generator().manual_seed(0))[:SCAN_IMAGES])
    return loaded, work, heldout, NeuralCleanse(loaded.model).scan(sample.images, sample.labels, seed=0)


def models_to_run(description: str, saved: list[str]) -> list[str]:
    """The command line's ``--only`` models, else the ``saved`` ones; sets the torch threads (``--threads``, 1 by
    default)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--only", help="comma-separated model names (default: every saved one of MODELS)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args.only.split(",") if args.only else saved


def rows_of(name: str) -> list[dict[str, Any]]:
    loaded, work, heldout, report = scanned(path_of(name))
    if name != "mnist-blend":  # TorchScript zoo models carry no triggers: rebuilt from the recipe
        attack = zoo.recipe(name)["attacks"][0]
        true = (parse_trigger(attack["trigger"], heldout.image_shape), attack["target"])
    else:
        true = loaded.triggers[0]
    base = {
        "model": name,
        "target": true[1],
        "flagged": report.flagged,
        "mask_flagged": report.mask_flagged,
        "blend_flagged": report.blend_flagged,
    }
    if true[1] not in report.flagged:
        return [{**base, "trigger": None}]
    i = [r.label for r in report.labels].index(true[1])
    triggers = {"mask": Trigger(report.masks[i], report.patterns[i])}
    if report.blend_masks is not None:
        triggers["blend"] = Trigger(report.blend_masks[i], report.blend_patterns[i])
    rows = []
    for kind, trigger in triggers.items():
        start = time.perf_counter()
        m = Mitigation(loaded.model, trigger, true[1], work.images, work.labels, heldout.images, heldout.labels, true)
        result = m.unlearn(generator=torch.Generator().manual_seed(0))
        rows.append(
            {
                **base,
                "trigger": kind,
                "chosen": report.trigger(true[1]).mask.equal(trigger.mask),
                "clean_accuracy": [result.before.clean_accuracy, result.after.clean_accuracy],
                "attack_success": [result.before.attack_success, result.after.attack_success],
                "reversed_attack_success": [
                    result.before.reversed_attack_success,
                    result.after.reversed_attack_success,
                ],
                "seconds": time.perf_counter() - start,
                "machine": machine(),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def pct(pair: list[float] | None) -> str:
        return "—" if pair is None else f"{pair[0]:.2%} → {pair[1]:.2%}"

    body = [
        [
            r["model"],
            r["target"],
            "mask and blend"
            if r["target"] in r["mask_flagged"] and r["target"] in r["blend_flagged"]
            else "blend"
            if r["target"] in r["blend_flagged"]
            else "mask"
            if r["target"] in r["mask_flagged"]
            else "—",
            r["trigger"] or "not flagged",
            "yes" if r.get("chosen") else "",
            pct(r.get("clean_accuracy")),
            pct(r.get("attack_success")),
        ]
        for r in rows
    ]
    header = [
        "model",
        "target",
        "flagged by",
        "unlearned with",
        "scan's trigger",
        "clean acc. before → after",
        "true attack success before → after",
    ]
    return (
        "# Unlearning a blend backdoor: its blend trigger against its mask trigger\n\n"
        + markdown_table(header, body)
        + "\n\n*scan's trigger*: the one `ScanReport.trigger` and `neuralcleanse mitigate` use for the label. "
        "Default scan (seed 0) on 1000 images of MNIST's training split; unlearning (defaults, seed 0) on that split, "
        "figures on the 10,000 test images.\n"
    )


def main() -> None:
    saved = [name for name in MODELS if zoo.is_trained(name) or (model_dir(name) / "model.json").exists()]
    update_results(RESULTS_FILE, models_to_run(__doc__.splitlines()[0], saved), MODELS, rows_of, table)


if __name__ == "__main__":
    main()
