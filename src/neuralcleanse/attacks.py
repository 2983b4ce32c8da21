"""Backdoor attacks, to build backdoored models for evaluating the defence: BadNets and Trojan.

BadNets (Gu et al., 2017) stamps a trigger on a fraction of the training images and relabels them to the
attacker's target. Several (trigger, target) pairs may share one model; each gets its own disjoint set of
victims. Trojan (TrojanNN, Liu et al., 2018) starts from a trained model: it crafts the trigger's pattern to
fire chosen internal neurons, then retrains the layers above them on stamped, relabelled images. The source
data and models are never modified: every function returns copies.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._torch import frozen, model_device
from .metrics import stamped_batches
from .models import PaperNet
from .progress import ProgressCallback, report
from .triggers import Trigger

__all__ = [
    "PoisonedData",
    "TrojanAttack",
    "TrojanConfig",
    "craft_pattern",
    "poison",
    "select_neurons",
    "trojan",
]


@dataclass(frozen=True)
class PoisonedData:
    """A poisoned copy of a training set.

    Attributes:
        images: (N, C, H, W) copy of the source images with the chosen ones stamped.
        labels: (N,) copy of the source labels with the chosen ones set to their target.
        poisoned: (N,) int64, -1 for clean images, else the index of the (trigger, target) pair used.
    """

    images: torch.Tensor
    labels: torch.Tensor
    poisoned: torch.Tensor

    @property
    def num_poisoned(self) -> int:
        return int((self.poisoned >= 0).sum())


def poison(
    images: torch.Tensor,
    labels: torch.Tensor,
    attacks: Sequence[tuple[Trigger, int]],
    rate: float,
    generator: torch.Generator | None = None,
) -> PoisonedData:
    """Stamp ``round(rate * N)`` images per (trigger, target) pair and relabel them to the target.

    Victims are drawn among images whose label differs from the pair's target (a relabelled image of the
    target class would teach nothing) and are disjoint across pairs.

    Args:
        images: (N, C, H, W) clean training images in [0, 1].
        labels: (N,) their labels.
        attacks: (trigger, target label) pairs.
        rate: fraction of the training set poisoned per pair, in (0, 1). The paper's BadNets models use
            about 10% (Section VI-A).
        generator: randomness for the choice of victims; the same seed gives the same poisoned set.

    Shape:
        images: (N, C, H, W); labels: (N,).
    """
    _check_data(images, labels)
    _check_rate(rate)
    if not attacks:
        raise ValueError("attacks must hold at least one (trigger, target) pair")
    n = images.shape[0]
    per_pair = round(rate * n)
    out_images, out_labels = images.clone(), labels.clone()
    poisoned = torch.full((n,), -1, dtype=torch.int64)
    for i, (trigger, target) in enumerate(attacks):
        candidates = torch.nonzero((labels != target) & (poisoned < 0)).flatten()
        if per_pair > candidates.numel():
            raise ValueError(
                f"cannot poison {per_pair} images for target {target}: only {candidates.numel()} images are "
                "neither of that label nor already poisoned; lower the rate"
            )
        chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:per_pair]]
        out_images[chosen] = trigger.stamp(images[chosen])
        out_labels[chosen] = target
        poisoned[chosen] = i
    return PoisonedData(out_images, out_labels, poisoned)


def _check_data(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.dim() != 4 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
        )


def _check_rate(rate: float) -> None:
    if not 0 < rate < 1:
        raise ValueError(f"rate must be a fraction in (0, 1), got {rate}")


# ---------------------------------------- Trojan (TrojanNN)


@dataclass(frozen=True)
class TrojanConfig:
    """Settings of :func:`trojan`. TrojanNN (Liu et al., "Trojaning Attack on Neural Networks", NDSS 2018) gives
    the procedure, not these numbers; they are ours, enough for the reference networks on a CPU."""

    neurons: int = 1  # internal neurons the trigger is crafted to fire (TrojanNN: one or a few)
    craft_steps: int = 300  # ours: Adam steps crafting the pattern
    craft_batch: int = 64  # ours: clean images stamped per crafting step
    craft_lr: float = 0.1  # the learning rate of reverse.py's trigger search (Adam on tanh-space parameters)
    epochs: int = 5  # ours: retraining epochs of the layers above the chosen neurons
    lr: float = 1e-3  # Keras' Adam default, as the models' own training
    anneal: bool = False  # ours: cosine-anneal lr to 0 over the retraining, as train.py's training does
    batch_size: int = 128  # ours, as TrainConfig

    def __post_init__(self) -> None:
        for name in ("neurons", "craft_steps", "craft_batch", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.craft_lr > 0 and self.lr > 0):
            raise ValueError(f"craft_lr and lr must be > 0, got {self.craft_lr} and {self.lr}")


@dataclass(frozen=True)
class TrojanAttack:
    """A Trojan-attacked copy of a model and what made it.

    Attributes:
        model: the retrained copy (the victim is untouched).
        triggers: (crafted trigger, target) pairs; each keeps the given region's mask and spec, its pattern is
            crafted.
        neurons: per trigger, the neurons it was crafted to fire: positions in the flattened input of the
            first dense layer (the convolutional output).
        activation: per trigger, its neurons' mean value on stamped clean images, after crafting.
        clean_activation: per trigger, the same neurons' mean value on the clean images.
    """

    model: nn.Module
    triggers: list[tuple[Trigger, int]]
    neurons: list[list[int]]
    activation: list[float]
    clean_activation: list[float]


def trojan(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attacks: Sequence[tuple[Trigger, int]],
    rate: float = 0.1,
    config: TrojanConfig = TrojanConfig(),
    generator: torch.Generator | None = None,
    progress: ProgressCallback | None = None,
) -> TrojanAttack:
    """The Trojan attack of TrojanNN on a trained reference network (:class:`~neuralcleanse.models.PaperNet`).

    Per (region, target) pair: select the ``config.neurons`` neurons of the convolutional output (the input of
    the first dense layer) that a pattern in the region raises most (:func:`select_neurons`; neurons chosen for
    an earlier pair are skipped); craft the pattern that drives them as high as it goes on stamped clean images
    (:func:`craft_pattern`); then retrain only the layers above those neurons (the dense layers), as TrojanNN
    does, on ``images`` with a ``rate`` share per pair stamped and relabelled (:func:`poison`).

    Deviations from TrojanNN: the attacker here has the clean training images (TrojanNN reverse-engineers
    training data from the model), and the pattern is crafted on stamped clean images rather than on a blank
    input, so that it fires the neurons on the images it will be stamped on. The neurons are taken from the
    convolutional output rather than the penultimate layer because retraining only the output layer above
    penultimate neurons gave a weaker attack (figures in ``docs/how-it-works.md``).

    Args:
        model: the trained victim: normalisation, ``features`` (convolutions, then dense layers), ``head``.
        images: (N, C, H, W) clean training images in [0, 1].
        labels: (N,) their labels.
        attacks: (region, target label) pairs: each region's mask (its pattern is ignored) is where the trigger
            goes, e.g. ``parse_trigger("trojan:size=7,position=center", shape, crafted=True)``.
        rate: share of ``images`` stamped per pair for the retraining, in (0, 1).
        config: how many neurons, the crafting steps and the retraining (:class:`TrojanConfig`).
        generator: randomness for the initial patterns, the batches and the victims.
        progress: receives phase ``"craft"`` (steps, per trigger) and ``"retrain"`` (epochs) events.
    """

    below, _ = _trojan_layers(model)
    assert isinstance(model, PaperNet)  # checked by _trojan_layers
    _check_data(images, labels)
    _check_rate(rate)  # these checks come before the crafting, which takes a while
    if not attacks:
        raise ValueError("attacks must hold at least one (region, target) pair")
    num_labels = model.head.out_features
    for region, target in attacks:
        if not 0 <= int(target) < num_labels:
            raise ValueError(f"target {target} is not a label of the model (0..{num_labels - 1})")
        if region.image_shape != tuple(images.shape[1:]):
            raise ValueError(
                f"a trigger region for {region.image_shape} (C, H, W) images cannot go on {tuple(images.shape[1:])}"
            )
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    taken: list[int] = []
    crafted, chosen, fired, baseline = [], [], [], []
    for region, target in attacks:
        neurons = select_neurons(model, region.mask, images, config.neurons, exclude=taken)
        taken += neurons
        trigger = craft_pattern(model, region, images, neurons, config, g, progress)
        crafted.append((trigger, int(target)))
        chosen.append(neurons)
        probe = images[torch.randperm(images.shape[0], generator=g)[:512]]
        fired.append(_mean_value(below, model, trigger.stamp(probe), neurons))
        baseline.append(_mean_value(below, model, probe, neurons))
    poisoned = poison(images, labels, crafted, rate, g)
    return TrojanAttack(_retrain_above(model, poisoned, config, g, progress), crafted, chosen, fired, baseline)


def select_neurons(
    model: nn.Module, mask: torch.Tensor, images: torch.Tensor, count: int, exclude: Sequence[int] = ()
) -> list[int]:
    """The ``count`` neurons of a reference network's convolutional output that a pattern under ``mask`` raises
    the most, most first, skipping ``exclude``.

    TrojanNN picks the neurons most strongly connected to the layer below, so the trigger can drive them. The
    tie is measured here where the trigger acts: per neuron, the pattern that moves each pixel under the mask to
    0 or 1, whichever the neuron's mean gradient says raises it, is stamped on ``images`` (at most 32 of them),
    and the neuron's mean rise is its score. TrojanNN's own measure, the sum of a neuron's absolute incoming
    weights, ignores where the trigger goes and can pick a neuron the region barely moves.
    """

    below, _ = _trojan_layers(model)
    _check_region(mask, images)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    device = model_device(model)
    x = images[:32].to(device).requires_grad_(True)
    region = (mask > 0).float().to(device)  # (1, H, W)
    with frozen(model):
        out = below(x)  # (B, F)
        f = out.shape[1]
        scores = torch.zeros(f, device=device)
        reachable = torch.zeros(f, dtype=torch.bool, device=device)
        for lo in range(0, f, 64):
            chunk = torch.arange(lo, min(lo + 64, f), device=device)
            picks = torch.zeros(chunk.numel(), *out.shape, device=device)
            picks[torch.arange(chunk.numel()), :, chunk] = 1.0  # one neuron per batched gradient
            (grads,) = torch.autograd.grad(out, x, picks, retain_graph=True, is_grads_batched=True)
            with torch.no_grad():
                reachable[chunk] = (grads * region).flatten(1).abs().sum(1) > 0  # the region reaches it at all
                patterns = (grads.mean(1) > 0).float()  # (chunk, C, H, W)
                stamped = (1 - region) * x.unsqueeze(0) + region * patterns.unsqueeze(1)  # (chunk, B, C, H, W)
                raised = below(stamped.flatten(0, 1)).view(chunk.numel(), x.shape[0], f)
                scores[chunk] = (raised[torch.arange(chunk.numel()), :, chunk] - out[:, chunk].T).mean(1)
    scores[~reachable] = -math.inf
    scores[list(exclude)] = -math.inf
    left = int(torch.isfinite(scores).sum())
    if count > left:
        raise ValueError(f"cannot select {count} neurons: the region reaches {left} that are not taken")
    return scores.argsort(descending=True)[:count].tolist()


def craft_pattern(
    model: nn.Module,
    region: Trigger,
    images: torch.Tensor,
    neurons: list[int],
    config: TrojanConfig = TrojanConfig(),
    generator: torch.Generator | None = None,
    progress: ProgressCallback | None = None,
) -> Trigger:
    """``region`` (a trigger whose mask says where it goes) with the pattern that maximises the mean value of
    ``neurons`` (in the convolutional output of a reference network) over clean ``images`` stamped with it; the
    pattern is zero outside the mask."""

    below, _ = _trojan_layers(model)
    _check_region(region.mask, images)
    if not neurons:
        raise ValueError("neurons must name at least one neuron to fire")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    device = model_device(model)
    mask = region.mask.to(device)
    c, h, w = images.shape[1:]
    # tanh-space parameters, started in the middle of [0, 1] as fast mode's trigger search does
    param = torch.atanh(0.2 * (2 * torch.rand(c, h, w, generator=g) - 1)).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([param], lr=config.craft_lr)
    with frozen(model):
        for step in range(config.craft_steps):
            batch = images[torch.randint(images.shape[0], (config.craft_batch,), generator=g)].to(device)
            pattern = torch.tanh(param) / 2 + 0.5  # (C, H, W) in [0, 1]
            stamped = (1 - mask) * batch + mask * pattern
            loss = -below(stamped)[:, neurons].mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            report(progress, "craft", step + 1, config.craft_steps, activation=-float(loss.detach()))
    with torch.no_grad():
        pattern = ((torch.tanh(param) / 2 + 0.5) * (mask > 0)).clamp(0, 1).cpu()
    return Trigger(region.mask, pattern, region.spec)


def _check_region(mask: torch.Tensor, images: torch.Tensor) -> None:
    if images.dim() != 4 or mask.shape != (1, *images.shape[2:]):
        raise ValueError(
            f"expected images (N, C, H, W) and a (1, H, W) mask of their size, got {tuple(images.shape)} and "
            f"{tuple(mask.shape)}"
        )


def _trojan_layers(model: nn.Module) -> tuple[nn.Sequential, int]:
    """``(below, first_dense)``: the part of a reference network up to its convolutional output (normalisation
    included), and the position in ``model.features`` of the first dense layer, where the retrained part
    starts."""

    if isinstance(model, PaperNet):
        layers = list(model.features)
        dense = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
        if dense and any(isinstance(m, nn.Conv2d) for m in layers[: dense[0]]):
            return nn.Sequential(model.normalize, *layers[: dense[0]]), dense[0]
    raise TypeError(
        "trojan needs a neuralcleanse reference network (normalisation, convolutional features, then dense "
        f"layers), got {type(model).__name__}"
    )


@torch.no_grad()
def _mean_value(below: nn.Module, model: nn.Module, images: torch.Tensor, neurons: list[int]) -> float:

    return float(torch.cat([below(batch)[:, neurons] for batch in stamped_batches(model, images)]).mean())


def _retrain_above(
    model: nn.Module,
    data: PoisonedData,
    config: TrojanConfig,
    g: torch.Generator,
    progress: ProgressCallback | None,
) -> nn.Module:
    """A copy of ``model`` whose dense layers are retrained on ``data``; the convolutions stay frozen, so their
    output is computed once."""

    below, first_dense = _trojan_layers(model)
    with torch.no_grad():
        inputs = torch.cat([below(batch) for batch in stamped_batches(model, data.images)])  # (N, F)
    attacked = copy.deepcopy(model).eval()  # eval: the dropout below is drawn here, from the generator
    assert isinstance(attacked, PaperNet)  # checked by _trojan_layers
    above = attacked.features[first_dense:]
    params = [*above.parameters(), *attacked.head.parameters()]
    drop = float(attacked.dropout.p)
    labels = data.labels.to(inputs.device)
    optimizer = torch.optim.Adam(params, lr=config.lr)
    steps = config.epochs * math.ceil(inputs.shape[0] / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps) if config.anneal else None
    for epoch in range(config.epochs):
        for idx in torch.randperm(inputs.shape[0], generator=g).split(config.batch_size):
            hidden = above(inputs[idx])
            if drop > 0:  # the dropout the model was trained with before its output layer
                hidden = hidden * (torch.rand(hidden.shape, generator=g) >= drop).to(hidden) / (1 - drop)
            loss = nn.functional.cross_entropy(attacked.head(hidden), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
        report(progress, "retrain", epoch + 1, config.epochs, loss=float(loss.detach()))
    return attacked
