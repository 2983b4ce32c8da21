"""A softmax that rounds labels to zero where a trigger search starts, and the same model read in float64.

A model that ends in a softmax gives a search nothing but its probabilities. A confident network sends the noisy
images a search starts from (clean images under random masks and patterns) to one label and leaves the others tens
of nats below it; past about e^-103 float32 rounds a probability to exactly 0, its log has no gradient, and the
search for that label ends unreached, however low the clamp before the log. What counts is the network's confidence
on those first images, not on the clean ones, where it may be surer still.

:func:`saturates` tells such a model by stamping clean images as a search's first steps do; the scan then reads it
through :class:`Float64LogProbabilities`: the model in float64 (probabilities down to about e^-745), its outputs'
log returned in float32 as logits (the softmax of log-probabilities is themselves), at float64's cost (several times
float32's on a CPU: docs/how-it-works.md, "Precision").
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ._torch import eval_mode, model_device
from .preprocess import log_probabilities
from .reverse import ReverseConfig, draw_starts

__all__ = ["PROBE_IMAGES", "STARVED_SHARE", "Float64LogProbabilities", "saturates"]

#: Clean images probed (at most), drawn at random, each under its own random mask and pattern (ours: twice a
#: search batch).
PROBE_IMAGES = 64
#: A label whose probability is 0 on this share of the probed images or more is starved (ours: on the tests' hand-built
#: softmax model, the target's search fails with 66% of the images at 0 and succeeds with 6%).
STARVED_SHARE = 0.5


def saturates(model: nn.Module, images: torch.Tensor, seed: int = 0, config: ReverseConfig | None = None) -> bool:
    """Whether ``model``, which ends in a softmax, gives some label a probability of exactly 0 in float32 (under
    the smallest normal number) on at least :data:`STARVED_SHARE` of up to :data:`PROBE_IMAGES` of ``images``,
    each stamped with a mask and a pattern drawn as a search with ``config`` (None: the original's) draws its first
    ones (:func:`~neuralcleanse.reverse.draw_starts`): that label's search would get a gradient from too few images
    to start.

    Shape:
        images: (N, C, H, W) clean images in [0, 1], on any device (those probed are moved to the model's).
    """
    g = torch.Generator().manual_seed(seed)
    device = model_device(model)
    x = images[torch.randperm(images.shape[0], generator=g)[:PROBE_IMAGES].to(images.device)].to(device)
    starts = draw_starts(g, x.shape[0], x.shape[1:], config or ReverseConfig())
    masks, patterns = (start.to(device) for start in starts)
    with torch.no_grad(), eval_mode(model):
        probabilities = model(((1 - masks) * x + masks * patterns).float()).float()
    zero = probabilities < torch.finfo(torch.float32).tiny
    return bool((zero.float().mean(dim=0) >= STARVED_SHARE).any())


class Float64LogProbabilities(nn.Module):
    """A float64 copy of ``model`` (which ends in a softmax) returning the log of its probabilities in float32:
    a model of logits to every caller, whose labels keep their gradient down to about e^-745."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # float64 is never autocast; say so for every device
            probabilities = self.model(x.double())
        return log_probabilities(probabilities, outputs_probabilities=True).float()
