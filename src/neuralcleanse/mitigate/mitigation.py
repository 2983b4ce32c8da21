"""The bound object of the mitigations: what they all work on, checked once, and the figures they all report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from ..metrics import accuracy, attack_success_rate
from ..progress import ProgressCallback
from ..triggers import Trigger
from ._common import Figures, TrueTrigger
from .filter import FALSE_POSITIVE_RATE, TOP_FRACTION, FilterResult, build_filter
from .layers import hookable
from .prune import MAX_ACCURACY_LOSS, MAX_ATTACK_SUCCESS, STEP, PruneResult, prune_neurons
from .unlearn import UnlearnConfig, UnlearnResult, unlearn_trigger

__all__ = ["Mitigation"]


@dataclass(frozen=True, eq=False)
class Mitigation:
    """An infected model and its reversed trigger, bound with the clean data to mitigate with and measure on.

    The arguments are checked once, here; each method runs one mitigation of the paper (Section VI) and returns
    a frozen result whose ``to_dict()`` holds the figures before and after it. The figures of the model as it
    is (:attr:`before`) are measured once, at first use, and shared by the methods.

    Args:
        model: the infected classifier, taking (N, C, H, W) images in [0, 1]. :meth:`filter` and :meth:`prune`
            leave it as it is; :meth:`unlearn` trains a copy.
        trigger: the reversed trigger (``ScanReport.trigger(label)``).
        target: the label it belongs to.
        images, labels: clean images the defender works with: those not of ``target`` rank the neurons of the
            filter and of pruning, all of them calibrate the filter, and unlearning fine-tunes on a share of them.
        heldout_images, heldout_labels: other clean images, for the figures of every result (and, for pruning,
            to decide where to stop).
        true_trigger: the real (trigger, target), when known, to measure the real attack as well.
        other_triggers: the reversed (trigger, label) pairs of the scan's other flagged labels (a backdoor with
            several targets): :meth:`unlearn` forgets them together with ``trigger``, :meth:`prune` silences
            the neurons of each and :meth:`filter` rejects inputs that excite any one's.

    Raises:
        TypeError, ValueError: an argument is not what it must be; the message names it.

    Shape:
        - images, heldout_images: (N, C, H, W), float in [0, 1], with the trigger's (C, H, W).
        - labels, heldout_labels: (N,).

    Example:
        >>> m = Mitigation(model, report.trigger(7), 7, images, labels, test_images, test_labels)  # doctest: +SKIP
        >>> m.before.reversed_attack_success  # doctest: +SKIP
        >>> rejected = m.filter(fpr=0.05).filter.reject(model, batch)  # doctest: +SKIP
        >>> patched = m.unlearn(generator=torch.Generator().manual_seed(0)).model  # doctest: +SKIP
    """

    model: nn.Module = field(repr=False)
    trigger: Trigger = field(repr=False)
    target: int
    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    heldout_images: torch.Tensor = field(repr=False)
    heldout_labels: torch.Tensor = field(repr=False)
    true_trigger: TrueTrigger | None = field(default=None, repr=False)
    other_triggers: tuple[TrueTrigger, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(self.model).__name__}")
        if not isinstance(self.trigger, Trigger):
            raise TypeError(f"trigger must be a Trigger, got {type(self.trigger).__name__}")
        if isinstance(self.target, bool) or not isinstance(self.target, int) or self.target < 0:
            raise ValueError(f"target must be a label (an int >= 0), got {self.target!r}")
        _check_images("images", self.images, self.labels)
        _check_images("heldout_images", self.heldout_images, self.heldout_labels)
        for name in ("images", "heldout_images"):
            shape = tuple(getattr(self, name).shape[1:])
            if shape != self.trigger.image_shape:
                raise ValueError(
                    f"the trigger is for {self.trigger.image_shape} (C, H, W) images but {name} are {shape}"
                )
        if not bool((self.heldout_labels != self.target).any()):
            raise ValueError(f"heldout_images need images whose label is not the target {self.target}")
        if self.true_trigger is not None:
            self._check_true_trigger(self.true_trigger)
        for other in self.other_triggers:
            self._check_other_trigger(other)

    def _check_other_trigger(self, other: Any) -> None:
        if not (isinstance(other, tuple) and len(other) == 2 and isinstance(other[0], Trigger)):
            raise TypeError(f"other_triggers must hold (Trigger, label) pairs, got {other!r}")
        label = other[1]
        if isinstance(label, bool) or not isinstance(label, int) or label < 0 or label == self.target:
            raise ValueError(
                f"other_triggers' labels must be labels other than the target {self.target}, got {label!r}"
            )
        if other[0].image_shape != self.trigger.image_shape:
            raise ValueError(
                f"the trigger of label {label} is for {other[0].image_shape} images, the reversed one for "
                f"{self.trigger.image_shape}"
            )

    def _check_true_trigger(self, true_trigger: Any) -> None:
        if (
            not isinstance(true_trigger, tuple)
            or len(true_trigger) != 2
            or not isinstance(true_trigger[0], Trigger)
            or not isinstance(true_trigger[1], int)
        ):
            raise TypeError("true_trigger must be a (Trigger, target label) pair")
        if true_trigger[0].image_shape != self.trigger.image_shape:
            raise ValueError(
                f"the true trigger is for {true_trigger[0].image_shape} images, the reversed one for "
                f"{self.trigger.image_shape}"
            )
        if not bool((self.heldout_labels != true_trigger[1]).any()):
            raise ValueError(f"heldout_images need images whose label is not the true target {true_trigger[1]}")

    # --- what the mitigations share ---------------------------------------------------------------------------

    def measure(self, model: nn.Module) -> Figures:
        """The figures of ``model`` (the bound one or a mitigated copy) on the held-out images."""
        images, labels = self.heldout_images, self.heldout_labels
        true_asr = None if self.true_trigger is None else attack_success_rate(model, images, labels, *self.true_trigger)
        return Figures(
            accuracy(model, images, labels),
            attack_success_rate(model, images, labels, self.trigger, self.target),
            true_asr,
        )

    def others_success(self, model: nn.Module) -> dict[int, float]:
        """The attack success of each of :attr:`other_triggers` on the held-out images not of its label, with
        ``model`` (the bound one or a mitigated copy)."""
        images, labels = self.heldout_images, self.heldout_labels
        return {label: attack_success_rate(model, images, labels, t, label) for t, label in self.other_triggers}

    @cached_property
    def layered(self) -> nn.Module:
        """The model whose layers the filter and pruning read: :attr:`model`, or a TorchScript model's copy re-read
        through ONNX (:func:`~neuralcleanse.mitigate.layers.hookable`; a ValueError when there is none)."""
        return hookable(self.model, self.images)

    @cached_property
    def before(self) -> Figures:
        """The bound model's figures on the held-out images, measured at first use."""
        return self.measure(self.model)

    def ranking_triggers(self) -> list[tuple[Trigger, int, torch.Tensor]]:
        """The reversed trigger and each of :attr:`other_triggers`, with its label and which ``images`` (N,) are not
        of that label: the ones it is stamped on to rank neurons (the filter and pruning).

        Raises:
            ValueError: every image is of a trigger's label.
        """
        out = []
        for trigger, label in ((self.trigger, self.target), *self.other_triggers):
            victims = self.labels != label
            if not bool(victims.any()):
                which = f"the target {label}" if label == self.target else str(label)
                raise ValueError(f"images need clean images whose label is not {which} to rank neurons")
            out.append((trigger, label, victims))
        return out

    @property
    def true_target(self) -> int | None:
        """The true trigger's target, None without a true trigger."""
        return None if self.true_trigger is None else int(self.true_trigger[1])

    @property
    def num_heldout(self) -> int:
        """How many held-out images the figures come from."""
        return int(self.heldout_images.shape[0])

    # --- the mitigations ----------------------------------------------------------------------------------------

    def filter(
        self,
        *,
        fpr: float = FALSE_POSITIVE_RATE,
        layer: str | None = None,
        top_fraction: float = TOP_FRACTION,
        progress: ProgressCallback | None = None,
    ) -> FilterResult:
        """Fit an input filter (paper, Section VI-A; see :mod:`~neuralcleanse.mitigate.filter`) and measure it;
        with :attr:`other_triggers`, one filter watching for each of them as well.

        The model is not modified (it runs in eval mode, restored afterwards).

        Args:
            fpr: share of the clean ``images`` the filter rejects (every label's threshold together).
            layer: the layer to read; the second-to-last by default (see :mod:`neuralcleanse.mitigate.layers`).
            top_fraction: share of the layer's neurons scored (at least one).
            progress: receives events of phase ``"filter"``.
        """
        return build_filter(self, fpr=fpr, layer=layer, top_fraction=top_fraction, progress=progress)

    def prune(
        self,
        *,
        layer: str | None = None,
        step: float = STEP,
        max_attack_success: float = MAX_ATTACK_SUCCESS,
        max_accuracy_loss: float = MAX_ACCURACY_LOSS,
        progress: ProgressCallback | None = None,
    ) -> PruneResult:
        """Prune the neurons the reversed trigger activates most (paper, Section VI-B), on a copy of the model;
        with :attr:`other_triggers`, the neurons each of them activates most, taken in turn.

        Args:
            layer: the layer to prune: by default the flattened output of the convolutional layers
                (``"conv-output"``), or the second-to-last layer (``"penultimate"``) for a model without
                convolutions; see :mod:`neuralcleanse.mitigate.prune` for why.
            step: share of the layer's neurons pruned per step (at least one neuron).
            max_attack_success: stop once the reversed trigger's attack success (every one's, with
                :attr:`other_triggers`) is below this.
            max_accuracy_loss: never lose more than this much clean accuracy (a fraction: 0.05 = 5 points).
            progress: receives an event of phase ``"prune"`` per step.
        """
        return prune_neurons(
            self,
            layer=layer,
            step=step,
            max_attack_success=max_attack_success,
            max_accuracy_loss=max_accuracy_loss,
            progress=progress,
        )

    def unlearn(
        self,
        *,
        config: UnlearnConfig | None = None,
        inplace: bool = False,
        outputs_probabilities: bool | None = None,
        generator: torch.Generator | None = None,
        progress: ProgressCallback | None = None,
    ) -> UnlearnResult:
        """Fine-tune a copy of the model to forget the reversed trigger (paper, Section VI-C).

        Args:
            config: data shares and optimiser settings; None: :class:`UnlearnConfig`'s defaults.
            inplace: train the bound model itself instead of a copy. :attr:`before` keeps the figures of the
                model as it was: bind a new :class:`Mitigation` to go on with the trained model.
            outputs_probabilities: whether the model ends in a softmax; None detects it from one batch.
            generator: randomness for the choice of images, of the triggered ones, and the batch order.
            progress: receives an event of phase ``"unlearn"`` per batch.
        """
        return unlearn_trigger(
            self,
            config=UnlearnConfig() if config is None else config,
            inplace=inplace,
            outputs_probabilities=outputs_probabilities,
            generator=generator,
            progress=progress,
        )


def _check_images(name: str, images: Any, labels: Any) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a non-empty (N, C, H, W) tensor, got {shape}")
    if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1]:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{name} labels must have shape ({images.shape[0]},), got {shape}")
    lo, hi = float(images.min()), float(images.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi > 1:
        raise ValueError(f"{name} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
