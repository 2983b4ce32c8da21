"""Progress drawn from the library's progress events: a bar per phase in a terminal, plain lines elsewhere.

Progress goes to stderr. When stderr is a terminal each phase gets a tqdm bar, whose estimate of the time left
appears only once it means something. When it is not (a pipe, a CI log, a file), a bar would print nothing
until the end, so each phase writes a line when it starts, every :data:`LOG_INTERVAL_S` seconds, and when it
ends: the phase, done/total and the time elapsed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

from ..progress import ProgressEvent

#: ours: seconds between two progress lines of a phase when stderr is not a terminal; often enough to show a
#: long phase is alive in a log, rare enough to keep the log short.
LOG_INTERVAL_S = 30.0
#: ours: a bar shows the time left once this share of its phase is done; from fewer units the rate is a guess.
ETA_MIN_FRACTION = 0.1
#: Phases whose units do not take steady time, so no estimate of the time left is shown: the labels of a search
#: finish when their early stop fires, mostly together near the end.
NO_ETA_PHASES = frozenset({"reverse", "restart", "more", "blend"})

_WITH_ETA = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
_WITHOUT_ETA = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def _format_info(info: Any) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def eta_is_meaningful(phase: str, done: int, total: int) -> bool:
    """Whether a bar at ``done`` of ``total`` in ``phase`` shows its estimate of the time left."""
    return phase not in NO_ETA_PHASES and total > 0 and done >= max(1.0, ETA_MIN_FRACTION * total)


class ProgressBars:
    """Draws :class:`ProgressEvent` s on ``stream`` (stderr): bars in a terminal, periodic lines elsewhere.

    Args:
        quiet: draw nothing.
        stream: where progress goes (default: stderr, looked up at each call so that tests can capture it).
        clock: seconds, monotonic; for tests.
    """

    LABELS = {
        "train": "training",
        "craft": "crafting the trojan trigger",
        "retrain": "retraining the dense layers",
        "reverse": "reversing triggers",
        "restart": "searching again from new starts",
        "more": "searching the smallest labels more",
        "blend": "reversing blend triggers",
        "stimulate": "stimulating neurons",
        "check": "sanity check",
        "measure": "measuring the triggers",
        "filter": "input filter",
        "prune": "pruning",
        "unlearn": "unlearning",
        "evaluate": "evaluating",
    }

    def __init__(
        self, quiet: bool = False, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.quiet = quiet
        self._stream = stream
        self.clock = clock
        self.bars: dict[str, Any] = {}
        self.started: dict[str, float] = {}  # lines: when each running phase began
        self.last_line: dict[str, float] = {}  # lines: when each running phase last wrote one

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def is_terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        if self.is_terminal:
            self._bar(event)
        else:
            self._line(event)

    def _line(self, event: ProgressEvent) -> None:
        now = self.clock()
        start = self.started.setdefault(event.phase, now)
        finished = event.done >= event.total
        last = self.last_line.get(event.phase)
        if last is None or finished or now - last >= LOG_INTERVAL_S:
            info = _format_info(event.info)
            label = self.LABELS.get(event.phase, event.phase)
            line = f"{label}: {event.done}/{event.total}, {_duration(now - start)} elapsed"
            print(line + (f" ({info})" if info else ""), file=self.stream, flush=True)
            self.last_line[event.phase] = now
        if finished:
            self.started.pop(event.phase, None)
            self.last_line.pop(event.phase, None)

    def _bar(self, event: ProgressEvent) -> None:
        bar = self.bars.get(event.phase)
        if bar is None or bar.total != event.total:
            if bar is not None:
                bar.close()
            bar = tqdm(
                total=event.total,
                desc=self.LABELS.get(event.phase, event.phase),
                leave=True,
                dynamic_ncols=True,
                file=self.stream,
                mininterval=0.5,
                bar_format=_WITHOUT_ETA,
            )
            self.bars[event.phase] = bar
        bar.n = event.done
        if eta_is_meaningful(event.phase, event.done, event.total):
            bar.bar_format = _WITH_ETA
        if event.info:
            bar.set_postfix_str(_format_info(event.info), refresh=False)
        bar.refresh()
        if event.done >= event.total:
            bar.close()
            del self.bars[event.phase]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
        self.started.clear()
        self.last_line.clear()


class ZooBar:
    """One bar over a zoo's models (phase ``"zoo"`` events), with the failed, running and skipped counts."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar: Any = None

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet or event.phase != "zoo":
            return
        if self.bar is None:
            self.bar = tqdm(
                total=event.total, desc="models", unit="model", dynamic_ncols=True, file=sys.stderr, disable=None
            )
        self.bar.n = event.done
        self.bar.set_postfix(dict(event.info), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
