"""Tiny hand-built classifiers whose backdoor is known by construction, for fast tests.

Images are 1x12x12. Labels 0..4 each read a fixed template of 28 pixels (the mean brightness over it);
a clean image of label i has its template bright. In the infected model the last label (5) reads only the
2x2 bottom-right corner: a 4-pixel trigger reaches it, while reaching any other label needs a mask of
roughly ten pixels or more. Clean images of label 5 have a bright corner too. In the clean model label 5
reads a template like the others.
"""

from __future__ import annotations

import torch
from torch import nn

SIZE = 12
NUM_LABELS = 6
TARGET = 5
CORNER = (slice(SIZE - 2, SIZE), slice(SIZE - 2, SIZE))
TEMPLATE_SIZES = (20, 20, 21, 22, 25, 28)  # the labels' trigger norms differ, none far below the rest


def templates(seed: int = 0) -> torch.Tensor:
    """(6, 12, 12) disjoint binary templates of TEMPLATE_SIZES pixels, none touching the 2x2 corner."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.ones(SIZE, SIZE, dtype=torch.bool)
    allowed[CORNER] = False
    pixels = torch.nonzero(allowed.flatten()).flatten()
    pixels = pixels[torch.randperm(pixels.numel(), generator=g)]
    out = torch.zeros(NUM_LABELS, SIZE * SIZE)
    start = 0
    for i, size in enumerate(TEMPLATE_SIZES):
        out[i, pixels[start : start + size]] = 1.0
        start += size
    return out.view(NUM_LABELS, SIZE, SIZE)


class TemplateNet(nn.Module):
    """logit_i = 10 * mean(x over template i); with ``backdoor``, label 5 reads the corner instead."""

    def __init__(self, backdoor: bool = True, seed: int = 0) -> None:
        super().__init__()
        reads = templates(seed)
        bias = torch.zeros(NUM_LABELS)
        if backdoor:
            reads[TARGET] = 0.0
            reads[TARGET][CORNER] = 2.0
            bias[TARGET] = -8.0  # a dark corner (about 0.15) gives logit ~ -5; a white corner +12
        weight = 10 * reads.flatten(1) / (reads.flatten(1) > 0).sum(1, keepdim=True)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, NUM_LABELS * 2), nn.ReLU())
        self.head = nn.Linear(NUM_LABELS * 2, NUM_LABELS)
        with torch.no_grad():
            # features: [+scores, -scores] through a ReLU; the head recombines them (keeps a hidden layer
            # for the mitigation code to work on).
            self.features[1].weight.copy_(torch.cat([weight, -weight]))
            self.features[1].bias.copy_(torch.cat([bias, -bias]))
            eye = torch.eye(NUM_LABELS)
            self.head.weight.copy_(torch.cat([eye, -eye], dim=1))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def clean_images(per_label: int = 20, seed: int = 0, template_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean (N, 1, 12, 12) images: the label's template bright (about 0.8), the rest dark (about 0.1)."""
    g = torch.Generator().manual_seed(seed)
    t = templates(template_seed)
    images, labels = [], []
    for label in range(NUM_LABELS):
        base = 0.1 + 0.7 * t[label]
        if label == TARGET:
            base[CORNER] = 0.8  # in the infected model label 5 is recognised by its corner
        noise = 0.1 * torch.rand(per_label, SIZE, SIZE, generator=g)
        images.append((base + noise).clamp(0, 1).unsqueeze(1))
        labels.append(torch.full((per_label,), label))
    return torch.cat(images), torch.cat(labels)
