"""How concentrated a reversed mask is: the share of its L1 mass in its densest square window.

A backdoor's trigger is a sticker, a few pixels or a small pattern in one place, and the smallest trigger the
search finds for its target is that sticker. On digits a natural label's smallest trigger traces strokes spread
over the image; on traffic signs and photographs it can be as compact (a sign's symbol, a car's wheel), so the
verdict does not use the measure: it is reported as a reading of each reversed trigger (docs/detection.md,
"Signals tried beyond the norm"). TABOR (Guo et al., 2019) penalises scattered masks during the search, and
NeuronInspect (Huang et al., 2019) scores how sparse and how smooth a label's explanation map is; here the shape is
measured after the search, so the search and its norms stay the paper's. A whole-image blend has no compact
trigger.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = ["WINDOW_SHARE", "compactness"]

#: The window's side as a share of the image's shorter side (ours: a quarter, 7 pixels on MNIST, 8 on 32x32
#: images; the zoo's stickers are at most 6x6, and the window leaves them a pixel of slack for the mask's edge).
WINDOW_SHARE = 0.25


def compactness(masks: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Per mask, the share of its L1 mass inside the ``window`` x ``window`` square that holds the most of it.

    Args:
        masks: (K, 1, H, W) masks in [0, 1].
        window: the square's side in pixels; by default :data:`WINDOW_SHARE` of the shorter side, at least 1.

    Returns:
        (K,) float shares in [0, 1]: 1 when the whole mask fits in one window; an empty mask gets 0.
    """

    if masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError(f"expected masks (K, 1, H, W), got {tuple(masks.shape)}")
    height, width = masks.shape[2:]
    side = window if window is not None else max(1, math.ceil(WINDOW_SHARE * min(height, width)))
    if not 1 <= side <= min(height, width):
        raise ValueError(f"window must be 1 to {min(height, width)} pixels for {height}x{width} masks, got {side}")
    m = masks.detach().float().cpu()
    total = m.flatten(1).sum(1)
    densest = F.avg_pool2d(m, side, stride=1).flatten(1).amax(1) * side * side
    return torch.where(total > 0, densest / total.clamp_min(1e-12), torch.zeros_like(total)).clamp(0, 1)
