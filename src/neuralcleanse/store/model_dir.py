"""The model folder: a model as safetensors weights plus JSON metadata, with the triggers planted in it.

Files:

- ``model.safetensors``: the state dict of a built-in architecture (:data:`~neuralcleanse.models.ARCHITECTURES`);
- ``triggers.npz``: for the i-th entry of the metadata's ``"triggers"`` list, ``mask_<i>`` (1, H, W) and
  ``pattern_<i>`` (C, H, W) float32; absent when the model has no known trigger;
- ``model.json``: the metadata, written last (a folder holding ``model.json`` is a complete model). It names the
  ``"architecture"`` and ``"num_classes"`` (so the model is rebuilt without unpickling code), the software
  ``"versions"``, and under ``"triggers"`` each trigger's ``{"spec", "target"}``.

A model file or folder that cannot be used raises :class:`ModelFileError`, whose one-line message names the file
and what to do; the loaders of foreign formats (:mod:`neuralcleanse.formats`) raise it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_write, atomic_write_json, atomic_write_npz
from ..models import ARCHITECTURES, build_model
from ..triggers import Trigger
from ..versions import versions

__all__ = [
    "METADATA_FILE",
    "TRIGGERS_FILE",
    "WEIGHTS_FILE",
    "ModelFileError",
    "SavedModel",
    "is_saved_model_dir",
    "load_saved_model",
    "save_model",
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
    triggers: Sequence[tuple[Trigger, int]] | None = None,
) -> Path:
    """Write ``model`` with ``metadata`` and, when given, its ``(trigger, target)`` pairs into ``directory``.

    ``metadata`` must name the ``"architecture"`` (a key of :data:`~neuralcleanse.models.ARCHITECTURES`) and
    ``"num_classes"``; ``"versions"`` is added when missing, and the triggers' specs and targets are recorded
    under ``"triggers"``. A ``triggers.npz`` left from an earlier model with triggers is removed when none are
    given.
    """
    if metadata.get("architecture") not in ARCHITECTURES:
        raise ValueError(
            f"metadata['architecture'] must be one of {sorted(ARCHITECTURES)}, got {metadata.get('architecture')!r}"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(metadata)
    meta.setdefault("versions", versions())
    triggers = list(triggers or [])
    meta["triggers"] = [{"spec": t.spec, "target": int(target)} for t, target in triggers]
    if triggers:
        arrays: dict[str, np.ndarray] = {}
        for i, (t, _) in enumerate(triggers):
            arrays[f"mask_{i}"], arrays[f"pattern_{i}"] = t.mask.cpu().numpy(), t.pattern.cpu().numpy()
        atomic_write_npz(directory / TRIGGERS_FILE, arrays)
    else:
        (directory / TRIGGERS_FILE).unlink(missing_ok=True)
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    # The metadata goes last: a directory with model.json is a complete model.
    atomic_write_json(directory / METADATA_FILE, meta)
    return directory


def is_saved_model_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save_model` (it holds ``model.json``)."""
    return Path(path).is_dir() and (Path(path) / METADATA_FILE).is_file()


def load_saved_model(directory: str | Path, map_location: str | torch.device = "cpu") -> SavedModel:
    """Load a model written by :func:`save_model`, in eval mode. Never unpickles.

    Raises:
        ModelFileError: the folder is not a model folder, or one of its files is corrupt, missing or does not
            match the architecture its metadata names.
    """
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
