"""The ``scan`` job: a stratified clean sample of the data, the scan, and the scan folder."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import ScanConfig
from ..data import ImageData, clean_sample, load_dataset
from ..metrics import true_trigger_overlap
from ..probe import check_compatible
from ..progress import ProgressCallback
from ..reverse import ReverseResult, reverse_engineer
from ..scan import NeuralCleanse, ScanReport
from ..store.scan_dir import REPORT_FILE, ReportExistsError, write_scan_report

__all__ = ["scan_model"]

logger = logging.getLogger(__name__)


def scan_model(
    loaded: Any,
    model_name: str,
    data: str,
    out: Path,
    config: ScanConfig | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    dataset: ImageData | None = None,
    search: Callable[..., ReverseResult] | None = None,
) -> tuple[ScanReport, Path]:
    """Scan a loaded model with a stratified clean sample of ``data``'s test split (``config.samples`` images,
    see :meth:`~neuralcleanse.config.ScanConfig.per_label`) and write the scan folder ``out``.

    ``dataset``: that split already loaded (a zoo scan loads it once for all models); ``search``: the
    :class:`~neuralcleanse.scan.NeuralCleanse` search function (label sharding)."""
    config = config if config is not None else ScanConfig()
    if (out / REPORT_FILE).exists() and not overwrite:
        raise ReportExistsError(
            f"{out / REPORT_FILE} already exists; pass --overwrite to replace it or choose another --out"
        )
    dataset = load_dataset(data, "test") if dataset is None else dataset
    outputs = check_compatible(loaded, dataset)
    if dataset.num_classes != outputs.num_outputs:
        logger.warning("%s has %d labels, the model %d outputs", dataset.name, dataset.num_classes, outputs.num_outputs)
    per_class = config.per_label(torch.bincount(dataset.labels, minlength=dataset.num_classes).tolist())
    clean = clean_sample(dataset, per_class, seed)
    scanner = NeuralCleanse(loaded.model, config, outputs=outputs, progress=progress, search=search or reverse_engineer)
    report = scanner.scan(clean.images, clean.labels, seed=seed)
    extra: dict[str, Any] = {
        "model": model_name,
        "data": str(data),
        "format": getattr(loaded, "format", None),
        "samples_per_label": per_class,
    }
    known = list(getattr(loaded, "triggers", None) or [])
    if known:
        extra["true_triggers"] = [
            {
                "spec": t.spec,
                "target": target,
                "mask_l1": t.l1,
                "flagged": target in report.flagged,
                "reversed_mask_iou": true_trigger_overlap(report.masks[target], t.mask),
            }
            for t, target in known
        ]
    write_scan_report(report, out, overwrite=overwrite, extra=extra)
    return report, out
