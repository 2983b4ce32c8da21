"""Scan reports on disk: ``report.json``, a self-contained ``report.html``, ``triggers.npz`` and PNG images.

:func:`write_scan_report` turns a :class:`~neuralcleanse.scan.ScanReport` into a directory a person can read
(open ``report.html`` in a browser: every image is embedded, nothing is fetched) and a program can load
(``report.json`` and ``triggers.npz``, read with ``numpy.load(allow_pickle=False)``). Every file is written
atomically, and ``report.json`` last: a directory holding ``report.json`` is a complete report.

The HTML helpers (:func:`render_html_page`, :func:`write_html_page`, :func:`html_table`, :func:`image_figure`,
:func:`png_data_uri`) are public so that other pages (mitigation) share the same look.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write, atomic_write_text
from .outliers import CONSISTENCY
from .scan import ANOMALY_THRESHOLD, ScanReport

__all__ = [
    "HTML_FILE",
    "NORMS_PLOT",
    "REPORT_FILE",
    "TRIGGERS_FILE",
    "ReportExistsError",
    "html_table",
    "image_figure",
    "png_bytes",
    "png_data_uri",
    "render_html_page",
    "to_uint8_image",
    "write_html_page",
    "write_scan_report",
]

logger = logging.getLogger(__name__)

REPORT_FILE = "report.json"
HTML_FILE = "report.html"
NORMS_PLOT = "norms.png"
TRIGGERS_FILE = "triggers.npz"

MIN_IMAGE_PX = 160  # ours: the shorter side of a saved mask/pattern/trigger PNG, so that pixels are visible
THUMB_PX = 72  # ours: the shorter side of a gallery thumbnail (upscaled from small images)
MAX_THUMB_PX = 96  # ours: larger images are downscaled to this in the gallery, to bound the page's size
MAX_TICK_LABELS = 60  # ours: above this many labels the plot's x axis gets automatic ticks

_LABEL_PNG = re.compile(r"label_-?\d+_(mask|pattern|trigger)\.png")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ReportExistsError(FileExistsError):
    """The output directory already holds a report and overwriting was not asked for."""


def write_scan_report(
    report: ScanReport,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report`` into ``out_dir`` and return ``out_dir``.

    Files written (each atomically: a temporary file renamed into place):

    - ``triggers.npz``: ``masks`` (K, 1, H, W) and ``patterns`` (K, C, H, W) float32, ``labels`` (K,) int64,
      ``mask_l1`` (K,) float64, in the order of ``report.labels``;
    - ``label_<L>_mask.png``, ``label_<L>_pattern.png``, ``label_<L>_trigger.png`` (mask × pattern) for each
      flagged label L, upscaled (nearest neighbour) to at least :data:`MIN_IMAGE_PX` pixels;
    - ``norms.png``: the mask L1 norms by label with the median and the flagging threshold;
    - ``report.html``: one self-contained page with all of the above;
    - ``report.json``: ``report.to_dict()``, plus ``"extra"`` when given. Written last.

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
    masks, patterns = _check_report(report)
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
    atomic_write(out_dir / TRIGGERS_FILE, lambda tmp: _savez(tmp, arrays))

    position = {int(label): i for i, label in enumerate(labels)}
    label_images: dict[int, dict[str, bytes]] = {}
    for label in report.flagged:
        i = position[int(label)]
        images = {
            "mask": png_bytes(masks[i], min_size=MIN_IMAGE_PX),
            "pattern": png_bytes(patterns[i], min_size=MIN_IMAGE_PX),
            "trigger": png_bytes(masks[i] * patterns[i], min_size=MIN_IMAGE_PX),
        }
        for kind, data in images.items():
            _write_bytes(out_dir / f"label_{label}_{kind}.png", data)
        label_images[int(label)] = images

    plot = norms_plot_png(report)
    _write_bytes(out_dir / NORMS_PLOT, plot)

    page = _scan_page(report, payload, masks, patterns, plot, label_images)
    atomic_write_text(out_dir / HTML_FILE, page)
    # The JSON goes last: a directory with report.json is a complete report.
    atomic_write_text(json_path, json_text)
    logger.info("wrote the scan report to %s", out_dir)
    return out_dir


# --------------------------------------------------------------------------------------------- images


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
    from PIL import Image

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


def norms_plot_png(report: ScanReport) -> bytes:
    """A bar chart of the labels' mask L1 norms, flagged labels in red, with the median and the flagging
    threshold ``median - anomaly_threshold * 1.4826 * MAD`` as horizontal lines. Returns PNG bytes.

    Uses matplotlib's object API with the Agg canvas: no pyplot, no global backend switch.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    labels = [r.label for r in report.labels]
    norms = [r.mask_l1 for r in report.labels]
    flagged = set(report.flagged)
    threshold = _threshold_norm(report)
    colors = ["#c62828" if label in flagged else "#7b8fa6" for label in labels]

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
        color="#c62828",
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
        Patch(color="#7b8fa6", label="label (not flagged)"),
        Patch(color="#c62828", label="flagged label"),
        median_line,
        threshold_line,
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _threshold_norm(report: ScanReport) -> float:
    """The norm under which a label is flagged: ``median - anomaly_threshold * 1.4826 * MAD``."""
    return report.median_l1 - _anomaly_threshold(report) * CONSISTENCY * report.mad_l1


def _anomaly_threshold(report: ScanReport) -> float:
    return float(report.config.get("anomaly_threshold", ANOMALY_THRESHOLD))


# ----------------------------------------------------------------------------------------------- HTML

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f3f4f6;color:#1f2328;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main{max-width:1080px;margin:0 auto;padding:24px 20px 48px}
header h1{font-size:15px;font-weight:600;color:#57606a;margin:0 0 10px;letter-spacing:.02em}
section{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:16px 20px;margin:0 0 16px}
h2{font-size:18px;margin:0 0 10px}
h3{font-size:15px;margin:14px 0 6px}
p{margin:6px 0}
.note{color:#57606a;font-size:13px}
.verdict{border-radius:8px;padding:18px 22px;margin:0 0 16px;color:#fff}
.verdict.bad{background:#b71c1c}
.verdict.good{background:#2e7d32}
.verdict .word{font-size:44px;font-weight:800;letter-spacing:.04em;line-height:1.1}
.verdict .detail{font-size:18px;margin-top:6px}
table{border-collapse:collapse;font-size:14px;margin:4px 0}
th,td{padding:4px 12px;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.hl td{background:#fde8e8;font-weight:600}
table.kv th{background:none;color:#57606a;font-weight:500;white-space:nowrap}
table.kv td{word-break:break-all}
img{image-rendering:pixelated;image-rendering:crisp-edges}
img.plot{image-rendering:auto;max-width:100%;height:auto}
.row{display:flex;flex-wrap:wrap;gap:18px}
figure{margin:0}
figcaption{font-size:13px;color:#57606a;text-align:center;margin-top:4px}
.big img{width:180px;height:180px;object-fit:contain;border:1px solid #d0d7de;background:#000}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(88px,1fr));gap:10px}
.gallery figure{border:2px solid transparent;border-radius:6px;padding:4px}
.gallery figure.hl{border-color:#c62828;background:#fde8e8}
.gallery figure.hl figcaption{color:#b71c1c;font-weight:600}
.gallery img{display:block;margin:0 auto;width:72px;height:72px;object-fit:contain;background:#000}
.gallery figcaption{line-height:1.3;margin-top:3px;white-space:pre-line}
pre{background:#f6f8fa;padding:8px;border-radius:6px;overflow-x:auto;font-size:12px}
"""


def render_html_page(title: str, sections: Sequence[tuple[str, str]], *, lead: str = "") -> str:
    """One self-contained HTML page (inline CSS, no scripts, no external resources).

    Args:
        title: the page's title (escaped here).
        sections: ``(heading, body_html)`` pairs, each drawn as a card; the heading is escaped here, the body
            is markup the caller built (escape its text with :func:`html.escape`). An empty heading draws
            none.
        lead: markup placed above the sections (e.g. a verdict banner).
    """
    cards = []
    for heading, body in sections:
        h2 = f"<h2>{html.escape(heading)}</h2>\n" if heading else ""
        cards.append(f"<section>\n{h2}{body}\n</section>")
    cards_html = "\n".join(cards)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header><h1>{html.escape(title)}</h1></header>\n{lead}\n{cards_html}\n</main>\n</body>\n</html>\n"
    )


def write_html_page(path: str | Path, title: str, sections: Sequence[tuple[str, str]], *, lead: str = "") -> Path:
    """Write :func:`render_html_page` to ``path`` atomically."""
    return atomic_write_text(path, render_html_page(title, sections, lead=lead))


def html_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    numeric: Iterable[int] = (),
    highlight: Iterable[int] = (),
    css_class: str = "",
) -> str:
    """An HTML table; every cell is converted with ``str`` and escaped.

    Args:
        numeric: column positions aligned right.
        highlight: row positions drawn highlighted.
    """
    numeric, highlight = set(numeric), set(highlight)

    def cell(tag: str, j: int, value: Any) -> str:
        cls = ' class="num"' if j in numeric else ""
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", j, h) for j, h in enumerate(headers))
    body = []
    for i, row in enumerate(rows):
        cls = ' class="hl"' if i in highlight else ""
        body.append(f"<tr{cls}>" + "".join(cell("td", j, v) for j, v in enumerate(row)) + "</tr>")
    table_cls = f' class="{html.escape(css_class)}"' if css_class else ""
    rows_html = "\n".join(body)
    return f"<table{table_cls}><thead><tr>{head}</tr></thead><tbody>\n{rows_html}\n</tbody></table>"


def image_figure(uri: str, caption: str, *, alt: str | None = None, css_class: str = "") -> str:
    """A ``<figure>`` with an image (a ``data:`` URI) and an escaped caption."""
    cls = f' class="{html.escape(css_class)}"' if css_class else ""
    alt_text = html.escape(alt if alt is not None else caption)
    return (
        f'<figure{cls}><img src="{html.escape(uri)}" alt="{alt_text}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>\n{rows}\n</tbody></table>'


def _scan_page(
    report: ScanReport,
    payload: Mapping[str, Any],
    masks: np.ndarray,
    patterns: np.ndarray,
    plot: bytes,
    label_images: Mapping[int, Mapping[str, bytes]],
) -> str:
    threshold = _anomaly_threshold(report)
    extra = dict(payload.get("extra") or {})
    flagged = [int(label) for label in report.flagged]
    flagged_text = ", ".join(map(str, flagged))
    by_label = {r.label: r for r in report.labels}
    _, _, h, w = masks.shape

    if report.infected:
        word, cls = "INFECTED", "bad"
        detail = (
            f"anomaly index {report.anomaly_index:.2f} &gt; threshold {threshold:g} &middot; "
            f"backdoor target label{'s' if len(flagged) > 1 else ''}: "
            f"<strong>{html.escape(flagged_text)}</strong>"
        )
    else:
        word, cls = "CLEAN", "good"
        detail = f"anomaly index {report.anomaly_index:.2f} &le; threshold {threshold:g} &middot; no label stands out"
    model_name = extra.get("model")
    lead = f'<div class="verdict {cls}"><div class="word">{word}</div><div class="detail">{detail}</div></div>'

    sections: list[tuple[str, str]] = []
    explain = (
        "<p>Neural Cleanse searched, for every label, the smallest trigger (a mask and a pattern) that makes "
        "the model predict that label for clean images. A backdoored label needs a much smaller trigger than "
        "the others: its mask L1 norm is an outlier below the median. The anomaly index measures how far a "
        "norm lies from the median in robust standard deviations (1.4826 &times; MAD); above "
        f"{threshold:g} with a norm below the median the label is flagged.</p>"
    )
    sections.append(("Summary", explain + _key_values(_summary_rows(report, extra, h, w))))

    known = extra.get("true_triggers")
    if isinstance(known, list) and known and all(isinstance(t, Mapping) for t in known):
        sections.append(("Known (planted) triggers", _dict_table(known)))

    sections.append(
        (
            "Trigger size by label",
            f'<img class="plot" src="{png_data_uri(plot)}" alt="bar chart of the mask L1 norms by label">'
            '<p class="note">Bars: L1 norm of each label\'s reversed mask. Dashed line: median. Dotted red line: '
            f"flagging threshold (median &minus; {threshold:g} &times; 1.4826 &times; MAD). "
            "Labels whose bar ends below it are flagged.</p>",
        )
    )

    for label in flagged:
        r = by_label[label]
        images = label_images[label]
        captions = (("mask", "mask"), ("pattern", "pattern"), ("trigger", "trigger (mask × pattern)"))
        figures = "".join(
            image_figure(png_data_uri(images[kind]), caption, alt=f"label {label} {caption}", css_class="big")
            for kind, caption in captions
        )
        stats = (
            f"<p>mask L1 {r.mask_l1:.2f} ({r.mask_l1 / (h * w):.1%} of the {h}&times;{w} image) "
            f"&middot; attack success {r.attack_success:.1%} &middot; anomaly index "
            f"{r.anomaly_index:.2f}</p>"
        )
        files = (
            f'<p class="note">Files: label_{label}_mask.png, label_{label}_pattern.png, '
            f"label_{label}_trigger.png (all labels' arrays in {TRIGGERS_FILE}).</p>"
        )
        sections.append(
            (f"Reversed trigger of flagged label {label}", f'{stats}<div class="row">{figures}</div>{files}')
        )

    thumbs = []
    for i, r in enumerate(report.labels):
        uri = png_data_uri(png_bytes(masks[i] * patterns[i], min_size=THUMB_PX, max_size=MAX_THUMB_PX))
        mark = " (flagged)" if r.label in flagged else ""
        thumbs.append(
            image_figure(
                uri,
                f"label {r.label}{mark}\nL1 {r.mask_l1:.1f}",
                alt=f"reversed trigger of label {r.label}",
                css_class="hl" if r.label in flagged else "",
            )
        )
    sections.append(
        (
            "Reversed triggers of all labels",
            '<p class="note">mask &times; pattern for each label; flagged labels outlined in '
            "red.</p>"
            f'<div class="gallery">{"".join(thumbs)}</div>',
        )
    )

    rows = sorted(report.labels, key=lambda r: r.label)
    table = html_table(
        ["label", "mask L1", "attack success", "anomaly index", "found", "flagged"],
        [
            [
                r.label,
                f"{r.mask_l1:.2f}",
                f"{r.attack_success:.1%}",
                f"{r.anomaly_index:.2f}",
                "yes" if r.found else "no",
                "FLAGGED" if r.label in flagged else "",
            ]
            for r in rows
        ],
        numeric=[0, 1, 2, 3],
        highlight=[i for i, r in enumerate(rows) if r.label in flagged],
    )
    sections.append(
        (
            "All labels",
            table + f'<p class="note">attack success: share of the {report.num_images} clean images '
            "that the label's kept trigger sends to the label, measured after the search. found: the "
            "search reached the attack-success threshold for the label (if not, its norm is that of the "
            "best mask seen).</p>",
        )
    )

    other = {k: v for k, v in extra.items() if k not in _SHOWN_EXTRA}
    details: list[tuple[str, Any]] = [("versions", ", ".join(f"{k} {v}" for k, v in report.versions.items()))]
    details += [
        (k, v if isinstance(v, str | int | float | bool) or v is None else json.dumps(v)) for k, v in other.items()
    ]
    details.append(("reverse-engineering settings", json.dumps(report.config.get("reverse", {}))))
    sections.append(
        (
            "Details",
            _key_values(details) + f'<p class="note">Machine-readable: {REPORT_FILE}, '
            f"{TRIGGERS_FILE}, {NORMS_PLOT}.</p>",
        )
    )

    title = "Neural Cleanse scan report" + (f" — {model_name}" if model_name else "")
    return render_html_page(title, sections, lead=lead)


_SHOWN_EXTRA = {"model", "data", "format", "samples_per_label", "true_triggers"}


def _summary_rows(report: ScanReport, extra: Mapping[str, Any], h: int, w: int) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, name in (("model", "model"), ("data", "data"), ("format", "model format")):
        if extra.get(key) is not None:
            rows.append((name, extra[key]))
    rows.append(("verdict", "infected" if report.infected else "clean"))
    rows.append(("flagged labels", ", ".join(map(str, report.flagged)) or "none"))
    rows.append(("anomaly index", f"{report.anomaly_index:.3f} (threshold {_anomaly_threshold(report):g})"))
    rows.append(("median mask L1 / MAD", f"{report.median_l1:.3f} / {report.mad_l1:.3f}"))
    images = f"{report.num_images}"
    if extra.get("samples_per_label") is not None:
        images += f" ({extra['samples_per_label']} per label)"
    rows.append(("clean images used", images))
    if report.clean_accuracy is not None:
        rows.append(("clean accuracy", f"{report.clean_accuracy:.2%}"))
    rows.append(("labels examined", f"{len(report.labels)} ({h}×{w} images)"))
    rows.append(("mode", report.mode))
    rows.append(("seed", "none" if report.seed is None else report.seed))
    rows.append(("scan time", _duration(report.seconds)))
    rows.append(("model outputs", "probabilities" if report.outputs_probabilities else "logits"))
    return rows


def _dict_table(entries: Sequence[Mapping[str, Any]]) -> str:
    keys: list[str] = []
    for e in entries:
        keys += [k for k in e if k not in keys]

    def fmt(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return {True: "yes", False: "no", None: ""}[v]
        if isinstance(v, float):
            return f"{v:.3g}"
        return v if isinstance(v, str) else json.dumps(v)

    numeric = [
        j
        for j, k in enumerate(keys)
        if all(isinstance(e.get(k), int | float) and not isinstance(e.get(k), bool) for e in entries)
    ]
    headers = [_NICE_KEYS.get(k, k.replace("_", " ")) for k in keys]
    return html_table(headers, [[fmt(e.get(k)) for k in keys] for e in entries], numeric=numeric)


_NICE_KEYS = {"mask_l1": "mask L1", "reversed_mask_iou": "IoU with the reversed mask"}


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


# ------------------------------------------------------------------------------------------- plumbing


def _check_report(report: ScanReport) -> tuple[np.ndarray, np.ndarray]:
    """The report's masks (K, 1, H, W) and patterns (K, C, H, W) as float32 numpy arrays, checked."""
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
    return masks, patterns


def _savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:  # a file object, so numpy does not append '.npz' to the temporary name
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def _write_bytes(path: Path, data: bytes) -> Path:
    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return atomic_write(path, write)
