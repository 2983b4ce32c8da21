"""Where many scans run: in this process, or as Ray tasks on a local Ray or a cluster.

Ray (``pip install 'neuralcleanse[ray]'``) is the engine; nothing here schedules, retries or moves data itself.
:func:`ray_session` starts a local Ray (loopback only, no dashboard, no usage reporting) or joins a cluster;
:class:`InProcessRunner` and :class:`RayRunner` run one function over many jobs with the same interface, so
``--workers 1`` without Ray runs the code path a cluster runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from .progress import ProgressCallback

__all__ = [
    "RAY_MISSING",
    "InProcessRunner",
    "RayRunner",
    "Runner",
    "TaskTimeout",
    "ray_available",
    "ray_session",
]

logger = logging.getLogger(__name__)

RAY_MISSING = "Ray is not installed: pip install 'neuralcleanse[ray]', or run with --workers 1 and no --ray-address"

# A task still running this long after its own cooperative deadline is killed (ours: the scan checks its
# deadline once per epoch; this margin covers loading and the last epoch).
HARD_KILL_GRACE = 2.0  # times the per-model timeout
HARD_KILL_MIN_S = 30.0


class TaskTimeout(TimeoutError):
    """A task ran past its time and was stopped."""


def ray_available() -> bool:
    """Whether Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def ray_session(workers: int | None = None, address: str | None = None) -> Iterator[None]:
    """A Ray session for the block: an already initialised one as it is (tests, notebooks), else a local Ray with
    ``workers`` CPUs (all cores when ``None``) bound to 127.0.0.1, or the cluster at ``address`` (``"auto"`` or
    ``HOST:PORT``); a session started here is shut down afterwards.

    Raises:
        RuntimeError: Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise RuntimeError(RAY_MISSING) from None
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would otherwise report usage over the network
    if address is None:
        ray.init(
            num_cpus=workers if workers is not None else os.cpu_count(),
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


class Runner(Protocol):
    """Runs ``fn(*args)`` for every ``(key, args)`` job and yields ``(key, result)`` as each ends, in any order; a
    task that failed outside ``fn`` (a lost worker, a timeout) yields its exception as the result."""

    def put(self, value: Any) -> Any: ...

    def run(
        self,
        fn: Callable[..., Any],
        jobs: Iterable[tuple[str, tuple[Any, ...]]],
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> Iterator[tuple[str, Any]]: ...


class InProcessRunner:
    """One job after the other in this process. ``put`` returns the value itself."""

    def put(self, value: Any) -> Any:
        return value

    def run(
        self,
        fn: Callable[..., Any],
        jobs: Iterable[tuple[str, tuple[Any, ...]]],
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> Iterator[tuple[str, Any]]:
        for key, args in jobs:
            yield key, fn(*args)


class RayRunner:
    """Each job one Ray task declaring ``cpus`` CPUs and ``gpus`` GPUs.

    At most ``in_flight`` tasks are submitted at once (default, ours: as many as the cluster runs at once, so a
    task's clock starts about when it starts running), so the driver holds a bounded number of results; ``put``
    places a value in the object store once, and a task given its reference as an argument receives the value.
    A task lost with its worker is retried ``retries`` times (default 1, ours: a lost node costs one retry, a
    model that kills its worker twice becomes an error row); a task running past twice its ``timeout`` (at least
    :data:`HARD_KILL_MIN_S` more) is killed.
    """

    def __init__(self, cpus: float = 1, gpus: float = 0, in_flight: int | None = None, retries: int = 1) -> None:
        if cpus <= 0 or gpus < 0 or retries < 0 or (in_flight is not None and in_flight < 1):
            raise ValueError(
                f"need cpus > 0, gpus >= 0, retries >= 0, in_flight >= 1; got {cpus}, {gpus}, {retries}, {in_flight}"
            )
        self.cpus, self.gpus, self.in_flight, self.retries = cpus, gpus, in_flight, retries

    def put(self, value: Any) -> Any:
        import ray

        return ray.put(value)

    def slots(self) -> int:
        """Tasks the cluster runs at once."""
        import ray

        total = ray.cluster_resources()
        slots = int(total.get("CPU", 1) // self.cpus)
        if self.gpus:
            slots = min(slots, int(total.get("GPU", 0) // self.gpus))
        return max(1, slots)

    def run(
        self,
        fn: Callable[..., Any],
        jobs: Iterable[tuple[str, tuple[Any, ...]]],
        *,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> Iterator[tuple[str, Any]]:
        import ray

        remote = ray.remote(fn).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries)
        limit = self.in_flight if self.in_flight is not None else self.slots()
        kill_after = None if timeout is None else max(timeout * HARD_KILL_GRACE, timeout + HARD_KILL_MIN_S)
        pending: dict[Any, tuple[str, float]] = {}
        queue = iter(jobs)
        try:
            while True:
                while len(pending) < limit:
                    job = next(queue, None)
                    if job is None:
                        break
                    pending[remote.remote(*job[1])] = (job[0], time.monotonic())
                if not pending:
                    return
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    key, _ = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # the task's worker died, or Ray failed it
                        result = exc
                    yield key, result
                if kill_after is not None:
                    now = time.monotonic()
                    for ref, (key, started) in list(pending.items()):
                        if now - started > kill_after:
                            ray.cancel(ref, force=True)
                            del pending[ref]
                            yield key, TaskTimeout(f"killed after {now - started:.0f} s (timeout {timeout:g} s)")
        finally:
            for ref in pending:  # interrupted: stop what is still running
                ray.cancel(ref, force=True)
