"""Shared by the three mitigations: input checks and the before/after figures every result reports."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..metrics import accuracy, attack_success_rate
from ..triggers import Trigger

TrueTrigger = tuple[Trigger, int]  # a known (trigger, target) pair, to measure the real attack as well


@dataclass(frozen=True)
class Figures:
    """A model's figures on held-out clean data: accuracy, and the attack success of the reversed trigger and,
    when known, of the true one (fractions; attack success counts images not of the target label)."""

    clean_accuracy: float
    reversed_attack_success: float
    attack_success: float | None = None


def measure(
    model: nn.Module,
    trigger: Trigger,
    target: int,
    images: torch.Tensor,
    labels: torch.Tensor,
    true_trigger: TrueTrigger | None = None,
) -> Figures:
    true_asr = None if true_trigger is None else attack_success_rate(model, images, labels, *true_trigger)
    return Figures(
        accuracy(model, images, labels),
        attack_success_rate(model, images, labels, trigger, target),
        true_asr,
    )


def figures_dict(before: Figures, after: Figures) -> dict[str, float | None]:
    """``clean_accuracy_before``, ``clean_accuracy_after``, ``reversed_attack_success_before``, ... ."""
    out: dict[str, float | None] = {}
    for name in ("clean_accuracy", "reversed_attack_success", "attack_success"):
        out[f"{name}_before"] = getattr(before, name)
        out[f"{name}_after"] = getattr(after, name)
    return out


def check_images(name: str, images: Any, labels: Any) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a non-empty (N, C, H, W) tensor, got {shape}")
    if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1]:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{name} labels must have shape ({images.shape[0]},), got {shape}")
    lo, hi = float(images.min()), float(images.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi > 1:
        raise ValueError(f"{name} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")


def check_fraction(name: str, value: float, *, allow_zero: bool = False, allow_one: bool = True) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (
        number and (value >= 0 if allow_zero else value > 0) and (value <= 1 if allow_one else value < 1)
    ):
        interval = ("[" if allow_zero else "(") + "0, 1" + ("]" if allow_one else ")")
        raise ValueError(f"{name} must be a fraction in {interval}, got {value!r}")


def check_setup(
    trigger: Trigger,
    target: int,
    images: torch.Tensor,
    labels: torch.Tensor,
    heldout_images: torch.Tensor,
    heldout_labels: torch.Tensor,
    true_trigger: TrueTrigger | None,
) -> None:
    """Validate the arguments every mitigation takes."""
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a Trigger, got {type(trigger).__name__}")
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise ValueError(f"target must be a label (an int >= 0), got {target!r}")
    check_images("images", images, labels)
    check_images("heldout_images", heldout_images, heldout_labels)
    for name, data in (("images", images), ("heldout_images", heldout_images)):
        if tuple(data.shape[1:]) != trigger.image_shape:
            raise ValueError(
                f"the trigger is for {trigger.image_shape} (C, H, W) images but {name} are "
                f"{tuple(data.shape[1:])}"
            )
    if not bool((heldout_labels != target).any()):
        raise ValueError(f"heldout_images need images whose label is not the target {target}")
    if true_trigger is not None:
        if (
            not isinstance(true_trigger, tuple)
            or len(true_trigger) != 2
            or not isinstance(true_trigger[0], Trigger)
            or not isinstance(true_trigger[1], int)
        ):
            raise TypeError("true_trigger must be a (Trigger, target label) pair")
        if true_trigger[0].image_shape != trigger.image_shape:
            raise ValueError(
                f"the true trigger is for {true_trigger[0].image_shape} images, the reversed one for "
                f"{trigger.image_shape}"
            )
        if not bool((heldout_labels != true_trigger[1]).any()):
            raise ValueError(
                f"heldout_images need images whose label is not the true target {true_trigger[1]}"
            )
