"""Backdoor mitigation with a reversed trigger (paper, Section VI): input filter, neuron pruning, unlearning.

Each takes the infected model, the reversed trigger and its label (from ``ScanReport.trigger(label)``), clean
images to work with and held-out clean images to measure on, and returns a frozen result with ``to_dict()``
holding the before/after figures:

- :func:`fit_filter` -> :class:`FilterResult` whose ``filter`` (:class:`InputFilter`) flags inputs to reject;
- :func:`prune` -> :class:`PruneResult` with a pruned copy of the model and the pruning curve;
- :func:`unlearn` -> :class:`UnlearnResult` with a fine-tuned copy of the model.

Pass ``true_trigger=(trigger, target)`` when the real trigger is known, to measure it too. The layer each method
works on is named as in :mod:`neuralcleanse.mitigate.layers` (a module name, ``"NAME:input"``,
``"penultimate"``, ``"conv-output"`` or ``"last-conv"``).
"""

from .filter import (
    FALSE_POSITIVE_RATE,
    TOP_FRACTION,
    FilteredModel,
    FilterResult,
    InputFilter,
    fit_filter,
)
from .layers import CONV_OUTPUT, LAST_CONV, PENULTIMATE, penultimate_layer, resolve_layer
from .prune import MAX_ACCURACY_LOSS, MAX_ATTACK_SUCCESS, STEP, PruneResult, PruneStep, prune
from .unlearn import UnlearnConfig, UnlearnResult, unlearn

__all__ = [
    "CONV_OUTPUT",
    "FALSE_POSITIVE_RATE",
    "LAST_CONV",
    "MAX_ACCURACY_LOSS",
    "MAX_ATTACK_SUCCESS",
    "PENULTIMATE",
    "STEP",
    "TOP_FRACTION",
    "FilterResult",
    "FilteredModel",
    "InputFilter",
    "PruneResult",
    "PruneStep",
    "UnlearnConfig",
    "UnlearnResult",
    "fit_filter",
    "penultimate_layer",
    "prune",
    "resolve_layer",
    "unlearn",
]
