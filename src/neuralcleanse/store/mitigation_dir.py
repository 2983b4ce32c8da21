"""The mitigation folder: what ``neuralcleanse mitigate`` made from a model and a scan.

Files:

- ``filter.json`` (method ``filter``): the input filter, :meth:`InputFilter.to_dict()
  <neuralcleanse.mitigate.InputFilter.to_dict>`;
- the repaired model (methods ``prune`` and ``unlearn``): in the model-folder format
  (:mod:`~neuralcleanse.store.model_dir`: ``model.safetensors``, ``model.json`` and, when the original model
  had known triggers, the model folder's ``triggers.npz``) for a model that folder format can hold, else
  ``model.torchscript.pt``, a traced TorchScript module;
- ``mitigation.html``: a page with the figures;
- ``mitigation.json``: the figures (accuracy and attack success before and after, the method, the scan's
  label...) and the name of what was written. Written last: a folder holding ``mitigation.json`` is complete.

The folder has no ``triggers.npz`` of its own: the only one is the repaired model's, in the model folder's layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._torch import model_device
from ..atomic import atomic_write, atomic_write_json, atomic_write_text
from ..mitigate.filter import InputFilter
from ..render.pages import mitigation_page
from ..triggers import Trigger
from .model_dir import save_model

__all__ = ["FILTER_FILE", "MITIGATION_FILE", "MITIGATION_HTML", "PATCHED_TORCHSCRIPT", "write_mitigation"]

MITIGATION_FILE = "mitigation.json"
MITIGATION_HTML = "mitigation.html"
FILTER_FILE = "filter.json"
PATCHED_TORCHSCRIPT = "model.torchscript.pt"


def write_mitigation(
    out: str | Path,
    figures: Mapping[str, Any],
    *,
    filter: InputFilter | None = None,
    patched: nn.Module | None = None,
    model_metadata: Mapping[str, Any] | None = None,
    triggers: Sequence[tuple[Trigger, int]] = (),
    example: torch.Tensor | None = None,
    trigger: Trigger | None = None,
    others: Sequence[tuple[int, Trigger]] = (),
) -> dict[str, Any]:
    """Write a mitigation's result into ``out`` and return the figures as written to ``mitigation.json``.

    Give either the input ``filter`` or the ``patched`` model. The patched model is saved in the model-folder
    format when ``model_metadata`` is given (the metadata of the model folder it was repaired from, with its
    ``triggers``), else traced on ``example`` and saved as TorchScript.

    Args:
        out: the folder; created when missing.
        figures: the mitigation's figures; ``clean_accuracy_after`` becomes the repaired model's
            ``clean_accuracy`` in the model-folder format.
        filter: the fitted input filter, written to ``filter.json``.
        patched: the repaired model.
        model_metadata: see above; recorded with the figures (lists left out) under ``"mitigation"``.
        triggers: the ``(trigger, target)`` pairs known for the model, saved with it in the model-folder format.
        example: a few input images (N, C, H, W) to trace the patched model on; moved to its device.
        trigger: the reversed trigger the mitigation used, drawn on the page.
        others: ``(label, trigger)`` of the other labels' reversed triggers it used (a repair of several
            labels), drawn after it.

    Returns:
        ``figures`` with ``filter_file``, ``model_dir`` or ``model_file`` added: what holds the result.
    """
    if filter is not None and patched is not None:
        raise ValueError("write_mitigation takes either filter or patched, not both")
    out = Path(out)
    written = dict(figures)
    if filter is not None:
        atomic_write_json(out / FILTER_FILE, filter.to_dict())
        written["filter_file"] = FILTER_FILE
    elif patched is None:
        raise ValueError("write_mitigation takes either filter or patched, got neither")
    elif model_metadata is not None:
        metadata = {
            **model_metadata,
            "mitigation": {k: v for k, v in written.items() if not isinstance(v, list)},
            "clean_accuracy": written["clean_accuracy_after"],
        }
        save_model(out, patched, metadata, triggers)
        written["model_dir"] = str(out)
    elif example is None:
        raise ValueError("example images are needed to save a patched model as TorchScript")
    else:
        traced = torch.jit.trace(patched.eval(), example.to(model_device(patched)))
        atomic_write(out / PATCHED_TORCHSCRIPT, lambda tmp: traced.save(str(tmp)))
        written["model_file"] = PATCHED_TORCHSCRIPT
    drawn = None if trigger is None else _arrays(trigger)
    others_drawn = [(lab, _arrays(t)) for lab, t in others]
    page = mitigation_page(written, trigger=drawn, other_triggers=others_drawn, location=out)
    atomic_write_text(out / MITIGATION_HTML, page)
    atomic_write_json(out / MITIGATION_FILE, written)  # last: a directory with mitigation.json is complete
    return written


def _arrays(trigger: Trigger) -> tuple[np.ndarray, np.ndarray]:
    """A trigger's mask and pattern as arrays, as the page draws them."""
    return trigger.mask.cpu().numpy(), trigger.pattern.cpu().numpy()
