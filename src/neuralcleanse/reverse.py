"""Trigger reverse engineering: for each label, the smallest mask (and its pattern) that sends clean images
to that label.

For label y this minimises ``CE(f((1 - m) * x + m * p), y) + λ_y * |m|_1`` over clean images x, with the mask
``m`` (1, H, W) and the pattern ``p`` (C, H, W) parametrised through tanh so they stay in [0, 1], and λ_y driven
by :class:`~neuralcleanse.schedule.CostSchedule` so the trigger keeps its attack success at the threshold.
With ``ReverseConfig(shape="blend")`` the mask is one opacity ``a`` over the whole image, the trigger of a blend
backdoor (``x' = (1 - a) * x + a * p``); its norm is ``a * H * W``, the L1 of that constant mask, so the two
shapes' norms share a unit.
One loop serves every label set: K labels are stacked into (K, ...) tensors and each step is one batched
forward/backward over K x B stamped images (split into chunks of at most ``max_images_per_pass``). A label
leaves the batch when its early stop fires. The losses of different labels are summed, so their gradients, and
Adam's element-wise updates, are independent: optimising K labels together gives each label the same updates
as optimising it alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, TypeVar, get_args

import torch
from torch import nn

from ._torch import PRECISIONS, Precision, autocast, compute_dtype, frozen, input_memory_format, model_device
from .preprocess import log_probabilities
from .progress import ProgressCallback, report
from .schedule import CostSchedule, EarlyStop, RecentSuccess

__all__ = [
    "SHAPES",
    "ReverseConfig",
    "ReverseResult",
    "TriggerShape",
    "draw_batches",
    "draw_starts",
    "reverse_engineer",
]

_State = TypeVar("_State", CostSchedule, EarlyStop)

_EPSILON = 1e-7  # Keras' K.epsilon(), used by the original tanh parametrisation

#: What a trigger's mask may be: ``"mask"``, a value per pixel (the paper's); ``"blend"``, one opacity over the
#: whole image (the blended-injection trigger of Chen et al., 2017, that a per-pixel mask pays for at full size).
TriggerShape = Literal["mask", "blend"]
SHAPES: tuple[str, ...] = get_args(TriggerShape)


@dataclass(frozen=True)
class ReverseConfig:
    """Settings of the optimisation. The defaults are the original GTSRB example's (``gtsrb_visualize_example.py``
    and ``visualizer.py`` of bolunwang/backdoor); :data:`~neuralcleanse.config.FAST` changes a few."""

    threshold: float = 0.99  # ATTACK_SUCC_THRESHOLD
    lr: float = 0.1  # LR
    betas: tuple[float, float] = (0.5, 0.9)  # Adam(beta_1=0.5, beta_2=0.9)
    batch_size: int = 32  # BATCH_SIZE, images per label per step
    steps_per_epoch: int = 31  # mini_batch = NB_SAMPLE // BATCH_SIZE = 1000 // 32
    max_epochs: int = 1000  # STEPS
    init_cost: float = 1e-3  # INIT_COST
    start_cost: float = 0.0  # the original starts with no norm penalty until a trigger is found
    patience: int = 5  # PATIENCE
    cost_up: float = 2.0  # COST_MULTIPLIER
    cost_down: float = 2.0**1.5  # COST_MULTIPLIER ** 1.5
    early_stop_patience: int = 25  # EARLY_STOP_PATIENCE = 5 * PATIENCE
    early_stop_threshold: float = 1.0  # EARLY_STOP_THRESHOLD
    max_images_per_pass: int = 1024  # memory bound of one forward/backward (ours)
    init_range: tuple[float, float] = (0.0, 1.0)  # mask_init/pattern_init = np.random.random(...)
    selection_epochs: int = 1  # a mask is kept on its own epoch's attack success, as in the original (ours)
    precision: Precision = "float32"  # the original runs Keras in float32; see compute_dtype for "auto"
    shape: TriggerShape = "mask"  # the original's per-pixel mask

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be a fraction in (0, 1], got {self.threshold}")
        for name in (
            "batch_size",
            "steps_per_epoch",
            "max_epochs",
            "patience",
            "early_stop_patience",
            "max_images_per_pass",
            "selection_epochs",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.init_cost > 0 and self.start_cost >= 0):
            raise ValueError("lr and init_cost must be > 0 and start_cost >= 0")
        if not (self.cost_up > 1 and self.cost_down > 1):
            raise ValueError(f"cost_up and cost_down must be > 1, got {self.cost_up} and {self.cost_down}")
        lo, hi = self.init_range
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"init_range must be (low, high) with 0 <= low <= high <= 1, got {self.init_range}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")


@dataclass(frozen=True)
class ReverseResult:
    """Reversed triggers of K labels.

    Attributes:
        labels: (K,) the labels, in the order of the other fields.
        masks: (K, 1, H, W) best masks (smallest norm among epochs whose attack success reached the threshold;
            the last mask when none did).
        patterns: (K, C, H, W) their patterns.
        norms: (K,) L1 norms of ``masks``.
        attack_success: (K,) mean attack success over the epochs that qualified each kept mask (its own epoch and
            up to ``selection_epochs - 1`` before it).
        found: (K,) whether a mask reaching the threshold was found.
        epochs: (K,) epochs run per label.
        image_passes: (K,) stamped images passed forward and backward per label.
        compute_dtype: the model's arithmetic during the search (``"float32"`` or ``"bfloat16"``).
    """

    labels: torch.Tensor
    masks: torch.Tensor
    patterns: torch.Tensor
    norms: torch.Tensor
    attack_success: torch.Tensor
    found: torch.Tensor
    epochs: torch.Tensor
    image_passes: torch.Tensor
    compute_dtype: str = "float32"

    def best_of_restarts(self, restarts: int) -> ReverseResult:
        """Fold a result whose labels are ``restarts`` copies of K labels (``targets * restarts``) into K rows:
        per label the smallest mask among restarts that reached the threshold (the smallest overall if none
        did); epochs and image passes are summed over the restarts."""
        k = self.labels.numel() // restarts
        if (
            restarts < 1
            or k * restarts != self.labels.numel()
            or not torch.equal(self.labels, self.labels[:k].repeat(restarts))
        ):
            raise ValueError(f"labels are not {restarts} copies of one label list")
        norms = self.norms.view(restarts, k)
        penalised = torch.where(self.found.view(restarts, k), norms, norms + norms.max() + 1)
        rows = penalised.argmin(dim=0) * k + torch.arange(k)  # (K,) index of the kept restart per label
        return ReverseResult(
            labels=self.labels[:k],
            masks=self.masks[rows],
            patterns=self.patterns[rows],
            norms=self.norms[rows],
            attack_success=self.attack_success[rows],
            found=self.found[rows],
            epochs=self.epochs.view(restarts, k).sum(0),
            image_passes=self.image_passes.view(restarts, k).sum(0),
            compute_dtype=self.compute_dtype,
        )

    @staticmethod
    def concat(parts: list[ReverseResult]) -> ReverseResult:
        dtypes = {p.compute_dtype for p in parts}
        if len(dtypes) != 1:
            raise ValueError(f"cannot join results computed in different precisions: {sorted(dtypes)}")
        rows = {n: torch.cat([getattr(p, n) for p in parts]) for n in _ROW_FIELDS}
        return ReverseResult(**rows, compute_dtype=dtypes.pop())

    def rows(self, index: torch.Tensor) -> ReverseResult:
        """The labels at positions ``index``, in that order."""
        return ReverseResult(**{n: getattr(self, n)[index] for n in _ROW_FIELDS}, compute_dtype=self.compute_dtype)

    def with_rows(self, index: torch.Tensor, other: ReverseResult) -> ReverseResult:
        """A copy whose labels at positions ``index`` are replaced by ``other``'s rows, in order."""
        if not torch.equal(self.labels[index], other.labels):
            raise ValueError("the replacement rows are not the same labels")
        fields = {}
        for n in _ROW_FIELDS:
            value = getattr(self, n).clone()
            value[index] = getattr(other, n)
            fields[n] = value
        if other.compute_dtype != self.compute_dtype:
            raise ValueError(f"cannot join results computed in {self.compute_dtype} and {other.compute_dtype}")
        return ReverseResult(**fields, compute_dtype=self.compute_dtype)


_ROW_FIELDS = ("labels", "masks", "patterns", "norms", "attack_success", "found", "epochs", "image_passes")


def _to_param(values: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_from_param`: tanh-space parameters for values in [0, 1]."""
    return torch.atanh((values - 0.5) * (2 - _EPSILON))


def _from_param(param: torch.Tensor) -> torch.Tensor:
    # The clamp only removes float32 rounding past the ends (0.5 + 0.5000000250 rounds above 1).
    return (torch.tanh(param) / (2 - _EPSILON) + 0.5).clamp(0, 1)


def draw_starts(
    generator: torch.Generator, k: int, image_shape: torch.Size | tuple[int, ...], config: ReverseConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The initial masks (K, 1, H, W) and patterns (K, C, H, W) of a search over K labels, drawn label by label
    (uniform on [0, 1] in the original; ``config.init_range`` narrows it), mask then pattern.

    These are the first draws of a search; :func:`draw_batches` draws the rest, one call per epoch."""
    c, h, w = image_shape
    lo, span = config.init_range[0], config.init_range[1] - config.init_range[0]
    inits = [
        (lo + span * torch.rand(1, h, w, generator=generator), lo + span * torch.rand(c, h, w, generator=generator))
        for _ in range(k)
    ]
    return torch.stack([m for m, _ in inits]), torch.stack([p for _, p in inits])


def draw_batches(generator: torch.Generator, active: int, num_images: int, config: ReverseConfig) -> torch.Tensor:
    """(active, M) uniform draws of one epoch, one row per active label in order; a row's argsort is that
    label's walk through the images (M: the epoch's images, at least all of them)."""
    return torch.rand(active, max(num_images, config.batch_size * config.steps_per_epoch), generator=generator)


def reverse_engineer(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | list[int],
    config: ReverseConfig = ReverseConfig(),
    generator: torch.Generator | None = None,
    outputs_probabilities: bool = False,
    progress: ProgressCallback | None = None,
    starts: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ReverseResult:
    """Reverse-engineer a trigger for every label in ``targets``, all optimised together.

    The original algorithm, per epoch: optimise (:meth:`_Search.run_epoch`), then keep the smallest mask that
    reached the threshold, move λ and test the early stop (:meth:`_Search.end_epoch`).

    Args:
        model: the classifier; frozen and put in eval mode for the search, restored afterwards.
        images: (N, C, H, W) clean images in [0, 1]; moved to the model's device.
        targets: the K labels to search triggers for.
        config: optimisation settings; the default reproduces the original code.
        generator: randomness for the initial masks/patterns and the batches (a CPU generator).
        outputs_probabilities: the model ends in a softmax; its outputs are probabilities, not logits.
        progress: called after every epoch with phase ``"reverse"``, the number of finished labels and K.
        starts: the initial masks (K, 1, H, W) and patterns (K, C, H, W), values in [0, 1], instead of the drawn
            ones (:func:`draw_starts`), to see where a search from a known trigger ends; the batches are drawn
            from ``generator`` as always.

    Shape:
        images: (N, C, H, W); result masks (K, 1, H, W), patterns (K, C, H, W).
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    labels = torch.as_tensor(targets, dtype=torch.int64)
    inits = (
        draw_starts(g, labels.numel(), images.shape[1:], config) if starts is None else _checked(starts, labels, images)
    )
    search = _Search(model, images, labels, config, inits, outputs_probabilities)
    with frozen(model):
        for _ in range(config.max_epochs):
            active = torch.nonzero(~search.done).flatten()
            if active.numel() == 0:
                break
            success, norms = search.run_epoch(active, draw_batches(g, active.numel(), images.shape[0], config))
            search.end_epoch(active, success, norms)
            k = search.done.numel()
            report(
                progress,
                "reverse",
                int(search.done.sum()),
                k,
                epoch=int(search.epochs.max()),
                active=int((~search.done).sum()),
            )
    return search.result()


def _checked(
    starts: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``starts`` as given, once their shapes and values are those of a search of ``labels`` on ``images``."""
    masks, patterns = starts
    k, (c, h, w) = labels.numel(), images.shape[1:]
    if masks.shape != (k, 1, h, w) or patterns.shape != (k, c, h, w):
        raise ValueError(
            f"starts must be masks ({k}, 1, {h}, {w}) and patterns ({k}, {c}, {h}, {w}), got "
            f"{tuple(masks.shape)} and {tuple(patterns.shape)}"
        )
    if bool((masks < 0).any() | (masks > 1).any() | (patterns < 0).any() | (patterns > 1).any()):
        raise ValueError("starts must hold values in [0, 1]")
    return masks.float(), patterns.float()


class _Search:
    """The state of one batched search over K labels: the tanh parameters of their masks and patterns, the
    optimiser, each label's cost schedule, early stop and best mask so far.

    Label k's state never depends on another label's: the per-label losses are summed, so their gradients (and
    Adam's element-wise updates) are independent, and every schedule is per label.
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        targets: torch.Tensor,
        config: ReverseConfig,
        starts: tuple[torch.Tensor, torch.Tensor],
        outputs_probabilities: bool,
    ) -> None:
        cfg, k = config, targets.numel()
        self.model, self.cfg, self.probabilities = model, cfg, outputs_probabilities
        self.device = device = model_device(model)
        self.images = images.to(device)  # (N, C, H, W)
        self.targets = targets
        self.targets_dev = targets.to(device)
        _, c, h, w = images.shape
        masks, patterns = starts  # (K, 1, H, W), (K, C, H, W): from draw_starts
        if cfg.shape == "blend":  # one opacity per label: the mean of its drawn mask, so the draws stay the same
            masks = masks.mean(dim=(1, 2, 3), keepdim=True)
        self.image_size = (h, w)
        self.mask_param = _to_param(masks).to(device).requires_grad_(True)
        self.pattern_param = _to_param(patterns).to(device).requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.mask_param, self.pattern_param], lr=cfg.lr, betas=cfg.betas)
        self.schedule = CostSchedule.start(
            k,
            cfg.start_cost,
            device,
            init_cost=cfg.init_cost,
            threshold=cfg.threshold,
            patience=cfg.patience,
            up=cfg.cost_up,
            down=cfg.cost_down,
        )
        self.stop = EarlyStop.start(k, device, patience=cfg.early_stop_patience, threshold=cfg.early_stop_threshold)
        self.recent = RecentSuccess.start(k, cfg.selection_epochs, device)
        self.best_mask = torch.zeros(k, 1, h, w, device=device)
        self.best_pattern = torch.zeros(k, c, h, w, device=device)
        self.best_norm = torch.full((k,), math.inf, device=device)
        self.best_success = torch.zeros(k, device=device)
        self.epochs = torch.zeros(k, dtype=torch.int64)
        self.passes = torch.zeros(k, dtype=torch.int64)
        self.done = torch.zeros(k, dtype=torch.bool)
        self.labels_per_pass = max(1, cfg.max_images_per_pass // cfg.batch_size)
        self.memory_format = input_memory_format(model, self.images[:4])
        self.dtype = compute_dtype(model, self.images[:4], cfg.precision)

    def run_epoch(self, active: torch.Tensor, draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``steps_per_epoch`` optimisation steps of the ``active`` labels; their mean attack success and mask
        norm over the epoch, each (Ka,).

        Per label, an epoch walks a fresh permutation of the clean images, the argsort of its row of ``draws``
        (Ka, M) from :func:`draw_batches` (sampling with replacement only when an epoch needs more images than
        there are). With no active label (a shard whose labels are done while other shards search on, see
        :mod:`neuralcleanse.sharding`) the steps still move every row as the joint search's Adam would: zero
        gradients, the momentum carrying on."""
        cfg, n = self.cfg, self.images.shape[0]
        order = draws.argsort(dim=1) % n  # (Ka, images per epoch)
        success = torch.zeros(active.numel(), device=self.device)
        norms = torch.zeros(active.numel(), device=self.device)
        active_dev = active.to(self.device)
        for step in range(cfg.steps_per_epoch):
            batch = order[:, step * cfg.batch_size : (step + 1) * cfg.batch_size].to(self.device)  # (Ka, B)
            self.optimizer.zero_grad(set_to_none=True)
            for lo in range(0, active.numel(), self.labels_per_pass):
                rows = slice(lo, lo + self.labels_per_pass)
                step_success, step_norms = self._backward(active_dev[rows], batch[rows])
                success[rows] += step_success
                norms[rows] += step_norms
            if active.numel() == 0:
                self.mask_param.grad = torch.zeros_like(self.mask_param)
                self.pattern_param.grad = torch.zeros_like(self.pattern_param)
            self.optimizer.step()
        self.passes[active] += cfg.steps_per_epoch * cfg.batch_size
        self.epochs[active] += 1
        return success / cfg.steps_per_epoch, norms / cfg.steps_per_epoch

    def _backward(self, labels: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Accumulate the gradients of ``CE + λ·|m|₁`` for the labels at positions ``labels`` (k',) on their
        images ``batch`` (k', B); return each label's attack success on the batch and its mask norm."""
        mask = self._masks(labels)  # (k', 1, H, W)
        pattern = _from_param(self.pattern_param[labels])  # (k', C, H, W)
        x = self.images[batch]  # (k', B, C, H, W)
        stamped = (1 - mask.unsqueeze(1)) * x + (mask * pattern).unsqueeze(1)
        with autocast(self.device, self.dtype):
            out = self.model(stamped.flatten(0, 1).contiguous(memory_format=self.memory_format))
        out = out.float()  # (k' * B, K)
        logp = log_probabilities(out, self.probabilities).view(len(labels), -1, out.shape[-1])  # (k', B, K)
        target = self.targets_dev[labels]
        ce = -logp.gather(2, target.view(-1, 1, 1).expand(-1, logp.shape[1], 1)).squeeze(2).mean(1)  # (k',)
        norm = mask.sum(dim=(1, 2, 3))  # (k',) L1 norms (masks are non-negative)
        (ce + self.schedule.cost[labels] * norm).sum().backward()
        with torch.no_grad():
            return (logp.argmax(2) == target.view(-1, 1)).float().mean(1), norm.detach()

    def _masks(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """The masks (k', 1, H, W) of the labels at ``rows``; a blend's one opacity fills its whole mask."""
        return _from_param(self.mask_param[rows]).expand(-1, 1, *self.image_size)

    @torch.no_grad()
    def end_epoch(self, active: torch.Tensor, success: torch.Tensor, norms: torch.Tensor) -> None:
        """One epoch's bookkeeping for the ``active`` labels (their epoch's mean ``success`` and mask ``norms``);
        finished labels keep their state. Keeps the smallest mask whose recent success reached the threshold,
        then, as the original, tests the early stop with the previous epoch's λ flags before moving λ."""
        k, device = self.done.numel(), self.device
        active_dev = active.to(device)
        is_active = torch.zeros(k, dtype=torch.bool, device=device)
        is_active[active_dev] = True
        epoch_success = torch.zeros(k, device=device)
        epoch_success[active_dev] = success
        epoch_norm = torch.full((k,), math.inf, device=device)
        epoch_norm[active_dev] = norms
        self.recent = self.recent.update(epoch_success, is_active)
        kept_success = self.recent.mean()
        better = is_active & (kept_success >= self.cfg.threshold) & (epoch_norm < self.best_norm)
        self.best_mask[better] = self._masks(better)
        self.best_pattern[better] = _from_param(self.pattern_param[better])
        self.best_norm = torch.where(better, epoch_norm, self.best_norm)
        self.best_success = torch.where(better, kept_success, self.best_success)
        stop = self.stop.update(self.best_norm)
        stopping = is_active & stop.should_stop(self.schedule)
        self.stop = _merge(self.stop, stop, is_active)
        self.schedule = _merge(self.schedule, self.schedule.update(epoch_success), is_active)
        self.done |= stopping.cpu()

    @torch.no_grad()
    def result(self) -> ReverseResult:
        """The kept masks; a label that never reached the threshold keeps its last mask (as the original)."""
        found = torch.isfinite(self.best_norm)
        keep = found.view(-1, 1, 1, 1)
        masks = torch.where(keep, self.best_mask, self._masks(slice(None))).detach()
        patterns = torch.where(keep, self.best_pattern, _from_param(self.pattern_param)).detach()
        return ReverseResult(
            labels=self.targets,
            masks=masks.cpu(),
            patterns=patterns.cpu(),
            norms=masks.sum(dim=(1, 2, 3)).cpu(),
            attack_success=self.best_success.cpu(),
            found=found.cpu(),
            epochs=self.epochs,
            image_passes=self.passes,
            compute_dtype=str(self.dtype).removeprefix("torch."),
        )


def _merge(old: _State, new: _State, keep_new: torch.Tensor) -> _State:
    """Take ``new``'s tensor fields where ``keep_new`` (K,) is true, ``old``'s elsewhere."""
    changes: dict[str, Any] = {}
    for f in fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if isinstance(a, torch.Tensor):
            changes[f.name] = torch.where(keep_new, b, a)
    return replace(old, **changes)
