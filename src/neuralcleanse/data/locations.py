"""Where data lives: the project's shared data directory, the user cache, and the split names of a dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .images import DataError

__all__ = ["SPLITS", "cache_dir", "check_split", "shared_data_dir"]

SPLITS = ("train", "test")


def shared_data_dir() -> Path | None:
    """The project's shared data directory, or ``None`` when there is none.

    ``$NEURALCLEANSE_DATA`` when set; else the first ``shared/data`` directory found beside the current
    directory or one of its parents, then beside this file or one of its parents (a checkout next to a
    ``shared/`` folder finds it without configuration).

    Raises:
        DataError: ``$NEURALCLEANSE_DATA`` is set but is not a directory.
    """
    env = os.environ.get("NEURALCLEANSE_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"{path}: NEURALCLEANSE_DATA does not name a directory")
        return path
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for parent in (start, *start.parents):
            candidate = parent / "shared" / "data"
            if candidate.is_dir():
                return candidate
    return None


def cache_dir() -> Path:
    """The user cache of neuralcleanse: ``$XDG_CACHE_HOME/neuralcleanse``, or ``~/.cache/neuralcleanse`` when
    ``XDG_CACHE_HOME`` is unset or empty. Not created here."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "neuralcleanse"


def check_split(split: str, dataset: str, splits: Sequence[str] = SPLITS) -> str:
    """``split`` in lower case, checked against ``splits``; ``dataset`` names the data in the error."""
    if not isinstance(split, str) or split.lower() not in splits:
        expected = " or ".join(repr(s) for s in splits)
        raise DataError(f"{dataset}: unknown split {split!r}, expected {expected}")
    return split.lower()
