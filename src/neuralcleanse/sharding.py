"""Label sharding: one model's labels searched by several workers, with the report of a single-process scan.

A fast-mode search optimises all K labels together but keeps every label's state apart (see
:mod:`neuralcleanse.reverse`); what ties the labels together is the one random generator: the initial masks
are drawn label by label, then every epoch draws one row of batch order per *active* label. So a label's draws
depend on when the other labels stopped. To give each label exactly the draws it gets in the unsharded search,
the shards run in lockstep: every epoch the driver tells each shard which labels are still active anywhere,
each shard draws the whole epoch's rows from its own copy of the generator (cheap beside the search) and keeps
its own labels' rows. The norms are gathered and the outlier test runs once, in the driver. The seeding is the
unsharded scan's, so a sharded scan reproduces its report (the golden report included) up to float rounding of
differently sized batches.

The shards live in a :class:`ShardPool`: :class:`LocalShards` in this process (the same code path, for tests
and for ``--workers 1``), :class:`RayShards` as Ray actors (``pip install 'neuralcleanse[ray]'``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from ._torch import frozen, holds_script
from .progress import ProgressCallback, report
from .reverse import ReverseConfig, ReverseResult, _Search, draw_batches, draw_starts

__all__ = ["LabelShard", "LocalShards", "RayShards", "ShardPool", "ShardedSearch", "split_rows"]

logger = logging.getLogger(__name__)


class LabelShard:
    """The rows ``rows`` of a batched search over ``targets``, kept in step with the other shards.

    Args:
        model: the classifier (frozen and in eval mode from :meth:`start` to :meth:`finish`).
        images: (N, C, H, W) clean images in [0, 1].
        config: the search's settings.
        probabilities: the model's outputs are probabilities.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, config: ReverseConfig, probabilities: bool) -> None:
        self.model, self.images, self.config, self.probabilities = model, images, config, probabilities
        self._frozen = contextlib.ExitStack()
        self._search: _Search | None = None
        self._rows = torch.zeros(0, dtype=torch.int64)
        self._generator = torch.Generator()

    def start(self, targets: Sequence[int], rows: Sequence[int], generator_state: torch.Tensor) -> None:
        """Begin a search of ``targets[rows]`` (``rows`` ascending), the generator at ``generator_state``."""
        self._generator = torch.Generator().set_state(generator_state)
        self._rows = torch.as_tensor(list(rows), dtype=torch.int64)
        masks, patterns = draw_starts(self._generator, len(targets), self.images.shape[1:], self.config)
        labels = torch.as_tensor(list(targets), dtype=torch.int64)[self._rows]
        starts = (masks[self._rows], patterns[self._rows])
        self._frozen.close()
        self._frozen.enter_context(frozen(self.model))
        self._search = _Search(self.model, self.images, labels, self.config, starts, self.probabilities)

    def epoch(self, active: torch.Tensor) -> torch.Tensor:
        """One epoch, ``active`` (Ka,) being the ascending positions in ``targets`` still searching in any
        shard; returns this shard's ``done`` flags (its rows, in order)."""
        search = self._require()
        draws = draw_batches(self._generator, active.numel(), self.images.shape[0], self.config)  # (Ka, M)
        mine = torch.isin(active, self._rows)
        local = torch.searchsorted(self._rows, active[mine])  # positions among this shard's rows
        success, norms = search.run_epoch(local, draws[mine])
        search.end_epoch(local, success, norms)
        return search.done.clone()

    def finish(self) -> tuple[ReverseResult, torch.Tensor]:
        """This shard's result and the generator's state after the search (the same in every shard)."""
        result = self._require().result()
        self._search = None
        self._frozen.close()
        return result, self._generator.get_state()

    def _require(self) -> _Search:
        if self._search is None:
            raise RuntimeError("the shard has no search: call start() first")
        return self._search


class ShardPool(Protocol):
    """Where the shards run. ``open`` places the model and images once; ``call`` runs one method on every shard
    (with per-shard arguments) and returns their answers in shard order."""

    def open(self, model: nn.Module, images: torch.Tensor, config: ReverseConfig, probabilities: bool) -> None: ...

    def call(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]: ...

    def close(self) -> None: ...

    @property
    def size(self) -> int: ...


class LocalShards:
    """``shards`` shards in this process, run one after the other: the sharded code path without Ray."""

    def __init__(self, shards: int) -> None:
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        self._size = shards
        self._shards: list[LabelShard] = []

    @property
    def size(self) -> int:
        return self._size

    def open(self, model: nn.Module, images: torch.Tensor, config: ReverseConfig, probabilities: bool) -> None:
        self._shards = [LabelShard(model, images, config, probabilities) for _ in range(self._size)]

    def call(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        pairs = list(zip(self._shards, args, strict=True))
        if method == "finish":  # the shards share the model: their frozen() contexts unwind in reverse order
            return [getattr(s, method)(*a) for s, a in pairs[::-1]][::-1]
        return [getattr(s, method)(*a) for s, a in pairs]

    def close(self) -> None:
        self._shards = []


class RayShards:
    """``shards`` Ray actors, each holding the model and the images (put in the object store once).

    Args:
        shards: actors, one CPU each (and one GPU each when the model is on a GPU).
        load: a picklable callable returning the model, called by each actor (the CLI reloads the model file);
            ``None`` ships the model through the object store: pickled, or for a TorchScript model its saved
            bytes, since TorchScript modules do not pickle.

    Ray must be initialised (:func:`neuralcleanse.engine.ray_session`).
    """

    def __init__(self, shards: int, load: Callable[[], nn.Module] | None = None) -> None:
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        self._size, self._load = shards, load
        self._actors: list[Any] = []

    @property
    def size(self) -> int:
        return self._size

    def open(self, model: nn.Module, images: torch.Tensor, config: ReverseConfig, probabilities: bool) -> None:
        import ray

        gpus = 1 if next(model.parameters(), torch.empty(0)).device.type == "cuda" else 0
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(_RayShard)
        model_ref = ray.put(self._load if self._load is not None else _shippable(model))
        images_ref = ray.put(images.cpu())
        self.close()
        self._actors = [actor.remote(model_ref, images_ref, config, probabilities) for _ in range(self._size)]

    def call(self, method: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        import ray

        return list(ray.get([getattr(a, method).remote(*x) for a, x in zip(self._actors, args, strict=True)]))

    def close(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []


def _shippable(model: nn.Module) -> nn.Module | Callable[[], nn.Module]:
    """The model as Ray can pickle it: itself, or for a TorchScript model a loader of its saved bytes."""
    if isinstance(model, torch.jit.ScriptModule):
        buffer = io.BytesIO()
        torch.jit.save(model, buffer)
        return functools.partial(_load_scripted, buffer.getvalue())
    if holds_script(model):
        raise ValueError(
            f"this {type(model).__name__} holds TorchScript modules, which do not pickle to Ray workers; give "
            "RayShards a load= callable that builds the model in the worker"
        )
    return model


def _load_scripted(data: bytes) -> nn.Module:
    return torch.jit.load(io.BytesIO(data))


class _RayShard(LabelShard):
    """A :class:`LabelShard` built inside a Ray actor from the object store's model (or its loader)."""

    def __init__(self, model: Any, images: torch.Tensor, config: ReverseConfig, probabilities: bool) -> None:
        module = model if isinstance(model, nn.Module) else model()
        device = next(module.parameters(), torch.empty(0)).device
        super().__init__(module, images.to(device), config, probabilities)


def split_rows(k: int, shards: int) -> list[list[int]]:
    """``range(k)`` in ``min(shards, k)`` contiguous blocks whose sizes differ by at most one."""
    n = max(1, min(shards, k))
    size, extra = divmod(k, n)
    bounds = [i * size + min(i, extra) for i in range(n + 1)]
    return [list(range(bounds[i], bounds[i + 1])) for i in range(n)]


class ShardedSearch:
    """A drop-in for :func:`~neuralcleanse.reverse.reverse_engineer` that splits the labels over a pool's shards.

    Give it to :class:`~neuralcleanse.scan.NeuralCleanse` as ``search=``; every search of the scan (the first and
    the restarts) is sharded, in lockstep, and returns what ``reverse_engineer`` would, leaving ``generator``
    where ``reverse_engineer`` would leave it.

    Example:
        >>> scanner = NeuralCleanse(model, search=ShardedSearch(LocalShards(2)))  # doctest: +SKIP
    """

    def __init__(self, pool: ShardPool) -> None:
        self.pool = pool
        self._opened: tuple[int, int, ReverseConfig, bool] | None = None

    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        targets: torch.Tensor | list[int],
        config: ReverseConfig | None = None,
        generator: torch.Generator | None = None,
        outputs_probabilities: bool = False,
        progress: ProgressCallback | None = None,
    ) -> ReverseResult:
        labels = [int(t) for t in torch.as_tensor(targets).tolist()]
        config = config if config is not None else ReverseConfig()
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        key = (id(model), id(images), config, outputs_probabilities)
        if self._opened != key:  # the model and images go to the shards once per scan
            self.pool.open(model, images, config, outputs_probabilities)
            self._opened = key
        blocks = split_rows(len(labels), self.pool.size)
        blocks += [[] for _ in range(self.pool.size - len(blocks))]  # fewer labels than shards: idle shards
        state = g.get_state()
        self.pool.call("start", [(labels, rows, state) for rows in blocks])
        done = torch.zeros(len(labels), dtype=torch.bool)
        for epoch in range(config.max_epochs):
            active = torch.nonzero(~done).flatten()
            if active.numel() == 0:
                break
            for rows, flags in zip(blocks, self.pool.call("epoch", [(active,)] * len(blocks)), strict=True):
                done[rows] = flags
            report(progress, "reverse", int(done.sum()), len(labels), epoch=epoch + 1, active=int((~done).sum()))
        answers = self.pool.call("finish", [()] * len(blocks))
        g.set_state(answers[0][1])
        return ReverseResult.concat([result for (result, _), rows in zip(answers, blocks, strict=True) if rows])
