"""The ``train`` job: a clean, BadNets or Trojan model, evaluated and saved as a model folder."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import TrojanConfig, poison, trojan
from ..data import ImageData
from ..metrics import accuracy, attack_success_rate
from ..models import ARCHITECTURES, build_model
from ..progress import ProgressCallback
from ..splits import has_official_split, training_split
from ..store.model_dir import METADATA_FILE, load_saved_model, save_model
from ..store.out_dir import check_out_dir
from ..train import TrainConfig, train_classifier
from ..triggers import Trigger, parse_trigger
from ..versions import versions

__all__ = ["DEFAULT_TRAINING", "train_model"]

#: Training settings per built-in architecture: enough for the paper's accuracy table (Table II) on a CPU
#: (ours; benchmarks/results/train.json).
DEFAULT_TRAINING = {"mnist": TrainConfig(epochs=3), "gtsrb": TrainConfig(epochs=12, batch_size=64)}


def train_model(
    dataset: str,
    arch: str,
    out: Path,
    trigger_specs: list[str] | None = None,
    targets: list[int] | None = None,
    poison_rate: float = 0.1,
    epochs: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    victim: Path | None = None,
) -> dict[str, Any]:
    """Train a clean model, a BadNets model when triggers are given, or a Trojan model when they are ``trojan``
    specs, evaluate it and save it to ``out``.

    A Trojan attack starts from a trained clean model: ``victim`` (a directory saved by this function with the
    same architecture, dataset and, for data without an official split, seed, so that its test images are ours),
    else one trained here first; ``epochs`` trains that model, so it cannot be given with ``victim``. Returns the
    figures written to the model's metadata.
    """
    trigger_specs, targets = trigger_specs or [], targets or []
    is_trojan = _check_request(arch, out, trigger_specs, targets, victim, epochs, overwrite)
    start = time.perf_counter()
    train, test = training_split(dataset, seed)
    attacks = _attacks(arch, dataset, train, trigger_specs, targets)
    config = DEFAULT_TRAINING.get(arch, TrainConfig())
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    generator = torch.Generator().manual_seed(seed)
    extra: dict[str, Any] = {}
    if victim is not None:
        base = load_saved_model(victim, map_location=device)
        _check_victim(victim, base.metadata, arch, dataset, train.num_classes, seed)
        model: nn.Module = base.model
        extra["victim"] = str(victim)
    else:
        images, labels = train.images, train.labels
        if attacks and not is_trojan:
            poisoned = poison(images, labels, attacks, poison_rate, generator)
            images, labels = poisoned.images, poisoned.labels
        torch.manual_seed(seed)
        model = build_model(arch, train.num_classes).to(device)
        train_classifier(model, images, labels, config, generator, progress)
    if is_trojan:
        trojan_config = TrojanConfig()
        extra["victim_clean_accuracy"] = accuracy(model, test.images, test.labels)
        result = trojan(model, train.images, train.labels, attacks, poison_rate, trojan_config, generator, progress)
        model, attacks = result.model, result.triggers
        extra.update(trojan_neurons=result.neurons, retrain_epochs=trojan_config.epochs)
    trigger_rows = [
        {
            "spec": t.spec,
            "target": target,
            "attack_success": attack_success_rate(model, test.images, test.labels, t, target),
        }
        for t, target in attacks
    ]
    metadata = {
        "architecture": arch,
        "input_shape": list(ARCHITECTURES[arch].input_shape),
        "num_classes": train.num_classes,
        "preprocessing": "images (N, C, H, W) float in [0, 1]; mean/std normalisation is inside the model",
        "dataset": str(dataset),
        "clean_accuracy": accuracy(model, test.images, test.labels),
        "attack_success": trigger_rows[0]["attack_success"]
        if len(trigger_rows) == 1
        else [r["attack_success"] for r in trigger_rows] or None,
        "attack": ("trojan" if is_trojan else "badnets") if attacks else None,
        "poison_rate": poison_rate if attacks else 0.0,
        **extra,
        "epochs": config.epochs if victim is None else None,  # none trained here when the victim is given
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "versions": versions(),
    }
    save_model(out, model.cpu(), metadata, attacks)
    return {**metadata, "out": str(out), "triggers": trigger_rows}


def _check_request(
    arch: str,
    out: Path,
    trigger_specs: list[str],
    targets: list[int],
    victim: Path | None,
    epochs: int | None,
    overwrite: bool,
) -> bool:
    """Refuse what cannot be trained before any data is loaded; whether the request is a Trojan attack."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    check_out_dir(out, METADATA_FILE, overwrite)
    if len(trigger_specs) != len(targets):
        raise ValueError(
            f"give one target per trigger: got {len(trigger_specs)} trigger(s) and {len(targets)} target(s)"
        )
    kinds = {s.partition(":")[0] for s in trigger_specs}
    is_trojan = "trojan" in kinds
    if is_trojan and kinds != {"trojan"}:
        raise ValueError("trojan triggers cannot be mixed with BadNets triggers in one model; train them apart")
    if victim is not None and not is_trojan:
        raise ValueError("--from starts a Trojan attack from a trained model: give --trigger trojan[:...] too")
    if victim is not None and epochs is not None:
        raise ValueError(
            f"--epochs trains the victim, but --from gives a trained one; the Trojan retraining runs "
            f"{TrojanConfig().epochs} epochs"
        )
    return is_trojan


def _attacks(
    arch: str, dataset: str, train: ImageData, trigger_specs: list[str], targets: list[int]
) -> list[tuple[Trigger, int]]:
    """The (trigger, target) pairs to plant, checked against the architecture and the data."""
    spec = ARCHITECTURES[arch]
    if train.image_shape != spec.input_shape:
        raise ValueError(
            f"architecture {arch!r} takes {spec.input_shape} (C, H, W) images but {dataset} has {train.image_shape}"
        )
    attacks = [
        (parse_trigger(s, train.image_shape, crafted=True), int(t)) for s, t in zip(trigger_specs, targets, strict=True)
    ]
    for _, t in attacks:
        if not 0 <= t < train.num_classes:
            raise ValueError(f"target {t} is not a label of {dataset} (0..{train.num_classes - 1})")
    return attacks


def _check_victim(victim: Path, metadata: dict[str, Any], arch: str, dataset: str, num_classes: int, seed: int) -> None:
    """Raise unless the saved model ``victim`` was trained as this Trojan model's victim must be: same
    architecture, labels and data, and where the split is drawn from the seed, the same seed (else the images
    the attack is measured on would include the victim's training images)."""
    expected: dict[str, Any] = {"architecture": arch, "num_classes": num_classes, "dataset": str(dataset)}
    if not has_official_split(dataset):
        expected["seed"] = seed
    for key, value in expected.items():
        if metadata.get(key) != value:
            raise ValueError(f"{victim}: the victim's {key} is {metadata.get(key)!r}, expected {value!r}")
