"""What a format's loader hands back to :func:`~neuralcleanse.loading.load_model`, and the helpers loaders share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["RawModel", "first_line", "layout_from_dims"]


@dataclass
class RawModel:
    """What a format's loader found, before preprocessing is applied."""

    model: nn.Module
    layout: str | None = None  # declared by the file
    input_shape: tuple[int, int, int] | None = None
    probabilities: bool | None = None  # True when the graph ends in a softmax; None when it does not say
    num_classes: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    triggers: list[Any] = field(default_factory=list)
    movable: bool = True  # False for models whose device the loader cannot move (the Keras fallback)
    declared_shape: tuple[int | None, ...] | None = None  # the file's own input shape, for messages


def layout_from_dims(
    dims: tuple[int | None, ...] | None, channels_last_hint: bool | None
) -> tuple[str | None, tuple[int, int, int] | None]:
    """(layout, (C, H, W)) from a declared input shape ``(N, ...)``; None where it cannot be told (a flat input
    ``(N, F)`` has a layout but no image shape)."""
    if dims is None:
        return None, None
    if len(dims) == 2:  # (N, F): dense layers on flattened images, whose (C, H, W) the data will tell
        return "flat", None
    if len(dims) == 3:  # (N, H, W): single-channel images without a channel axis
        h, w = dims[1], dims[2]
        return "NHW", (1, h, w) if h and w else None
    if len(dims) != 4:
        return None, None
    channel_like = (1, 2, 3, 4)
    if channels_last_hint is None:
        first, last = dims[1] in channel_like, dims[3] in channel_like
        if first == last:
            return None, None  # ambiguous or unknown: the user states it; NCHW by default
        channels_last_hint = last
    c, h, w = (dims[3], dims[1], dims[2]) if channels_last_hint else (dims[1], dims[2], dims[3])
    layout = "NHWC" if channels_last_hint else "NCHW"
    return layout, (c, h, w) if c and h and w else None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, with its type when the message alone says little."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines[0]) >= 20 else f"{type(exc).__name__}: {lines[0]}"
