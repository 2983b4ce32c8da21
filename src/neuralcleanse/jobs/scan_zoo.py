"""The ``scan-zoo`` job: every model of a zoo scanned, in this process or on Ray, and the zoo's summary."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import ScanConfig
from ..engine import RAY_MISSING, InProcessRunner, RayRunner, Runner, ray_available, ray_session
from ..preprocess import Preprocessing
from ..progress import ProgressCallback
from ..zoo import ZooResult, finished_rows, read_zoo, scan_zoo, write_zoo_summary

__all__ = ["scan_zoo_job", "zoo_engine"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def zoo_engine(workers: int | None, address: str | None, device: str = "cpu") -> Iterator[Runner]:
    """The runner for ``workers`` and ``address``: in this process for one worker and no cluster, else Ray
    (a local Ray with ``workers`` CPUs, all cores when ``None``, or the cluster at ``address``), one CPU per
    model and one GPU per model on a CUDA ``device``.

    Raises:
        ValueError: ``workers`` is below 1.
        RuntimeError: Ray is needed but not installed.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1 and address is None:
        yield InProcessRunner()
        return
    if not ray_available():
        raise RuntimeError(RAY_MISSING)
    with ray_session(workers, address):
        yield RayRunner(cpus=1, gpus=1 if device.startswith("cuda") else 0)


def scan_zoo_job(
    zoo: str | Path,
    data: str | None,
    out: str | Path,
    config: ScanConfig | None = None,
    *,
    seed: int = 0,
    workers: int | None = None,
    address: str | None = None,
    device: str = "cpu",
    timeout: float | None = None,
    progress: ProgressCallback | None = None,
    arch: str | None = None,
    preprocessing: Preprocessing | None = None,
) -> tuple[ZooResult, Path, Path]:
    """Scan every model of ``zoo`` (see :mod:`neuralcleanse.zoo.manifest`) into ``out/<model>/`` and write
    ``out/zoo.json`` and ``out/zoo.html``; the result and the two paths. The summary is written even when the
    run is interrupted, with the models finished so far. ``arch`` and ``preprocessing`` apply to the models
    whose manifest line gives none."""
    entries = [replace(e, arch=e.arch or arch, preprocessing=e.preprocessing or preprocessing) for e in read_zoo(zoo)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    details: dict[str, Any] = {"zoo": str(zoo), "data": data or "per model", "seed": seed, "device": device}
    try:
        with zoo_engine(workers, address, device) as runner:
            result = scan_zoo(
                entries, out, data=data, runner=runner, config=config, seed=seed, device=device, timeout=timeout,
                progress=progress,
            )  # fmt: skip
    except KeyboardInterrupt:
        details["interrupted"] = "yes: the models below are those finished; run again to scan the rest"
        write_zoo_summary(finished_rows(entries, out), out, details)
        raise
    details["engine"] = type(runner).__name__
    details["seconds"] = f"{result.seconds:.1f}"
    json_path, html_path = write_zoo_summary(result.rows, out, details)
    return result, json_path, html_path
