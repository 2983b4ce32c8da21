"""The ``mitigate`` job: repair a model with the reversed trigger of a scan, and write the mitigation folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..mitigate import Mitigation
from ..probe import check_compatible
from ..progress import ProgressCallback
from ..splits import mitigation_split
from ..store.mitigation_dir import MITIGATION_FILE, write_mitigation
from ..store.out_dir import check_out_dir
from ..store.scan_dir import read_scan
from ..triggers import Trigger
from .evaluate import known_triggers

__all__ = ["METHODS", "flagged_triggers", "mitigate_model"]

METHODS = ("filter", "prune", "unlearn")  # paper, Section VI: input filter, neuron pruning, unlearning


def mitigate_model(
    loaded: Any,
    model_name: str,
    report_dir: Path,
    data: str,
    method: str,
    out: Path,
    trigger_specs: list[str] | None = None,
    targets: list[int] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    fpr: float = 0.05,
) -> dict[str, Any]:
    """Repair a model with the reversed triggers of a scan's flagged labels, the most anomalous first: every
    method works from all of them at once (a backdoor with several targets; the figures' ``"labels"`` say which
    labels were repaired, ``"flagged"`` which the scan flagged).

    The clean data come from :func:`~neuralcleanse.splits.mitigation_split`. Writes ``mitigation.json``, a
    ``mitigation.html`` page, and the patched model (``prune``/``unlearn``: same format as ``train`` for models it
    made, TorchScript otherwise) or the filter (``filter.json``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be filter, prune or unlearn, got {method!r}")
    check_out_dir(out, MITIGATION_FILE, overwrite)
    flagged = flagged_triggers(report_dir)
    label, trigger = flagged[0]
    others = flagged[1:]
    work, heldout = mitigation_split(data, seed)
    check_compatible(loaded, heldout)
    if trigger.image_shape != heldout.image_shape:
        raise ValueError(f"the scan's triggers are {trigger.image_shape} but {heldout.name} has {heldout.image_shape}")
    known = known_triggers(loaded, trigger_specs or [], targets or [], heldout.image_shape)
    mitigation = Mitigation(
        loaded.model,
        trigger,
        label,
        work.images,
        work.labels,
        heldout.images,
        heldout.labels,
        known[0] if known else None,
        tuple((t, lab) for lab, t in others),
    )
    if method == "filter":
        result: Any = mitigation.filter(fpr=fpr, progress=progress)
    elif method == "prune":
        result = mitigation.prune(progress=progress)
    else:
        probabilities = getattr(loaded, "outputs_probabilities", None)
        generator = torch.Generator().manual_seed(seed)
        result = mitigation.unlearn(progress=progress, outputs_probabilities=probabilities, generator=generator)
    figures = {
        **result.to_dict(),
        "method": method,
        "label": label,
        "labels": [label, *(lab for lab, _ in others)],
        "flagged": [lab for lab, _ in flagged],
        "model": model_name,
        "scan": str(report_dir),
        "data": str(data),
        "seed": seed,
    }
    figures.pop("model_state", None)
    # A patched model made from a model folder is saved in that format, any other as TorchScript.
    from_model_folder = getattr(loaded, "format", None) == "neuralcleanse"
    return write_mitigation(
        out,
        figures,
        filter=result.filter if method == "filter" else None,
        patched=None if method == "filter" else result.model,
        model_metadata=loaded.metadata if from_model_folder else None,
        triggers=list(getattr(loaded, "triggers", None) or []),
        example=heldout.images[:2],
        trigger=trigger,
        others=others,
    )


def flagged_triggers(report_dir: Path) -> list[tuple[int, Trigger]]:
    """The scan's flagged labels, the most anomalous first, with their reversed triggers."""
    report, reversed_triggers, _ = read_scan(report_dir)
    if not report.get("flagged"):
        raise ValueError(f"{report_dir}: the scan flagged no label, so there is no reversed backdoor to remove")
    out = []
    for label in map(int, report["flagged"]):
        mask, pattern = reversed_triggers[label]  # the blend trigger of a label the blend search flagged
        spec = f"reversed {'blend ' if label in report.get('blend_flagged', []) else ''}trigger of label {label}"
        out.append((label, Trigger(torch.from_numpy(mask), torch.from_numpy(pattern), spec=spec)))
    return out
