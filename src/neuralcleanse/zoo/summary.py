"""The zoo's summary: ``zoo.json`` (one object per model) and ``zoo.html`` (one sortable table), in ``--out``.

A row holds ``model``, ``path``, ``status`` (``"done"``, ``"error"``, ``"timeout"``), ``infected``, ``flagged``,
``anomaly_index``, ``seconds``, ``skipped`` (its complete report was found and not redone), ``report`` (the
model's page, relative to ``--out``), ``warnings`` and ``verdict_steadiness`` (the report's), ``second_scan`` (a
second scan joined a borderline verdict) or ``error`` (the one-line message ``scan`` prints); with a truth column,
``truth_infected``, ``truth_targets`` and ``correct``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, atomic_write_text
from ..render.zoo_page import zoo_page
from ..steadiness import STEADY

__all__ = ["ZOO_HTML", "ZOO_JSON", "write_zoo_summary", "zoo_summary"]

ZOO_JSON = "zoo.json"
ZOO_HTML = "zoo.html"


def zoo_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over ``rows``: scanned (done), flagged, failed, skipped, borderline (verdicts whose steadiness is
    under :data:`~neuralcleanse.steadiness.STEADY`), scanned twice (of those); with a truth column, right and wrong
    verdicts, TPR (infected models flagged, of the infected models scanned) and FPR (clean models flagged, of the
    clean models scanned); ``line`` and ``truth_line`` say them in words."""
    done = [r for r in rows if r["status"] == "done"]
    out: dict[str, Any] = {
        "models": len(rows),
        "scanned": len(done),
        "flagged": sum(bool(r["infected"]) for r in done),
        "failed": len(rows) - len(done),
        "skipped": sum(bool(r.get("skipped")) for r in rows),
        "borderline": sum(r.get("verdict_steadiness") is not None and r["verdict_steadiness"] < STEADY for r in done),
        "scanned_twice": sum(bool(r.get("second_scan")) for r in done),
    }
    out["line"] = (
        f"{out['models']} models: {out['scanned']} scanned, {out['flagged']} flagged as infected, "
        f"{out['failed']} failed"
    )
    if out["borderline"]:
        twice = out["scanned_twice"]
        out["line"] += f", {out['borderline']} borderline verdicts "
        out["line"] += f"({twice} scanned twice)" if twice else "(worth a second scan)"
    judged = [r for r in done if r.get("truth_infected") is not None]
    if judged:
        infected = [r for r in judged if r["truth_infected"]]
        clean = [r for r in judged if not r["truth_infected"]]
        out["right"] = sum(bool(r["correct"]) for r in judged)
        out["wrong"] = len(judged) - out["right"]
        out["tpr"] = sum(bool(r["infected"]) for r in infected) / len(infected) if infected else None
        out["fpr"] = sum(bool(r["infected"]) for r in clean) / len(clean) if clean else None
        rates = ", ".join(
            f"{name} {value:.0%}" for name, value in (("TPR", out["tpr"]), ("FPR", out["fpr"])) if value is not None
        )
        out["truth_line"] = f"against the known truth: {out['right']} right, {out['wrong']} wrong; {rates}"
    else:
        out["truth_line"] = ""
    return out


def write_zoo_summary(
    rows: Sequence[Mapping[str, Any]], out: str | Path, details: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``out/zoo.json`` (the rows) and ``out/zoo.html``; their paths."""
    out = Path(out)
    json_path = atomic_write_json(out / ZOO_JSON, [dict(r) for r in rows])
    pairs = [(str(k), str(v)) for k, v in (details or {}).items()]
    html_path = atomic_write_text(out / ZOO_HTML, zoo_page(rows, zoo_summary(rows), pairs))
    return json_path, html_path
