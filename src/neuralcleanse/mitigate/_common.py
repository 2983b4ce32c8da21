"""Shared by the three mitigations: the figures every result reports, the check of fractional options and the
copy of a model a mitigation changes."""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..triggers import Trigger
from ..versions import versions

TrueTrigger = tuple[Trigger, int]


def copy_model(model: nn.Module) -> nn.Module:
    """An independent copy of ``model`` to change. TorchScript modules in it (the model itself, or one a
    preprocessing wrapper holds) are copied by saving and loading them: ``copy.deepcopy`` gives them parameters
    that are not leaf tensors, which no optimiser accepts."""
    memo: dict[int, Any] = {}
    _reload_scripted(model, memo)
    return copy.deepcopy(model, memo)


def _reload_scripted(module: nn.Module, memo: dict[int, Any]) -> None:
    """Put a save-and-load copy of every outermost TorchScript module under ``module`` in deepcopy's ``memo``."""
    if not isinstance(module, torch.jit.ScriptModule):
        for child in module.children():
            _reload_scripted(child, memo)
        return
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    memo[id(module)] = torch.jit.load(buffer, map_location=device).train(module.training)


@dataclass(frozen=True)
class Figures:
    """A model's figures on held-out clean data: accuracy, and the attack success of the reversed trigger and,
    when known, of the true one (fractions; attack success counts images not of the target label)."""

    clean_accuracy: float
    reversed_attack_success: float
    attack_success: float | None = None


@dataclass(frozen=True)
class MitigationResult:
    """What every mitigation's result holds (each adds its own fields and ``to_dict``).

    Attributes:
        before: the figures of the model as it was, on the held-out images.
        after: the figures of the mitigated model (or of the model behind the filter) on the same images.
        true_target: the target of the true trigger measured as well, None without one.
        num_heldout: how many held-out images the figures come from.
        seconds: how long the mitigation took.
    """

    before: Figures
    after: Figures
    true_target: int | None
    num_heldout: int
    seconds: float

    def _dict(
        self,
        method: str,
        label: int | None,
        head: dict[str, Any],
        own: dict[str, Any],
        tail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The result as JSON: ``method``, ``label``, ``true_target``, ``head``, the figures, the method's
        ``own`` entries, ``num_heldout``, ``tail``, ``seconds`` and ``versions``, in this order."""
        return {
            "method": method,
            "label": label,
            "true_target": self.true_target,
            **head,
            **self.figures(),
            **own,
            "num_heldout": self.num_heldout,
            **(tail or {}),
            "seconds": self.seconds,
            "versions": versions(),
        }

    def figures(self) -> dict[str, float | None]:
        """``clean_accuracy_before``, ``clean_accuracy_after``, ``reversed_attack_success_before``, ... ."""
        out: dict[str, float | None] = {}
        for name in ("clean_accuracy", "reversed_attack_success", "attack_success"):
            out[f"{name}_before"] = getattr(self.before, name)
            out[f"{name}_after"] = getattr(self.after, name)
        return out


def repaired_labels(label: int | None, others: dict[int, tuple[float, float]]) -> dict[str, Any]:
    """The JSON entries of a mitigation that repaired ``label`` and ``others`` (label: the attack success of its
    reversed trigger before and after): ``labels`` and ``others_reversed_attack_success``."""
    return {
        "labels": [label, *others],
        "others_reversed_attack_success": {str(k): list(v) for k, v in others.items()},
    }


def check_fraction(name: str, value: float, *, allow_zero: bool = False, allow_one: bool = True) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and (value >= 0 if allow_zero else value > 0) and (value <= 1 if allow_one else value < 1)):
        interval = ("[" if allow_zero else "(") + "0, 1" + ("]" if allow_one else ")")
        raise ValueError(f"{name} must be a fraction in {interval}, got {value!r}")
