"""Supervised training of a classifier on (N, C, H, W) images, used to build clean and BadNets models."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from ._torch import input_memory_format, model_device
from .progress import ProgressCallback, report

__all__ = ["TrainConfig", "train_classifier"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. Adam with a cosine-decayed learning rate; the paper trains its models with
    Adam as well (Keras defaults, lr 1e-3) but gives no epochs or batch size, so those are ours, chosen to
    reach its accuracy table on MNIST and GTSRB (``benchmarks/results/train.json``)."""

    epochs: int = 8  # ours
    batch_size: int = 128  # ours
    lr: float = 1e-3  # Keras' Adam default, as in the original code
    weight_decay: float = 0.0  # Keras' Adam default: none

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"invalid training settings {self}: epochs and batch_size must be >= 1, lr > 0")


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    generator: torch.Generator | None = None,
    progress: ProgressCallback | None = None,
) -> nn.Module:
    """Train ``model`` in place with cross-entropy and return it in eval mode.

    Shape:
        images: (N, C, H, W) float in [0, 1], on any device (batches are moved to the model's device);
        labels: (N,) int64.
    """
    if images.dim() != 4 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    device = model_device(model)
    n = images.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = config.epochs * steps_per_epoch
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    memory_format = input_memory_format(model, images[:4].to(device))
    model.train()
    step = 0
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        running, seen = 0.0, 0
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            x = images[idx].to(device).contiguous(memory_format=memory_format)
            y = labels[idx].to(device)
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            running += loss.item() * len(idx)
            seen += len(idx)
            report(progress, "train", step, total, epoch=epoch + 1, loss=running / seen)
        logger.info("epoch %d/%d: loss %.4f", epoch + 1, config.epochs, running / seen)
    return model.eval()
