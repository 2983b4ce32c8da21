"""Progress bars drawn from the library's progress events."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from ..progress import ProgressEvent


class ProgressBars:
    """Draws one tqdm bar per phase from :class:`ProgressEvent` s, on stderr (hidden when not a terminal
    unless ``force``)."""

    _LABELS = {
        "train": "training",
        "craft": "crafting the trojan trigger",
        "retrain": "retraining the dense layers",
        "reverse": "reversing triggers",
        "restart": "searching again from new starts",
        "check": "sanity check",
        "measure": "measuring the triggers",
        "filter": "input filter",
        "prune": "pruning",
        "unlearn": "unlearning",
        "evaluate": "evaluating",
    }

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bars: dict[str, Any] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        bar = self.bars.get(event.phase)
        if bar is None or bar.total != event.total:
            if bar is not None:
                bar.close()
            bar = tqdm(
                total=event.total,
                desc=self._LABELS.get(event.phase, event.phase),
                leave=True,
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=0.5,
                disable=None,
            )
            self.bars[event.phase] = bar
        bar.n = event.done
        if event.info:
            bar.set_postfix(
                {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in event.info.items()}, refresh=False
            )
        bar.refresh()
        if event.done >= event.total:
            bar.close()
            del self.bars[event.phase]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


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
