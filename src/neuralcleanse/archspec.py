"""How a state dict's architecture is named when it is the user's own code: ``package.module:callable`` or
``path/to/file.py:callable``, written so that any process finds it.

Torch-free: the command line resolves ``--arch`` before loading anything heavy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["absolute_arch"]


def absolute_arch(arch: str, base: Path | None = None) -> str:
    """``module:callable`` whose module is a Python file (``nets.py``, or ``nets`` for a ``nets.py`` in ``base``
    that is not importable otherwise) written as that file's absolute path, relative paths taken from ``base``
    (the current directory by default), so that the loader finds it from any working directory (a Ray worker's);
    anything else unchanged."""
    if ":" not in arch:
        return arch
    base = Path.cwd() if base is None else base
    module, _, attr = arch.partition(":")
    if module.endswith(".py"):
        path = Path(module).expanduser()
        return f"{(path if path.is_absolute() else base / path).resolve()}:{attr}"
    local = base / (module.replace(".", "/") + ".py")
    if local.is_file() and importlib.util.find_spec(module.split(".")[0]) is None:
        return f"{local.resolve()}:{attr}"
    return arch
