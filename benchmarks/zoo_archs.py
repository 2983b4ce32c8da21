"""Architectures of the benchmark zoo beyond the paper's two reference networks.

Every network is a plain ``nn.Module`` that takes ``(N, C, H, W)`` images in [0, 1] and normalises them itself
(the per-channel mean and standard deviation of its training images, stored as buffers), so the scanner sees
it the way it would see a stranger's model. All of them script with ``torch.jit.script``, which is how the zoo
saves the ones the library cannot rebuild from a state dict.

Names (:data:`ARCHS`):

- ``mnist``, ``gtsrb``: the library's reference networks (``neuralcleanse.build_model``);
- ``bn-cnn``: three 3x3 convolutions with batch norm and max pooling, then two dense layers;
- ``resnet``: a small residual network (one basic block per stage, 16/32/64 channels) with global average
  pooling;
- ``mlp``: two hidden dense layers;
- ``linear``: one dense layer, no nonlinearity;
- any of the above but the reference networks with ``-softmax`` appended: the same network ending in a
  softmax, so that it outputs probabilities (trained on its logits, see :func:`logits_of`).
"""

from __future__ import annotations

import torch
from torch import nn

from neuralcleanse import ARCHITECTURES, build_model

__all__ = ["ARCHS", "WithSoftmax", "build", "is_library_arch", "logits_of"]

BASE_ARCHS = ("bn-cnn", "resnet", "mlp", "linear")
ARCHS = (*ARCHITECTURES, *BASE_ARCHS, *(f"{a}-softmax" for a in BASE_ARCHS))
MLP_WIDTHS = (256, 128)  # hidden units: the size of the classic MNIST MLPs, small enough for one core
DENSE_WIDTH = 128  # the bn-cnn's hidden dense layer


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; ``mean`` and ``std`` are buffers, so they are saved with the model."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float().view(1, -1, 1, 1))
        self.register_buffer("std", std.float().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class WithSoftmax(nn.Module):
    """``net`` followed by a softmax over the classes: outputs probabilities, not logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, K) probabilities
        return torch.softmax(self.net(x), dim=1)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (a 1x1 convolution when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]


def bn_cnn(shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    c, h, w = shape
    return nn.Sequential(
        *_conv_bn(c, 16),
        *_conv_bn(16, 32),
        *_conv_bn(32, 64),  # (N, 64, H // 8, W // 8)
        nn.Flatten(),
        nn.Linear(64 * (h // 8) * (w // 8), DENSE_WIDTH),
        nn.ReLU(),
        nn.Linear(DENSE_WIDTH, num_classes),
    )


def resnet(shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(shape[0], 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        BasicBlock(16, 16, 1),
        BasicBlock(16, 32, 2),
        BasicBlock(32, 64, 2),  # (N, 64, H / 4, W / 4)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


def mlp(shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    c, h, w = shape
    first, second = MLP_WIDTHS
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, first),
        nn.ReLU(),
        nn.Linear(first, second),
        nn.ReLU(),
        nn.Linear(second, num_classes),
    )


def linear(shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    c, h, w = shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


_BUILDERS = {"bn-cnn": bn_cnn, "resnet": resnet, "mlp": mlp, "linear": linear}


def is_library_arch(arch: str) -> bool:
    """Whether ``arch`` is one of the library's reference networks (saved with ``save_model``)."""
    return arch in ARCHITECTURES


def build(arch: str, shape: tuple[int, int, int], num_classes: int, images: torch.Tensor) -> nn.Module:
    """A freshly initialised ``arch`` for ``shape`` (C, H, W) images and ``num_classes`` labels; the zoo's own
    networks normalise with the per-channel statistics of ``images`` (N, C, H, W), the training images."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {list(ARCHS)}")
    if is_library_arch(arch):
        if tuple(shape) != ARCHITECTURES[arch].input_shape:
            raise ValueError(f"architecture {arch!r} takes {ARCHITECTURES[arch].input_shape} images, not {shape}")
        return build_model(arch, num_classes)
    base = arch.removesuffix("-softmax")
    mean, std = images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3))
    net = nn.Sequential(Normalize(mean, std), _BUILDERS[base](shape, num_classes))
    return WithSoftmax(net) if arch.endswith("-softmax") else net


def logits_of(model: nn.Module) -> nn.Module:
    """The part of ``model`` that outputs logits: what training optimises with cross-entropy."""
    return model.net if isinstance(model, WithSoftmax) else model
