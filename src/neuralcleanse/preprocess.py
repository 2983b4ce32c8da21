"""What a model expects as input, stated once, and a wrapper that gives it exactly that.

Neural Cleanse works on images as ``(N, C, H, W)`` floats in [0, 1] with RGB channels. A model trained
elsewhere may expect pixel values in [0, 255] or [-1, 1], mean/std-normalised input, BGR channels, or
channels-last ``(N, H, W, C)`` tensors (Keras, many ONNX exports). :class:`Preprocessing` says which;
:class:`PreprocessedModel` wraps the model so that its callers only ever see [0, 1] NCHW RGB images. The
conversion is part of the model's forward pass, so gradients flow through it to the [0, 1] input.

The steps, in order (each skipped when it is the identity):

1. channel order: ``"BGR"`` reverses the channel axis;
2. value range: ``x -> low + x * (high - low)``;
3. normalisation: ``x -> (x - mean) / std``, per channel; ``mean`` and ``std`` are in the units of the value
   range and in the model's channel order (so a Caffe-style BGR model takes
   ``mean=(103.939, 116.779, 123.68)`` with ``value_range=(0, 255)``, as published);
4. layout: ``"NHWC"`` moves the channel axis last; ``"NHW"`` drops it (single-channel models declared as
   ``(N, H, W)``, common for Keras MNIST models); ``"flat"`` flattens each image to one vector in (C, H, W)
   order, as ``x.flatten(1)`` does (networks of dense layers declared as ``(N, 784)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "CHANNEL_ORDERS",
    "LAYOUTS",
    "PreprocessedModel",
    "Preprocessing",
    "as_options",
    "is_probabilities",
    "log_probabilities",
    "parse_value_range",
]

CHANNEL_ORDERS = ("RGB", "BGR")
LAYOUTS = ("NCHW", "NHWC", "NHW", "flat")

# Names for the value ranges seen in practice, accepted by parse_value_range (CLI: --value-range 0-255).
_NAMED_RANGES = {"0-1": (0.0, 1.0), "0-255": (0.0, 255.0), "-1-1": (-1.0, 1.0)}


def parse_value_range(text: str) -> tuple[float, float]:
    """``"0-1"``, ``"0-255"``, ``"-1-1"`` or ``"LOW,HIGH"`` -> ``(low, high)``."""
    key = text.strip().replace(" ", "").strip("[]()")
    if key in _NAMED_RANGES:
        return _NAMED_RANGES[key]
    if key in {"0,1", "0,255", "-1,1"}:
        return _NAMED_RANGES[key.replace(",", "-")]
    try:
        low, high = (float(v) for v in key.split(","))
    except ValueError:
        raise ValueError(f"value range must be one of {sorted(_NAMED_RANGES)} or 'LOW,HIGH', got {text!r}") from None
    return low, high


def as_options(pre: Preprocessing) -> list[str]:
    """The command-line options that state ``pre`` (none for the scan's own [0, 1] NCHW RGB images). A value
    range without a name is written ``LOW,HIGH`` (:func:`parse_value_range` reads it; the command line's
    ``--value-range`` takes only the named ranges)."""
    named = {v: k for k, v in _NAMED_RANGES.items()}
    out = []
    if pre.value_range != (0.0, 1.0):
        low, high = pre.value_range
        out += ["--value-range", named.get(pre.value_range, f"{low:g},{high:g}")]
    for flag, values in (("--mean", pre.mean), ("--std", pre.std)):
        if values is not None:
            out += [flag, *(f"{v:g}" for v in values)]
    if pre.channel_order != "RGB":
        out += ["--channel-order", pre.channel_order]
    if pre.layout not in (None, "NCHW"):
        out += ["--layout", pre.layout]
    return out


def _float_tuple(name: str, value: Sequence[float] | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | torch.Tensor):
        raise TypeError(f"{name} must be a sequence of floats or None, got {type(value).__name__}")
    out = tuple(float(v) for v in value)
    if not out or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of finite floats, got {value!r}")
    return out


@dataclass(frozen=True)
class Preprocessing:
    """What the wrapped model expects as input (see the module docstring for the order of the steps).

    Attributes:
        value_range: ``(low, high)`` that the model's pixel values span.
        mean: per-channel mean subtracted after scaling (one value applies to every channel), or None.
        std: per-channel standard deviation divided by after subtracting the mean, or None.
        channel_order: ``"RGB"`` or ``"BGR"``.
        layout: ``"NCHW"``, ``"NHWC"``, ``"NHW"``, ``"flat"``, or None to take it from the model file (NCHW when
            the file declares no input shape). :func:`neuralcleanse.loading.load_model` always fills it in.

    Example:
        >>> Preprocessing(value_range=(0, 255), channel_order="BGR", mean=(103.939, 116.779, 123.68))
    """

    value_range: tuple[float, float] = (0.0, 1.0)  # the scan's own convention: no scaling
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str = "RGB"
    layout: str | None = None

    def __post_init__(self) -> None:
        vr = _float_tuple("value_range", self.value_range)
        if vr is None or len(vr) != 2 or not vr[0] < vr[1]:
            raise ValueError(f"value_range must be (low, high) with low < high, got {self.value_range!r}")
        object.__setattr__(self, "value_range", (vr[0], vr[1]))
        object.__setattr__(self, "mean", _float_tuple("mean", self.mean))
        std = _float_tuple("std", self.std)
        if std is not None and any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {self.std!r}")
        object.__setattr__(self, "std", std)
        if (
            self.mean is not None
            and std is not None
            and len(self.mean) != len(std)
            and 1 not in (len(self.mean), len(std))
        ):
            raise ValueError(f"mean and std must have the same length, got {len(self.mean)} and {len(std)}")
        order = str(self.channel_order).upper()
        if order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        object.__setattr__(self, "channel_order", order)
        if self.layout is not None:
            layout = next((name for name in LAYOUTS if name.upper() == str(self.layout).upper()), None)
            if layout is None:
                raise ValueError(f"layout must be one of {LAYOUTS} or None, got {self.layout!r}")
            object.__setattr__(self, "layout", layout)

    @property
    def is_identity(self) -> bool:
        """True when the model takes the scan's own [0, 1] NCHW RGB images unchanged."""
        return (
            self.value_range == (0.0, 1.0)
            and self.mean is None
            and self.std is None
            and self.channel_order == "RGB"
            and self.layout in (None, "NCHW")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "value_range": list(self.value_range),
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "channel_order": self.channel_order,
            "layout": self.layout,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        unknown = set(data) - {"value_range", "mean", "std", "channel_order", "layout"}
        if unknown:
            raise ValueError(f"unknown preprocessing keys {sorted(unknown)}")
        kwargs = dict(data)
        if isinstance(kwargs.get("value_range"), str):
            kwargs["value_range"] = parse_value_range(kwargs["value_range"])
        return cls(**kwargs)


class PreprocessedModel(nn.Module):
    """Wrap ``model`` so that it takes ``(N, C, H, W)`` RGB images in [0, 1].

    The mean and std are buffers, so the wrapper follows ``.to(device)`` with the model. The wrapped model is
    available as ``.model``, the preprocessing as ``.preprocessing``.

    Shape:
        - Input: ``(N, C, H, W)`` in [0, 1].
        - Output: whatever ``model`` returns for the converted input.
    """

    def __init__(self, model: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(preprocessing, Preprocessing):
            raise TypeError(f"preprocessing must be a Preprocessing, got {type(preprocessing).__name__}")
        self.model = model
        self.preprocessing = preprocessing
        p = preprocessing
        self._low, self._high = p.value_range
        self.register_buffer("mean", _channel_buffer(p.mean), persistent=False)
        self.register_buffer("std", _channel_buffer(p.std), persistent=False)

    def convert(self, x: torch.Tensor) -> torch.Tensor:
        """Turn ``(N, C, H, W)`` [0, 1] RGB images into what the wrapped model takes."""
        if x.dim() != 4:
            raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(x.shape)}")
        p = self.preprocessing
        if p.channel_order == "BGR":
            x = x.flip(1)
        if (self._low, self._high) != (0.0, 1.0):
            x = self._low + x * (self._high - self._low)
        mean, std = self.mean, self.std
        if isinstance(mean, torch.Tensor):
            x = x - mean.to(x.dtype)
        if isinstance(std, torch.Tensor):
            x = x / std.to(x.dtype)
        if p.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)  # (N, H, W, C)
        elif p.layout == "NHW":
            if x.shape[1] != 1:
                raise ValueError(f"the model takes single-channel (N, H, W) input; got {x.shape[1]} channels")
            x = x[:, 0]  # (N, H, W)
        elif p.layout == "flat":
            x = x.flatten(1)  # (N, C * H * W)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.convert(x))

    def extra_repr(self) -> str:
        return f"preprocessing={self.preprocessing!r}"


def _channel_buffer(values: tuple[float, ...] | None) -> torch.Tensor | None:
    if values is None:
        return None
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)  # (1, C, 1, 1)


def is_probabilities(outputs: torch.Tensor, atol: float = 1e-3) -> bool:
    """True when every row of ``outputs`` is non-negative and sums to 1 within ``atol``: the model ends in a
    softmax. Raw logits practically never pass this on a batch of several images.

    Shape:
        - outputs: ``(N, K)``.
    """
    if outputs.dim() != 2 or outputs.shape[0] == 0:
        raise ValueError(f"expected outputs of shape (N, K) with N > 0, got {tuple(outputs.shape)}")
    out = outputs.detach().double()
    return bool((out >= -atol).all() and ((out.sum(dim=1) - 1).abs() <= atol).all())


def log_probabilities(outputs: torch.Tensor, outputs_probabilities: bool) -> torch.Tensor:
    """Log-probabilities from a model's outputs: ``log_softmax`` of logits, or the log of probabilities
    when the model already ends in a softmax, so that no second softmax flattens the loss.

    Probabilities are clamped at the smallest normal number of their dtype, so that log(0) stays finite while
    every probability the dtype holds keeps its gradient: a confident network ends far below 1e-12 for every
    label but one on the noisy images a trigger search starts from (float32 holds labels up to about e^-87
    below the top one), and a clamp any higher would leave the search for such a label without a gradient.

    Shape:
        - outputs: ``(N, K)``; returns ``(N, K)``.
    """
    if outputs_probabilities:
        return outputs.clamp_min(torch.finfo(outputs.dtype).tiny).log()
    return torch.log_softmax(outputs, dim=-1)
