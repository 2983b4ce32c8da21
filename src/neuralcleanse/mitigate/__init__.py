"""Backdoor mitigation with a reversed trigger (paper, Section VI): input filter, neuron pruning, unlearning.

:class:`Mitigation` binds the infected model, the reversed trigger and its label (from
``ScanReport.trigger(label)``), clean images to work with and held-out clean images to measure on, and, when the
real trigger is known, ``true_trigger=(trigger, target)`` to measure it too. It checks them once; each of its
methods returns a frozen result with ``to_dict()`` holding the before/after figures:

- :meth:`Mitigation.filter` -> :class:`FilterResult` whose ``filter`` (:class:`InputFilter`) flags inputs to
  reject;
- :meth:`Mitigation.prune` -> :class:`PruneResult` with a pruned copy of the model and the pruning curve;
- :meth:`Mitigation.unlearn` -> :class:`UnlearnResult` with a fine-tuned copy of the model.

The layer the filter and pruning work on is named as in :mod:`neuralcleanse.mitigate.layers` (a module name,
``"NAME:input"``, ``"penultimate"``, ``"conv-output"`` or ``"last-conv"``).

Example:
    >>> mitigation = Mitigation(model, report.trigger(7), 7, images, labels, test_images, test_labels)  # doctest: +SKIP
    >>> result = mitigation.prune()  # doctest: +SKIP
    >>> result.to_dict()["attack_success_after"]  # doctest: +SKIP
"""

from ._common import Figures, MitigationResult
from .filter import FALSE_POSITIVE_RATE, TOP_FRACTION, FilteredModel, FilterResult, InputFilter, LabelNeurons
from .layers import CONV_OUTPUT, LAST_CONV, PENULTIMATE, penultimate_layer, resolve_layer
from .mitigation import Mitigation
from .prune import MAX_ACCURACY_LOSS, MAX_ATTACK_SUCCESS, STEP, PruneResult, PruneStep
from .unlearn import UnlearnConfig, UnlearnResult

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
    "Figures",
    "FilteredModel",
    "InputFilter",
    "LabelNeurons",
    "Mitigation",
    "MitigationResult",
    "PruneResult",
    "PruneStep",
    "UnlearnConfig",
    "UnlearnResult",
    "penultimate_layer",
    "resolve_layer",
]
