"""Input filter (paper, Section VI-A): reject inputs that excite the neurons the reversed trigger excites.

The reversed trigger raises a few neurons of the second-to-last layer far above their level on clean images;
inputs carrying the real trigger raise the same neurons. :meth:`Mitigation.filter` ranks the layer's neurons by
how much the reversed trigger raises their mean activation on clean images, keeps the top ones (1% by default,
as the paper), scores an input by the mean activation of those neurons, and sets the threshold so that a
chosen share of clean inputs (5% by default, as the paper) is rejected. The result, an :class:`InputFilter`,
is a small JSON-serialisable object; :class:`FilteredModel` wraps a model with it so that one call gives the
prediction and the verdict.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._torch import eval_mode, model_device
from ..atomic import atomic_write_json
from ..progress import ProgressCallback, report
from ..triggers import Trigger
from ..versions import versions
from ._common import Figures, MitigationResult, check_fraction
from .layers import Layer, forward_with_activations, record_activations, resolve_layer

if TYPE_CHECKING:
    from .mitigation import Mitigation

__all__ = [
    "FALSE_POSITIVE_RATE",
    "TOP_FRACTION",
    "FilterResult",
    "FilteredModel",
    "InputFilter",
    "build_filter",
]

logger = logging.getLogger(__name__)

TOP_FRACTION = 0.01  # paper, Section VI-A: the top 1% of neurons the reversed trigger activates most
FALSE_POSITIVE_RATE = 0.05  # paper, Section VI-A: thresholds set for a 5% false-positive rate
FILE_FORMAT = "neuralcleanse-input-filter"
FILE_VERSION = 1
_BATCH = 512  # images per forward pass, as in metrics.py


@dataclass(frozen=True)
class InputFilter:
    """A calibrated input filter: reject an input whose score (mean activation of ``neurons`` in ``layer``) is
    above ``threshold``.

    Attributes:
        layer: the layer name (see :mod:`neuralcleanse.mitigate.layers`), e.g. ``"features"``.
        neurons: indices of the neurons the reversed trigger raises most, most first.
        threshold: scores above it are rejected.
        fpr: the false-positive rate the threshold was calibrated to, on the calibration images.
        label: the label whose reversed trigger the filter was built from (for reports).
        num_neurons: the layer's width, to refuse a model whose layer differs (None: not checked).

    Shape:
        ``scores``/``reject`` take (N, C, H, W) images in [0, 1] and return (N,) on the CPU.

    Example:
        >>> result = Mitigation(model, trigger, 7, images, labels, test_images, test_labels).filter()  # doctest: +SKIP
        >>> rejected = result.filter.reject(model, batch)  # doctest: +SKIP
        >>> predictions, rejected = result.filter.wrap(model)(batch)  # doctest: +SKIP
    """

    layer: str
    neurons: tuple[int, ...]
    threshold: float
    fpr: float = FALSE_POSITIVE_RATE
    label: int | None = None
    num_neurons: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise ValueError(f"layer must be a non-empty name, got {self.layer!r}")
        neurons = tuple(int(n) for n in self.neurons)
        if not neurons or min(neurons) < 0:
            raise ValueError(f"neurons must be a non-empty list of indices >= 0, got {list(self.neurons)}")
        object.__setattr__(self, "neurons", neurons)
        if not math.isfinite(float(self.threshold)):
            raise ValueError(f"threshold must be a finite number, got {self.threshold!r}")
        object.__setattr__(self, "threshold", float(self.threshold))
        check_fraction("fpr", self.fpr, allow_one=False)

    def score_activations(self, activations: torch.Tensor) -> torch.Tensor:
        """Scores (N,) from the layer's per-neuron activations (N, D)."""
        width = activations.shape[1]
        if width <= max(self.neurons) or self.num_neurons not in (None, width):
            expected = self.num_neurons if self.num_neurons is not None else f"more than {max(self.neurons)}"
            raise ValueError(
                f"layer {self.layer!r} has {width} neurons, the filter expects {expected}: it was "
                "built for another model"
            )
        return activations[:, list(self.neurons)].mean(dim=1)

    def scores(self, model: nn.Module, images: torch.Tensor, batch_size: int = _BATCH) -> torch.Tensor:
        """Scores (N,) of ``images`` (N, C, H, W); the model runs in eval mode, restored afterwards."""
        layer = resolve_layer(model, self.layer)
        return self.score_activations(record_activations(model, layer, images, batch_size=batch_size))

    def reject(self, model: nn.Module, images: torch.Tensor, batch_size: int = _BATCH) -> torch.Tensor:
        """Which of ``images`` to reject: a bool tensor (N,)."""
        return self.scores(model, images, batch_size) > self.threshold

    __call__ = reject

    def wrap(self, model: nn.Module) -> FilteredModel:
        """``model`` and this filter as one module returning ``(predictions, rejected)``."""
        return FilteredModel(model, self)

    # --- persistence --------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "layer": self.layer,
            "neurons": list(self.neurons),
            "threshold": self.threshold,
            "fpr": self.fpr,
            "label": self.label,
            "num_neurons": self.num_neurons,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputFilter:
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise ValueError(f"not a neuralcleanse input filter (expected format {FILE_FORMAT!r})")
        if data.get("version") != FILE_VERSION:
            raise ValueError(f"unsupported input-filter version {data.get('version')!r} (expected {FILE_VERSION})")
        try:
            label, width = data.get("label"), data.get("num_neurons")
            return cls(
                str(data["layer"]),
                tuple(data["neurons"]),
                float(data["threshold"]),
                float(data["fpr"]),
                None if label is None else int(label),
                None if width is None else int(width),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"incomplete input filter ({exc!r})") from None

    def save(self, path: str | Path) -> Path:
        """Write the filter as JSON (atomically), with the versions of the software that made it."""
        return atomic_write_json(path, {**self.to_dict(), "versions": versions()})

    @classmethod
    def load(cls, path: str | Path) -> InputFilter:
        """Read a filter written by :meth:`save`; ``ValueError`` naming the file when it is unusable."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{path}: input filter file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the input filter ({exc})") from None
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


class FilteredModel(nn.Module):
    """A model behind an input filter: one forward pass gives ``(predictions, rejected)``.

    The wrapped model is ``.model`` (not copied); the filter reads its layer with a hook during the pass.

    Shape:
        - Input: (N, C, H, W) in [0, 1], on the model's device.
        - Output: predictions (N,) int64 and rejected (N,) bool, on the input's device.
    """

    def __init__(self, model: nn.Module, input_filter: InputFilter) -> None:
        super().__init__()
        if not isinstance(input_filter, InputFilter):
            raise TypeError(f"input_filter must be an InputFilter, got {type(input_filter).__name__}")
        self.model = model
        self.input_filter = input_filter
        self._layer: Layer = resolve_layer(model, input_filter.layer)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, activations = forward_with_activations(self.model, self._layer, x)
        scores = self.input_filter.score_activations(activations)  # (N,)
        return outputs.argmax(dim=1), scores > self.input_filter.threshold


@dataclass(frozen=True)
class FilterResult(MitigationResult):
    """A fitted filter and what it does on held-out data.

    ``before`` are the model's figures alone; ``after`` those of the model behind the filter, where a rejected
    input counts as neither correct nor a successful attack: clean accuracy after = share of clean inputs
    accepted *and* classified correctly; attack success after = share of triggered inputs (not of the target
    label) accepted *and* sent to the target. ``false_positive_rate`` is the share of held-out clean inputs
    rejected; ``reversed_false_negative_rate`` / ``false_negative_rate`` the share of inputs carrying the
    reversed / true trigger that are *not* rejected (None without a true trigger).
    """

    filter: InputFilter
    false_positive_rate: float
    reversed_false_negative_rate: float
    false_negative_rate: float | None
    num_calibration: int
    scores: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)  # held-out scores, for plots

    def to_dict(self) -> dict[str, Any]:
        f = self.filter
        return self._dict(
            "filter",
            f.label,
            {"layer": f.layer},
            {
                "false_positive_rate": self.false_positive_rate,
                "fpr_target": f.fpr,
                "false_negative_rate": self.false_negative_rate,
                "reversed_false_negative_rate": self.reversed_false_negative_rate,
                "threshold": f.threshold,
                "neurons": list(f.neurons),
                "num_neurons": f.num_neurons,
                "num_calibration": self.num_calibration,
            },
        )


def build_filter(
    mitigation: Mitigation, *, fpr: float, layer: str | None, top_fraction: float, progress: ProgressCallback | None
) -> FilterResult:
    """:meth:`Mitigation.filter`: rank the layer's neurons, calibrate the threshold, measure the filter."""
    start = time.perf_counter()
    check_fraction("top_fraction", top_fraction)
    check_fraction("fpr", fpr, allow_one=False)
    images, victims = mitigation.images, mitigation.victims
    resolved = resolve_layer(mitigation.model, layer)
    total = 4 + (mitigation.true_trigger is not None)
    report(progress, "filter", 0, total)
    clean = record_activations(mitigation.model, resolved, images)  # (N, D)
    stamped = record_activations(mitigation.model, resolved, images[victims], mitigation.trigger)  # (M, D)
    report(progress, "filter", 2, total)
    raised = (stamped - clean[victims]).mean(dim=0)  # (D,) mean rise per neuron
    k = max(1, math.ceil(top_fraction * raised.numel()))
    neurons = torch.argsort(raised, descending=True, stable=True)[:k]
    threshold = _threshold(clean[:, neurons].mean(dim=1), fpr)
    input_filter = InputFilter(
        resolved.spec, tuple(neurons.tolist()), threshold, fpr, mitigation.target, raised.numel()
    )
    logger.info("filter on %s: neurons %s, threshold %.4g", resolved.spec, input_filter.neurons, threshold)
    return _filter_result(mitigation, input_filter, progress, total, start)


def _filter_result(
    mitigation: Mitigation, input_filter: InputFilter, progress: ProgressCallback | None, total: int, start: float
) -> FilterResult:
    """Measure the filter on the held-out images; ``start`` is when the fitting began."""
    filtered = FilteredModel(mitigation.model, input_filter)
    preds, rejected, clean_scores = _run(filtered, mitigation.heldout_images)  # (N,) each
    accepted_correct = (preds == mitigation.heldout_labels.cpu()) & ~rejected
    report(progress, "filter", 3, total)
    reversed_after, reversed_passed, reversed_scores = _triggered(
        filtered, mitigation, mitigation.trigger, mitigation.target
    )
    report(progress, "filter", 4, total)
    scores = {"clean": clean_scores, "reversed": reversed_scores}
    true_after = fnr = None
    if mitigation.true_trigger is not None:
        true_after, fnr, scores["true"] = _triggered(filtered, mitigation, *mitigation.true_trigger)
        report(progress, "filter", 5, total)
    return FilterResult(
        filter=input_filter,
        before=mitigation.before,
        after=Figures(_share(accepted_correct), reversed_after, true_after),
        false_positive_rate=_share(rejected),
        reversed_false_negative_rate=reversed_passed,
        false_negative_rate=fnr,
        true_target=mitigation.true_target,
        num_calibration=int(mitigation.images.shape[0]),
        num_heldout=mitigation.num_heldout,
        seconds=time.perf_counter() - start,
        scores=scores,
    )


def _triggered(
    filtered: FilteredModel, mitigation: Mitigation, trigger: Trigger, target: int
) -> tuple[float, float, torch.Tensor]:
    """On the held-out images not of ``target``, stamped with ``trigger``: the share that passes the filter and
    reaches ``target``, the share that passes, and the scores (M,)."""
    preds, rejected, scores = _run(filtered, mitigation.heldout_images[mitigation.heldout_labels != target], trigger)
    return _share((preds == target) & ~rejected), _share(~rejected), scores


def _share(mask: torch.Tensor) -> float:
    return float(mask.float().mean())


def _threshold(scores: torch.Tensor, fpr: float) -> float:
    """The smallest threshold that rejects (score > threshold) at most ``floor(fpr * N)`` of ``scores``."""
    ordered = torch.sort(scores, descending=True).values
    allowed = math.floor(fpr * scores.numel())
    return float(ordered[min(allowed, scores.numel() - 1)])


@torch.no_grad()
def _run(
    filtered: FilteredModel, images: torch.Tensor, trigger: Trigger | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predictions, rejections and scores (N,) on the CPU, in batches on the model's device."""
    device = model_device(filtered.model)
    preds, rejected, scores = [], [], []
    with eval_mode(filtered.model):
        for start in range(0, images.shape[0], _BATCH):
            batch = images[start : start + _BATCH].to(device, copy=True)  # the model may change its input
            if trigger is not None:
                batch = trigger.stamp(batch)
            outputs, activations = forward_with_activations(filtered.model, filtered._layer, batch)
            s = filtered.input_filter.score_activations(activations)
            preds.append(outputs.argmax(dim=1).cpu())
            scores.append(s.float().cpu())
            rejected.append((s > filtered.input_filter.threshold).cpu())
    return torch.cat(preds), torch.cat(rejected), torch.cat(scores)
