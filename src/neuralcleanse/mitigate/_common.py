"""Shared by the three mitigations: the figures every result reports and the check of fractional options."""

from __future__ import annotations

from dataclasses import dataclass

from ..triggers import Trigger

TrueTrigger = tuple[Trigger, int]  # a known (trigger, target) pair, to measure the real attack as well


@dataclass(frozen=True)
class Figures:
    """A model's figures on held-out clean data: accuracy, and the attack success of the reversed trigger and,
    when known, of the true one (fractions; attack success counts images not of the target label)."""

    clean_accuracy: float
    reversed_attack_success: float
    attack_success: float | None = None


def figures_dict(before: Figures, after: Figures) -> dict[str, float | None]:
    """``clean_accuracy_before``, ``clean_accuracy_after``, ``reversed_attack_success_before``, ... ."""
    out: dict[str, float | None] = {}
    for name in ("clean_accuracy", "reversed_attack_success", "attack_success"):
        out[f"{name}_before"] = getattr(before, name)
        out[f"{name}_after"] = getattr(after, name)
    return out


def check_fraction(name: str, value: float, *, allow_zero: bool = False, allow_one: bool = True) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (
        number and (value >= 0 if allow_zero else value > 0) and (value <= 1 if allow_one else value < 1)
    ):
        interval = ("[" if allow_zero else "(") + "0, 1" + ("]" if allow_one else ")")
        raise ValueError(f"{name} must be a fraction in {interval}, got {value!r}")
