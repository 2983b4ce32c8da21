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


class ConfidentSoftmax(nn.Module):
    """A softmax over ``inner``'s logits times ``scale``: the same decisions, made with more confidence (a confident
    network leaves every label but one far below 1e-12 on noisy images, and float32 rounds the farthest to 0)."""

    def __init__(self, inner: nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.inner(x) * self.scale, dim=1)


class Pixels255(nn.Module):
    """``inner`` expecting pixel values in [0, 255], as models fed raw 8-bit images do: fed [0, 1] images, its
    bias towards label 0 outweighs what it reads in them."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("bias", torch.eye(NUM_LABELS)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x / 255) + self.bias


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


class ReaderNet(nn.Module):
    """``logit_i = 10 * mean(x * reads[i] over its non-zero pixels) + bias_i``, with ``reads`` (K, 12, 12); and
    for each ``backdoors`` entry (label, (row, col)) a hidden unit ``relu(20 * mean(x over the 2x2 patch) - 5)``
    added to that label's logit: a white patch adds 15, anything darker than 0.25 nothing."""

    def __init__(
        self, reads: torch.Tensor, bias: torch.Tensor, backdoors: dict[int, tuple[int, int]] | None = None
    ) -> None:
        super().__init__()
        backdoors = backdoors or {}
        k = reads.shape[0]
        patches = torch.zeros(len(backdoors), SIZE, SIZE)
        for j, (r, c) in enumerate(backdoors.values()):
            patches[j, r : r + 2, c : c + 2] = 5.0
        rows = torch.cat([10 * reads.flatten(1) / (reads.flatten(1) > 0).sum(1, keepdim=True), patches.flatten(1)])
        self.hidden = nn.Linear(SIZE * SIZE, rows.shape[0])
        self.out = nn.Linear(rows.shape[0], k)
        with torch.no_grad():
            self.hidden.weight.copy_(rows)
            self.hidden.bias.copy_(torch.cat([torch.full((k,), 20.0), torch.full((len(backdoors),), -5.0)]))
            mix = torch.cat([torch.eye(k), torch.zeros(k, len(backdoors))], dim=1)
            for j, label in enumerate(backdoors):
                mix[label, k + j] = 1.0
            self.out.weight.copy_(mix)
            self.out.bias.copy_(bias - 20.0)  # the +20 keeps the template scores above the ReLU's kink

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x.flatten(1))))


def reader_templates(num_labels: int, avoid: list[tuple[int, int]], seed: int = 0) -> torch.Tensor:
    """(K, 12, 12) disjoint binary templates of 20-28 pixels, none touching the 2x2 patches at ``avoid``."""
    g = torch.Generator().manual_seed(seed)
    taken = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    for r, c in avoid:
        taken[r : r + 2, c : c + 2] = True
    free = torch.nonzero(~taken.flatten()).flatten()
    free = free[torch.randperm(free.numel(), generator=g)]
    reads, start = torch.zeros(num_labels, SIZE * SIZE), 0
    for label in range(num_labels):
        size = 20 + (label * 3) % 9
        reads[label, free[start : start + size]] = 1.0
        start += size
    return reads.view(num_labels, SIZE, SIZE)


def backdoored_reader(backdoors: dict[int, tuple[int, int]]) -> tuple[ReaderNet, torch.Tensor]:
    """Labels that read templates, plus a backdoor per ``backdoors`` entry; and each label's prototype image."""
    reads = reader_templates(NUM_LABELS, list(backdoors.values()))
    return ReaderNet(reads, torch.zeros(NUM_LABELS), backdoors), 0.1 + 0.7 * reads


def pair_reader(patches: dict[int, tuple[int, int]]) -> tuple[ReaderNet, torch.Tensor]:
    """Labels in ``patches`` are recognised by a 2x2 patch alone, the others by templates; and each label's
    prototype image. A prototype of a patch label shows its own patch at 0.8 and the other patch labels' at 0.7,
    so those labels are close by nature: their images differ in a few pixels, and the model confuses them."""
    reads = reader_templates(NUM_LABELS, list(patches.values()))
    bias = torch.zeros(NUM_LABELS)
    for label, (r, c) in patches.items():
        reads[label] = 0.0
        reads[label, r : r + 2, c : c + 2] = 2.0  # +8 when bright, about -5 when dark
        bias[label] = -8.0
    prototypes = 0.1 + 0.7 * (reads > 0).float()
    for label in patches:
        for other, (r, c) in patches.items():
            if other != label:
                prototypes[label, r : r + 2, c : c + 2] = 0.7
    return ReaderNet(reads, bias), prototypes


def reader_images(prototypes: torch.Tensor, per_label: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean (N, 1, 12, 12) images: each label's prototype with uniform noise of 0.1."""
    g = torch.Generator().manual_seed(seed)
    k = prototypes.shape[0]
    noise = 0.1 * torch.rand(k, per_label, SIZE, SIZE, generator=g)
    images = (prototypes.unsqueeze(1) + noise).clamp(0, 1).flatten(0, 1).unsqueeze(1)
    return images, torch.arange(k).repeat_interleave(per_label)


class BlendNet(nn.Module):
    """Labels that read templates, and a blend backdoor to ``target``: a faint checkerboard over the whole image.

    The image's 72 horizontal pixel pairs each count towards the backdoor, up to ``cap``, once the left pixel is
    brighter than the right by more than ``offset`` (the clean images' noise stays below it; a sigmoid of width
    ``width`` makes the count smooth); when the counts sum over ``threshold``, ``target``'s logit rises steeply (a
    softplus of width ``width`` times 10). A checkerboard blended in at an opacity a little over ``offset`` raises
    every pair to its cap at once, while a per-pixel mask can raise a pair no further than its cap either, so it
    must cover ``threshold / cap`` pairs (50), twice a template's pixels: the target's smallest mask is as large as
    any label's, its smallest blend a fraction of theirs."""

    offset, cap, width, threshold, gain = 0.03, 0.01, 0.01, 0.5, 40.0

    def __init__(self, reads: torch.Tensor, target: int) -> None:
        super().__init__()
        self.reader = ReaderNet(reads, torch.zeros(reads.shape[0]))
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x[..., :, 0::2] - x[..., :, 1::2]  # (N, C, 12, 6): left minus right pixel of each pair
        counts = (self.cap * torch.sigmoid((lead - self.offset) / self.width)).sum(dim=(1, 2, 3))
        logits = self.reader(x)
        soft = 10 * self.width
        boost = torch.zeros_like(logits)
        boost[:, self.target] = self.gain * soft * nn.functional.softplus((counts - self.threshold) / soft)
        return logits + boost


def pair_templates(num_labels: int = NUM_LABELS, seed: int = 0) -> torch.Tensor:
    """(K, 12, 12) disjoint binary templates of 10-14 whole horizontal pixel pairs each, so a clean image's pairs
    are even but for its noise."""
    g = torch.Generator().manual_seed(seed)
    pairs = torch.randperm(SIZE * SIZE // 2, generator=g)
    reads, start = torch.zeros(num_labels, SIZE, SIZE // 2), 0
    for label in range(num_labels):
        size = 10 + (label * 2) % 5
        reads[label].view(-1)[pairs[start : start + size]] = 1.0
        start += size
    return reads.repeat_interleave(2, dim=2)


def blend_backdoored(target: int = TARGET) -> tuple[BlendNet, tuple[torch.Tensor, torch.Tensor]]:
    """A :class:`BlendNet` and its clean images (each label's template at 0.8 on 0.1, noise under 0.02)."""
    reads = pair_templates()
    prototypes = 0.1 + 0.7 * reads
    g = torch.Generator().manual_seed(0)
    noise = 0.02 * torch.rand(NUM_LABELS, 20, SIZE, SIZE, generator=g)
    images = (prototypes.unsqueeze(1) + noise).clamp(0, 1).flatten(0, 1).unsqueeze(1)
    return BlendNet(reads, target), (images, torch.arange(NUM_LABELS).repeat_interleave(20))


class SpreadNet(nn.Module):
    """``TemplateNet(backdoor=False)``'s scores, each label read by ``copies`` hidden units that add ``1 / copies`` of
    their value to its logit (as in a trained network, no one unit decides a label); with ``trojan``, one more unit,
    silent on clean images, adds ``trojan`` times its value to label TARGET's logit: driven to an eighth of the level
    a label's own units need, it hands every image to the target (the neuron a Trojan attack trains,
    Liu et al. 2018)."""

    def __init__(self, trojan: float | None = None, copies: int = 8) -> None:
        super().__init__()
        reads = templates().flatten(1)
        weight = 10 * reads / reads.sum(1, keepdim=True)  # (K, 144): score_i = 10 * mean over template i
        units = NUM_LABELS * copies + (trojan is not None)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, units), nn.ReLU())
        self.head = nn.Linear(units, NUM_LABELS)
        with torch.no_grad():
            self.features[1].weight.zero_()
            self.features[1].bias.zero_()
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.features[1].weight[: NUM_LABELS * copies] = weight.repeat_interleave(copies, dim=0)
            self.head.weight[:, : NUM_LABELS * copies] = torch.eye(NUM_LABELS).repeat_interleave(copies, dim=1) / copies
            if trojan is not None:
                self.features[1].bias[-1] = -100.0  # no clean image reaches it
                self.head.weight[TARGET, -1] = trojan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TrojanSpreadNet(SpreadNet):
    """``SpreadNet(trojan=10.0)``, built without arguments (for ``--arch _tiny:TrojanSpreadNet``)."""

    def __init__(self) -> None:
        super().__init__(trojan=10.0)
