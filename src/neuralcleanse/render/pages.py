"""HTML pages, rendered from the jinja2 templates in ``templates/`` with autoescape on.

Every value put into a page is escaped unless it is :class:`markupsafe.Markup`. Pages are self-contained: the
style sheet (``static/report.css``) is inlined, images are ``data:`` URIs, nothing is fetched and nothing runs.
Python prepares the values (numbers formatted, rows ordered); the templates hold the markup and the text.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from ..scan import LabelResult, ScanReport
from .pictures import anomaly_threshold, png_bytes, png_data_uri

__all__ = ["mitigation_page", "render_page", "scan_page"]

THUMB_PX = 72  # ours: the shorter side of a gallery thumbnail (upscaled from small images)
MAX_THUMB_PX = 96  # ours: larger images are downscaled to this in the gallery, to bound the page's size

_PACKAGE = "neuralcleanse.render"
# Context keys of the scan page shown in its summary rather than among the details.
_SHOWN_EXTRA = {"model", "data", "format", "samples_per_label", "true_triggers"}
_NICE_KEYS = {"mask_l1": "mask L1", "reversed_mask_iou": "IoU with the reversed mask"}
_CAPTIONS = (("mask", "mask"), ("pattern", "pattern"), ("trigger", "trigger (mask × pattern)"))


def _percent(value: float | None, digits: int = 2) -> str:
    """``0.1234`` as ``"12.34%"`` (``digits`` decimals); a missing value as a dash."""
    return "—" if value is None else f"{value:.{digits}%}"


_ENV = Environment(
    loader=PackageLoader(_PACKAGE, "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENV.filters["percent"] = _percent


@functools.cache
def _css() -> Markup:
    return Markup(resources.files(_PACKAGE).joinpath("static", "report.css").read_text(encoding="utf-8"))


def _render(template: str, title: str, **context: Any) -> str:
    return _ENV.get_template(template).render(title=title, css=_css(), **context)


def render_page(title: str, sections: Sequence[tuple[str, str]], *, lead: str = "") -> str:
    """A plain page of sections: one card per ``(heading, body)`` pair.

    Args:
        title: the page's title (escaped).
        sections: headings are escaped, an empty one draws none; bodies are inserted as markup, so they must
            come from a template (or be text escaped by the caller).
        lead: markup placed above the sections.
    """
    cards = [(heading, Markup(body)) for heading, body in sections]
    return _render("page.html.j2", title, sections=cards, lead=Markup(lead))


def scan_page(
    report: ScanReport,
    extra: Mapping[str, Any],
    masks: np.ndarray,
    patterns: np.ndarray,
    *,
    plot: bytes,
    label_images: Mapping[int, Mapping[str, tuple[str, bytes]]],
    files: Mapping[str, str],
) -> str:
    """The scan report page.

    Args:
        report: the scan's result.
        extra: the context recorded with the report (model, data, known triggers...); may be empty.
        masks: (K, 1, H, W) and ``patterns`` (K, C, H, W): every label's reversed trigger, in report order.
        plot: the norms chart as PNG bytes.
        label_images: for each flagged label, ``{"mask" | "pattern" | "trigger": (file name, PNG bytes)}``.
        files: the names of the folder's ``"report"``, ``"triggers"`` and ``"plot"`` files, as the page cites them.
    """
    flagged = [int(label) for label in report.flagged]
    by_label = {r.label: r for r in report.labels}
    _, _, height, width = masks.shape
    known = extra.get("true_triggers")
    rows = sorted(report.labels, key=lambda r: r.label)
    context = {
        "infected": report.infected,
        "anomaly_index": report.anomaly_index,
        "threshold": anomaly_threshold(report),
        "flagged": flagged,
        "height": height,
        "width": width,
        "num_images": report.num_images,
        "files": files,
        "summary": _summary_rows(report, extra, height, width),
        "known": _dict_table(known)
        if isinstance(known, list) and known and all(isinstance(t, Mapping) for t in known)
        else None,
        "plot_uri": png_data_uri(plot),
        "flagged_labels": [_flagged_label(by_label[label], label_images[label], height * width) for label in flagged],
        "gallery": [
            {
                "uri": png_data_uri(png_bytes(masks[i] * patterns[i], min_size=THUMB_PX, max_size=MAX_THUMB_PX)),
                "caption": f"label {r.label}{' (flagged)' if r.label in flagged else ''}\nL1 {r.mask_l1:.1f}",
                "alt": f"reversed trigger of label {r.label}",
                "flagged": r.label in flagged,
            }
            for i, r in enumerate(report.labels)
        ],
        "label_rows": [
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
        "highlight": [i for i, r in enumerate(rows) if r.label in flagged],
        "details": _details(report, extra),
    }
    model_name = extra.get("model")
    title = "Neural Cleanse scan report" + (f" — {model_name}" if model_name else "")
    return _render("scan.html.j2", title, **context)


def mitigation_page(figures: Mapping[str, Any]) -> str:
    """The mitigation page, from the figures recorded in ``mitigation.json`` (``method``, ``label``, ``model``,
    ``scan``, the before/after rates, and for the filter its error rates)."""
    details = [[k, str(v)] for k, v in figures.items() if not isinstance(v, list | dict)]
    title = f"Neural Cleanse mitigation: {figures['method']} (label {figures['label']})"
    return _render("mitigation.html.j2", title, figures=figures, details=details)


def _flagged_label(row: LabelResult, images: Mapping[str, tuple[str, bytes]], pixels: int) -> dict[str, Any]:
    """A flagged label's figures and its mask, pattern and trigger pictures (with their file names)."""
    return {
        "label": row.label,
        "mask_l1": row.mask_l1,
        "area": row.mask_l1 / pixels,
        "attack_success": row.attack_success,
        "anomaly_index": row.anomaly_index,
        "figures": [
            {"uri": png_data_uri(images[kind][1]), "caption": caption, "alt": f"label {row.label} {caption}"}
            for kind, caption in _CAPTIONS
        ],
        "files": [images[kind][0] for kind, _ in _CAPTIONS],
    }


def _summary_rows(report: ScanReport, extra: Mapping[str, Any], height: int, width: int) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, name in (("model", "model"), ("data", "data"), ("format", "model format")):
        if extra.get(key) is not None:
            rows.append((name, extra[key]))
    rows.append(("verdict", "infected" if report.infected else "clean"))
    rows.append(("flagged labels", ", ".join(map(str, report.flagged)) or "none"))
    rows.append(("anomaly index", f"{report.anomaly_index:.3f} (threshold {anomaly_threshold(report):g})"))
    rows.append(("median mask L1 / MAD", f"{report.median_l1:.3f} / {report.mad_l1:.3f}"))
    images = f"{report.num_images}"
    if extra.get("samples_per_label") is not None:
        images += f" ({extra['samples_per_label']} per label)"
    rows.append(("clean images used", images))
    if report.clean_accuracy is not None:
        rows.append(("clean accuracy", f"{report.clean_accuracy:.2%}"))
    rows.append(("labels examined", f"{len(report.labels)} ({height}×{width} images)"))
    rows.append(("mode", report.mode))
    rows.append(("seed", "none" if report.seed is None else report.seed))
    rows.append(("scan time", _duration(report.seconds)))
    rows.append(("model outputs", "probabilities" if report.outputs_probabilities else "logits"))
    return rows


def _details(report: ScanReport, extra: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The versions, the context not shown in the summary and the search's settings."""
    details: list[tuple[str, Any]] = [("versions", ", ".join(f"{k} {v}" for k, v in report.versions.items()))]
    details += [
        (k, v if isinstance(v, str | int | float | bool) or v is None else json.dumps(v))
        for k, v in extra.items()
        if k not in _SHOWN_EXTRA
    ]
    details.append(("reverse-engineering settings", json.dumps(report.config.get("reverse", {}))))
    return details


def _dict_table(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Dicts as a table: one column per key (in first-seen order), numbers aligned right."""
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
    return {
        "headers": [_NICE_KEYS.get(k, k.replace("_", " ")) for k in keys],
        "rows": [[fmt(e.get(k)) for k in keys] for e in entries],
        "numeric": numeric,
    }


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
