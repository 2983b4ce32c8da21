"""Progress reporting: library code calls an optional callback; only the CLI draws bars from it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["ProgressCallback", "ProgressEvent", "report"]


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` units of work in ``phase`` (e.g. "train", "reverse"), with live figures."""

    phase: str
    done: int
    total: int
    info: Mapping[str, float | int | str] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]


def report(callback: ProgressCallback | None, phase: str, done: int, total: int, **info: float | int | str) -> None:
    """Send one event to ``callback`` when there is one."""
    if callback is not None:
        callback(ProgressEvent(phase, done, total, info))
