"""The check every writer runs on its output folder before any work: can the folder be made and written to?

A run learns that its ``--out`` is unusable (a file, under a file, in a read-only place, or already holding a
result) in a moment, rather than after the minutes of work whose result it cannot write. Standard library only:
the command line runs it before it loads torch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["OutDirError", "check_out_dir"]


class OutDirError(ValueError):
    """An output folder that cannot be made or written to; the message starts with its name and path."""


def check_out_dir(out: str | Path, main_file: str | None = None, overwrite: bool = False, *, name: str = "out") -> Path:
    """Raise unless ``out`` is, or can be made as, a folder this process can write in; write nothing.

    The nearest existing folder on the path gets a temporary file, removed at once: that answers for
    permissions, read-only file systems and full disks alike, for any user (root included).

    Args:
        out: the output folder; it need not exist.
        main_file: the file that marks a complete result in that folder (e.g. ``report.json``).
        overwrite: whether an existing ``main_file`` may be replaced.
        name: what the messages call the folder (``"--out"`` on the command line).

    Raises:
        OutDirError: ``out`` or one of its parents is a file, or the folder cannot be written in.
        FileExistsError: ``out/main_file`` exists and ``overwrite`` is false.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutDirError(f"{name} {out} is a file, not a folder; give a folder path (it is created when missing)")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutDirError(f"{name} {out}: {existing} is a file, so no folder can be made there; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".neuralcleanse-write-check-", dir=existing)
    except OSError as exc:
        where = "" if existing == out else f" ({existing}, the nearest existing folder)"
        raise OutDirError(
            f"{name} {out}: cannot write there{where}: {exc.strerror or exc}; choose a folder you can write to"
        ) from None
    os.close(fd)
    os.unlink(probe)
    if main_file is not None and (out / main_file).exists() and not overwrite:
        raise FileExistsError(
            f"{out / main_file} already exists; pass --overwrite to replace it or choose another --out"
        )
    return out
