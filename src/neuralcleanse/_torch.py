"""Small torch helpers shared by the modules: device lookup, temporary eval/frozen mode, input layout and
compute precision."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, get_args

import torch
from torch import nn

#: What a model's forward pass raises on input it does not take: torch's own errors, Python's from hand-written
#: checks, and TorchScript's, whose interpreter re-raises a scripted ``raise`` as ``torch.jit.Error`` (not a
#: RuntimeError).
MODEL_ERRORS: tuple[type[Exception], ...] = (RuntimeError, ValueError, IndexError, TypeError, KeyError, torch.jit.Error)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def holds_script(model: nn.Module) -> bool:
    """Whether ``model`` is or holds a TorchScript module: such modules run no Python hooks and do not pickle."""
    return any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())


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

    On CPU, channels-last input made forward and backward through the GTSRB network faster, or no slower, on
    every machine measured; a one-channel network gains little (timings in ``docs/how-it-works.md``). The
    weights are left as they are. A model that cannot take such inputs (``view`` after a convolution, some
    converted graphs) raises or answers differently on the probe batch and keeps the default layout. Other
    devices keep the default: the gain was not measured there.
    """
    if probe.dim() != 4 or probe.device.type != "cpu":
        return torch.contiguous_format
    try:
        with torch.no_grad(), eval_mode(model):
            expected = model(probe.clone())  # copies: a model may change its input in place
            got = model(probe.clone(memory_format=torch.channels_last))
    except MODEL_ERRORS:
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

    ``"auto"`` picks bfloat16 on a CPU whose oneDNN kernels compute it natively (:func:`native_cpu_bfloat16`),
    where it runs faster than float32 (measurements in ``docs/how-it-works.md``). Elsewhere it picks float32:
    CPUs without those instructions emulate bfloat16, which is slower, and CUDA has not been measured. It also
    picks float32 for a model that fails or returns non-finite scores under autocast on ``probe``.
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
            scores = model(probe.clone())
    except MODEL_ERRORS:
        return torch.float32
    if not (isinstance(scores, torch.Tensor) and torch.isfinite(scores).all()):
        return torch.float32
    return torch.bfloat16


def native_cpu_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 matrix products in hardware: Intel's Advanced Matrix Extensions tiles
    or AVX512-BF16 instructions."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """Mixed precision in ``dtype`` on ``device``; a no-op for float32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
