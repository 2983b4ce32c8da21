"""The labelled image set every loader returns, the error they raise, and the stratified clean sample that
Neural Cleanse reverse-engineers triggers on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["DataError", "ImageData", "clean_sample", "split_per_class"]


class DataError(ValueError):
    """Data that cannot be used; the one-line message names the file or directory and the problem."""


def one_line(exc: BaseException | str) -> str:
    """An exception's message squeezed onto one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled image set.

    Attributes:
        images: Pixel values in [0, 1].
        labels: Class labels in ``[0, num_classes)``.
        num_classes: Number of classes of the task (the largest label + 1 unless the source says).
        name: Where the data came from, e.g. ``"mnist-test"`` or a file path.

    Shape:
        - images: ``(N, C, H, W)``, float32.
        - labels: ``(N,)``, int64.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"{self.name}: images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.ndim != 1 or self.labels.dtype != torch.int64:
            raise DataError(
                f"{self.name}: labels must be a 1-D int64 tensor, got {self.labels.dtype} "
                f"of shape {tuple(self.labels.shape)}"
            )
        if len(self.labels) != len(self.images):
            raise DataError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        if self.labels.numel() and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise DataError(
                f"{self.name}: labels must lie in [0, {self.num_classes}), "
                f"got [{int(self.labels.min())}, {int(self.labels.max())}]"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    def subset(self, index: torch.Tensor | Sequence[int]) -> ImageData:
        """A copy holding the images at ``index`` (integer positions or a boolean mask), in that order."""
        if not (isinstance(index, torch.Tensor) and index.dtype == torch.bool):
            index = torch.as_tensor(index, dtype=torch.int64)
        return ImageData(self.images[index], self.labels[index], self.num_classes, self.name)


def split_per_class(data: ImageData, per_class: int, seed: int = 0) -> tuple[ImageData, ImageData]:
    """Split ``data`` into ``per_class`` random images of each label present and the rest.

    Args:
        data: The images.
        per_class: Images drawn from each label present in ``data``.
        seed: Seed of the ``torch.Generator`` that draws them; the same seed gives the same split.

    Returns:
        ``(sample, rest)``: the sample ordered by label, then by position in ``data``; the rest in the
        order of ``data``.

    Raises:
        DataError: ``per_class`` is not a positive int, or a label has fewer than ``per_class`` images.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise DataError(f"per_class must be a positive int, got {per_class!r}")
    present, counts = torch.unique(data.labels, return_counts=True)
    short = [(int(c), int(n)) for c, n in zip(present, counts, strict=True) if n < per_class]
    if short:
        detail = ", ".join(f"class {c} has {n}" for c, n in short)
        raise DataError(f"{data.name}: asked for {per_class} images per class but {detail}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in present:
        index = torch.nonzero(data.labels == label).flatten()
        pick = torch.randperm(len(index), generator=generator)[:per_class]
        chosen.append(index[pick].sort().values)
    sample_index = torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.int64)
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[sample_index] = False
    return data.subset(sample_index), data.subset(keep)


def clean_sample(data: ImageData, per_class: int, seed: int = 0) -> ImageData:
    """A stratified random sample: ``per_class`` images of each label present in ``data``.

    Neural Cleanse reverse-engineers triggers on a small clean set (the paper uses a fraction of the
    training data); this draws one reproducibly.

    Args:
        data: The images.
        per_class: Images drawn from each label present.
        seed: Seed of the ``torch.Generator``; the same seed and data give the same sample.

    Returns:
        A copy ordered by label, then by position in ``data``.

    Raises:
        DataError: ``per_class`` is not a positive int, or a label has fewer than ``per_class`` images
            (the message names the label, its count and ``per_class``).

    Example:
        >>> clean = clean_sample(load_mnist(split="test"), per_class=20, seed=0)  # 200 images
    """
    return split_per_class(data, per_class, seed)[0]
