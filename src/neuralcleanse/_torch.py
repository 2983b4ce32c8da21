"""Small torch helpers shared by the modules: device lookup, temporary eval/frozen mode, input layout and
compute precision."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, get_args

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter, both restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with eval_mode(model):
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield model
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


def input_memory_format(model: nn.Module, probe: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` when feeding ``model`` channels-last images is safe and likely faster, else
    ``torch.contiguous_format``.

    On this project's 2-core Xeon, forward and backward through the GTSRB network took 1.14 ms per image with
    channels-last inputs against 1.91 ms (batches of 344; the MNIST network, with one input channel, gains
    little); on a 2-core AMD EPYC 0.56 against 0.66 ms in bfloat16, and no gain in float32. The weights are left
    as they are. A model that cannot take such inputs (``view`` after a convolution, some converted graphs)
    raises or answers differently on the probe batch and keeps the default layout. Other devices keep the
    default: it was not measured there.
    """
    if probe.dim() != 4 or probe.device.type != "cpu":
        return torch.contiguous_format
    try:
        with torch.no_grad(), eval_mode(model):
            expected = model(probe.contiguous())
            got = model(probe.contiguous(memory_format=torch.channels_last))
    except RuntimeError:
        return torch.contiguous_format
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        return torch.contiguous_format
    return torch.channels_last


Precision = Literal["float32", "bfloat16", "auto"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def compute_dtype(model: nn.Module, probe: torch.Tensor, precision: Precision) -> torch.dtype:
    """The dtype the model computes in during a trigger search: ``torch.float32`` or ``torch.bfloat16``
    (autocast: weights and the optimised mask and pattern stay float32; convolutions and matrix products run in
    bfloat16).

    ``"auto"`` picks bfloat16 on a CPU whose oneDNN kernels compute it natively: AMX tiles (Intel Sapphire
    Rapids and later) or AVX512-BF16 instructions (AMD Zen 4 and later, Intel Cooper Lake). Forward and backward
    through the GTSRB network (channels-last batches of 344, 2 cores) took 0.42 ms per image against 1.18 ms in
    float32 on a Xeon with AMX, and 0.56 ms against 1.26 ms on an AMD EPYC with AVX512-BF16 (MNIST network:
    0.032 against 0.102 ms, and 0.071 against 0.102 ms). Elsewhere (CPUs with neither, where bfloat16 is
    emulated and slower; CUDA, not measured yet) it picks float32, and so it does for a model that fails or
    returns non-finite scores under autocast on ``probe``.
    """
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if probe.device.type != "cpu" or not native_cpu_bfloat16():
        return torch.float32
    try:
        with torch.no_grad(), eval_mode(model), autocast(probe.device, torch.bfloat16):
            scores = model(probe)
    except RuntimeError:
        return torch.float32
    if not (isinstance(scores, torch.Tensor) and torch.isfinite(scores).all()):
        return torch.float32
    return torch.bfloat16


def native_cpu_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 matrix products in hardware (AMX tiles or AVX512-BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """Mixed precision in ``dtype`` on ``device``; a no-op for float32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
