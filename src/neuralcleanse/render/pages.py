"""HTML pages, rendered from the jinja2 templates in ``templates/`` with autoescape on.

Every value put into a page is escaped unless it is :class:`markupsafe.Markup`. Pages are self-contained: the
style sheet (``static/report.css``) is inlined, images are ``data:`` URIs, nothing is fetched and nothing runs.
Python prepares the values (numbers formatted, rows ordered); the templates hold the markup and the text.
"""

from __future__ import annotations

import functools
import json
import shlex
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from ..blends import BLEND_RATIO
from ..decision import BLOCK_REACH, COMPANION_GAP, COMPANION_RATIO, FAVOUR_RATIO, STEP_DOWN_RATIO, TINY_SHARE
from ..preprocess import Preprocessing, as_options
from ..scan import LabelResult, ScanReport
from ..stimulation import STIMULATION_RATIO
from .pictures import anomaly_threshold, before_after_png, png_bytes, png_data_uri

__all__ = ["mitigation_page", "render_page", "scan_page"]

THUMB_PX = 72  # ours: the shorter side of a gallery thumbnail (upscaled from small images)
MAX_THUMB_PX = 96  # ours: larger images are downscaled to this in the gallery, to bound the page's size
TRIGGER_PX = 160  # ours: the shorter side of the mitigation page's trigger pictures, as the scan folder's PNGs
#: ours: the attack success at or below which the page calls the backdoor removed (or blocked, for the filter):
#: at most one triggered input in twenty still reaches the target. Pruning stops at a stricter bar on the
#: reversed trigger (mitigate.prune.MAX_ATTACK_SUCCESS), which is often weaker than the real one.
REMOVED_ATTACK_SUCCESS = 0.05

_PACKAGE = "neuralcleanse.render"
# Context keys of the scan page shown in its summary rather than among the details.
_SHOWN_EXTRA = {"model", "data", "format", "preprocessing", "samples_per_label", "true_triggers"}
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
    location: str | Path | None = None,
) -> str:
    """The scan report page.

    Args:
        report: the scan's result.
        extra: the context recorded with the report (model, data, known triggers...); may be empty.
        masks: (K, 1, H, W) and ``patterns`` (K, C, H, W): every label's reversed trigger, in report order.
        plot: the norms chart as PNG bytes.
        label_images: for each flagged label, ``{"mask" | "pattern" | "trigger": (file name, PNG bytes)}``.
        files: the names of the folder's ``"report"``, ``"triggers"`` and ``"plot"`` files, as the page cites them.
        location: the scan folder, for the ``mitigate`` command the page suggests (``SCAN_DIR`` when not given).
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
        "decision": report.decision,
        "favour_ratio": FAVOUR_RATIO,
        "companion_ratio": COMPANION_RATIO,
        "companion_gap": COMPANION_GAP,
        "block_reach": BLOCK_REACH,
        "step_down_ratio": STEP_DOWN_RATIO,
        "tiny_share": TINY_SHARE,
        "blend_searched": any(r.blend_l1 is not None for r in report.labels),
        "blend_flagged": [int(label) for label in report.blend_flagged],
        "blend_only": [int(label) for label in report.blend_flagged if report.by_blend(label)],
        "blend_cleared": [int(label) for label in report.blend_cleared],
        "blend_ratio": BLEND_RATIO,
        "stimulation_layer": report.stimulation_layer,
        "stimulation_ratio": STIMULATION_RATIO,
        "second_scan": report.second_scan,
        "profile": report.profile,
        "naturally_small": sorted(
            (r.natural_ratio, r.label) for r in report.labels if r.natural_ratio is not None and r.natural_ratio < 1
        ),
        "paper_flagged": [int(label) for label in report.paper_flagged],
        "pairs": report.pairs,
        "height": height,
        "width": width,
        "num_images": report.num_images,
        "files": files,
        "summary": _summary_rows(report, extra, height, width),
        "known": _dict_table(known)
        if isinstance(known, list) and known and all(isinstance(t, Mapping) for t in known)
        else None,
        "plot_uri": png_data_uri(plot),
        "flagged_labels": [
            _flagged_label(by_label[label], label_images[label], height * width, report) for label in flagged
        ],
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
                "—" if r.blend_l1 is None else f"{r.blend_l1:.2f}",
                "—" if r.stimulation is None else f"{r.stimulation:.2f}",
                f"{r.score:.2f}",
                "—" if r.clean_gap is None else f"{r.clean_gap:.2f}",
                "—" if r.compactness is None else f"{r.compactness:.2f}",
                f"{r.attack_success:.1%}",
                f"{r.anomaly_index:.2f}",
                "yes" if r.found else "no",
                _flag_note(r, report, anomaly_threshold(report)),
            ]
            for r in rows
        ],
        "highlight": [i for i, r in enumerate(rows) if r.label in flagged],
        "details": _details(report, extra),
        "warnings": list(report.warnings),
        "steadiness": report.steadiness,
        "next_step": _next_step(report, extra, location),
    }
    model_name = extra.get("model")
    title = "Neural Cleanse scan report" + (f" — {Path(str(model_name)).name}" if model_name else "")
    return _render("scan.html.j2", title, **context)


def _flag_note(row: LabelResult, report: ScanReport, threshold: float) -> str:
    """The "flagged" cell: FLAGGED (by the blend search when the mask search did not), or why a label the mask
    search flagged or whose index passes the threshold is not flagged."""
    if row.label in report.flagged:
        by_stimulation = row.label in report.stimulation_flagged and row.label not in report.mask_flagged
        return "FLAGGED" + (" (blend)" if report.by_blend(row.label) else " (stimulation)" if by_stimulation else "")
    if row.label in report.blend_cleared:
        return "no: beside a blend target"
    if row.anomaly_index > threshold and row.mask_l1 >= report.median_l1:
        return "no: norm above the median"
    return ""


def _next_step(report: ScanReport, extra: Mapping[str, Any], location: str | Path | None) -> dict[str, Any]:
    """What to do after this scan: the ``mitigate`` command for the most anomalous flagged label, or why
    there is nothing to repair."""
    if not report.flagged:
        return {"command": None, "label": None}
    scan_dir = str(location) if location is not None else "SCAN_DIR"
    model, data = str(extra.get("model") or "MODEL"), str(extra.get("data") or "DATA")
    patched = scan_dir.rstrip("/") + "-patched" if location is not None else "OUT"
    words = ["neuralcleanse", "mitigate", model, "--report", scan_dir, "--data", data, "--method", "unlearn"]
    words += _applied_options(extra) or []  # as the scan fed the model
    return {"command": shlex.join([*words, "--out", patched]), "label": int(report.flagged[0])}


def mitigation_page(
    figures: Mapping[str, Any],
    *,
    trigger: tuple[np.ndarray, np.ndarray] | None = None,
    other_triggers: Sequence[tuple[int, tuple[np.ndarray, np.ndarray]]] = (),
    location: str | Path | None = None,
) -> str:
    """The mitigation page, from the figures recorded in ``mitigation.json`` (``method``, ``label``, ``model``,
    ``scan``, the before/after rates, for the filter its error rates, and what holds the result:
    ``filter_file``, ``model_dir`` or ``model_file``).

    Args:
        figures: as written to ``mitigation.json``.
        trigger: the reversed trigger used, ``(mask (1, H, W), pattern (C, H, W))``, drawn on the page.
        other_triggers: ``(label, (mask, pattern))`` of the other labels' reversed triggers used (a repair of
            several labels), drawn after it.
        location: the mitigation folder, for the exact path and the load example (``figures["model_dir"]``
            or the current folder when not given).
    """
    where = Path(location if location is not None else figures.get("model_dir") or ".").resolve()
    method, label = figures["method"], figures["label"]
    true_known = figures.get("attack_success_after") is not None
    success_key = "attack_success" if true_known else "reversed_attack_success"
    success_before, success_after = figures.get(f"{success_key}_before"), figures.get(f"{success_key}_after")
    acc_before, acc_after = figures.get("clean_accuracy_before"), figures.get("clean_accuracy_after")
    chart_rows = [
        (name, float(figures[f"{key}_before"]), float(figures[f"{key}_after"]))
        for key, name in (
            ("clean_accuracy", "clean accuracy"),
            ("reversed_attack_success", "reversed trigger's\nattack success"),
            ("attack_success", "true trigger's\nattack success"),
        )
        if figures.get(f"{key}_before") is not None and figures.get(f"{key}_after") is not None
    ]
    others = figures.get("others_reversed_attack_success") or {}
    repaired = figures.get("labels") or [label]
    # The verdict holds for every label repaired: the worst attack success left among them.
    worst = None if success_after is None else max([success_after, *(a for _, a in others.values())])
    context = {
        "method": method,
        "label": label,
        "other_rows": [
            [f"label {other}'s reversed trigger's attack success", _percent(b, 2), _percent(a, 2)]
            for other, (b, a) in others.items()
        ],
        "filter_other_rows": [
            [f"false-negative rate, label {other}'s reversed trigger", _percent(rate, 2)]
            for other, rate in (figures.get("others_reversed_false_negative_rate") or {}).items()
        ],
        "unrepaired": [other for other in figures.get("flagged", []) if other not in repaired],
        "verdict": {
            "removed": worst is not None and worst <= REMOVED_ATTACK_SUCCESS,
            "word": _verdict_word(method, worst),
            "trigger": "the true trigger" if true_known else f"the reversed trigger of label {label}",
            "success_before": _percent(success_before, 1),
            "success_after": _percent(success_after, 1),
            "accuracy_before": _percent(acc_before, 2),
            "accuracy_after": _percent(acc_after, 2),
            "accuracy_change": "—"
            if acc_before is None or acc_after is None
            else f"{100 * (acc_after - acc_before):+.2f} points",
        },
        "removed_below": REMOVED_ATTACK_SUCCESS,
        "chart_uri": png_data_uri(before_after_png(chart_rows)) if chart_rows else None,
        "figures": figures,
        "triggers": [
            {"label": lab, "l1": float(used[0].sum()), "figures": _trigger_figures(used, lab)}
            for lab, used in ([(label, trigger)] if trigger is not None else []) + list(other_triggers)
        ],
        "usage": _usage(figures, where),
        "settings": _mitigation_settings(figures),
    }
    model_name = Path(str(figures.get("model") or "model")).name
    title = f"Neural Cleanse mitigation — {model_name}: {method}, label {label}"
    return _render("mitigation.html.j2", title, **context)


def _verdict_word(method: str, success_after: float | None) -> str:
    if success_after is None:
        return "NOT MEASURED"
    removed = success_after <= REMOVED_ATTACK_SUCCESS
    if method == "filter":
        return "BACKDOOR BLOCKED" if removed else "BACKDOOR NOT BLOCKED"
    return "BACKDOOR REMOVED" if removed else "BACKDOOR NOT REMOVED"


def _trigger_figures(trigger: tuple[np.ndarray, np.ndarray], label: int) -> list[dict[str, str]]:
    mask, pattern = trigger
    images = {"mask": mask, "pattern": pattern, "trigger": mask * pattern}
    return [
        {
            "uri": png_data_uri(png_bytes(images[kind], min_size=TRIGGER_PX)),
            "caption": caption,
            "alt": f"label {label} reversed {caption}",
        }
        for kind, caption in _CAPTIONS
    ]


def _usage(figures: Mapping[str, Any], where: Path) -> dict[str, str]:
    """Where the result is and one line of Python that loads it."""
    if figures.get("filter_file"):
        path = str(where / figures["filter_file"])
        return {
            "kind": "input filter",
            "path": path,
            "code": "from neuralcleanse.mitigate import InputFilter; "
            f"rejected = InputFilter.load({path!r}).reject(model, images)",
            "note": "The filter works beside the original model: it rejects inputs whose activations look "
            "triggered; the model itself is unchanged.",
        }
    path = str(where / figures["model_file"]) if figures.get("model_file") else str(where)
    return {
        "kind": "patched model",
        "path": path,
        "code": f"from neuralcleanse import load_model; model = load_model({path!r}).model  # (N, C, H, W) in [0, 1]",
        "note": "Scan it again to check: neuralcleanse scan " + shlex.quote(path) + " --data DATA --out DIR",
    }


#: The mitigation figures shown on the page as settings, in this order, with their names.
_SETTINGS = (
    ("method", "method"),
    ("label", "label whose reversed trigger was used"),
    ("model", "model"),
    ("scan", "scan"),
    ("data", "data"),
    ("seed", "seed"),
    ("layer", "layer"),
    ("fpr_target", "false-positive rate aimed at"),
    ("threshold", "filter threshold"),
    ("num_calibration", "calibration images"),
    ("pruned", "neurons pruned"),
    ("pruned_fraction", "share of the layer pruned"),
    ("stop_reason", "pruning stopped because"),
    ("lr", "fine-tuning learning rate"),
    ("num_images", "fine-tuning images"),
    ("num_triggered", "of which stamped with the trigger"),
    ("final_loss", "final training loss"),
    ("num_heldout", "held-out images measured on"),
    ("seconds", "time"),
)
_NOT_SETTINGS = {"filter_file", "model_dir", "model_file", "true_target", "versions"}


def _mitigation_settings(figures: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The settings and the remaining scalar figures, formatted: names in words, floats rounded."""
    rows = [(name, _format_value(key, figures[key])) for key, name in _SETTINGS if figures.get(key) is not None]
    config = figures.get("config")
    if isinstance(config, Mapping):
        rows += [(f"fine-tuning {k.replace('_', ' ')}", _format_value(k, v)) for k, v in config.items()]
    shown = {key for key, _ in _SETTINGS} | _NOT_SETTINGS | {"config"}
    rows += [
        (k.replace("_", " "), _format_value(k, v))
        for k, v in figures.items()
        if k not in shown and not k.endswith(("_before", "_after")) and not isinstance(v, list | dict)
    ]
    versions = figures.get("versions")
    if isinstance(versions, Mapping):
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    return rows


def _format_value(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "seconds" and isinstance(value, int | float):
        return _duration(float(value))
    if isinstance(value, float):
        if (key == "fraction" or key.endswith(("_rate", "_fraction", "_target"))) and 0 <= value <= 1:
            return _percent(value, 2)
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def _flagged_label(
    row: LabelResult, images: Mapping[str, tuple[str, bytes]], pixels: int, report: ScanReport
) -> dict[str, Any]:
    """A flagged label's figures and its mask, pattern and trigger pictures (with their file names): those of its
    blend trigger when the blend search flagged it (:meth:`ScanReport.trigger`)."""
    blend = row.label in report.blend_flagged
    return {
        "label": row.label,
        "heading": f"Reversed {'blend ' if blend else ''}trigger of flagged label {row.label}",
        "blend": blend,
        "blend_only": report.by_blend(row.label),
        "blend_l1": row.blend_l1,
        "opacity": None if row.blend_l1 is None else row.blend_l1 / pixels,
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


def _applied_options(extra: Mapping[str, Any]) -> list[str] | None:
    """The command-line options that feed the model as the scan did (``extra["preprocessing"]``); None when the
    report does not say."""
    recorded = extra.get("preprocessing")
    return None if not recorded else as_options(Preprocessing.from_dict(recorded))


def _summary_rows(report: ScanReport, extra: Mapping[str, Any], height: int, width: int) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, name in (("model", "model"), ("data", "data"), ("format", "model format")):
        if extra.get(key) is not None:
            rows.append((name, extra[key]))
    options = _applied_options(extra)
    if options is not None:
        rows.append(("preprocessing", " ".join(options) or "none: [0, 1] RGB images as they are"))
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
    rows.append(("precision of the search", str(report.config.get("compute_dtype", "float32"))))
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
