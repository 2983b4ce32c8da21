"""What a zoo holds: the models to scan, each with its data, preprocessing and, when known, its truth.

A zoo is one of:

- a directory: every model file in it (by extension, :data:`MODEL_SUFFIXES`) and every ``neuralcleanse train``
  directory (one holding ``model.json``), in name order; all share the ``--data`` of the command;
- a text manifest (any extension but ``.csv``): one model path per line; blank lines and ``#`` comments skipped;
- a CSV manifest with a header row: ``model`` (required) and any of ``name``, ``data``, ``arch``,
  ``value_range``, ``mean``, ``std`` (numbers separated by spaces), ``channel_order``, ``layout`` (as the ``scan``
  flags), ``infected`` (true/false, yes/no, 1/0) and ``targets`` (labels separated by spaces or ``;``). An empty
  cell takes the command's value.

Relative paths in a manifest are read from the manifest's directory. A model's name (its folder under ``--out``)
is ``name`` or the file's name, and must be unique.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..archspec import absolute_arch
from ..preprocess import Preprocessing, parse_value_range
from ..store.model_dir import METADATA_FILE

__all__ = ["MODEL_SUFFIXES", "Truth", "ZooEntry", "read_zoo"]

#: Files a zoo directory takes as models: the extensions of the formats ``scan`` reads (see
#: :mod:`neuralcleanse.formats.detect`) and the usual TorchScript ones.
MODEL_SUFFIXES = frozenset(
    {".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".ts", ".jit", ".torchscript", ".onnx", ".h5", ".hdf5", ".keras"}
)

_COLUMNS = (
    "model", "name", "data", "arch", "value_range", "mean", "std", "channel_order", "layout", "infected", "targets"
)  # fmt: skip
_TRUE, _FALSE = {"true", "yes", "1", "infected"}, {"false", "no", "0", "clean"}


@dataclass(frozen=True)
class Truth:
    """What is known about a model: whether it is infected and, if so, its target labels (may be empty)."""

    infected: bool
    targets: tuple[int, ...] = ()

    def judge(self, infected: bool, flagged: list[int]) -> bool:
        """Whether a verdict is right: the same verdict and, for an infected model with known targets, one of
        them flagged."""
        if infected != self.infected:
            return False
        return not (self.infected and self.targets) or bool(set(flagged) & set(self.targets))


@dataclass(frozen=True)
class ZooEntry:
    """One model of a zoo: ``name`` (its report folder), ``path``, and what overrides the command's settings."""

    name: str
    path: str
    data: str | None = None
    arch: str | None = None
    preprocessing: Preprocessing | None = None
    truth: Truth | None = None


def read_zoo(zoo: str | Path) -> list[ZooEntry]:
    """The models of ``zoo`` (a directory, a text or a CSV manifest: see the module docstring).

    Raises:
        FileNotFoundError: ``zoo`` does not exist.
        ValueError: a manifest line cannot be read (the message names the line), the zoo holds no model, or two
            models have the same name.
    """
    zoo = Path(zoo)
    if zoo.is_dir():
        entries = [
            ZooEntry(p.name, str(p))
            for p in sorted(zoo.iterdir())
            if (p.is_file() and p.suffix.lower() in MODEL_SUFFIXES) or (p / METADATA_FILE).is_file()
        ]
    elif zoo.is_file():
        entries = _read_csv(zoo) if zoo.suffix.lower() == ".csv" else _read_text(zoo)
    else:
        raise FileNotFoundError(f"{zoo}: no such zoo (expected a directory of models or a manifest file)")
    if not entries:
        raise ValueError(f"{zoo}: no models found (model files end in {', '.join(sorted(MODEL_SUFFIXES))})")
    seen: dict[str, str] = {}
    for e in entries:
        if e.name in seen:
            raise ValueError(f"{zoo}: two models are named {e.name!r} ({seen[e.name]}, {e.path}); give a name column")
        seen[e.name] = e.path
    return entries


def _read_text(path: Path) -> list[ZooEntry]:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            model = _resolve(path, line)
            entries.append(ZooEntry(Path(model).name, model))
    return entries


def _read_csv(path: Path) -> list[ZooEntry]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "model" not in columns:
            raise ValueError(f"{path}: a CSV manifest needs a header row with a 'model' column, got {columns}")
        unknown = sorted(set(columns) - set(_COLUMNS))
        if unknown:
            raise ValueError(f"{path}: unknown columns {unknown}; known: {', '.join(_COLUMNS)}")
        entries = []
        for line, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not row.get("model"):
                continue
            try:
                entries.append(_entry(path, row))
            except ValueError as exc:
                raise ValueError(f"{path}, line {line}: {exc}") from None
    return entries


def _entry(manifest: Path, row: dict[str, str]) -> ZooEntry:
    model = _resolve(manifest, row["model"])
    data = row.get("data") or None
    if data is not None and (manifest.parent / data).exists():
        data = str(manifest.parent / data)
    truth = None
    if row.get("infected"):
        flag = row["infected"].lower()
        if flag not in _TRUE | _FALSE:
            raise ValueError(f"infected must be true or false, got {row['infected']!r}")
        targets = tuple(int(t) for t in row.get("targets", "").replace(";", " ").split())
        truth = Truth(flag in _TRUE, targets)
    elif row.get("targets"):
        raise ValueError("targets given without infected")
    return ZooEntry(
        row.get("name") or Path(model).name,
        model,
        data=data,
        arch=absolute_arch(row["arch"], manifest.parent) if row.get("arch") else None,
        preprocessing=_preprocessing(row),
        truth=truth,
    )


def _preprocessing(row: dict[str, str]) -> Preprocessing | None:
    given: dict[str, Any] = {}
    if row.get("value_range"):
        given["value_range"] = parse_value_range(row["value_range"])
    for key in ("mean", "std"):
        if row.get(key):
            given[key] = tuple(float(v) for v in row[key].split())
    for key in ("channel_order", "layout"):
        if row.get(key):
            given[key] = row[key]
    return Preprocessing(**given) if given else None


def _resolve(manifest: Path, model: str) -> str:
    path = Path(model).expanduser()
    return str(path if path.is_absolute() else manifest.parent / path)
