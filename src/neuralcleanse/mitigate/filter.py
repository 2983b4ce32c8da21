"""Input filter (paper, Section VI-A): reject inputs that excite the neurons the reversed trigger excites.

The reversed trigger raises a few neurons of the second-to-last layer far above their level on clean images;
inputs carrying the real trigger raise the same neurons. :meth:`Mitigation.filter` ranks the layer's neurons by
how much the reversed trigger raises their mean activation on clean images, keeps the top ones (1% by default,
as the paper), scores an input by the mean activation of those neurons, and sets the threshold so that a
chosen share of clean inputs (5% by default, as the paper) is rejected. The result, an :class:`InputFilter`,
is a small JSON-serialisable object; :class:`FilteredModel` wraps a model with it so that one call gives the
prediction and the verdict.

With the reversed triggers of other flagged labels (``Mitigation.other_triggers``, a backdoor with several
targets) each trigger ranks the layer's neurons on the clean images not of its own label and keeps its own top
ones, and an input is rejected when any label's score is over that label's threshold. The false-positive budget
is shared: every label's threshold rejects the same number of clean calibration images, the largest number whose
union stays within the budget, so the filter as a whole rejects at most ``fpr`` of them.
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

from .._torch import eval_mode, holds_script, model_device
from ..atomic import atomic_write_json
from ..progress import ProgressCallback, report
from ..triggers import Trigger
from ..versions import versions
from ._common import Figures, MitigationResult, check_fraction, repaired_labels
from .layers import (
    Layer,
    forward_with_activations,
    hookable,
    record_activations,
    resolve_layer,
    trigger_ranking,
)

if TYPE_CHECKING:
    from .mitigation import Mitigation

__all__ = [
    "FALSE_POSITIVE_RATE",
    "TOP_FRACTION",
    "FilterResult",
    "FilteredModel",
    "InputFilter",
    "LabelNeurons",
    "build_filter",
]

logger = logging.getLogger(__name__)

TOP_FRACTION = 0.01  # paper, Section VI-A: the top 1% of neurons the reversed trigger activates most
FALSE_POSITIVE_RATE = 0.05  # paper, Section VI-A: thresholds set for a 5% false-positive rate
FILE_FORMAT = "neuralcleanse-input-filter"
FILE_VERSION = 2  # 2 adds "others"; version 1 files (one label) are read as well
_BATCH = 512  # images per forward pass, as in metrics.py


@dataclass(frozen=True)
class LabelNeurons:
    """One more flagged label's part of an :class:`InputFilter`: the neurons of the filter's layer its reversed
    trigger raises most, most first, and the threshold over which their mean activation is rejected."""

    label: int
    neurons: tuple[int, ...]
    threshold: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "neurons", _checked_neurons(self.neurons))
        object.__setattr__(self, "threshold", _checked_threshold(self.threshold))

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "neurons": list(self.neurons), "threshold": self.threshold}


@dataclass(frozen=True)
class InputFilter:
    """A calibrated input filter: reject an input whose score (mean activation of ``neurons`` in ``layer``) is
    above ``threshold``, or whose score for any of ``others`` is above that label's threshold.

    Attributes:
        layer: the layer name (see :mod:`neuralcleanse.mitigate.layers`), e.g. ``"features"``.
        neurons: indices of the neurons the reversed trigger raises most, most first.
        threshold: scores above it are rejected.
        fpr: the false-positive rate the threshold was calibrated to, on the calibration images.
        label: the label whose reversed trigger the filter was built from (for reports).
        num_neurons: the layer's width, to refuse a model whose layer differs (None: not checked).
        others: the parts of the other flagged labels' reversed triggers (a backdoor with several targets).

    Shape:
        ``scores``/``reject`` take (N, C, H, W) images in [0, 1] and return (N,) on the CPU.

    Example:
        >>> result = Mitigation(model, trigger, 7, images, labels, test_images, test_labels).filter()  # doctest: +SKIP
        >>> rejected = result.filter.reject(model, batch)  # doctest: +SKIP
        >>> predictions, rejected = result.filter.wrap(model)(batch)  # doctest: +SKIP
        >>> predictions, rejected = result.filter.wrap(scripted, batch)(batch)  # a TorchScript model  # doctest: +SKIP
    """

    layer: str
    neurons: tuple[int, ...]
    threshold: float
    fpr: float = FALSE_POSITIVE_RATE
    label: int | None = None
    num_neurons: int | None = None
    others: tuple[LabelNeurons, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise ValueError(f"layer must be a non-empty name, got {self.layer!r}")
        object.__setattr__(self, "neurons", _checked_neurons(self.neurons))
        object.__setattr__(self, "threshold", _checked_threshold(self.threshold))
        check_fraction("fpr", self.fpr, allow_one=False)
        others = tuple(self.others)
        if not all(isinstance(other, LabelNeurons) for other in others):
            raise TypeError(f"others must be LabelNeurons, got {[type(o).__name__ for o in others]}")
        object.__setattr__(self, "others", others)

    @property
    def labels(self) -> list[int | None]:
        """The labels whose reversed triggers the filter watches for, ``label`` first."""
        return [self.label, *(other.label for other in self.others)]

    def score_activations(self, activations: torch.Tensor) -> torch.Tensor:
        """Scores (N,) of ``label``'s neurons from the layer's per-neuron activations (N, D)."""
        return self._checked(activations)[:, list(self.neurons)].mean(dim=1)

    def reject_activations(self, activations: torch.Tensor) -> torch.Tensor:
        """Which inputs to reject (N,) bool, from the layer's per-neuron activations (N, D): any label's score
        over its threshold."""
        rejected = self.score_activations(activations) > self.threshold
        for other in self.others:
            rejected |= activations[:, list(other.neurons)].mean(dim=1) > other.threshold
        return rejected

    def _checked(self, activations: torch.Tensor) -> torch.Tensor:
        width = activations.shape[1]
        largest = max(max(part) for part in (self.neurons, *(other.neurons for other in self.others)))
        if width <= largest or self.num_neurons not in (None, width):
            expected = self.num_neurons if self.num_neurons is not None else f"more than {largest}"
            raise ValueError(
                f"layer {self.layer!r} has {width} neurons, the filter expects {expected}: it was "
                "built for another model"
            )
        return activations

    def scores(self, model: nn.Module, images: torch.Tensor, batch_size: int = _BATCH) -> torch.Tensor:
        """Scores (N,) of ``label``'s neurons on ``images`` (N, C, H, W); the model runs in eval mode, restored
        afterwards."""
        return self.score_activations(self._activations(model, images, batch_size))

    def reject(self, model: nn.Module, images: torch.Tensor, batch_size: int = _BATCH) -> torch.Tensor:
        """Which of ``images`` to reject: a bool tensor (N,)."""
        return self.reject_activations(self._activations(model, images, batch_size))

    def _activations(self, model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        model = hookable(model, images)  # a TorchScript model is read through its ONNX copy, as it was filtered
        return record_activations(model, resolve_layer(model, self.layer), images, batch_size=batch_size)

    __call__ = reject

    def wrap(self, model: nn.Module, images: torch.Tensor | None = None) -> FilteredModel:
        """``model`` and this filter as one module returning ``(predictions, rejected)``.

        A TorchScript model runs no Python hooks: it is wrapped through its ONNX copy (the network the filter was
        built on, when it was built on that model), which needs a few of the model's images (N, C, H, W), in
        ``images``, to be exported and checked on."""
        if holds_script(model):
            if images is None:
                raise ValueError(
                    "a TorchScript model is filtered through its ONNX copy, which is checked on a few of its "
                    "images: call wrap(model, images) with an (N, C, H, W) batch"
                )
            model = hookable(model, images)
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
            "others": [other.to_dict() for other in self.others],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputFilter:
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise ValueError(f"not a neuralcleanse input filter (expected format {FILE_FORMAT!r})")
        if data.get("version") not in (1, FILE_VERSION):
            raise ValueError(f"unsupported input-filter version {data.get('version')!r} (expected 1 to {FILE_VERSION})")
        try:
            label, width = data.get("label"), data.get("num_neurons")
            others = tuple(
                LabelNeurons(int(o["label"]), tuple(o["neurons"]), float(o["threshold"]))
                for o in data.get("others", [])
            )
            return cls(
                str(data["layer"]),
                tuple(data["neurons"]),
                float(data["threshold"]),
                float(data["fpr"]),
                None if label is None else int(label),
                None if width is None else int(width),
                others,
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
        return outputs.argmax(dim=1), self.input_filter.reject_activations(activations)


@dataclass(frozen=True)
class FilterResult(MitigationResult):
    """A fitted filter and what it does on held-out data.

    ``before`` are the model's figures alone; ``after`` those of the model behind the filter, where a rejected
    input counts as neither correct nor a successful attack: clean accuracy after = share of clean inputs
    accepted *and* classified correctly; attack success after = share of triggered inputs (not of the target
    label) accepted *and* sent to the target. ``false_positive_rate`` is the share of held-out clean inputs
    rejected; ``reversed_false_negative_rate`` / ``false_negative_rate`` the share of inputs carrying the
    reversed / true trigger that are *not* rejected (None without a true trigger). ``others`` holds, per other
    flagged label, its reversed trigger's attack success before and after, ``others_false_negative_rate`` the
    share of inputs carrying it that pass.
    """

    filter: InputFilter
    false_positive_rate: float
    reversed_false_negative_rate: float
    false_negative_rate: float | None
    num_calibration: int
    scores: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)  # held-out scores, for plots
    others: dict[int, tuple[float, float]] = field(default_factory=dict)
    others_false_negative_rate: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        f = self.filter
        return self._dict(
            "filter",
            f.label,
            {"layer": f.layer},
            {
                **repaired_labels(f.label, self.others),
                "false_positive_rate": self.false_positive_rate,
                "fpr_target": f.fpr,
                "false_negative_rate": self.false_negative_rate,
                "reversed_false_negative_rate": self.reversed_false_negative_rate,
                "others_reversed_false_negative_rate": {str(k): v for k, v in self.others_false_negative_rate.items()},
                "threshold": f.threshold,
                "neurons": list(f.neurons),
                "others_filter": [other.to_dict() for other in f.others],
                "num_neurons": f.num_neurons,
                "num_calibration": self.num_calibration,
            },
        )


def build_filter(
    mitigation: Mitigation, *, fpr: float, layer: str | None, top_fraction: float, progress: ProgressCallback | None
) -> FilterResult:
    """:meth:`Mitigation.filter`: rank the layer's neurons for each trigger, calibrate the thresholds together,
    measure the filter."""
    start = time.perf_counter()
    check_fraction("top_fraction", top_fraction)
    check_fraction("fpr", fpr, allow_one=False)
    images, model = mitigation.images, mitigation.layered
    resolved = resolve_layer(model, layer)
    parts = mitigation.ranking_triggers()
    total = 2 * len(parts) + (mitigation.true_trigger is not None)  # rank, then measure, per trigger
    report(progress, "filter", 0, total)
    clean = record_activations(model, resolved, images)  # (N, D)
    k = max(1, math.ceil(top_fraction * clean.shape[1]))
    chosen = []
    for done, (trigger, _, victims) in enumerate(parts, 1):
        chosen.append(trigger_ranking(model, resolved, images[victims], trigger, clean[victims])[:k])
        report(progress, "filter", done, total)
    thresholds = _thresholds([clean[:, neurons].mean(dim=1) for neurons in chosen], fpr)
    others = tuple(
        LabelNeurons(label, tuple(neurons.tolist()), threshold)
        for (_, label, _), neurons, threshold in zip(parts[1:], chosen[1:], thresholds[1:], strict=True)
    )
    input_filter = InputFilter(
        resolved.spec,
        tuple(chosen[0].tolist()),
        thresholds[0],
        fpr,
        mitigation.target,
        clean.shape[1],
        others,
    )
    logger.info("filter on %s: labels %s, thresholds %s", resolved.spec, input_filter.labels, thresholds)
    return _filter_result(mitigation, input_filter, progress, total, start)


def _filter_result(
    mitigation: Mitigation, input_filter: InputFilter, progress: ProgressCallback | None, total: int, start: float
) -> FilterResult:
    """Measure the filter on the held-out images; ``start`` is when the fitting began."""
    filtered = FilteredModel(mitigation.layered, input_filter)
    done = len(mitigation.other_triggers) + 2  # the events so far: every ranking, then this measurement
    preds, rejected, clean_scores = _run(filtered, mitigation.heldout_images)  # (N,) each
    accepted_correct = (preds == mitigation.heldout_labels.cpu()) & ~rejected
    reversed_after, reversed_passed, reversed_scores = _triggered(
        filtered, mitigation, mitigation.trigger, mitigation.target
    )
    report(progress, "filter", done, total)
    others_before = mitigation.others_success(mitigation.model)
    others, others_passed = {}, {}
    for trigger, label in mitigation.other_triggers:
        after, others_passed[label], _ = _triggered(filtered, mitigation, trigger, label)
        others[label] = (others_before[label], after)
        done += 1
        report(progress, "filter", done, total)
    scores = {"clean": clean_scores, "reversed": reversed_scores}
    true_after = fnr = None
    if mitigation.true_trigger is not None:
        true_after, fnr, scores["true"] = _triggered(filtered, mitigation, *mitigation.true_trigger)
        report(progress, "filter", total, total)
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
        others=others,
        others_false_negative_rate=others_passed,
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


def _thresholds(scores: list[torch.Tensor], fpr: float) -> list[float]:
    """One threshold per label's clean scores (N,) each, rejecting (score > threshold) at most ``floor(fpr * N)``
    images together: each label's threshold is its (a+1)-th largest score, with the largest ``a`` whose union of
    rejections stays within the budget (for one label, ``a = floor(fpr * N)``)."""
    ordered = [torch.sort(s, descending=True).values for s in scores]
    n = scores[0].numel()
    allowed = math.floor(fpr * n)
    for each in range(allowed, -1, -1):
        thresholds = [float(o[min(each, n - 1)]) for o in ordered]
        rejected = torch.zeros(n, dtype=torch.bool)
        for s, threshold in zip(scores, thresholds, strict=True):
            rejected |= s > threshold
        if int(rejected.sum()) <= allowed:
            return thresholds
    raise AssertionError("unreachable: at a = 0 every threshold is its label's largest score")


def _checked_neurons(neurons: Any) -> tuple[int, ...]:
    checked = tuple(int(n) for n in neurons)
    if not checked or min(checked) < 0:
        raise ValueError(f"neurons must be a non-empty list of indices >= 0, got {list(neurons)}")
    return checked


def _checked_threshold(threshold: Any) -> float:
    if not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    return float(threshold)


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
            preds.append(outputs.argmax(dim=1).cpu())
            scores.append(filtered.input_filter.score_activations(activations).float().cpu())
            rejected.append(filtered.input_filter.reject_activations(activations).cpu())
    return torch.cat(preds), torch.cat(rejected), torch.cat(scores)
