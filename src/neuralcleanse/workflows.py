"""End-to-end jobs behind the CLI verbs: train, evaluate, scan, mitigate, demo.

Each returns values (figures as plain dicts, reports as objects) and writes only where it is told to; the CLI
formats and prints. Named datasets use their official splits: training on ``train``, scanning and evaluating
on ``test`` (the defender's small clean set).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ._torch import model_device
from .config import ScanConfig
from .probe import ModelOutputs, probe_outputs
from .progress import ProgressCallback
from .train import TrainConfig

logger = logging.getLogger(__name__)

#: Training settings per built-in architecture: enough for the paper's accuracy table on a CPU (measured in
#: benchmarks/results/train.json; GTSRB at 8 epochs of 128 reached only 95.0% / 96.2% attack success).
DEFAULT_TRAINING = {"mnist": TrainConfig(epochs=3), "gtsrb": TrainConfig(epochs=12, batch_size=64)}
HELD_OUT = 0.1  # share of a dataset given as a single file held out for evaluation after training


def training_split(spec: str, seed: int) -> tuple[Any, Any]:
    """``(train, test)`` as ``train`` uses them: the official splits of MNIST and GTSRB; for any other data (a
    file, a folder, CIFAR-10's test split) a random :data:`HELD_OUT` share, drawn from ``seed``, is the test
    part."""
    from .data import load_dataset

    if has_official_split(spec):
        return load_dataset(spec, "train"), load_dataset(spec, "test")
    data = load_dataset(spec)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(len(data) * HELD_OUT))
    return data.subset(order[n_test:]), data.subset(order[:n_test])


def has_official_split(spec: str) -> bool:
    """Whether training and mitigation use the dataset's own train/test split rather than one drawn from a seed."""
    return str(spec).lower() in ("mnist", "gtsrb")


def _check_victim(victim: Path, metadata: dict[str, Any], arch: str, dataset: str, num_classes: int, seed: int) -> None:
    """Raise unless the saved model ``victim`` was trained as this Trojan model's victim must be: same
    architecture, labels and data, and where the split is drawn from the seed, the same seed (else the images
    the attack is measured on would include the victim's training images)."""
    expected = {"architecture": arch, "num_classes": num_classes, "dataset": str(dataset)}
    if not has_official_split(dataset):
        expected["seed"] = seed
    for key, value in expected.items():
        if metadata.get(key) != value:
            raise ValueError(f"{victim}: the victim's {key} is {metadata.get(key)!r}, expected {value!r}")


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
    from .attacks import TrojanConfig, poison, trojan
    from .metrics import accuracy, attack_success_rate
    from .models import ARCHITECTURES, build_model
    from .store.model_dir import METADATA_FILE, load_saved_model, save_model
    from .train import train_classifier
    from .triggers import parse_trigger
    from .versions import versions

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    if (out / METADATA_FILE).exists() and not overwrite:
        raise FileExistsError(
            f"{out / METADATA_FILE} already exists; pass --overwrite to replace it or choose another --out"
        )
    trigger_specs, targets = trigger_specs or [], targets or []
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
    start = time.perf_counter()
    train, test = training_split(dataset, seed)
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
    config = DEFAULT_TRAINING.get(arch, TrainConfig())
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    generator = torch.Generator().manual_seed(seed)
    extra: dict[str, Any] = {}
    if victim is not None:
        base = load_saved_model(victim, map_location=device)
        _check_victim(victim, base.metadata, arch, dataset, train.num_classes, seed)
        model = base.model
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
        extra["trojan_neurons"] = result.neurons
        extra["retrain_epochs"] = trojan_config.epochs
    clean_acc = accuracy(model, test.images, test.labels)
    trigger_rows = [
        {
            "spec": t.spec,
            "target": target,
            "attack_success": attack_success_rate(model, test.images, test.labels, t, target),
        }
        for t, target in attacks
    ]
    seconds = time.perf_counter() - start
    metadata = {
        "architecture": arch,
        "input_shape": list(spec.input_shape),
        "num_classes": train.num_classes,
        "preprocessing": "images (N, C, H, W) float in [0, 1]; mean/std normalisation is inside the model",
        "dataset": str(dataset),
        "clean_accuracy": clean_acc,
        "attack_success": trigger_rows[0]["attack_success"]
        if len(trigger_rows) == 1
        else [r["attack_success"] for r in trigger_rows] or None,
        "attack": ("trojan" if is_trojan else "badnets") if attacks else None,
        "poison_rate": poison_rate if attacks else 0.0,
        **extra,
        "epochs": config.epochs if victim is None else None,  # none trained here when the victim is given
        "seed": seed,
        "seconds": seconds,
        "versions": versions(),
    }
    save_model(out, model.cpu(), metadata, attacks)
    return {**metadata, "out": str(out), "triggers": trigger_rows}


def _known_triggers(
    loaded: Any, trigger_specs: list[str], targets: list[int], image_shape: tuple[int, int, int]
) -> list[tuple[Any, int]]:
    """Triggers given on the command line, else those recorded with the model."""
    from .triggers import parse_trigger

    if len(trigger_specs) != len(targets):
        raise ValueError(
            f"give one target per trigger: got {len(trigger_specs)} trigger(s) and {len(targets)} target(s)"
        )
    if trigger_specs:
        return [(parse_trigger(s, image_shape), int(t)) for s, t in zip(trigger_specs, targets, strict=True)]
    return list(getattr(loaded, "triggers", None) or [])


def evaluate_model(
    loaded: Any,
    data: str,
    split: str = "test",
    trigger_specs: list[str] | None = None,
    targets: list[int] | None = None,
) -> dict[str, Any]:
    """Clean accuracy on ``data`` and, per known trigger, its attack success rate."""
    from .data import load_dataset
    from .metrics import accuracy, attack_success_rate

    dataset = load_dataset(data, split)
    _check_compatible(loaded, dataset)
    triggers = _known_triggers(loaded, trigger_specs or [], targets or [], dataset.image_shape)
    return {
        "data": dataset.name,
        "num_images": len(dataset),
        "clean_accuracy": accuracy(loaded.model, dataset.images, dataset.labels),
        "triggers": [
            {
                "spec": t.spec,
                "target": target,
                "attack_success": attack_success_rate(loaded.model, dataset.images, dataset.labels, t, target),
            }
            for t, target in triggers
        ],
    }


def _check_compatible(loaded: Any, dataset: Any) -> ModelOutputs:
    """The model's outputs (probed once on the data's first images), after checking it accepts the data's
    images and has an output for every label."""
    shape = getattr(loaded, "input_shape", None)
    if shape is not None and tuple(shape) != tuple(dataset.image_shape):
        raise ValueError(
            f"the model takes {tuple(shape)} (C, H, W) images but {dataset.name} has {dataset.image_shape}"
        )
    outputs = probe_outputs(loaded.model, dataset.images[:32].to(model_device(loaded.model)), where=dataset.name)
    if dataset.num_classes > outputs.num_outputs:
        raise ValueError(
            f"{dataset.name} has {dataset.num_classes} labels but the model has only {outputs.num_outputs} outputs"
        )
    known = getattr(loaded, "outputs_probabilities", None)  # a file that says so beats the probe
    return outputs if known is None else replace(outputs, probabilities=bool(known))


def true_trigger_overlap(reversed_mask: torch.Tensor, true_mask: torch.Tensor) -> float:
    """Intersection over union of the top-k pixels of a reversed mask with a true mask's k non-zero pixels."""
    true_set = true_mask.flatten() > 0
    k = int(true_set.sum())
    if k == 0:
        return 0.0
    top = torch.zeros_like(true_set)
    top[reversed_mask.flatten().topk(k).indices] = True
    return float((top & true_set).sum()) / float((top | true_set).sum())


def scan_model(
    loaded: Any,
    model_name: str,
    data: str,
    out: Path,
    config: ScanConfig | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> tuple[Any, Path]:
    """Scan a loaded model with a stratified clean sample of ``data`` (``config.samples`` images, see
    :meth:`~neuralcleanse.config.ScanConfig.per_label`) and write the report to ``out``."""
    from .data import clean_sample, load_dataset
    from .scan import NeuralCleanse
    from .store.scan_dir import REPORT_FILE, ReportExistsError, write_scan_report

    config = config if config is not None else ScanConfig()
    if (out / REPORT_FILE).exists() and not overwrite:
        raise ReportExistsError(
            f"{out / REPORT_FILE} already exists; pass --overwrite to replace it or choose another --out"
        )
    dataset = load_dataset(data, "test")
    outputs = _check_compatible(loaded, dataset)
    if dataset.num_classes != outputs.num_outputs:
        logger.warning("%s has %d labels, the model %d outputs", dataset.name, dataset.num_classes, outputs.num_outputs)
    per_class = config.per_label(torch.bincount(dataset.labels, minlength=dataset.num_classes).tolist())
    clean = clean_sample(dataset, per_class, seed)
    report = NeuralCleanse(loaded.model, config, outputs=outputs, progress=progress).scan(
        clean.images, clean.labels, seed=seed
    )
    extra: dict[str, Any] = {
        "model": model_name,
        "data": str(data),
        "format": getattr(loaded, "format", None),
        "samples_per_label": per_class,
    }
    known = list(getattr(loaded, "triggers", None) or [])
    if known:
        extra["true_triggers"] = [
            {
                "spec": t.spec,
                "target": target,
                "mask_l1": t.l1,
                "flagged": target in report.flagged,
                "reversed_mask_iou": true_trigger_overlap(report.masks[target], t.mask),
            }
            for t, target in known
        ]
    write_scan_report(report, out, overwrite=overwrite, extra=extra)
    return report, out


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "neuralcleanse"


def demo(
    out: Path, seed: int = 0, progress: ProgressCallback | None = None, log: Callable[[str], None] = logger.info
) -> dict[str, tuple[Any, Path]]:
    """Train (or reuse from the cache) a BadNets MNIST model and a clean one, scan both, write both reports."""
    from ._version import __version__
    from .loading import load_model
    from .store.model_dir import is_saved_model_dir

    results = {}
    for name, specs, targets in (
        ("mnist-badnets", ["square:size=4,position=bottom-right,color=white"], [7]),
        ("mnist-clean", [], []),
    ):
        model_dir = _cache_dir() / "models" / f"{name}-seed{seed}-v{__version__}"
        if is_saved_model_dir(model_dir):
            log(f"{name}: reusing {model_dir}")
        else:
            log(f"{name}: training (saved to {model_dir})")
            train_model("mnist", "mnist", model_dir, specs, targets, seed=seed, progress=progress, overwrite=True)
        loaded = load_model(model_dir)
        log(f"{name}: scanning")
        results[name] = scan_model(
            loaded, str(model_dir), "mnist", out / name, seed=seed, overwrite=True, progress=progress
        )
    return results


def mitigate_model(
    loaded: Any,
    model_name: str,
    report_dir: Path,
    data: str,
    method: str,
    out: Path,
    trigger_specs: list[str] | None = None,
    targets: list[int] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    fpr: float = 0.05,
) -> dict[str, Any]:
    """Repair a model with the reversed trigger of a scan's most anomalous flagged label.

    Clean data: for a named dataset the training split is the clean data the defender works with and the test
    split the held-out data measured on; a single file is split in halves. Writes ``mitigation.json``, a
    ``mitigation.html`` page, and the patched model (``prune``/``unlearn``: same format as ``train`` for models it
    made, TorchScript otherwise) or the filter (``filter.json``).
    """
    from .data import load_dataset
    from .mitigate import Mitigation
    from .store.mitigation_dir import MITIGATION_FILE, write_mitigation
    from .store.scan_dir import read_scan
    from .triggers import Trigger

    if method not in ("filter", "prune", "unlearn"):
        raise ValueError(f"method must be filter, prune or unlearn, got {method!r}")
    if (out / MITIGATION_FILE).exists() and not overwrite:
        raise FileExistsError(
            f"{out / MITIGATION_FILE} already exists; pass --overwrite to replace it or choose another --out"
        )
    report, reversed_triggers, _ = read_scan(report_dir)
    if not report.get("flagged"):
        raise ValueError(f"{report_dir}: the scan flagged no label, so there is no reversed backdoor to remove")
    label = int(report["flagged"][0])
    mask, pattern = reversed_triggers[label]
    trigger = Trigger(torch.from_numpy(mask), torch.from_numpy(pattern), spec=f"reversed trigger of label {label}")

    if has_official_split(data):
        work, heldout = load_dataset(data, "train"), load_dataset(data, "test")
    else:
        whole = load_dataset(data)
        order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(seed))
        work, heldout = whole.subset(order[len(whole) // 2 :]), whole.subset(order[: len(whole) // 2])
    _check_compatible(loaded, heldout)
    if trigger.image_shape != heldout.image_shape:
        raise ValueError(f"the scan's triggers are {trigger.image_shape} but {heldout.name} has {heldout.image_shape}")
    known = _known_triggers(loaded, trigger_specs or [], targets or [], heldout.image_shape)
    true_trigger = known[0] if known else None
    mitigation = Mitigation(
        loaded.model, trigger, label, work.images, work.labels, heldout.images, heldout.labels, true_trigger
    )
    patched = None
    if method == "filter":
        result: Any = mitigation.filter(fpr=fpr, progress=progress)
    elif method == "prune":
        result = mitigation.prune(progress=progress)
        patched = result.model
    else:
        result = mitigation.unlearn(
            progress=progress,
            outputs_probabilities=getattr(loaded, "outputs_probabilities", None),
            generator=torch.Generator().manual_seed(seed),
        )
        patched = result.model
    figures = {
        **result.to_dict(),
        "method": method,
        "label": label,
        "model": model_name,
        "scan": str(report_dir),
        "data": str(data),
        "seed": seed,
    }
    figures.pop("model_state", None)
    # A patched model made from a model folder is saved in that format, any other as TorchScript.
    from_model_folder = getattr(loaded, "format", None) == "neuralcleanse"
    return write_mitigation(
        out,
        figures,
        filter=result.filter if method == "filter" else None,
        patched=patched,
        model_metadata=loaded.metadata if from_model_folder else None,
        triggers=list(getattr(loaded, "triggers", None) or []),
        example=heldout.images[:2],
    )
