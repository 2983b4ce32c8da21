"""The ``evaluate`` job: a model's clean accuracy and the attack success of its known triggers."""

from __future__ import annotations

from typing import Any

from ..data import load_dataset
from ..metrics import accuracy, attack_success_rate
from ..probe import check_compatible
from ..triggers import Trigger, parse_trigger

__all__ = ["evaluate_model", "known_triggers"]


def known_triggers(
    loaded: Any, trigger_specs: list[str], targets: list[int], image_shape: tuple[int, int, int]
) -> list[tuple[Trigger, int]]:
    """Triggers given on the command line, else those recorded with the model."""
    if len(trigger_specs) != len(targets):
        raise ValueError(
            f"give one target per trigger: got {len(trigger_specs)} trigger(s) and {len(targets)} target(s)"
        )
    if trigger_specs:
        return [(parse_trigger(s, image_shape), int(t)) for s, t in zip(trigger_specs, targets, strict=True)]
    return list(getattr(loaded, "triggers", None) or [])


def evaluate_model(
    loaded: Any,
    data: str,
    split: str = "test",
    trigger_specs: list[str] | None = None,
    targets: list[int] | None = None,
) -> dict[str, Any]:
    """Clean accuracy on ``data`` and, per known trigger, its attack success rate."""
    dataset = load_dataset(data, split)
    check_compatible(loaded, dataset)
    triggers = known_triggers(loaded, trigger_specs or [], targets or [], dataset.image_shape)
    return {
        "data": dataset.name,
        "num_images": len(dataset),
        "clean_accuracy": accuracy(loaded.model, dataset.images, dataset.labels),
        "triggers": [
            {
                "spec": t.spec,
                "target": target,
                "attack_success": attack_success_rate(loaded.model, dataset.images, dataset.labels, t, target),
            }
            for t, target in triggers
        ],
    }
