"""Reference architectures of the Neural Cleanse paper, by name.

Both networks take images as ``(N, C, H, W)`` floats in [0, 1]; the dataset's mean/std normalisation is the
first layer of the model, so callers never normalise. Each model is split into ``features`` (everything up to
and including the penultimate ReLU: the layer Neural Cleanse's filter and pruning work on) and ``head`` (the
final linear layer producing logits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ARCHITECTURES", "Architecture", "Normalize", "PaperNet", "build_model"]


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``, stored as buffers so it travels with the weights."""

    mean: torch.Tensor  # (1, C, 1, 1) buffer
    std: torch.Tensor  # (1, C, 1, 1) buffer

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PaperNet(nn.Module):
    """``normalize -> features -> [dropout] -> head``; ``features`` ends with the penultimate (dense) ReLU.

    ``dropout`` only acts in training mode and has no weights, so it does not change the saved state dict.
    """

    def __init__(self, normalize: Normalize, features: nn.Sequential, head: nn.Linear, dropout: float = 0.0) -> None:
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.dropout = nn.Dropout(dropout)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1] -> (N, K) logits
        return self.head(self.dropout(self.features(self.normalize(x))))


def _conv_relu(c_in: int, c_out: int, kernel: int, padding: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, padding=padding), nn.ReLU()]


def mnist_net(num_classes: int = 10) -> PaperNet:
    """The paper's MNIST network (appendix, Table VI): 2 conv + 2 dense layers, 28x28x1 input.

    conv 16@5x5 -> maxpool 2 -> conv 32@5x5 -> maxpool 2 -> dense 512 -> dense ``num_classes``; 'valid'
    padding as in the original Keras model.
    """
    features = nn.Sequential(
        *_conv_relu(1, 16, 5, 0),
        nn.MaxPool2d(2),  # (N, 16, 12, 12)
        *_conv_relu(16, 32, 5, 0),
        nn.MaxPool2d(2),  # (N, 32, 4, 4)
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 512),
        nn.ReLU(),  # (N, 512)
    )
    # MNIST training-set statistics (the usual 0.1307 / 0.3081).
    return PaperNet(Normalize([0.1307], [0.3081]), features, nn.Linear(512, num_classes))


def gtsrb_net(num_classes: int = 43) -> PaperNet:
    """The paper's GTSRB network (appendix, Table VII): 6 conv + 2 dense layers, 32x32x3 input.

    Three blocks of two 3x3 convolutions (32, 64, 128 filters, 'same' padding) each followed by 2x2 max
    pooling, then dense 512 and dense ``num_classes``. Ours: dropout 0.5 on the dense 512 layer during
    training; without it the network overfits GTSRB's near-duplicate training images and stays below the
    paper's test accuracy (figures in ``docs/how-it-works.md``).
    """
    features = nn.Sequential(
        *_conv_relu(3, 32, 3, 1),
        *_conv_relu(32, 32, 3, 1),
        nn.MaxPool2d(2),  # (N, 32, 16, 16)
        *_conv_relu(32, 64, 3, 1),
        *_conv_relu(64, 64, 3, 1),
        nn.MaxPool2d(2),  # (N, 64, 8, 8)
        *_conv_relu(64, 128, 3, 1),
        *_conv_relu(128, 128, 3, 1),
        nn.MaxPool2d(2),  # (N, 128, 4, 4)
        nn.Flatten(),
        nn.Linear(128 * 4 * 4, 512),
        nn.ReLU(),  # (N, 512)
    )
    # Per-channel statistics of the 32x32 GTSRB training split.
    return PaperNet(
        Normalize([0.3398, 0.3117, 0.3210], [0.2755, 0.2647, 0.2712]),
        features,
        nn.Linear(512, num_classes),
        dropout=0.5,
    )


@dataclass(frozen=True)
class Architecture:
    """A named reference network: its builder and the input it expects."""

    name: str
    build: Callable[[int], PaperNet]
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int


ARCHITECTURES: dict[str, Architecture] = {
    "mnist": Architecture("mnist", mnist_net, (1, 28, 28), 10),
    "gtsrb": Architecture("gtsrb", gtsrb_net, (3, 32, 32), 43),
}


def build_model(name: str, num_classes: int | None = None) -> PaperNet:
    """Build a reference architecture by name (``"mnist"`` or ``"gtsrb"``), freshly initialised."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; expected one of {sorted(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    return arch.build(arch.num_classes if num_classes is None else num_classes)
