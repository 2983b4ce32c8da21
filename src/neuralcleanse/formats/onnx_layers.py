"""ONNX nodes with constant weights as torch layers: ``Gemm`` and ``MatMul`` as ``nn.Linear``, 2-D ``Conv`` as
``nn.Conv2d``.

Pruning, the input filter and neuron stimulation find a model's layers by their module type and read them through
hooks (:mod:`neuralcleanse.mitigate.layers`); a graph run op by op has no modules to hook. A node whose weight (and
bias) are constants that no other node reads becomes a module computing exactly what the operator does, so an ONNX
model has the same layers to read and silence as the PyTorch network it was exported from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .onnx_ops import ONNX_OPS

__all__ = ["OnnxConv2d", "weight_layer"]


class OnnxConv2d(nn.Conv2d):
    """An ONNX ``Conv`` over images, computed by the operator itself. ``stride``, ``dilation`` and ``padding`` read
    as the node's; padding that ``nn.Conv2d`` cannot state (``auto_pad``, uneven ``pads``) reads as 0 and is kept
    in ``attrs``, which the computation follows."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, attrs: Mapping[str, Any], opset: int) -> None:
        groups = int(attrs.get("group", 1))
        out_channels, in_per_group, height, width = weight.shape
        stated = attrs.get("auto_pad", "NOTSET") == "NOTSET"  # otherwise the padding depends on the input's size
        top, left, bottom, right = attrs.get("pads", (0, 0, 0, 0)) if stated else (0, 0, 0, 0)
        super().__init__(
            in_per_group * groups,
            out_channels,
            (height, width),
            stride=tuple(attrs.get("strides", (1, 1))),
            padding=(top, left) if (top, left) == (bottom, right) else 0,
            dilation=tuple(attrs.get("dilations", (1, 1))),
            groups=groups,
            bias=bias is not None,
            device="meta",
        )
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)
        self.attrs, self.opset = dict(attrs), opset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ONNX_OPS["Conv"]([x, self.weight, self.bias], self.attrs, self.opset)


def weight_layer(
    op: str, attrs: Mapping[str, Any], opset: int, constants: Sequence[torch.Tensor | None]
) -> nn.Module | None:
    """The module that computes node ``op`` from its first input, or None when the node is not one this module
    rebuilds. ``constants`` are the node's other inputs, each a float constant that no other node reads (None: an
    optional input left out); a node with any other kind of input is not rebuilt."""
    weight, bias = (list(constants) + [None, None])[:2]
    if weight is None:
        return None
    if op == "Gemm" and not attrs.get("transA", 0) and weight.dim() == 2:  # Y = alpha A B' + beta C, B' = B or B^T
        weight = float(attrs.get("alpha", 1.0)) * (weight if attrs.get("transB", 0) else weight.T)  # (out, in)
        if bias is not None and bias.numel() != weight.shape[0]:
            return None  # a C broadcast over the batch too
        return _linear(weight, None if bias is None else float(attrs.get("beta", 1.0)) * bias.flatten())
    if op == "MatMul" and weight.dim() == 2 and len(constants) == 1:
        return _linear(weight.T, None)
    if op == "Conv" and weight.dim() == 4:
        return OnnxConv2d(weight, bias, attrs, opset)
    return None


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = nn.Parameter(weight.contiguous())
    if bias is not None:
        layer.bias = nn.Parameter(bias)
    return layer
