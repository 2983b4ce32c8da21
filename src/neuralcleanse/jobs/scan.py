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
from ..profiles import LabelProfile, resolve_profile
from ..progress import ProgressCallback
from ..reverse import ReverseResult, reverse_engineer
from ..scan import FewImagesError, NeuralCleanse, SanityCheckError, ScanReport, describe_short_labels, short_labels
from ..second_scan import join_scans, wants_second_scan
from ..store.out_dir import check_out_dir
from ..store.scan_dir import REPORT_FILE, write_scan_report

__all__ = ["SECOND_SCAN_INTERRUPTED", "SecondScanInterrupted", "scan_model"]

logger = logging.getLogger(__name__)

#: The warning of a report whose second scan was interrupted: its verdict is the borderline first scan's.
SECOND_SCAN_INTERRUPTED = "the second scan of this borderline verdict was interrupted: the verdict is the first scan's"


class SecondScanInterrupted(KeyboardInterrupt):
    """Ctrl-C during the second scan of a borderline verdict, after the first scan's report was written to ``out``."""

    def __init__(self, out: Path) -> None:
        super().__init__(f"interrupted during the second scan; the first scan's report is in {out}")
        self.out = out


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
    see :meth:`~neuralcleanse.config.ScanConfig.per_label`) and write the scan folder ``out``. A borderline verdict
    is scanned again with ``seed + 1`` on the sample of that seed, and the report flags the labels either scan
    flags (:mod:`~neuralcleanse.second_scan`); interrupted (Ctrl-C) during that second scan, it writes the first
    scan's report, saying so, and raises :class:`SecondScanInterrupted`. The decision reads the norms through
    ``config.profile`` (:func:`~neuralcleanse.profiles.resolve_profile`: by default the built-in profile of
    ``data``'s dataset).

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
    profile = resolve_profile(config.profile, str(data), outputs.num_outputs) if config.reads_profile else None
    scan = functools.partial(_scan, config=config, outputs=outputs, progress=progress, search=search, profile=profile)
    try:
        report = scan(loaded.model, clean, seed)
    except SanityCheckError as exc:
        better = _another_convention(loaded, clean, exc, config, sharded=search is not None)
        loaded = _fed(loaded, better.convention.preprocessing)
        report = scan(loaded.model, clean, seed)
        report = replace(report, warnings=[_fallback_warning(exc, better), *report.warnings])
    write = functools.partial(
        _write, out=out, loaded=loaded, model_name=model_name, data=data, per_class=per_class, overwrite=overwrite
    )
    if wants_second_scan(report, config):  # borderline: the next seed, on another clean sample
        try:
            second = scan(loaded.model, clean_sample(dataset, per_class, seed + 1), seed + 1)
        except KeyboardInterrupt:  # the first scan is whole: keep it
            write(replace(report, warnings=[*report.warnings, SECOND_SCAN_INTERRUPTED]))
            raise SecondScanInterrupted(out) from None
        report = join_scans(report, second)
    write(report)
    return report, out


def _write(
    report: ScanReport, out: Path, loaded: Any, model_name: str, data: str, per_class: int, overwrite: bool
) -> None:
    """The scan folder of ``report``, with what the job knows beside it: the model, its data and format, and how
    the reversed triggers compare with the model's true ones where its file records them."""
    extra: dict[str, Any] = {
        "model": model_name,
        "data": str(data),
        "format": getattr(loaded, "format", None),
        "preprocessing": loaded.preprocessing.to_dict(),
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


def _scan(
    model: torch.nn.Module,
    clean: ImageData,
    seed: int,
    config: ScanConfig,
    outputs: Any,
    progress: ProgressCallback | None,
    search: Callable[..., ReverseResult] | None,
    profile: LabelProfile | None,
) -> ScanReport:
    scanner = NeuralCleanse(
        model, config, outputs=outputs, progress=progress, search=search or reverse_engineer, profile=profile
    )
    return scanner.scan(clean.images, clean.labels, seed=seed)


def _another_convention(
    loaded: Any, clean: ImageData, failed: SanityCheckError, config: ScanConfig, sharded: bool
) -> ConventionFit:
    """After the sanity check ``failed``: the common input convention to scan under instead
    (:mod:`~neuralcleanse.conventions`). Options given are never overridden, nor are a sharded search's, whose
    workers load the model themselves: then, or when no convention does clearly better, the check's error is raised
    again, naming the better convention's options when there is one."""
    pre = loaded.preprocessing
    try:
        fits = rank_conventions(_as_held(loaded.model), clean.images, clean.labels, layout=pre.layout)
    except MODEL_ERRORS:  # the model fails on another convention's input: the check's own error stands
        raise SanityCheckError(str(failed), failed.accuracy) from None
    better = better_convention(fits, config.min_clean_accuracy or 0.0, pre, reached=failed.accuracy)
    if better is None:
        hint = "; no common input convention does better (see docs/formats.md)"
    elif replace(pre, layout=None) != Preprocessing() or sharded:
        hint = f"; fed images {better.convention.name} it classifies {better.accuracy:.1%} of them: rerun with "
        hint += better.convention.options
    else:
        return better
    raise SanityCheckError(f"{failed}{hint}", failed.accuracy) from None


def _as_held(model: torch.nn.Module) -> torch.nn.Module:
    """The model as its file holds it, without the scan's preprocessing wrapper."""
    return model.model if isinstance(model, PreprocessedModel) else model


def _fed(loaded: Any, convention: Preprocessing) -> Any:
    """``loaded`` with its model fed under ``convention`` (the layout kept)."""
    raw = _as_held(loaded.model)
    pre = replace(convention, layout=loaded.preprocessing.layout)
    return replace(loaded, model=PreprocessedModel(raw, pre).to(model_device(raw)).eval(), preprocessing=pre)


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
