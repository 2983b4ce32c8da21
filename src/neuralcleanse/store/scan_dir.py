"""The scan folder: what ``neuralcleanse scan`` found, for a person and for a program.

Files:

- ``triggers.npz``: every examined label's reversed trigger, row k for the k-th label of ``report.json``'s
  ``"labels"``: ``masks`` (K, 1, H, W) and ``patterns`` (K, C, H, W) float32, ``labels`` (K,) int64,
  ``mask_l1`` (K,) float64; when the scan ran the blend search, also ``blend_masks`` (K, 1, H, W) (each one
  opacity over the whole image), ``blend_patterns`` (K, C, H, W) and ``blend_l1`` (K,);
- ``label_<L>_mask.png``, ``label_<L>_pattern.png``, ``label_<L>_trigger.png`` (mask × pattern) for each flagged
  label L (its blend trigger's when the blend search flagged it), upscaled (nearest neighbour) to at least
  :data:`MIN_IMAGE_PX` pixels;
- ``norms.png``: the mask L1 norms by label with the median and the flagging threshold;
- ``report.html``: one self-contained page with all of the above (every image embedded, nothing fetched);
- ``report.json``: :meth:`ScanReport.to_dict() <neuralcleanse.scan.ScanReport.to_dict>`, plus the caller's
  context under ``"extra"``. Written last: a folder holding ``report.json`` is a complete report.

:func:`write_scan_report` writes the folder, :func:`read_scan` reads back what ``mitigate`` needs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_bytes, atomic_write_npz, atomic_write_text
from ..preprocess import Preprocessing
from ..render.pages import scan_page
from ..render.pictures import norms_plot_png, png_bytes
from ..scan import ScanReport

__all__ = [
    "HTML_FILE",
    "NORMS_PLOT",
    "REPORT_FILE",
    "TRIGGERS_FILE",
    "ReportExistsError",
    "read_scan",
    "scanned_preprocessing",
    "write_scan_report",
]

logger = logging.getLogger(__name__)

REPORT_FILE = "report.json"
HTML_FILE = "report.html"
NORMS_PLOT = "norms.png"
TRIGGERS_FILE = "triggers.npz"

MIN_IMAGE_PX = 160  # ours: the shorter side of a saved mask/pattern/trigger PNG, so that pixels are visible

_LABEL_PNG = re.compile(r"label_-?\d+_(mask|pattern|trigger)\.png")


class ReportExistsError(FileExistsError):
    """The output directory already holds a report and overwriting was not asked for."""


def write_scan_report(
    report: ScanReport,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report`` into ``out_dir`` (the files listed in this module's docstring) and return ``out_dir``.

    Args:
        report: the scan's result.
        out_dir: created when missing.
        overwrite: replace an existing report. The old ``report.json`` is removed first (so that a failure
            half-way never leaves an old ``report.json`` beside new files), and so are old
            ``label_<L>_*.png`` files of labels no longer flagged.
        extra: JSON-serialisable context recorded under ``"extra"`` and shown on the page, e.g.
            ``{"model": path, "data": spec, "true_triggers": [...]}``.

    Raises:
        ReportExistsError: ``out_dir/report.json`` exists and ``overwrite`` is false (nothing is written).
        ValueError: the report's masks and patterns do not match its labels, or ``extra`` is not
            JSON-serialisable (nothing is written).
    """
    out_dir = Path(out_dir)
    json_path = out_dir / REPORT_FILE
    if json_path.exists() and not overwrite:
        raise ReportExistsError(f"{json_path} already exists; pass --overwrite to replace it or choose another --out")
    masks, patterns, blends = _check_report(report)
    payload = report.to_dict()
    if extra is not None:
        payload["extra"] = dict(extra)
    try:  # serialise up front: a bad `extra` fails before anything is written
        json_text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the report cannot be written as JSON ({exc}); extra must hold plain JSON values") from None

    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        json_path.unlink(missing_ok=True)
        for old in out_dir.iterdir():
            if _LABEL_PNG.fullmatch(old.name):
                old.unlink()

    labels = np.array([r.label for r in report.labels], dtype=np.int64)  # (K,)
    norms = np.array([r.mask_l1 for r in report.labels], dtype=np.float64)  # (K,)
    arrays = {"masks": masks, "patterns": patterns, "labels": labels, "mask_l1": norms}
    if blends is not None:
        arrays["blend_masks"], arrays["blend_patterns"] = blends
        arrays["blend_l1"] = np.array([r.blend_l1 for r in report.labels], dtype=np.float64)
    atomic_write_npz(out_dir / TRIGGERS_FILE, arrays)

    label_images: dict[int, dict[str, tuple[str, bytes]]] = {}
    for label in report.flagged:
        trigger = report.trigger(int(label))  # the blend trigger of a label the blend search flagged
        mask = trigger.mask.detach().cpu().float().numpy()
        pattern = trigger.pattern.detach().cpu().float().numpy()
        images = {
            "mask": png_bytes(mask, min_size=MIN_IMAGE_PX),
            "pattern": png_bytes(pattern, min_size=MIN_IMAGE_PX),
            "trigger": png_bytes(mask * pattern, min_size=MIN_IMAGE_PX),
        }
        label_images[int(label)] = {}
        for kind, data in images.items():
            name = f"label_{label}_{kind}.png"
            atomic_write_bytes(out_dir / name, data)
            label_images[int(label)][kind] = (name, data)

    plot = norms_plot_png(report)
    atomic_write_bytes(out_dir / NORMS_PLOT, plot)

    files = {"report": REPORT_FILE, "triggers": TRIGGERS_FILE, "plot": NORMS_PLOT}
    page = scan_page(
        report,
        payload.get("extra") or {},
        masks,
        patterns,
        plot=plot,
        label_images=label_images,
        files=files,
        location=out_dir,
    )
    atomic_write_text(out_dir / HTML_FILE, page)
    # The JSON goes last: a directory with report.json is a complete report.
    atomic_write_text(json_path, json_text)
    logger.info("wrote the scan report to %s", out_dir)
    return out_dir


def scanned_preprocessing(report_dir: str | Path) -> Preprocessing | None:
    """How the scan in ``report_dir`` fed its model (``report.json``'s ``extra.preprocessing``); None when the
    report does not say or cannot be read (the caller's own reading of the folder reports why)."""
    try:
        recorded = json.loads((Path(report_dir) / REPORT_FILE).read_text(encoding="utf-8"))["extra"]["preprocessing"]
        return None if recorded is None else Preprocessing.from_dict(recorded)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_scan(
    report_dir: str | Path,
) -> tuple[dict[str, Any], dict[int, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """A scan folder's report (``report.json``), its reversed ``{label: (mask, pattern)}`` and its labels. A
    label's trigger is :meth:`ScanReport.trigger <neuralcleanse.scan.ScanReport.trigger>`'s: its blend trigger
    when the blend search flagged it, else its mask trigger.

    Shape:
        mask: (1, H, W); pattern: (C, H, W); labels: (K,).

    Raises:
        FileNotFoundError: the folder lacks ``report.json`` or ``triggers.npz``.
        ValueError: one of them cannot be read.
    """
    report_dir = Path(report_dir)
    report_path, triggers_path = report_dir / REPORT_FILE, report_dir / TRIGGERS_FILE
    if not report_path.is_file() or not triggers_path.is_file():
        raise FileNotFoundError(
            f"{report_dir}: not a scan directory (expected {REPORT_FILE} and {TRIGGERS_FILE}); "
            "run `neuralcleanse scan` first"
        )
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        with np.load(triggers_path, allow_pickle=False) as arrays:
            masks, patterns, labels = arrays["masks"], arrays["patterns"], arrays["labels"]
            blended = set(report.get("blend_flagged", []))
            if blended:
                masks, patterns = masks.copy(), patterns.copy()
                rows = [i for i, label in enumerate(labels.tolist()) if label in blended]
                masks[rows], patterns[rows] = arrays["blend_masks"][rows], arrays["blend_patterns"][rows]
    except (ValueError, KeyError, OSError, TypeError) as exc:
        raise ValueError(f"{report_dir}: unreadable scan report ({exc})") from None
    by_label = {int(label): (masks[i], patterns[i]) for i, label in enumerate(labels.tolist())}
    return report, by_label, labels


def _check_report(report: ScanReport) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """The report's masks (K, 1, H, W) and patterns (K, C, H, W) as float32 numpy arrays, checked, and its blend
    triggers' (None when the scan ran no blend search)."""
    if not isinstance(report, ScanReport):
        raise TypeError(f"report must be a ScanReport, got {type(report).__name__}")
    masks = torch.as_tensor(report.masks).detach().cpu().float().numpy()
    patterns = torch.as_tensor(report.patterns).detach().cpu().float().numpy()
    k = len(report.labels)
    if masks.ndim != 4 or masks.shape[0] != k or masks.shape[1] != 1:
        raise ValueError(f"report.masks must be (K, 1, H, W) with K={k} labels, got {masks.shape}")
    if patterns.ndim != 4 or patterns.shape[0] != k or patterns.shape[2:] != masks.shape[2:]:
        raise ValueError(
            f"report.patterns must be (K, C, H, W) = ({k}, C, {masks.shape[2]}, {masks.shape[3]}), got {patterns.shape}"
        )
    known = {r.label for r in report.labels}
    missing = [label for label in report.flagged if label not in known]
    if missing:
        raise ValueError(f"report.flagged names labels {missing} that are not among report.labels")
    if report.blend_masks is None or report.blend_patterns is None:
        return masks, patterns, None
    blends = (
        torch.as_tensor(report.blend_masks).detach().cpu().float().numpy(),
        torch.as_tensor(report.blend_patterns).detach().cpu().float().numpy(),
    )
    if blends[0].shape != masks.shape or blends[1].shape != patterns.shape:
        raise ValueError(
            f"report.blend_masks and blend_patterns must be shaped as masks {masks.shape} and patterns "
            f"{patterns.shape}, got {blends[0].shape} and {blends[1].shape}"
        )
    return masks, patterns, blends
