"""Which images a job trains, mitigates and measures on.

Named datasets with an official split (MNIST, GTSRB) use it: training and the defender's clean data come from
``train``, measurements and scans from ``test``. Any other data (a file, a folder, CIFAR-10's test split, the
only one shipped) is split at random from a seed, so the same seed gives the same split in every job.
"""

from __future__ import annotations

import torch

from .data import ImageData, load_dataset

__all__ = ["HELD_OUT", "has_official_split", "mitigation_split", "training_split"]

HELD_OUT = 0.1  # ours: share of a dataset without an official split held out for evaluation after training


def has_official_split(spec: str) -> bool:
    """Whether training and mitigation use the dataset's own train/test split rather than one drawn from a seed."""
    return str(spec).lower() in ("mnist", "gtsrb")


def training_split(spec: str, seed: int) -> tuple[ImageData, ImageData]:
    """``(train, test)``: the official splits, or a random :data:`HELD_OUT` share (from ``seed``) as test."""
    if has_official_split(spec):
        return load_dataset(spec, "train"), load_dataset(spec, "test")
    data = load_dataset(spec)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(len(data) * HELD_OUT))
    return data.subset(order[n_test:]), data.subset(order[:n_test])


def mitigation_split(spec: str, seed: int) -> tuple[ImageData, ImageData]:
    """``(work, heldout)``: the defender's clean data and the images the repair is measured on; the official
    splits, or random halves (from ``seed``)."""
    if has_official_split(spec):
        return load_dataset(spec, "train"), load_dataset(spec, "test")
    whole = load_dataset(spec)
    order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(seed))
    return whole.subset(order[len(whole) // 2 :]), whole.subset(order[: len(whole) // 2])
