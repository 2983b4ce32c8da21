"""The layer the mitigations work on: naming it, recording its activations, and silencing some of its neurons.

A layer is named by a string. ``"features"`` (any name from ``dict(model.named_modules())``) means that
module's *output*; ``"head:input"`` means the *input* of module ``head``. Two names stand for a layer found in
the model:

- ``"penultimate"``: the second-to-last layer, the one the paper's filter and pruning use (Section VI): for a
  :class:`~neuralcleanse.models.PaperNet` ``"features"`` (its last ReLU, 512 neurons), for any other model the
  input of its last :class:`torch.nn.Linear` (the last one registered), i.e. what the output layer reads;
- ``"conv-output"``: the flattened output of the convolutional part, i.e. the input of the first
  :class:`torch.nn.Linear` registered after the last :class:`torch.nn.Conv2d` (a PaperNet's
  ``"features.7:input"``); each neuron there is one channel at one position;
- ``"last-conv"``: the output of the last :class:`torch.nn.Conv2d` (the last one registered), whose channels are
  its neurons.

A *neuron* is one unit of a ``(N, D)`` activation, or one channel of an ``(N, C, H, W)`` one (its spatial mean
stands for its activation, as in channel pruning).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

import torch
from torch import nn

from .._torch import holds_script
from ..formats.unscript import unscripted
from ..metrics import stamped_batches
from ..models import PaperNet
from ..triggers import Trigger

__all__ = [
    "CONV_OUTPUT",
    "LAST_CONV",
    "PENULTIMATE",
    "Layer",
    "NeuronMask",
    "capture",
    "conv_output_layer",
    "forward_with_activations",
    "hookable",
    "last_conv_layer",
    "penultimate_layer",
    "record_activations",
    "resolve_layer",
    "silence_neurons",
    "trigger_ranking",
]

PENULTIMATE = "penultimate"
LAST_CONV = "last-conv"
CONV_OUTPUT = "conv-output"
_INPUT = ":input"
_BATCH = 512  # images per forward pass, as in metrics.py

# Modules that map a zero pre-activation to zero, element-wise: a neuron whose producing Linear/Conv row is
# zero stays zero through them.
_ZERO_PRESERVING = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Hardtanh,
    nn.Dropout,
    nn.Identity,
)


@dataclass(frozen=True)
class Layer:
    """A layer of a model, resolved: ``spec`` is its canonical name (``"features"``, ``"head:input"``)."""

    spec: str
    module_name: str
    module: nn.Module
    side: Literal["input", "output"]


def penultimate_layer(model: nn.Module) -> str:
    """The name of ``model``'s second-to-last layer: ``"features"`` for a PaperNet, else the input of the last
    ``nn.Linear`` (e.g. ``"fc2:input"``).

    Raises:
        ValueError: the model has no ``nn.Linear``; name a layer.
    """
    if isinstance(model, PaperNet):
        return "features"
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"cannot find the penultimate layer of this {type(model).__name__}: it has no torch.nn.Linear "
            "module; name the layer to use (a module name, or NAME:input for a module's input)"
        )
    return linears[-1] + _INPUT


def last_conv_layer(model: nn.Module) -> str | None:
    """The name of ``model``'s last ``nn.Conv2d`` (e.g. ``"features.3"`` for a PaperNet), None without one."""
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def conv_output_layer(model: nn.Module) -> str | None:
    """The input of the first ``nn.Linear`` after the last ``nn.Conv2d`` (``"features.7:input"`` for a
    PaperNet); None when the model has no such pair."""
    modules = list(model.named_modules())
    convs = [i for i, (_, m) in enumerate(modules) if isinstance(m, nn.Conv2d)]
    if not convs:
        return None
    linears = [name for name, m in modules[convs[-1] + 1 :] if isinstance(m, nn.Linear)]
    return linears[0] + _INPUT if linears else None


def resolve_layer(model: nn.Module, layer: str | None = None) -> Layer:
    """Resolve a layer name (see the module docstring; None is ``"penultimate"``) to the module to hook."""
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer must be a module name or None, got {type(layer).__name__}")
    if holds_script(model):
        raise ValueError(
            "a layer's activations are recorded through PyTorch hooks, which a TorchScript model does not run: read "
            "it through mitigate.layers.hookable, or load the same network as a PyTorch module"
        )
    if layer in (LAST_CONV, CONV_OUTPUT):
        found = last_conv_layer(model) if layer == LAST_CONV else conv_output_layer(model)
        if found is None:
            raise ValueError(
                f"layer {layer!r}: this {type(model).__name__} has no torch.nn.Conv2d module"
                + ("" if layer == LAST_CONV else " followed by a torch.nn.Linear")
            )
        spec = found
    else:
        spec = penultimate_layer(model) if layer in (None, PENULTIMATE) else str(layer)
    name, side = (spec[: -len(_INPUT)], "input") if spec.endswith(_INPUT) else (spec, "output")
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        known = [n for n in modules if n]
        shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        raise ValueError(f"layer {spec!r}: the model has no module named {name!r} (its modules: {shown})")
    return Layer(spec, name, modules[name], "input" if side == "input" else "output")


def hookable(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """``model`` itself, or for a TorchScript model (whose modules take no Python hooks) the same network re-read
    through its ONNX export (:func:`~neuralcleanse.formats.unscript.unscripted`, checked on ``images``).

    Raises:
        ValueError: a TorchScript model that cannot be re-read so.
    """
    layered = unscripted(model, images)
    if layered is None:
        raise ValueError(
            "pruning and the input filter record a layer's activations through PyTorch hooks, which a TorchScript "
            "model does not run, and this one cannot be re-read through ONNX (is neuralcleanse[onnx] installed?); "
            "mitigate it by unlearning, or load the same network as a PyTorch module"
        )
    return layered


def _per_neuron(activation: torch.Tensor) -> torch.Tensor:
    """(N, D) from (N, D) or (N, C, ...): channels stand for neurons, their spatial mean for their value."""
    if activation.dim() < 2:
        raise ValueError(f"the layer's activation must be (N, D) or (N, C, ...), got {tuple(activation.shape)}")
    return activation if activation.dim() == 2 else activation.flatten(2).mean(dim=2)


@contextmanager
def capture(layer: Layer) -> Iterator[list[torch.Tensor]]:
    """Record the layer's per-neuron activations ``(N, D)`` of every forward pass into the yielded list."""
    store: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        act = inputs[0] if layer.side == "input" else output
        if not isinstance(act, torch.Tensor):
            raise ValueError(f"layer {layer.spec!r} does not produce a single tensor; choose another layer")
        store.append(_per_neuron(act.detach()))

    try:
        handle = layer.module.register_forward_hook(hook)
    except RuntimeError as exc:  # TorchScript modules take no Python hooks
        raise ValueError(f"cannot observe layer {layer.spec!r} of this model ({exc})") from None
    try:
        yield store
    finally:
        handle.remove()


def forward_with_activations(model: nn.Module, layer: Layer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass returning ``(outputs, activations)``: (N, K) and the layer's (N, D)."""
    with capture(layer) as store:
        outputs = model(images)
    if len(store) != 1:
        raise ValueError(
            f"layer {layer.spec!r} ran {len(store)} times in one forward pass; choose a layer that runs once"
        )
    return outputs, store[0]


@torch.no_grad()
def record_activations(
    model: nn.Module,
    layer: Layer,
    images: torch.Tensor,
    trigger: Trigger | None = None,
    batch_size: int = _BATCH,
) -> torch.Tensor:
    """The layer's per-neuron activations (N, D) on ``images`` (stamped with ``trigger`` when given), on CPU.

    The model runs in eval mode (its mode is restored) on its own device.
    """
    batches = stamped_batches(model, images, batch_size, trigger)
    return torch.cat([forward_with_activations(model, layer, batch)[1].float().cpu() for batch in batches])


def trigger_ranking(
    model: nn.Module, layer: Layer, images: torch.Tensor, trigger: Trigger, clean: torch.Tensor | None = None
) -> torch.Tensor:
    """Neurons (D,) ordered by how much ``trigger`` raises their mean activation on ``images``, most first
    (paper, Section VI-A: the neurons the reversed trigger activates most); ``clean``: the images' own (N, D)
    activations, when already recorded."""
    clean = record_activations(model, layer, images) if clean is None else clean  # (N, D)
    stamped = record_activations(model, layer, images, trigger)  # (N, D)
    return torch.argsort((stamped - clean).mean(dim=0), descending=True, stable=True)


class NeuronMask:
    """A forward hook (or pre-hook, for an input) zeroing the neurons ``drop`` of the layer's activation.

    ``drop`` may be changed between forward passes (pruning sweeps set it step by step).
    """

    def __init__(self, layer: Layer, drop: Sequence[int] = ()) -> None:
        self.layer = layer
        self.drop = torch.as_tensor(list(drop), dtype=torch.int64)

    def _apply(self, act: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(act.shape[1], device=act.device, dtype=act.dtype)
        keep[self.drop.to(act.device)] = 0
        return act * keep.view((1, -1) + (1,) * (act.dim() - 2))  # broadcast over batch and spatial axes

    def attach(self) -> Callable[[], None]:
        """Register the hook on the layer's module; returns the function removing it."""
        if self.layer.side == "input":

            def pre(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
                return (self._apply(inputs[0]), *inputs[1:])

            handle = self.layer.module.register_forward_pre_hook(pre)
        else:

            def post(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
                return self._apply(output)

            handle = self.layer.module.register_forward_hook(post)
        return handle.remove


def _producer(layer: Layer) -> tuple[nn.Linear | nn.Conv2d, Literal["rows", "columns"]] | None:
    """The weight layer whose rows (outputs) or columns (inputs) carry the layer's neurons, if any."""
    module = layer.module
    if layer.side == "input":
        return (module, "columns") if _plain_weight_layer(module) else None
    if _plain_weight_layer(module):
        return module, "rows"
    if isinstance(module, nn.Sequential):
        for child in reversed(list(module.children())):
            if _plain_weight_layer(child):
                return child, "rows"
            if not isinstance(child, _ZERO_PRESERVING):
                return None
    return None


def _plain_weight_layer(module: nn.Module) -> TypeGuard[nn.Linear | nn.Conv2d]:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


@torch.no_grad()
def silence_neurons(model: nn.Module, layer: Layer, neurons: Sequence[int]) -> bool:
    """Make ``neurons`` of ``layer`` output zero, in place. Returns True when the change lives in the weights.

    - The output of a Linear/Conv2d, or of an ``nn.Sequential`` ending in one followed only by element-wise
      activations with f(0) = 0 (a PaperNet's ``features``): the producing rows of the weight and their bias
      are zeroed, so ``save_model`` and ``state_dict`` carry the change.
    - The input of a Linear/Conv2d (the default for non-PaperNet models): the columns reading those neurons
      are zeroed; the neurons still fire but nothing reads them, which changes the outputs exactly as
      zeroing them.
    - Any other layer: a forward hook multiplies the activation by a mask. It lives only on this Python
      object: a state dict of the model does not carry it (returns False).
    """
    idx = torch.as_tensor(list(neurons), dtype=torch.int64)
    if idx.numel() == 0:
        return True
    found = _producer(layer)
    if found is None:
        NeuronMask(layer, idx.tolist()).attach()
        return False
    weight_layer, side = found
    weight, bias = weight_layer.weight, weight_layer.bias
    idx = idx.to(weight.device)
    if side == "rows":
        weight[idx] = 0.0
        if bias is not None:
            bias[idx] = 0.0
    else:
        weight[:, idx] = 0.0
    return True
