"""What a model's outputs are, read once by running it on a few images: how many labels, logits or
probabilities.

Every job asks this question before its work: the loaders for a file that does not say, the jobs to check that
a model takes the data's images, the scan to know its labels. They all ask :func:`probe_outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ._torch import MODEL_ERRORS, eval_mode, model_device
from .data import ImageData
from .errors import one_line
from .preprocess import is_probabilities

__all__ = ["ModelOutputs", "ProbeError", "check_compatible", "probe_outputs"]


class ProbeError(ValueError):
    """The model fails on the probe images or returns something other than (N, K) class scores."""


@dataclass(frozen=True)
class ModelOutputs:
    """A model's outputs: ``num_outputs`` labels, as probabilities (it ends in a softmax) or logits."""

    num_outputs: int
    probabilities: bool


def probe_outputs(model: nn.Module, images: torch.Tensor, where: str = "") -> ModelOutputs:
    """Run ``model`` (in eval mode, without gradients; its mode is restored) on ``images`` and read its outputs.

    Raises:
        ProbeError: the model raises on the images or does not return (N, K) scores; the message starts with
            ``where`` (a file name) when given.

    Shape:
        images: (N, C, H, W) on the model's device; N >= 2 tells a softmax from logits reliably.
    """
    prefix = f"{where}: " if where else ""
    try:
        with torch.no_grad(), eval_mode(model):
            out = model(images.clone())  # a model may change its input in place
    except MODEL_ERRORS as exc:
        raise ProbeError(
            f"{prefix}the model fails on input of shape {tuple(images.shape)} ({one_line(exc)}); "
            "check the input layout and image size"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ProbeError(
            f"{prefix}the model returns {_described(out)}; expected class scores of shape (N, classes) alone "
            "(wrap a model that returns more so that its forward returns the scores)"
        )
    return ModelOutputs(int(out.shape[1]), is_probabilities(out))


def _described(out: Any) -> str:
    """A model's output in words: a tensor's shape, or a tuple's or dict's items with theirs."""
    if isinstance(out, torch.Tensor):
        return str(tuple(out.shape))
    if isinstance(out, tuple | list):
        return f"a {type(out).__name__} of " + ", ".join(_described(item) for item in out)
    if isinstance(out, dict):
        return "a dict of " + ", ".join(f"{key!r}: {_described(value)}" for key, value in out.items())
    return type(out).__name__


def check_compatible(loaded: Any, dataset: ImageData) -> ModelOutputs:
    """The outputs of a loaded model (a :class:`~neuralcleanse.loading.LoadedModel`), probed on the data's first
    images, after checking it takes the data's images and has an output for every label. What the file says
    about a softmax beats the probe."""
    shape = getattr(loaded, "input_shape", None)
    if shape is not None and tuple(shape) != tuple(dataset.image_shape):
        raise ValueError(
            f"the model takes {tuple(shape)} (C, H, W) images but {dataset.name} has {dataset.image_shape}"
        )
    outputs = probe_outputs(loaded.model, dataset.images[:32].to(model_device(loaded.model)), where=dataset.name)
    if dataset.num_classes > outputs.num_outputs:
        one_based = dataset.num_classes == outputs.num_outputs + 1 and not bool((dataset.labels == 0).any())
        hint = f"; the labels run from 1 to {outputs.num_outputs}: number them from 0" if one_based else ""
        raise ValueError(
            f"{dataset.name} has {dataset.num_classes} labels but the model has only {outputs.num_outputs} "
            f"outputs{hint}"
        )
    known = getattr(loaded, "outputs_probabilities", None)
    return outputs if known is None else replace(outputs, probabilities=bool(known))
