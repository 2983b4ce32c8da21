"""How far each label lies below the model's choice on clean images: the clean gap.

A poisoned training set teaches the model its target more often than any natural label, and the model keeps a
lean towards the target on clean inputs too: on the images it sends elsewhere, the target's score lies closer to
the winning one than a natural label's does. :func:`clean_gaps` measures that distance per label; the default
decision (:mod:`neuralcleanse.decision`) uses it for labels whose smallest trigger is small but not small
enough on its own.
"""

from __future__ import annotations

import math

import torch

__all__ = ["clean_gaps"]


def clean_gaps(outputs: torch.Tensor, outputs_probabilities: bool = False) -> torch.Tensor:
    """Per label, the median over the images the model gives to another label of (top log-score minus the
    label's log-score): log-softmax of logits, or the log of probabilities, so either output gives the same gap.

    A softmax rounds the probability of a far-off label to 0, and its gap is then unknown, only large: a label
    whose probability is 0 on at least half of those images gets NaN (the decision leaves it out).

    Args:
        outputs: (N, K) the model's outputs for clean images (:func:`~neuralcleanse.metrics.outputs_of`).

    Returns:
        (K,) float64 gaps >= 0 (or NaN); a label the model gives every image to gets 0.
    """
    outputs = outputs.double()
    log_scores = outputs.log() if outputs_probabilities else outputs.log_softmax(dim=1)
    top, chosen = log_scores.max(dim=1)
    gaps = top[:, None] - log_scores  # +inf where a probability rounded to 0
    result = torch.zeros(log_scores.shape[1], dtype=torch.float64)
    for label in range(log_scores.shape[1]):
        elsewhere = chosen != label
        if elsewhere.any():
            result[label] = gaps[elsewhere, label].median()
    return result.nan_to_num(nan=math.nan, posinf=math.nan)
