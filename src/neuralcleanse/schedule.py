"""Neural Cleanse's cost schedule and early stop, as small pure state machines over K labels at once, and the
window of recent attack success that decides which masks are kept.

Both follow ``visualizer.py`` of the original code (bolunwang/backdoor) step for step; each ``update`` takes the
mean attack success of the last epoch (one value per label) and returns a new state, so the same objects drive
the one-label reference mode and the K-label fast mode. Label ``k``'s state never depends on another label's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypedDict, Unpack

import torch

__all__ = ["CostSchedule", "EarlyStop", "RecentSuccess"]


class _CostSettings(TypedDict, total=False):
    """The settings of :class:`CostSchedule` that :meth:`CostSchedule.start` passes on."""

    init_cost: float
    threshold: float
    patience: int
    up: float
    down: float


class _StopSettings(TypedDict, total=False):
    """The settings of :class:`EarlyStop` that :meth:`EarlyStop.start` passes on."""

    patience: int
    threshold: float


@dataclass(frozen=True)
class CostSchedule:
    """The weight λ of the mask's L1 norm in the loss, per label.

    λ starts at ``start`` (0 in the original: first find any trigger). Once a label's trigger has reached
    ``threshold`` for ``patience`` epochs in a row while λ is 0, λ is set to ``init_cost`` (1e-3). From then
    on, ``patience`` epochs in a row at or above the threshold multiply λ by ``up`` (2); ``patience`` epochs
    in a row below divide it by ``down`` (2 ** 1.5). ``moved_up``/``moved_down`` record whether λ has ever
    moved each way since it was set: the early stop waits for both.

    Shape:
        every tensor field: (K,).
    """

    cost: torch.Tensor
    set_counter: torch.Tensor
    up_counter: torch.Tensor
    down_counter: torch.Tensor
    moved_up: torch.Tensor
    moved_down: torch.Tensor
    init_cost: float = 1e-3  # original: INIT_COST
    threshold: float = 0.99  # original: ATTACK_SUCC_THRESHOLD
    patience: int = 5  # original: PATIENCE
    up: float = 2.0  # original: COST_MULTIPLIER
    down: float = 2.0**1.5  # original: cost_multiplier_down = COST_MULTIPLIER ** 1.5

    @classmethod
    def start(
        cls,
        num_labels: int,
        start_cost: float = 0.0,
        device: torch.device | None = None,
        **settings: Unpack[_CostSettings],
    ) -> CostSchedule:
        """A fresh schedule for ``num_labels`` labels with λ = ``start_cost`` (0 as in the original)."""
        zeros = torch.zeros(num_labels, dtype=torch.int64, device=device)
        false = torch.zeros(num_labels, dtype=torch.bool, device=device)
        cost = torch.full((num_labels,), float(start_cost), device=device)
        return cls(cost, zeros, zeros, zeros, false, false, **settings)

    def update(self, success: torch.Tensor) -> CostSchedule:
        """The state after an epoch whose mean attack success per label was ``success`` (K,)."""
        reached = success >= self.threshold
        unset = self.cost == 0
        set_counter = torch.where(unset & reached, self.set_counter + 1, torch.zeros_like(self.set_counter))
        just_set = set_counter >= self.patience
        cost = torch.where(just_set, torch.full_like(self.cost, self.init_cost), self.cost)
        up_counter = torch.where(reached, self.up_counter + 1, torch.zeros_like(self.up_counter))
        down_counter = torch.where(reached, torch.zeros_like(self.down_counter), self.down_counter + 1)
        # Setting λ resets the counters and flags (the original resets them inside the same `if`).
        up_counter = torch.where(just_set, torch.zeros_like(up_counter), up_counter)
        down_counter = torch.where(just_set, torch.zeros_like(down_counter), down_counter)
        moved_up = self.moved_up & ~just_set
        moved_down = self.moved_down & ~just_set
        go_up = up_counter >= self.patience
        go_down = ~go_up & (down_counter >= self.patience)
        cost = torch.where(go_up, cost * self.up, torch.where(go_down, cost / self.down, cost))
        return replace(
            self,
            cost=cost,
            set_counter=torch.where(just_set, torch.zeros_like(set_counter), set_counter),
            up_counter=torch.where(go_up, torch.zeros_like(up_counter), up_counter),
            down_counter=torch.where(go_down, torch.zeros_like(down_counter), down_counter),
            moved_up=moved_up | go_up,
            moved_down=moved_down | go_down,
        )


@dataclass(frozen=True)
class EarlyStop:
    """Stop a label once λ has moved both up and down and its best norm has not improved for ``patience``
    epochs (original: EARLY_STOP_PATIENCE = 5 * PATIENCE = 25, EARLY_STOP_THRESHOLD = 1.0, i.e. any
    decrease counts as an improvement). The counter only runs once a valid trigger has been found.

    Shape:
        every tensor field: (K,).
    """

    counter: torch.Tensor
    reference_best: torch.Tensor
    patience: int = 25  # original: EARLY_STOP_PATIENCE
    threshold: float = 1.0  # original: EARLY_STOP_THRESHOLD

    @classmethod
    def start(cls, num_labels: int, device: torch.device | None = None, **settings: Unpack[_StopSettings]) -> EarlyStop:
        """A fresh early stop for ``num_labels`` labels: no stalled epochs, no best norm yet."""
        return cls(
            torch.zeros(num_labels, dtype=torch.int64, device=device),
            torch.full((num_labels,), float("inf"), device=device),
            **settings,
        )

    def update(self, best_norm: torch.Tensor) -> EarlyStop:
        """The state after an epoch that ended with best valid norms ``best_norm`` (K,), ``inf`` if none."""
        found = torch.isfinite(best_norm)
        stalled = best_norm >= self.threshold * self.reference_best
        counter = torch.where(
            found, torch.where(stalled, self.counter + 1, torch.zeros_like(self.counter)), self.counter
        )
        return replace(self, counter=counter, reference_best=torch.minimum(best_norm, self.reference_best))

    def should_stop(self, schedule: CostSchedule) -> torch.Tensor:
        """(K,) bool: labels whose search is over."""
        return schedule.moved_up & schedule.moved_down & (self.counter >= self.patience)


@dataclass(frozen=True)
class RecentSuccess:
    """Each label's mean attack success over its last ``window`` epochs (over all its epochs until it has run
    that many). A mask is kept only when this mean reaches the threshold.

    The original keeps a mask on its own epoch's success (``window=1``), measured on 992 images. Fast mode's
    epochs see 40 images per label: a mask just short of the threshold then often passes on one lucky epoch,
    and the smallest such mask is the one kept, which scatters the norms of clean labels downwards. So fast
    mode asks 3 epochs (120 images) in a row (evidence in docs/how-it-works.md).

    Shape:
        values: (K, window), a ring indexed by each label's epoch count; count: (K,).
    """

    values: torch.Tensor
    count: torch.Tensor

    @classmethod
    def start(cls, num_labels: int, window: int = 1, device: torch.device | None = None) -> RecentSuccess:
        if window < 1:
            raise ValueError(f"window must be >= 1 epoch, got {window}")
        return cls(
            torch.zeros(num_labels, window, device=device),
            torch.zeros(num_labels, dtype=torch.int64, device=device),
        )

    def update(self, success: torch.Tensor, active: torch.Tensor | None = None) -> RecentSuccess:
        """Record an epoch's mean attack success ``success`` (K,) for the labels where ``active`` (K,) is true
        (all by default); the others keep their state."""
        window = self.values.shape[1]
        if active is None:
            active = torch.ones_like(self.count, dtype=torch.bool)
        slot = torch.nn.functional.one_hot(self.count % window, window).bool() & active.unsqueeze(1)
        values = torch.where(slot, success.unsqueeze(1), self.values)
        return replace(self, values=values, count=self.count + active.long())

    def mean(self) -> torch.Tensor:
        """(K,) mean over the recorded epochs in the window (0 for a label with none)."""
        recorded = self.count.clamp(max=self.values.shape[1])
        return self.values.sum(1) / recorded.clamp(min=1)
