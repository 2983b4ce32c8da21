"""Keras layers rebuilt as torch modules from their config and weights (the layers in :data:`KERAS_LAYERS`).

Each module takes and returns tensors in the Keras model's own layout (channels-last unless the layer says
``data_format="channels_first"``) and reproduces TensorFlow's ``"same"`` padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from .keras_config import UnsupportedKerasLayer, activation_name

__all__ = ["KERAS_LAYERS", "keras_layer"]


_KERAS_IDENTITY = {  # at inference: no noise, no dropout
    "InputLayer",
    "Dropout",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
}


def _keras_activation(act: Any, where: str) -> Callable[[torch.Tensor], torch.Tensor]:
    name = activation_name(act)
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "linear": lambda x: x,
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "softmax": lambda x: torch.softmax(x, dim=-1),
        "elu": F.elu,
        "selu": F.selu,
        "softplus": F.softplus,
        "softsign": F.softsign,
        "swish": F.silu,
        "silu": F.silu,
        "relu6": F.relu6,
        "exponential": torch.exp,
    }
    if name not in fns:
        raise UnsupportedKerasLayer(f"activation {act!r} in {where}")
    return fns[name]


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    return int(v[0]), int(v[1])


def _same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow 'same' padding: (before, after), the larger half after."""
    total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


class _KerasLayer(nn.Module):
    """A Keras layer rebuilt in torch; takes and returns tensors in the Keras model's own layout."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.channels_last = config.get("data_format", "channels_last") != "channels_first"

    def to_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2) if self.channels_last else x

    def from_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1) if self.channels_last else x

    def same_pad(
        self,
        x: torch.Tensor,
        kernel: Sequence[int],
        strides: Sequence[int],
        dilation: Sequence[int] = (1, 1),
        value: float = 0.0,
    ) -> torch.Tensor:  # x: (N, C, H, W)
        (t, b), (left, r) = (_same_pads(x.shape[2 + i], kernel[i], strides[i], dilation[i]) for i in range(2))
        return F.pad(x, (left, r, t, b), value=value)


class _KConv2D(_KerasLayer):
    def __init__(self, c: Mapping[str, Any], w: list[np.ndarray]) -> None:
        super().__init__(c)
        kernel = torch.from_numpy(np.array(w[0], dtype=np.float32))  # (kh, kw, in / groups, out)
        self.conv = skip_init(
            nn.Conv2d,
            kernel.shape[2] * int(c.get("groups", 1)),
            kernel.shape[3],
            tuple(kernel.shape[:2]),
            stride=_pair(c.get("strides", 1)),
            dilation=_pair(c.get("dilation_rate", 1)),
            groups=int(c.get("groups", 1)),
            bias=bool(c.get("use_bias", True)),
        )
        self.conv.weight.data.copy_(kernel.permute(3, 2, 0, 1))  # (out, in / groups, kh, kw)
        if self.conv.bias is not None:
            self.conv.bias.data.copy_(torch.from_numpy(np.array(w[1], dtype=np.float32)))
        self.same = c.get("padding", "valid") == "same"
        self.activation = _keras_activation(c.get("activation"), f"Conv2D {c.get('name')!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_nchw(x)
        if self.same:
            x = self.same_pad(x, self.conv.kernel_size, self.conv.stride, self.conv.dilation)
        return self.activation(self.from_nchw(self.conv(x)))


class _KDense(nn.Module):
    def __init__(self, c: Mapping[str, Any], w: list[np.ndarray]) -> None:
        super().__init__()
        kernel = torch.from_numpy(np.array(w[0], dtype=np.float32))  # (in, out)
        bias = bool(c.get("use_bias", True))
        self.linear = skip_init(nn.Linear, kernel.shape[0], kernel.shape[1], bias=bias)
        self.linear.weight.data.copy_(kernel.t())
        if self.linear.bias is not None:
            self.linear.bias.data.copy_(torch.from_numpy(np.array(w[1], dtype=np.float32)))
        self.activation = _keras_activation(c.get("activation"), f"Dense {c.get('name')!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


class _KPool2D(_KerasLayer):
    def __init__(self, c: Mapping[str, Any], kind: str) -> None:
        super().__init__(c)
        self.kind = kind
        self.kernel = _pair(c.get("pool_size", 2))
        self.strides = _pair(c.get("strides") or self.kernel)  # Keras: strides default to the pool size
        self.same = c.get("padding", "valid") == "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_nchw(x)
        if self.kind == "max":
            if self.same:
                x = self.same_pad(x, self.kernel, self.strides, value=-math.inf)
            return self.from_nchw(F.max_pool2d(x, self.kernel, self.strides))
        if not self.same:
            return self.from_nchw(F.avg_pool2d(x, self.kernel, self.strides))
        total = F.avg_pool2d(self.same_pad(x, self.kernel, self.strides), self.kernel, self.strides)
        ones = self.same_pad(torch.ones_like(x[:1, :1]), self.kernel, self.strides)
        count = F.avg_pool2d(ones, self.kernel, self.strides)
        return self.from_nchw(total / count)  # TensorFlow averages over the real pixels only


class _KGlobalPool2D(_KerasLayer):
    def __init__(self, c: Mapping[str, Any], kind: str) -> None:
        super().__init__(c)
        self.kind, self.keepdims = kind, bool(c.get("keepdims", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (1, 2) if self.channels_last else (2, 3)
        if self.kind == "max":
            return x.amax(dim=dims, keepdim=self.keepdims)
        return x.mean(dim=dims, keepdim=self.keepdims)


class _KFlatten(_KerasLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last and x.dim() > 2:
            x = x.permute(0, *range(2, x.dim()), 1)  # Keras flattens channels_first input channels-last
        return x.reshape(x.shape[0], -1)


class _KZeroPadding2D(_KerasLayer):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__(c)
        p = c.get("padding", 1)
        if isinstance(p, int):
            p = ((p, p), (p, p))
        elif isinstance(p[0], int):
            p = ((p[0], p[0]), (p[1], p[1]))
        (self.top, self.bottom), (self.left, self.right) = (_pair(v) for v in p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_nchw(x)
        return self.from_nchw(F.pad(x, (self.left, self.right, self.top, self.bottom)))


class _KBatchNorm(nn.Module):
    moving_mean: torch.Tensor
    moving_variance: torch.Tensor

    def __init__(self, c: Mapping[str, Any], w: list[np.ndarray]) -> None:
        super().__init__()
        axis = c.get("axis", -1)
        self.axis = int(axis[0] if isinstance(axis, list) else axis)
        self.eps = float(c.get("epsilon", 1e-3))  # Keras's default
        arrays = [torch.from_numpy(np.array(a, dtype=np.float32)) for a in w]
        n = arrays[-1].shape[0]
        gamma = arrays.pop(0) if c.get("scale", True) else torch.ones(n)
        beta = arrays.pop(0) if c.get("center", True) else torch.zeros(n)
        self.gamma, self.beta = nn.Parameter(gamma), nn.Parameter(beta)
        self.register_buffer("moving_mean", arrays[0])
        self.register_buffer("moving_variance", arrays[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.axis] = -1

        def b(t: torch.Tensor) -> torch.Tensor:
            return t.view(shape)

        scale = b(self.gamma) / torch.sqrt(b(self.moving_variance) + self.eps)
        return (x - b(self.moving_mean)) * scale + b(self.beta)


class _KFunction(nn.Module):
    """A weightless Keras layer: a function of its input(s)."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


def _keras_relu(c: Mapping[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    max_value, slope = c.get("max_value"), float(c.get("negative_slope", 0.0))
    threshold = float(c.get("threshold", 0.0))

    def relu(x: torch.Tensor) -> torch.Tensor:
        y = torch.where(x >= threshold, x, slope * (x - threshold))
        return y if max_value is None else y.clamp(max=float(max_value))

    return relu


def keras_layer(cls: str, c: Mapping[str, Any], w: list[np.ndarray]) -> nn.Module:
    """The torch module for one Keras layer config ``c`` with weights ``w``."""
    if cls == "Conv2D":
        return _KConv2D(c, w)
    if cls == "Dense":
        return _KDense(c, w)
    if cls in ("MaxPooling2D", "MaxPool2D"):
        return _KPool2D(c, "max")
    if cls in ("AveragePooling2D", "AvgPool2D"):
        return _KPool2D(c, "avg")
    if cls in ("GlobalAveragePooling2D", "GlobalAvgPool2D"):
        return _KGlobalPool2D(c, "avg")
    if cls in ("GlobalMaxPooling2D", "GlobalMaxPool2D"):
        return _KGlobalPool2D(c, "max")
    if cls == "Flatten":
        return _KFlatten(c)
    if cls == "ZeroPadding2D":
        return _KZeroPadding2D(c)
    if cls == "BatchNormalization":
        return _KBatchNorm(c, w)
    if cls in _KERAS_IDENTITY:
        return _KFunction(lambda x: x)
    if cls == "Activation":
        return _KFunction(_keras_activation(c.get("activation"), f"Activation {c.get('name')!r}"))
    if cls == "ReLU":
        return _KFunction(_keras_relu(c))
    if cls == "LeakyReLU":
        slope = float(c.get("negative_slope", c.get("alpha", 0.3)))  # Keras's default slope
        return _KFunction(lambda x: F.leaky_relu(x, slope))
    if cls == "Softmax":
        axis = c.get("axis", -1)
        axis = int(axis[0] if isinstance(axis, list) else axis)
        return _KFunction(lambda x: torch.softmax(x, dim=axis))
    if cls == "Rescaling":
        scale, offset = torch.tensor(c.get("scale", 1.0)), torch.tensor(c.get("offset", 0.0))
        return _KFunction(lambda x: x * scale.to(x) + offset.to(x))
    if cls == "Reshape":
        target = [int(v) for v in c["target_shape"]]
        return _KFunction(lambda x: x.reshape(x.shape[0], *target))
    if cls == "Permute":
        dims = [int(v) for v in c["dims"]]
        return _KFunction(lambda x: x.permute(0, *dims))
    if cls == "Add":
        return _KFunction(lambda *xs: _fold(torch.add, xs))
    if cls == "Multiply":
        return _KFunction(lambda *xs: _fold(torch.mul, xs))
    if cls == "Maximum":
        return _KFunction(lambda *xs: _fold(torch.maximum, xs))
    if cls == "Average":
        return _KFunction(lambda *xs: _fold(torch.add, xs) / len(xs))
    if cls == "Concatenate":
        axis = int(c.get("axis", -1))
        return _KFunction(lambda *xs: torch.cat(xs, dim=axis))
    raise UnsupportedKerasLayer(f"layer type {cls} ({c.get('name')!r})")


def _fold(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out


KERAS_LAYERS = (
    "Conv2D",
    "Dense",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "Flatten",
    "ZeroPadding2D",
    "BatchNormalization",
    "InputLayer",
    "Dropout",
    "SpatialDropout2D",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "Softmax",
    "Rescaling",
    "Reshape",
    "Permute",
    "Add",
    "Multiply",
    "Maximum",
    "Average",
    "Concatenate",
)
