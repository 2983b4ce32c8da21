"""Safe persistence: models as safetensors weights plus JSON metadata, and atomic file writes.

Nothing here unpickles: weights are read with :mod:`safetensors`, metadata with :mod:`json`, arrays with
``numpy.load(allow_pickle=False)``. Every file is written to a temporary name in the target directory and then
renamed, so an interrupted run never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .models import ARCHITECTURES, build_model
from .triggers import Trigger

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


def versions() -> dict[str, str]:
    """Versions of the software that produced a result, recorded in every metadata and report file."""
    from . import __version__

    return {"neuralcleanse": __version__, "torch": torch.__version__, "numpy": np.__version__}


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


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
