"""The ``scan`` job: a stratified clean sample of the data, the scan, and the scan folder."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .._torch import MODEL_ERRORS, model_device
from ..config import MIN_IMAGES_PER_LABEL, ScanConfig
from ..conventions import ConventionFit, better_convention, rank_conventions
from ..data import ImageData, clean_sample, load_dataset
from ..metrics import true_trigger_overlap
from ..preprocess import PreprocessedModel, Preprocessing
from ..probe import check_compatible
from ..progress import ProgressCallback
from ..reverse import ReverseResult, reverse_engineer
from ..scan import FewImagesError, NeuralCleanse, SanityCheckError, ScanReport, describe_short_labels, short_labels
from ..store.out_dir import check_out_dir
from ..store.scan_dir import REPORT_FILE, write_scan_report

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
    check_out_dir(out, REPORT_FILE, overwrite)
    dataset = load_dataset(data, "test") if dataset is None else dataset
    outputs = check_compatible(loaded, dataset)
    if dataset.num_classes != outputs.num_outputs:
        logger.warning("%s has %d labels, the model %d outputs", dataset.name, dataset.num_classes, outputs.num_outputs)
    counts = torch.bincount(dataset.labels, minlength=max(dataset.num_classes, outputs.num_outputs)).tolist()
    per_class = config.per_label(counts)
    _check_counts(dataset.name, counts[: outputs.num_outputs], per_class, config)
    clean = clean_sample(dataset, per_class, seed)
    scan = functools.partial(_scan, config=config, outputs=outputs, progress=progress, search=search, seed=seed)
    try:
        report = scan(loaded.model, clean)
    except SanityCheckError as exc:
        fits = _conventions(loaded, clean)
        floor, given = config.min_clean_accuracy or 0.0, loaded.preprocessing
        better = None if fits is None else better_convention(fits, floor, given, reached=exc.accuracy)
        # Options given are never overridden; nor are a sharded search's, whose workers load the model themselves.
        if better is None or not _default(loaded.preprocessing) or search is not None:
            hint = "" if fits is None else "; no common input convention does better (see docs/formats.md)"
            if better is not None:
                hint = f"; fed images {better.convention.name} it classifies {better.accuracy:.1%} of them: "
                hint += f"rerun with {better.convention.options}"
            raise SanityCheckError(f"{exc}{hint}", exc.accuracy) from None
        loaded = _fed(loaded, better.convention.preprocessing)
        report = scan(loaded.model, clean)
        report = replace(report, warnings=[_fallback_warning(exc, better), *report.warnings])
    extra: dict[str, Any] = {
        "model": model_name,
        "data": str(data),
        "format": getattr(loaded, "format", None),
        "preprocessing": loaded.preprocessing.to_dict() if loaded.preprocessing is not None else None,
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


def _scan(
    model: torch.nn.Module,
    clean: ImageData,
    config: ScanConfig,
    outputs: Any,
    progress: ProgressCallback | None,
    search: Callable[..., ReverseResult] | None,
    seed: int,
) -> ScanReport:
    scanner = NeuralCleanse(model, config, outputs=outputs, progress=progress, search=search or reverse_engineer)
    return scanner.scan(clean.images, clean.labels, seed=seed)


def _conventions(loaded: Any, clean: ImageData) -> list[ConventionFit] | None:
    """:func:`~neuralcleanse.conventions.rank_conventions` for the model as its file holds it; None when the
    model fails on another convention's input."""
    model, pre = loaded.model, loaded.preprocessing
    raw = model.model if isinstance(model, PreprocessedModel) else model
    try:
        return rank_conventions(raw, clean.images, clean.labels, layout=None if pre is None else pre.layout)
    except MODEL_ERRORS:
        return None


def _default(pre: Preprocessing | None) -> bool:
    """Whether no preprocessing was stated: [0, 1] RGB, whatever the layout."""
    return pre is None or replace(pre, layout=None) == Preprocessing()


def _fed(loaded: Any, convention: Preprocessing) -> Any:
    """``loaded`` with its model fed under ``convention`` (the layout kept)."""
    raw = loaded.model.model if isinstance(loaded.model, PreprocessedModel) else loaded.model
    pre = replace(convention, layout=loaded.preprocessing.layout if loaded.preprocessing is not None else None)
    model = PreprocessedModel(raw, pre).to(model_device(raw)).eval()
    return replace(loaded, model=model, preprocessing=pre)


def _fallback_warning(failed: SanityCheckError, better: ConventionFit) -> str:
    """The report's warning when the scan fed the model under ``better`` after the default failed."""
    name, options = better.convention.name, better.convention.options
    default = "" if failed.accuracy is None else f"{failed.accuracy:.1%} of the clean images right fed in [0, 1] but "
    return (
        f"no preprocessing was given, and the model gets {default}{better.accuracy:.1%} fed {name}: scanned so, as "
        f"with {options}; give the preprocessing options to choose"
    )


def _check_counts(name: str, counts: list[int], per_class: int, config: ScanConfig) -> None:
    """Refuse, before the scan, data with too few images of some label, or a ``samples`` too small to give each
    label enough (naming the flags that change it); the scan itself warns when ``allow_few_images`` is set."""
    if config.allow_few_images:
        return
    short = short_labels(counts)
    if short:
        raise FewImagesError(
            f"{name}: too few clean images for a scan: {describe_short_labels(short)} (at least "
            f"{MIN_IMAGES_PER_LABEL} of every label the model outputs); give more images, or pass "
            "--allow-few-images to scan anyway",
            short,
        )
    if per_class < MIN_IMAGES_PER_LABEL:
        raise FewImagesError(
            f"--samples {config.samples} leaves {per_class} images per label for {len(counts)} labels (at least "
            f"{MIN_IMAGES_PER_LABEL} each: --samples {MIN_IMAGES_PER_LABEL * len(counts)} or more); or pass "
            "--allow-few-images to scan anyway",
            [(label, per_class) for label in range(len(counts))],
        )
