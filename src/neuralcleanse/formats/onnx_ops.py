"""The ONNX operators :class:`~neuralcleanse.formats.onnx.OnnxModule` runs, each a differentiable torch function.

Every operator is a small function of ``(inputs, attributes, opset)``; omitted optional inputs are None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..store.model_dir import ModelFileError

__all__ = ["ONNX_DTYPES", "ONNX_OPS"]


ONNX_DTYPES = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    16: torch.bfloat16,
}


# The ONNX operators, each a small function of (inputs, attributes, opset); omitted inputs are None.
_OnnxOp = Callable[[list[Any], dict[str, Any], int], Any]


def _ints(t: torch.Tensor | Sequence[int] | None) -> list[int]:
    if t is None:
        return []
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


def _spatial_pads(
    a: Mapping[str, Any], x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> tuple[list[int], list[int]]:
    """(begin, end) padding per spatial axis, from ``pads`` or ``auto_pad``."""
    nd = len(kernel)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            begins.append(small if auto == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
        return begins, ends
    if auto == "VALID":
        return [0] * nd, [0] * nd
    pads = list(a.get("pads", [0] * 2 * nd))
    return pads[:nd], pads[nd:]


def _torch_pad(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    out: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends), strict=True):
        out += [b, e]
    return out


def _op_conv(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    inp, w = x[0], x[1]
    b = x[2] if len(x) > 2 else None
    nd = w.dim() - 2
    kernel = list(a.get("kernel_shape", w.shape[2:]))
    strides, dil = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
    begins, ends = _spatial_pads(a, inp, kernel, strides, dil)
    padding: list[int] | int = begins
    if begins != ends:
        inp, padding = F.pad(inp, _torch_pad(begins, ends)), 0
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    return conv(inp, w, b, strides, padding, dil, int(a.get("group", 1)))


def _op_pool(kind: str) -> _OnnxOp:
    def op(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
        inp = x[0]
        kernel = list(a["kernel_shape"])
        nd = len(kernel)
        strides, dil = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
        ceil = bool(a.get("ceil_mode", 0))
        begins, ends = _spatial_pads(a, inp, kernel, strides, dil)
        symmetric = begins == ends and all(p <= k // 2 for p, k in zip(begins, kernel, strict=True))
        if kind == "max":
            pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
            if not symmetric:
                inp, begins = F.pad(inp, _torch_pad(begins, ends), value=-math.inf), [0] * nd
            return pool(inp, kernel, strides, begins, dil, ceil_mode=ceil)
        if any(d != 1 for d in dil):
            raise ModelFileError(f"AveragePool with dilations {dil} is not supported")
        avg = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
        include = bool(a.get("count_include_pad", 0))
        if symmetric:
            return avg(inp, kernel, strides, begins, ceil_mode=ceil, count_include_pad=include)
        pad = _torch_pad(begins, ends)
        total = avg(F.pad(inp, pad), kernel, strides, 0, ceil_mode=ceil)
        if include:
            return total
        ones = F.pad(torch.ones_like(inp[:1, :1]), pad)
        return total / avg(ones, kernel, strides, 0, ceil_mode=ceil)  # the mean over the real pixels only

    return op


def _op_gemm(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    A, B = x[0], x[1]
    if a.get("transA", 0):
        A = A.t()
    if a.get("transB", 0):
        B = B.t()
    y = float(a.get("alpha", 1.0)) * (A @ B)
    if len(x) > 2 and x[2] is not None:
        y = y + float(a.get("beta", 1.0)) * x[2]
    return y


def _op_div(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    if not x[0].is_floating_point() and not x[1].is_floating_point():
        return torch.div(x[0], x[1], rounding_mode="trunc")
    return x[0] / x[1]


def _op_softmax(log: bool) -> _OnnxOp:
    def op(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
        inp = x[0]
        fn = torch.log_softmax if log else torch.softmax
        if opset >= 13:
            return fn(inp, dim=int(a.get("axis", -1)))
        axis = int(a.get("axis", 1)) % inp.dim()  # before opset 13: over all axes from `axis` on, flattened
        flat = inp.reshape(int(np.prod(inp.shape[:axis])), -1)
        return fn(flat, dim=1).reshape(inp.shape)

    return op


def _op_batchnorm(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    inp, scale, bias, mean, var = x[:5]
    shape = (1, -1) + (1,) * (inp.dim() - 2)  # per channel, axis 1
    factor = scale.view(shape) / torch.sqrt(var.view(shape) + float(a.get("epsilon", 1e-5)))
    return (inp - mean.view(shape)) * factor + bias.view(shape)  # inference mode, differentiable


def _op_flatten(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    inp = x[0]
    axis = int(a.get("axis", 1)) % (inp.dim() + 1)
    return inp.reshape(int(np.prod(inp.shape[:axis])), -1)


def _op_reshape(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    inp = x[0]
    shape = _ints(x[1]) if len(x) > 1 else _ints(a.get("shape"))
    if not a.get("allowzero", 0):
        shape = [inp.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return inp.reshape(shape)


def _op_transpose(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    perm = a.get("perm") or list(reversed(range(x[0].dim())))
    return x[0].permute(*perm)


def _op_clip(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    if opset < 11:
        low, high = a.get("min"), a.get("max")
    else:
        low = x[1] if len(x) > 1 else None
        high = x[2] if len(x) > 2 else None
    return torch.clamp(x[0], low, high)


def _op_pad(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    inp = x[0]
    mode = a.get("mode", "constant")
    if opset < 11:
        pads, value = list(a.get("pads", [])), float(a.get("value", 0.0))
        axes = list(range(inp.dim()))
    else:
        pads = _ints(x[1])
        value = float(x[2].item()) if len(x) > 2 and x[2] is not None and x[2].numel() else 0.0
        has_axes = len(x) > 3 and x[3] is not None
        axes = [ax % inp.dim() for ax in _ints(x[3])] if has_axes else list(range(inp.dim()))
    begins, ends = [0] * inp.dim(), [0] * inp.dim()
    for i, ax in enumerate(axes):
        begins[ax], ends[ax] = pads[i], pads[i + len(axes)]
    torch_pad = _torch_pad(begins, ends)
    while len(torch_pad) > 2 and torch_pad[-2:] == [0, 0]:
        torch_pad = torch_pad[:-2]  # pads of the leading (batch, channel) axes are zero
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    if torch_mode == "constant":
        return F.pad(inp, torch_pad, value=value)
    return F.pad(inp, torch_pad, mode=torch_mode)


def _axes(x: list[Any], a: dict[str, Any], index: int = 1) -> list[int] | None:
    if "axes" in a:
        return list(a["axes"])
    if len(x) > index and x[index] is not None:
        return _ints(x[index])
    return None


def _op_unsqueeze(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    out = x[0]
    axes = _axes(x, a) or []
    rank = out.dim() + len(axes)
    for ax in sorted(ax % rank for ax in axes):
        out = out.unsqueeze(ax)
    return out


def _op_squeeze(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    axes = _axes(x, a)
    if axes is None:
        return x[0].squeeze()
    return x[0].squeeze(tuple(ax % x[0].dim() for ax in axes))


def _op_gather(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    data, idx = x[0], x[1].long()
    axis = int(a.get("axis", 0)) % data.dim()
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    out = data.index_select(axis, idx.reshape(-1).to(data.device))
    return out.reshape((*data.shape[:axis], *idx.shape, *data.shape[axis + 1 :]))


def _op_reduce_mean(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    axes = _axes(x, a)
    keep = bool(a.get("keepdims", 1))
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return x[0]
        return x[0].mean(dim=tuple(range(x[0].dim())), keepdim=keep)
    return x[0].mean(dim=tuple(axes), keepdim=keep)


def _op_shape(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    shape = list(x[0].shape)[a.get("start", 0) : a.get("end")]
    return torch.tensor(shape, dtype=torch.int64, device=x[0].device)


def _op_slice(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    data = x[0]
    if opset < 10:
        starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
    else:
        starts, ends = _ints(x[1]), _ints(x[2])
        axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else None
        steps = _ints(x[4]) if len(x) > 4 and x[4] is not None else None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = list(steps) if steps is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= data.dim()
        lo, hi, st = slice(start, end, step).indices(data.shape[axis])  # ONNX clamps like Python
        if st > 0:
            data = data[(slice(None),) * axis + (slice(lo, hi, st),)]
        else:
            data = data.index_select(axis, torch.arange(lo, hi, st, device=data.device))
    return data


def _op_constant_of_shape(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    value = a.get("value", torch.zeros(1))
    return torch.full(_ints(x[0]), value.reshape(-1)[0].item(), dtype=value.dtype, device=x[0].device)


def _op_expand(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    return torch.broadcast_to(x[0], torch.broadcast_shapes(x[0].shape, tuple(_ints(x[1]))))


def _op_cast(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    return x[0].to(ONNX_DTYPES[int(a["to"])])


def _elementwise(fn: Callable[..., torch.Tensor]) -> _OnnxOp:
    return lambda x, a, opset: fn(*x)


def _variadic(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> _OnnxOp:
    def op(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
        out = x[0]
        for t in x[1:]:
            out = fn(out, t)
        return out

    return op


ONNX_OPS: dict[str, _OnnxOp] = {
    "Conv": _op_conv,
    "Gemm": _op_gemm,
    "MatMul": _elementwise(torch.matmul),
    "Add": _elementwise(torch.add),
    "Sub": _elementwise(torch.sub),
    "Mul": _elementwise(torch.mul),
    "Div": _op_div,
    "Pow": _elementwise(torch.pow),
    "Sum": _variadic(torch.add),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Neg": _elementwise(torch.neg),
    "Abs": _elementwise(torch.abs),
    "Exp": _elementwise(torch.exp),
    "Log": _elementwise(torch.log),
    "Sqrt": _elementwise(torch.sqrt),
    "Reciprocal": _elementwise(torch.reciprocal),
    "Erf": _elementwise(torch.erf),
    "Relu": _elementwise(torch.relu),
    "LeakyRelu": lambda x, a, opset: F.leaky_relu(x[0], float(a.get("alpha", 0.01))),
    "PRelu": lambda x, a, opset: torch.where(x[0] >= 0, x[0], x[1] * x[0]),
    "Elu": lambda x, a, opset: F.elu(x[0], float(a.get("alpha", 1.0))),
    "Sigmoid": _elementwise(torch.sigmoid),
    "HardSigmoid": lambda x, a, opset: torch.clamp(
        float(a.get("alpha", 0.2)) * x[0] + float(a.get("beta", 0.5)), 0.0, 1.0
    ),
    "HardSwish": _elementwise(F.hardswish),
    "Tanh": _elementwise(torch.tanh),
    "Softmax": _op_softmax(log=False),
    "LogSoftmax": _op_softmax(log=True),
    "MaxPool": _op_pool("max"),
    "AveragePool": _op_pool("avg"),
    "GlobalAveragePool": lambda x, a, opset: x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda x, a, opset: x[0].amax(dim=tuple(range(2, x[0].dim())), keepdim=True),
    "BatchNormalization": _op_batchnorm,
    "Flatten": _op_flatten,
    "Reshape": _op_reshape,
    "Transpose": _op_transpose,
    "Concat": lambda x, a, opset: torch.cat([t for t in x if t is not None], dim=int(a["axis"])),
    "Identity": lambda x, a, opset: x[0],
    "Dropout": lambda x, a, opset: x[0],
    "Clip": _op_clip,
    "Pad": _op_pad,
    "Constant": lambda x, a, opset: None,  # folded into a buffer when the module is built
    "Shape": _op_shape,
    "Gather": _op_gather,
    "Unsqueeze": _op_unsqueeze,
    "Squeeze": _op_squeeze,
    "Cast": _op_cast,
    "Slice": _op_slice,
    "ConstantOfShape": _op_constant_of_shape,
    "Expand": _op_expand,
    "Equal": _elementwise(torch.eq),
    "Where": _elementwise(torch.where),
    "ReduceMean": _op_reduce_mean,
}
