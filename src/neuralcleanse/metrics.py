"""Evaluation: predictions, clean accuracy and attack success rate, in batches, on the model's device."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ._torch import eval_mode, model_device
from .triggers import Trigger

__all__ = ["accuracy", "attack_success_rate", "outputs_of", "predict", "true_trigger_overlap"]

_BATCH = 512  # ours: images per forward pass; a few hundred MB for the reference models


def stamped_batches(
    model: nn.Module, images: torch.Tensor, batch_size: int = _BATCH, trigger: Trigger | None = None
) -> Iterator[torch.Tensor]:
    """Batches of ``images`` on the model's device, stamped with ``trigger`` when given; the model is in eval
    mode while they are consumed (its mode is restored afterwards). Each batch is a copy: a model that changes
    its input in place never reaches ``images``."""
    device = model_device(model)
    with eval_mode(model):
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device, copy=True)
            yield batch if trigger is None else trigger.stamp(batch)


@torch.no_grad()
def outputs_of(model: nn.Module, images: torch.Tensor, batch_size: int = _BATCH) -> torch.Tensor:
    """The model's outputs (N, K) for ``images`` (N, C, H, W), float32 on the CPU: one pass that the scan's
    accuracy check, clean gaps and symmetric check all read."""
    return torch.cat([model(batch).float().cpu() for batch in stamped_batches(model, images, batch_size)])


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, batch_size: int = _BATCH, trigger: Trigger | None = None
) -> torch.Tensor:
    """Predicted labels (N,) of ``images`` (N, C, H, W), stamped with ``trigger`` first when given."""
    out = [model(batch).argmax(dim=1).cpu() for batch in stamped_batches(model, images, batch_size, trigger)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = _BATCH) -> float:
    """Share of ``images`` classified as their ``labels``."""
    if images.shape[0] == 0:
        raise ValueError("accuracy needs at least one image")
    return float((predict(model, images, batch_size) == labels.cpu()).float().mean())


def attack_success_rate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    trigger: Trigger,
    target: int,
    batch_size: int = _BATCH,
) -> float:
    """Share of images *not* of label ``target`` that ``trigger`` sends to ``target``."""
    keep = labels.cpu() != target
    if not keep.any():
        raise ValueError(f"attack success needs images whose label is not the target {target}")
    return float((predict(model, images[keep], batch_size, trigger) == target).float().mean())


def true_trigger_overlap(reversed_mask: torch.Tensor, true_mask: torch.Tensor) -> float:
    """Intersection over union of the top-k pixels of a reversed mask with a true mask's k non-zero pixels."""
    true_set = true_mask.flatten() > 0
    k = int(true_set.sum())
    if k == 0:
        return 0.0
    top = torch.zeros_like(true_set)
    top[reversed_mask.flatten().topk(k).indices] = True
    return float((top & true_set).sum()) / float((top | true_set).sum())
