"""Atomic file writes: every file is written to a temporary name in its directory, then renamed onto its name.

An interrupted run therefore never leaves a half-written file that looks complete: either the old file (or
none) or the whole new one is there. Each folder kind (see :mod:`neuralcleanse.store`) writes through these.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_npz", "atomic_write_text"]


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it onto ``path``.

    The parent directory is created when missing. When ``write`` raises, the temporary file is removed and
    ``path`` is left as it was.
    """
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


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON; NaN and infinities are refused (``ValueError``), as JSON has none."""
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def atomic_write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """``arrays`` as an uncompressed ``.npz`` archive, readable with ``numpy.load(allow_pickle=False)``."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object, so numpy does not append '.npz' to the temporary name
            np.savez(fh, **arrays)  # type: ignore[arg-type]

    return atomic_write(path, write)
