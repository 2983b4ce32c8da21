"""BadNets poisoning, to build backdoored models for evaluating the defence.

BadNets (Gu et al., 2017) stamps a trigger on a fraction of the training images and relabels them to the
attacker's target. Several (trigger, target) pairs may share one model; each gets its own disjoint set of
victims. The source data are never modified: every function returns copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .triggers import Trigger

__all__ = ["PoisonedData", "poison"]


@dataclass(frozen=True)
class PoisonedData:
    """A poisoned copy of a training set.

    Attributes:
        images: (N, C, H, W) copy of the source images with the chosen ones stamped.
        labels: (N,) copy of the source labels with the chosen ones set to their target.
        poisoned: (N,) int64, -1 for clean images, else the index of the (trigger, target) pair used.
    """

    images: torch.Tensor
    labels: torch.Tensor
    poisoned: torch.Tensor

    @property
    def num_poisoned(self) -> int:
        return int((self.poisoned >= 0).sum())


def poison(
    images: torch.Tensor,
    labels: torch.Tensor,
    attacks: Sequence[tuple[Trigger, int]],
    rate: float,
    generator: torch.Generator | None = None,
) -> PoisonedData:
    """Stamp ``round(rate * N)`` images per (trigger, target) pair and relabel them to the target.

    Victims are drawn among images whose label differs from the pair's target (a relabelled image of the
    target class would teach nothing) and are disjoint across pairs.

    Args:
        images: (N, C, H, W) clean training images in [0, 1].
        labels: (N,) their labels.
        attacks: (trigger, target label) pairs.
        rate: fraction of the training set poisoned per pair, in (0, 1). The paper's BadNets models use
            about 10% (Section VI-A).
        generator: randomness for the choice of victims; the same seed gives the same poisoned set.

    Shape:
        images: (N, C, H, W); labels: (N,).
    """
    if images.dim() != 4 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if not 0 < rate < 1:
        raise ValueError(f"rate must be a fraction in (0, 1), got {rate}")
    if not attacks:
        raise ValueError("attacks must hold at least one (trigger, target) pair")
    n = images.shape[0]
    per_pair = round(rate * n)
    out_images, out_labels = images.clone(), labels.clone()
    poisoned = torch.full((n,), -1, dtype=torch.int64)
    for i, (trigger, target) in enumerate(attacks):
        candidates = torch.nonzero((labels != target) & (poisoned < 0)).flatten()
        if per_pair > candidates.numel():
            raise ValueError(
                f"cannot poison {per_pair} images for target {target}: only {candidates.numel()} images are "
                "neither of that label nor already poisoned; lower the rate"
            )
        chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:per_pair]]
        out_images[chosen] = trigger.stamp(images[chosen])
        out_labels[chosen] = target
        poisoned[chosen] = i
    return PoisonedData(out_images, out_labels, poisoned)
