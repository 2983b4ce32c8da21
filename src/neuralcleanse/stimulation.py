"""Neuron stimulation (ABS, Liu et al., CCS 2019): which label one inner neuron, driven high, hands every image to.

A Trojan attack (Liu et al., NDSS 2018) designs its trigger to drive a few chosen neurons and retrains the model so
that those neurons alone send any input to the target. Its trigger need not be small (a 5x5 to 7x7 sticker of
designed pixels can need as large a reversed mask as a natural label does), but the neurons it drives are
unusual: set one of them high on clean images and every image goes to the target, at a level the natural labels'
neurons do not reach it with.

For each neuron of the layer the dense layers read (the flattened output of the convolutions, or, in a model
without them, the second-to-last layer; :mod:`neuralcleanse.mitigate.layers`), :func:`stimulation_levels` sets the
neuron to ``level`` times the layer's 99th-percentile clean activation on every clean image, for each ``level`` of
:data:`LEVELS`, and reads the labels the model gives. A label's *stimulation level* is the smallest level at which
one neuron sends :data:`FLIP_SHARE` of the images not of the label to it (``inf``: no neuron does up to the largest
level, or up to the level at which more than half the labels are reached, where the search stops).
:func:`stimulation_suspects` flags the labels whose level is at most :data:`STIMULATION_RATIO` of the median
label's.

Only the dense part runs per stimulation: the layer's activations and the pre-activations of the dense layer that
reads it are computed once, a stimulated neuron changes those by one column of its weights, and the stimulated
copies are handed on from that dense layer while the model runs on one image. This needs the model to read the
layer through dense layers alone (checked: otherwise there is no result and the scan decides without it). A
TorchScript model, whose layers take no hooks, is stimulated through its ONNX export
(:mod:`~neuralcleanse.formats.unscript`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._torch import eval_mode, model_device
from .decision import MIN_LABELS
from .formats.unscript import unscripted
from .mitigate.layers import CONV_OUTPUT, PENULTIMATE, conv_output_layer, resolve_layer

__all__ = [
    "FLIP_SHARE",
    "LEVELS",
    "STIMULATION_IMAGES",
    "STIMULATION_RATIO",
    "Stimulation",
    "scan_stimulation",
    "stimulation_levels",
    "stimulation_suspects",
]

logger = logging.getLogger(__name__)

#: The levels tried, in units of the layer's 99th-percentile activation on the clean images: 1 to 128 in half
#: octaves (ours; ABS samples a neuron's value range likewise, in steps, up to far beyond what clean inputs reach).
LEVELS: tuple[float, ...] = tuple(2 ** (k / 2) for k in range(15))
#: A neuron hands a label the images when it sends this share of those not of the label to it (ours; ABS asks
#: for every image, which one stray image would veto).
FLIP_SHARE = 0.9
#: A label is flagged when one neuron hands it the images at this share of the level the median label needs or less
#: (ours: chosen on the tune half of the benchmark zoo's models on disk, whose natural labels all need at least half
#: of it, one octave above; docs/detection.md).
STIMULATION_RATIO = 0.25
#: The clean images stimulated: at most this many of the scan's, spread over them (ours: the share of 90% is then
#: counted over some 90 images of other labels).
STIMULATION_IMAGES = 100
_CHUNK_CELLS = 2**20  # values of the largest tensor of one pass (stimulated images x the wider of H and K): cache-sized


@dataclass(frozen=True)
class Stimulation:
    """Per label, the smallest stimulation level at which one neuron hands it the images.

    Attributes:
        layer: the layer stimulated (its canonical name, :mod:`neuralcleanse.mitigate.layers`).
        levels: (K,) per label, the smallest level of :data:`LEVELS` (``inf``: none).
        neurons: (K,) per label, the neuron that reaches it at that level (-1: none).
        scale: the layer's 99th-percentile clean activation, the unit of the levels.
    """

    layer: str
    levels: list[float]
    neurons: list[int]
    scale: float

    @property
    def ratios(self) -> list[float | None]:
        """(K,) each label's level over the median label's (None: not reached, or the median not reached)."""
        median = sorted(self.levels)[len(self.levels) // 2]
        return [level / median if math.isfinite(level) and math.isfinite(median) else None for level in self.levels]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "levels": [None if math.isinf(v) else v for v in self.levels],
            "neurons": self.neurons,
            "scale": self.scale,
        }


def scan_stimulation(model: nn.Module, images: torch.Tensor, outputs: torch.Tensor) -> Stimulation | None:
    """:func:`stimulation_levels` as a scan runs it: on :data:`STIMULATION_IMAGES` of its clean ``images`` (N, C, H,
    W), spread over them, each counted as of the label the model gives it (its ``outputs`` (N, K) on them)."""
    every = max(1, images.shape[0] // STIMULATION_IMAGES)
    chosen = slice(0, every * STIMULATION_IMAGES, every)
    return stimulation_levels(model, images[chosen], outputs[chosen].argmax(dim=1), outputs.shape[1])


def stimulation_suspects(stimulation: Stimulation, ratio: float = STIMULATION_RATIO) -> list[int]:
    """The labels (positions in ``levels``) whose level is at most ``ratio`` of the median label's, the smallest
    first; none when the median label was not reached, or with fewer labels than a median can be
    judged by (:data:`~neuralcleanse.decision.MIN_LABELS`)."""
    if len(stimulation.levels) < MIN_LABELS:
        return []
    ratios = stimulation.ratios
    small = [k for k, r in enumerate(ratios) if r is not None and r <= ratio * (1 + 1e-6)]
    return sorted(small, key=lambda k: stimulation.levels[k])


@torch.no_grad()
def stimulation_levels(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_labels: int
) -> Stimulation | None:
    """Stimulate each neuron of the layer the dense layers read (see the module docstring); None when the model's
    activations cannot be read or its dense part cannot be run apart (the reason is logged).

    Shape:
        images: (N, C, H, W) clean images in [0, 1]; labels: (N,).
    """
    readable = unscripted(model, images)
    if readable is None:
        logger.info("no neuron stimulation: the TorchScript model's layers cannot be read")
        return None
    model = readable
    try:
        layer = resolve_layer(model, CONV_OUTPUT if conv_output_layer(model) else PENULTIMATE)
    except ValueError as exc:
        logger.info("no neuron stimulation: %s", exc)
        return None
    if layer.side != "input" or not isinstance(layer.module, nn.Linear):
        logger.info("no neuron stimulation: layer %s is not the input of a torch.nn.Linear", layer.spec)
        return None
    device = model_device(model)
    images, labels = images.to(device), labels.to(device)
    with eval_mode(model), _Reader(layer.module) as reader:
        clean, outputs = reader.record(model, images)  # (N, D) the layer, (N, K) the model's outputs
        if clean is None or not reader.reproduces(model, images[:1], clean, outputs):
            logger.info("no neuron stimulation: the model reads layer %s through more than dense layers", layer.spec)
            return None
        return _stimulate(model, images[:1], labels, num_labels, reader, clean, layer.spec)


def _stimulate(
    model: nn.Module,
    one: torch.Tensor,
    labels: torch.Tensor,
    num_labels: int,
    reader: _Reader,
    clean: torch.Tensor,
    spec: str,
) -> Stimulation:
    """The levels of :func:`stimulation_levels`: the reader's weights turn a neuron set to a level into a change of
    its pre-activations, so each stimulated copy costs one column, not the whole layer."""
    n, width = clean.shape
    scale = float(clean.float().flatten().quantile(0.99).clamp_min(1e-6))
    base = reader.linear(clean)  # (N, H)
    columns = reader.linear.weight.T  # (D, H): what one unit more of each neuron adds
    not_of = torch.stack([labels != k for k in range(num_labels)]).to(base.dtype)  # (K, N)
    needed = FLIP_SHARE * not_of.sum(dim=1)  # (K,)
    levels = torch.full((num_labels,), math.inf)
    neurons = torch.full((num_labels,), -1, dtype=torch.int64)
    per_pass = max(1, _CHUNK_CELLS // (n * max(base.shape[1], num_labels)))
    for level in LEVELS:
        for start in range(0, width, per_pass):
            chosen = torch.arange(start, min(start + per_pass, width), device=clean.device)
            rise = level * scale - clean[:, chosen].T  # (B, N)
            stimulated = base + rise.unsqueeze(2) * columns[chosen].unsqueeze(1)  # (B, N, H)
            predicted = reader.run(model, one, stimulated.flatten(0, 1)).argmax(dim=1).view(chosen.numel(), n)
            # (B, K): per neuron stimulated, how many images not of each label it sends to that label
            sent = torch.einsum("bnk,kn->bk", nn.functional.one_hot(predicted, num_labels).to(base.dtype), not_of)
            reached = ((sent >= needed).any(dim=0) & torch.isinf(levels).to(sent.device)).cpu()
            for k in reached.nonzero().flatten().tolist():
                levels[k] = level
                neurons[k] = int(chosen[int(sent[:, k].argmax())])
        if int(torch.isfinite(levels).sum()) > num_labels // 2:
            break  # the median label is reached: the labels left lie above it, which no decision asks about
    return Stimulation(layer=spec, levels=levels.tolist(), neurons=neurons.tolist(), scale=scale)


class _Reader:
    """Records the input of the dense layer that reads the stimulated layer, and hands its output a given (M, H)
    tensor in place of the one it computes (the model then runs on one image and returns M outputs)."""

    def __init__(self, linear: nn.Linear) -> None:
        self.linear = linear
        self.substitute: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None

    def __enter__(self) -> _Reader:
        self._handles = [
            self.linear.register_forward_pre_hook(self._keep_input),
            self.linear.register_forward_hook(self._swap_output),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()

    def _keep_input(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self.seen = inputs[0] if isinstance(inputs[0], torch.Tensor) else None

    def _swap_output(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        return None if self.substitute is None else self.substitute.to(output.dtype)

    def record(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The layer's activations (N, D), None when the reader never ran on a single tensor, and the outputs."""
        self.substitute, self.seen = None, None
        outputs = model(images)
        seen = None if self.seen is None or self.seen.dim() != 2 else self.seen.detach()
        return seen, outputs

    def run(self, model: nn.Module, one: torch.Tensor, pre_activations: torch.Tensor) -> torch.Tensor:
        self.substitute = pre_activations
        try:
            return model(one)
        finally:
            self.substitute = None

    def reproduces(self, model: nn.Module, one: torch.Tensor, clean: torch.Tensor, outputs: torch.Tensor) -> bool:
        """Whether handing the reader's output the clean pre-activations gives the model's own outputs."""
        try:
            again = self.run(model, one, self.linear(clean))
        except RuntimeError:
            return False
        return again.shape == outputs.shape and torch.allclose(again, outputs, rtol=1e-3, atol=1e-4)
