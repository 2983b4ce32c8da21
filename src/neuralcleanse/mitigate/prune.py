"""Neuron pruning (paper, Section VI-B): silence the neurons the reversed trigger activates most.

Which layer. The paper prunes the second-to-last layer (a PaperNet's ``features``, the 512-unit ReLU before
the output layer) of its BadNets models, and found Trojan-attack models harder to prune there. This module prunes
by default the flattened output of the convolutional layers instead (``"conv-output"``, the input of the first
dense layer: a PaperNet's ``"features.7:input"``, where each neuron is one channel at one position), and the
second-to-last layer only for models without convolutions. The reason for the deviation: at the second-to-last
layer the neurons the reversed trigger raises are largely the target label's own, so pruning them removes the
target label before the backdoor, whereas at the convolutional output the trigger's pathway is a handful of
(channel, position) units clean images barely use (the figures are in docs/how-it-works.md, section Mitigation).
``"last-conv"``, the channels of the last convolution (as Fine-Pruning, Liu et al. 2018), is a coarser choice.

Pass ``layer=`` to choose (a module name, or one of the names above; see :mod:`neuralcleanse.mitigate.layers`).

The neurons are ranked once, by the rise of their mean activation when the reversed trigger is stamped on
clean images, and pruned in that order, ``step`` of the layer's neurons at a time. After each step the clean
accuracy and the reversed trigger's attack success are measured on held-out clean images; the sweep stops as
soon as the attack success is below ``max_attack_success`` or the accuracy has dropped by more than
``max_accuracy_loss``. The returned model is the last step within the accuracy budget.

With the reversed triggers of other flagged labels (``Mitigation.other_triggers``, a backdoor with several
targets) each trigger ranks the neurons on the clean images not of its own label, the rankings are taken in turn
(every trigger's most raised neuron, then every one's second, ...), and the sweep stops when every trigger's attack
success is below the bar.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from ..progress import ProgressCallback, report
from ._common import Figures, MitigationResult, check_fraction, copy_model, repaired_labels
from .layers import (
    CONV_OUTPUT,
    PENULTIMATE,
    Layer,
    NeuronMask,
    conv_output_layer,
    resolve_layer,
    silence_neurons,
    trigger_ranking,
)

if TYPE_CHECKING:
    from .mitigation import Mitigation

__all__ = ["MAX_ACCURACY_LOSS", "MAX_ATTACK_SUCCESS", "STEP", "PruneResult", "PruneStep", "prune_neurons"]

logger = logging.getLogger(__name__)

# ours (the paper names no stopping point): the reversed trigger works on fewer than 1% of inputs. A reversed
# trigger is often smaller than the real one and loses its effect sooner, hence a bar this low.
MAX_ATTACK_SUCCESS = 0.01
MAX_ACCURACY_LOSS = 0.05  # ours (the paper names no budget): at most 5 points of clean accuracy lost
STEP = 0.01  # ours: 1% of the layer's neurons per step, at least one (6 of a PaperNet's 512)

StopReason = Literal["attack_success", "accuracy_budget", "exhausted"]


@dataclass(frozen=True)
class PruneStep:
    """One point of the pruning curve: figures on held-out data with the first ``pruned`` neurons silenced."""

    pruned: int
    fraction: float
    clean_accuracy: float
    reversed_attack_success: float
    attack_success: float | None
    #: the attack success of the other labels' reversed triggers (Mitigation.other_triggers), in their order
    others_reversed_attack_success: tuple[float, ...] = ()

    @classmethod
    def of(cls, pruned: int, num_neurons: int, figures: Figures, others: tuple[float, ...] = ()) -> PruneStep:
        """The step with ``pruned`` of the layer's ``num_neurons`` silenced, where the model has ``figures`` and
        the other labels' reversed triggers succeed on ``others``."""
        return cls(
            pruned,
            pruned / num_neurons,
            figures.clean_accuracy,
            figures.reversed_attack_success,
            figures.attack_success,
            others,
        )

    @property
    def worst_reversed_attack_success(self) -> float:
        """The largest attack success among the reversed triggers pruned against."""
        return max((self.reversed_attack_success, *self.others_reversed_attack_success))


@dataclass(frozen=True)
class PruneResult(MitigationResult):
    """The pruned model (a copy) and the curve that chose it.

    Attributes:
        model: the pruned copy, in eval mode.
        layer: the layer pruned.
        neurons: the neurons silenced in ``model``, in pruning order.
        steps: the curve, from 0 neurons pruned to the step where the sweep stopped (which may be past the
            returned model when the accuracy budget stopped it).
        stop_reason: ``"attack_success"`` (reached ``max_attack_success``), ``"accuracy_budget"`` (the next
            step would have lost more accuracy than allowed) or ``"exhausted"`` (every neuron tried).
        persistent: the pruning lives in the weights (rows or columns zeroed), so a saved state dict carries
            it; False when it is a forward hook on ``model`` (layers without a plain Linear/Conv2d producer).
        before, after: figures on the held-out data of the original and of the returned model. The held-out
            data also chose where to stop, so ``after`` is slightly optimistic.
    """

    model: nn.Module
    layer: str
    neurons: tuple[int, ...]
    num_neurons: int
    steps: tuple[PruneStep, ...]
    stop_reason: StopReason
    persistent: bool
    label: int
    #: the other labels pruned against with ``label`` (Mitigation.other_triggers) and their reversed triggers'
    #: attack success on the held-out images (not of the label) before and after
    others: dict[int, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self._dict(
            "prune",
            self.label,
            {"layer": self.layer},
            {
                **repaired_labels(self.label, self.others),
                "pruned": len(self.neurons),
                "pruned_fraction": len(self.neurons) / self.num_neurons,
                "num_neurons": self.num_neurons,
                "neurons": list(self.neurons),
                "stop_reason": self.stop_reason,
                "persistent": self.persistent,
                "curve": [asdict(s) for s in self.steps],
            },
        )


def prune_neurons(
    mitigation: Mitigation,
    *,
    layer: str | None,
    step: float,
    max_attack_success: float,
    max_accuracy_loss: float,
    progress: ProgressCallback | None,
) -> PruneResult:
    """:meth:`Mitigation.prune`: rank the layer's neurons, then sweep on a copy of the model."""
    start = time.perf_counter()
    check_fraction("step", step)
    check_fraction("max_attack_success", max_attack_success, allow_zero=True)
    check_fraction("max_accuracy_loss", max_accuracy_loss, allow_zero=True)
    pruned = copy_model(mitigation.layered).eval()
    if layer is None:
        layer = CONV_OUTPUT if conv_output_layer(pruned) is not None else PENULTIMATE
    resolved = resolve_layer(pruned, layer)
    order = _ranking(pruned, resolved, mitigation)  # (D,) neurons, most raised first

    def point(count: int) -> PruneStep:
        others = tuple(mitigation.others_success(pruned).values())
        return PruneStep.of(count, order.numel(), mitigation.measure(pruned), others)

    before = mitigation.before
    others_before = mitigation.others_success(pruned)
    mask = NeuronMask(resolved)
    detach = mask.attach()
    try:
        steps, kept, reason = _sweep(
            order,
            mask,
            point,
            PruneStep.of(0, order.numel(), before, tuple(others_before.values())),
            step,
            max_attack_success,
            max_accuracy_loss,
            progress,
        )
    finally:
        detach()
    neurons = order[:kept].tolist()
    persistent = silence_neurons(pruned, resolved, neurons)
    if not persistent:
        logger.warning(
            "layer %s has no plain Linear/Conv2d producer: the pruning is a forward hook on the "
            "returned model, which a saved state dict does not carry",
            resolved.spec,
        )
    after = mitigation.measure(pruned)
    others_after = mitigation.others_success(pruned)
    logger.info(
        "pruned %d of %d neurons of %s (%s): accuracy %.4f -> %.4f, reversed attack success %.4f -> %.4f",
        kept,
        order.numel(),
        resolved.spec,
        reason,
        before.clean_accuracy,
        after.clean_accuracy,
        before.reversed_attack_success,
        after.reversed_attack_success,
    )
    return PruneResult(
        model=pruned,
        layer=resolved.spec,
        neurons=tuple(neurons),
        num_neurons=order.numel(),
        steps=tuple(steps),
        stop_reason=reason,
        persistent=persistent,
        before=before,
        after=after,
        label=mitigation.target,
        others={label: (rate, others_after[label]) for label, rate in others_before.items()},
        true_target=mitigation.true_target,
        num_heldout=mitigation.num_heldout,
        seconds=time.perf_counter() - start,
    )


def _ranking(model: nn.Module, layer: Layer, mitigation: Mitigation) -> torch.Tensor:
    """The layer's neurons (D,) in pruning order: the reversed trigger's ranking on the clean images not of its
    label and, with other triggers, theirs on the images not of theirs, taken in turn."""
    images = mitigation.images
    rankings = [trigger_ranking(model, layer, images[v], t) for t, _, v in mitigation.ranking_triggers()]
    if len(rankings) == 1:
        return rankings[0]
    merged = dict.fromkeys(n for row in zip(*(r.tolist() for r in rankings), strict=True) for n in row)
    return torch.tensor(list(merged), dtype=rankings[0].dtype)


def _sweep(
    order: torch.Tensor,
    mask: NeuronMask,
    point: Callable[[int], PruneStep],
    first: PruneStep,
    step: float,
    max_attack_success: float,
    max_accuracy_loss: float,
    progress: ProgressCallback | None,
) -> tuple[list[PruneStep], int, StopReason]:
    """Silence ``order``'s neurons a step at a time through ``mask``, measuring each step with ``point`` from
    ``first`` (nothing silenced); returns the curve, the number of neurons of the last step within the accuracy
    budget, and why the sweep stopped."""
    num_neurons = order.numel()
    per_step = max(1, math.ceil(step * num_neurons))
    total = math.ceil(num_neurons / per_step)
    steps, kept = [first], 0
    while True:
        last = steps[-1]
        report(
            progress,
            "prune",
            math.ceil(last.pruned / per_step),
            total,
            pruned=last.pruned,
            accuracy=last.clean_accuracy,
            attack_success=last.worst_reversed_attack_success,
        )
        if steps[0].clean_accuracy - last.clean_accuracy > max_accuracy_loss:
            return steps, kept, "accuracy_budget"
        kept = last.pruned
        if last.worst_reversed_attack_success < max_attack_success:
            return steps, kept, "attack_success"
        if kept >= num_neurons:
            return steps, kept, "exhausted"
        count = min(kept + per_step, num_neurons)
        mask.drop = order[:count]
        steps.append(point(count))
