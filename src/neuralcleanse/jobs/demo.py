"""The ``demo`` job: a BadNets and a clean MNIST model, trained once and cached, both scanned."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .._torch import Precision
from .._version import __version__
from ..config import ScanConfig
from ..data import cache_dir
from ..loading import load_model
from ..progress import ProgressCallback
from ..scan import ScanReport
from ..store.model_dir import is_saved_model_dir
from .scan import scan_model
from .train import train_model

__all__ = ["DEMO_EPOCHS", "DEMO_MODELS", "demo"]

logger = logging.getLogger(__name__)

#: name -> (trigger specs, targets): the paper's BadNets MNIST setting (Section VI-A: a white 4x4 square in the
#: bottom-right corner, target 7 in our choice) and a clean control.
DEMO_MODELS = {
    "mnist-badnets": (["square:size=4,position=bottom-right,color=white"], [7]),
    "mnist-clean": ([], []),
}
#: Training epochs of the demo models (ours): as long as the demo's verdicts need (the target flagged alone in
#: the BadNets model, nothing in the clean one), not the three of the paper's accuracy table
#: (jobs.train.DEFAULT_TRAINING); benchmarks/results/demo.json records what one epoch gives.
DEMO_EPOCHS = 1


def demo(
    out: Path,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    log: Callable[[str], None] = logger.info,
    precision: Precision = "auto",
) -> dict[str, tuple[ScanReport, Path]]:
    """Train (or reuse from the cache) a BadNets MNIST model and a clean one for :data:`DEMO_EPOCHS`, scan both
    in fast mode with the given ``precision``, and write both reports."""
    results = {}
    config = ScanConfig(precision=precision)
    for name, (specs, targets) in DEMO_MODELS.items():
        model_dir = cache_dir() / "models" / f"{name}-seed{seed}-e{DEMO_EPOCHS}-v{__version__}"
        if is_saved_model_dir(model_dir):
            log(f"{name}: reusing {model_dir}")
        else:
            log(f"{name}: training (saved to {model_dir})")
            train_model(
                "mnist",
                "mnist",
                model_dir,
                specs,
                targets,
                epochs=DEMO_EPOCHS,
                seed=seed,
                progress=progress,
                overwrite=True,
            )
        log(f"{name}: scanning")
        results[name] = scan_model(
            load_model(model_dir), str(model_dir), "mnist", out / name, config, seed, overwrite=True, progress=progress
        )
    return results
