"""Pictures: images in [0, 1] encoded as PNG, and the bar chart of a scan's mask norms.

Charts use matplotlib's object API on an Agg canvas: no pyplot, no global backend or state.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from ..outliers import CONSISTENCY
from ..scan import ANOMALY_THRESHOLD, ScanReport

__all__ = [
    "anomaly_threshold",
    "before_after_png",
    "norms_plot_png",
    "png_bytes",
    "png_data_uri",
    "threshold_norm",
    "to_uint8_image",
]

MAX_TICK_LABELS = 60  # ours: above this many labels the plot's x axis gets automatic ticks

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_FLAGGED_COLOR = "#c62828"
_LABEL_COLOR = "#7b8fa6"


def to_uint8_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """A (H, W), (1, H, W) or (C, H, W) image with values in [0, 1] as uint8 (H, W) grey or (H, W, 3) RGB.

    Values are clipped to [0, 1] (NaN becomes 0). Three channels are RGB; one is grey; any other channel count
    is shown as the grey mean of its channels.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().numpy()
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3:
        if arr.shape[0] == 3:
            arr = arr.transpose(1, 2, 0)  # (H, W, 3)
        elif arr.shape[0] == 1:
            arr = arr[0]
        else:
            arr = arr.mean(axis=0)
    elif arr.ndim != 2:
        raise ValueError(f"image must be (H, W) or (C, H, W), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image must not be empty, got shape {np.asarray(image).shape}")
    arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    return np.round(np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8)


def png_bytes(image: np.ndarray | torch.Tensor, *, min_size: int = 0, max_size: int | None = None) -> bytes:
    """Encode an image (see :func:`to_uint8_image`) as PNG.

    Args:
        min_size: upscale by a whole factor (nearest neighbour, so pixels stay sharp squares) until the
            shorter side is at least this many pixels.
        max_size: downscale (area averaging) so that the longer side is at most this many pixels.
    """
    pixels = to_uint8_image(image)
    h, w = pixels.shape[:2]
    factor = max(1, math.ceil(min_size / min(h, w))) if min_size > 0 else 1
    if factor > 1:
        pixels = pixels.repeat(factor, axis=0).repeat(factor, axis=1)
    img = Image.fromarray(pixels)
    if max_size is not None and max(img.size) > max_size:
        scale = max_size / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BOX)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_data_uri(image: np.ndarray | torch.Tensor | bytes | str | Path, *, min_size: int = 0) -> str:
    """A ``data:image/png;base64,...`` URI for an image array (see :func:`png_bytes`), PNG bytes or a PNG
    file."""
    if isinstance(image, str | Path):
        data = Path(image).read_bytes()
    elif isinstance(image, bytes | bytearray):
        data = bytes(image)
    else:
        data = png_bytes(image, min_size=min_size)
    if not data.startswith(_PNG_MAGIC):
        raise ValueError("png_data_uri expects PNG data (the bytes do not start with the PNG signature)")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def anomaly_threshold(report: ScanReport) -> float:
    """The anomaly index above which the scan flagged a label."""
    return float(report.config.get("anomaly_threshold", ANOMALY_THRESHOLD))


def threshold_norm(report: ScanReport) -> float:
    """The norm under which a label is flagged: ``median - anomaly_threshold * 1.4826 * MAD``."""
    return report.median_l1 - anomaly_threshold(report) * CONSISTENCY * report.mad_l1


def norms_plot_png(report: ScanReport) -> bytes:
    """A bar chart of the labels' mask L1 norms, flagged labels in red, with the median and the flagging
    threshold (:func:`threshold_norm`) as horizontal lines. Returns PNG bytes."""
    labels = [r.label for r in report.labels]
    norms = [r.mask_l1 for r in report.labels]
    flagged = set(report.flagged)
    threshold = threshold_norm(report)
    colors = [_FLAGGED_COLOR if label in flagged else _LABEL_COLOR for label in labels]

    fig = Figure(figsize=(9, 3.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    ax.bar(x, norms, color=colors, width=0.75, zorder=2)
    median_line = ax.axhline(
        report.median_l1,
        color="#222222",
        linestyle="--",
        linewidth=1.2,
        zorder=3,
        label=f"median ({report.median_l1:.3g})",
    )
    threshold_line = ax.axhline(
        threshold,
        color=_FLAGGED_COLOR,
        linestyle=":",
        linewidth=1.5,
        zorder=3,
        label=f"flagging threshold ({threshold:.3g})",
    )
    if len(labels) <= 20:
        ax.set_xticks(x, [str(label) for label in labels])
    elif len(labels) <= MAX_TICK_LABELS:
        ax.set_xticks(x, [str(label) for label in labels], fontsize=7, rotation=90)
    ax.set_xlim(-0.7, len(labels) - 0.3)
    ax.set_ylim(min(0.0, threshold * 1.1), max(max(norms, default=0.0), report.median_l1) * 1.12 or 1.0)
    ax.set_xlabel("label")
    ax.set_ylabel("mask L1 norm (sum of mask values)")
    ax.set_title("Size of the smallest trigger found for each label", fontsize=11)
    ax.grid(axis="y", color="#e3e3e3", zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    handles = [
        Patch(color=_LABEL_COLOR, label="label (not flagged)"),
        Patch(color=_FLAGGED_COLOR, label="flagged label"),
        median_line,
        threshold_line,
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def before_after_png(rows: list[tuple[str, float, float]]) -> bytes:
    """A small horizontal bar chart of ``(name, before, after)`` fractions, one pair of bars per row, with the
    percentages written at the bars' ends. Returns PNG bytes."""
    fig = Figure(figsize=(7.5, 0.5 + 0.75 * len(rows)), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1].astype(float)
    height = 0.36
    series = (
        (height / 2, [before for _, before, _ in rows], "#9aa5b1", "before"),
        (-height / 2, [after for _, _, after in rows], "#1f6feb", "after"),
    )
    for offset, values, color, name in series:
        ax.barh(y + offset, values, height=height, color=color, label=name, zorder=2)
        for yy, value in zip(y + offset, values, strict=True):
            ax.text(value + 0.01, yy, f"{value:.1%}", va="center", fontsize=8.5, color="#1f2328")
    ax.set_yticks(y, [row[0] for row in rows], fontsize=9.5)
    ax.set_xlim(0, 1.12)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"], fontsize=8.5)
    ax.grid(axis="x", color="#e3e3e3", zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="lower left", bbox_to_anchor=(1.0, 0.0), frameon=False, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
