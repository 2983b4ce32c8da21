"""The zoo summary page (``zoo.html``), from ``templates/zoo.html.j2``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .pages import _render

__all__ = ["zoo_page"]

_HEADERS = (
    ("verdict", False),
    ("model", False),
    ("flagged labels", False),
    ("anomaly index", True),
    ("seconds", True),
    ("truth", False),
    ("correct", False),
    ("error or warning", False),
)


def zoo_page(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], details: Sequence[tuple[str, str]]) -> str:
    """The page: ``summary`` (from :func:`~neuralcleanse.zoo.summary.zoo_summary`) on top, one sortable row per
    model of ``rows`` (zoo.json's), verdict first, linking to each model's report."""
    with_truth = any("truth_infected" in r for r in rows)
    headers = [{"title": t, "numeric": n} for t, n in _HEADERS if with_truth or t not in ("truth", "correct")]
    table = []
    for r in rows:
        done = r["status"] == "done"
        verdict = ("INFECTED" if r["infected"] else "clean") if done else r["status"]
        index = r.get("anomaly_index")
        cells = [
            {"text": verdict, "key": {"INFECTED": "0", "clean": "1"}.get(verdict, "2") + verdict, "href": None},
            {"text": r["model"], "key": r["model"], "href": r.get("report") if done else None},
            {"text": ", ".join(map(str, r["flagged"])) or "—", "key": ",".join(map(str, r["flagged"])), "href": None},
            {
                "text": "—" if index is None else f"{index:.2f}",
                "key": "" if index is None else f"{index}",
                "href": None,
            },
            {"text": f"{r['seconds']:.1f}", "key": f"{r['seconds']}", "href": None},
        ]
        if with_truth:
            truth = r.get("truth_infected")
            targets = ", ".join(map(str, r.get("truth_targets") or []))
            text = "—" if truth is None else ("infected" if truth else "clean") + (f" ({targets})" if targets else "")
            correct = r.get("correct")
            cells.append({"text": text, "key": text, "href": None})
            mark = "—" if correct is None else ("yes" if correct else "NO")
            cells.append({"text": mark, "key": mark, "href": None})
        note = r.get("error") or "; ".join(r.get("warnings") or [])
        cells.append({"text": note, "key": note, "href": None})
        css = "err" if not done else ("bad" if r["infected"] else "")
        table.append({"cells": cells, "css": css})
    return _render(
        "zoo.html.j2", "Neural Cleanse zoo scan", headers=headers, rows=table, summary=summary, details=list(details)
    )
