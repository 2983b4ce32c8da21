"""Safe persistence: models as safetensors weights plus JSON metadata.

Nothing here unpickles: weights are read with :mod:`safetensors`, metadata with :mod:`json`, arrays with
``numpy.load(allow_pickle=False)``. Files are written atomically (:mod:`neuralcleanse.atomic`); the atomic
writers and :func:`versions` are re-exported here for the modules that still import them from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write, atomic_write_json, atomic_write_text
from .models import ARCHITECTURES, build_model
from .triggers import Trigger
from .versions import versions

__all__ = [
    "METADATA_FILE",
    "WEIGHTS_FILE",
    "TRIGGERS_FILE",
    "ModelFileError",
    "SavedModel",
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "is_saved_model_dir",
    "load_saved_model",
    "save_model",
    "versions",
]

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"
TRIGGERS_FILE = "triggers.npz"


class ModelFileError(ValueError):
    """A model file or directory that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class SavedModel:
    """A model loaded from a directory written by :func:`save_model`."""

    model: nn.Module
    metadata: dict[str, Any]
    triggers: list[tuple[Trigger, int]] = field(default_factory=list)  # (trigger, target) pairs, when known


def save_model(
    directory: str | Path,
    model: nn.Module,
    metadata: Mapping[str, Any],
    triggers: list[tuple[Trigger, int]] | None = None,
) -> Path:
    """Write ``model.safetensors`` (the state dict), ``model.json`` (metadata) and, when triggers are given,
    ``triggers.npz`` (their masks and patterns) into ``directory``.

    ``metadata`` must name the ``"architecture"`` (a key of :data:`~neuralcleanse.models.ARCHITECTURES`) and
    ``"num_classes"`` so that the model can be rebuilt without unpickling code. Trigger specs and targets are
    added to the metadata under ``"triggers"``.
    """
    from safetensors.torch import save_file

    if metadata.get("architecture") not in ARCHITECTURES:
        raise ValueError(
            f"metadata['architecture'] must be one of {sorted(ARCHITECTURES)}, got {metadata.get('architecture')!r}"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(metadata)
    meta.setdefault("versions", versions())
    triggers = triggers or []
    meta["triggers"] = [{"spec": t.spec, "target": int(target)} for t, target in triggers]
    if triggers:
        arrays: dict[str, np.ndarray] = {}
        for i, (t, _) in enumerate(triggers):
            arrays[f"mask_{i}"], arrays[f"pattern_{i}"] = t.mask.cpu().numpy(), t.pattern.cpu().numpy()
        atomic_write(directory / TRIGGERS_FILE, lambda tmp: _savez(tmp, arrays))
    else:
        (directory / TRIGGERS_FILE).unlink(missing_ok=True)
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    # The metadata goes last: a directory with model.json is a complete model.
    atomic_write_json(directory / METADATA_FILE, meta)
    return directory


def _savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:  # a file object, so numpy does not append '.npz' to the temporary name
        np.savez(fh, **arrays)


def is_saved_model_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / METADATA_FILE).is_file()


def load_saved_model(directory: str | Path, map_location: str | torch.device = "cpu") -> SavedModel:
    """Load a model written by :func:`save_model`, in eval mode. Never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    meta_path, weights_path = directory / METADATA_FILE, directory / WEIGHTS_FILE
    if not meta_path.is_file():
        raise ModelFileError(f"{directory}: not a neuralcleanse model directory (no {METADATA_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{meta_path}: corrupt metadata ({exc}); re-save the model") from None
    arch = meta.get("architecture")
    if arch not in ARCHITECTURES:
        raise ModelFileError(f"{meta_path}: unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    if not weights_path.is_file():
        raise ModelFileError(f"{weights_path}: weights file missing")
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ModelFileError(f"{weights_path}: corrupt or truncated weights ({exc})") from None
    model = build_model(arch, int(meta.get("num_classes", ARCHITECTURES[arch].num_classes)))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelFileError(f"{weights_path}: weights do not match architecture {arch!r} ({first})") from None
    model.eval()
    return SavedModel(model.to(map_location), meta, _load_triggers(directory, meta))


def _load_triggers(directory: Path, meta: Mapping[str, Any]) -> list[tuple[Trigger, int]]:
    entries = meta.get("triggers") or []
    if not entries:
        return []
    path = directory / TRIGGERS_FILE
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return [
                (
                    Trigger.from_arrays(
                        {"mask": arrays[f"mask_{i}"], "pattern": arrays[f"pattern_{i}"]}, e.get("spec")
                    ),
                    int(e["target"]),
                )
                for i, e in enumerate(entries)
            ]
    except (OSError, KeyError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot read the model's triggers ({exc})") from None
