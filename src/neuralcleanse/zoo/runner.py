"""Scan every model of a zoo through a :class:`~neuralcleanse.engine.Runner`, one task per model.

Each model gets the scan folder ``scan`` writes, ``OUT/<name>/``. A folder already holding ``report.json`` (written
last, so it marks a complete report) is skipped and its row read back; a folder without one is scanned afresh,
after removing the temporary files an interrupted write left. So an interrupted zoo run loses at most the models
in flight, and running it again finishes the rest. A model that fails (unreadable file, wrong input shape, the
sanity check, a timeout) becomes an error row with the one-line message ``scan`` prints, and the zoo goes on.

The clean images of each distinct data set are loaded once by the driver and handed to the runner once
(:meth:`Runner.put`: the Ray object store), not re-read by every task. Tasks return small rows; the reports stay
on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import ScanConfig
from ..data import ImageData, load_dataset
from ..engine import Runner, TaskTimeout
from ..errors import one_line
from ..progress import ProgressCallback, ProgressEvent, report
from ..store.scan_dir import REPORT_FILE
from .manifest import ZooEntry

__all__ = ["ZooResult", "finished_rows", "scan_entry", "scan_zoo"]

logger = logging.getLogger(__name__)

DONE, ERROR, TIMEOUT = "done", "error", "timeout"


@dataclass(frozen=True)
class ZooResult:
    """The rows of a zoo scan, in the zoo's order (see :func:`~neuralcleanse.zoo.summary.zoo_summary`), and the
    models scanned by this run (the others were skipped: their reports were complete)."""

    rows: list[dict[str, Any]]
    scanned: list[str]
    seconds: float

    @property
    def failed(self) -> list[str]:
        return [r["model"] for r in self.rows if r["status"] != DONE]


def scan_zoo(
    entries: list[ZooEntry],
    out: str | Path,
    *,
    data: str | None,
    runner: Runner,
    config: ScanConfig | None = None,
    seed: int = 0,
    device: str = "cpu",
    timeout: float | None = None,
    progress: ProgressCallback | None = None,
) -> ZooResult:
    """Scan ``entries`` into ``out/<name>/`` with ``runner``; ``data`` is the clean data of models whose entry
    names none. ``progress`` receives phase ``"zoo"`` events: models finished of all, with ``failed``,
    ``running`` and ``skipped`` counts. ``timeout``: seconds a model may take before it is stopped."""
    start = time.perf_counter()
    out = Path(out)
    config = config if config is not None else ScanConfig()
    rows: dict[str, dict[str, Any]] = {}
    todo: list[ZooEntry] = []
    for entry in entries:
        done = _complete_row(entry, out)
        if done is not None:
            rows[entry.name] = done
        else:
            todo.append(entry)
    skipped = len(rows)
    datasets: dict[str, Any] = {}  # data spec -> the runner's handle, or the one-line error of loading it
    jobs = []
    for entry in todo:
        spec = entry.data or data
        if spec is None:
            rows[entry.name] = _error_row(entry, "no clean data: give --data or a data column in the manifest")
            continue
        if spec not in datasets:
            try:
                datasets[spec] = runner.put(load_dataset(spec, "test"))
            except (ValueError, OSError) as exc:
                datasets[spec] = RuntimeError(one_line(exc))
        if isinstance(datasets[spec], RuntimeError):
            rows[entry.name] = _error_row(entry, str(datasets[spec]))
            continue
        args = (entry, str(out / entry.name), spec, datasets[spec], config, seed, device, timeout)
        jobs.append((entry.name, args))
    by_name = {e.name: e for e in entries}
    counts = {"failed": sum(r["status"] != DONE for r in rows.values()), "skipped": skipped}

    def tick(running: int) -> None:
        report(progress, "zoo", len(rows), len(entries), running=running, **counts)

    tick(0)
    scanned = []
    for name, row in _results(runner, jobs, timeout, tick):
        if isinstance(row, BaseException):  # the task was lost or killed outside scan_entry
            status = TIMEOUT if isinstance(row, TaskTimeout) else ERROR
            row = _error_row(by_name[name], one_line(row), status)
        rows[name] = _judged(by_name[name], row)
        scanned.append(name)
        counts["failed"] += row["status"] != DONE
        tick(min(len(jobs) - len(scanned), _slots(runner)))
    ordered = [_judged(e, rows[e.name]) for e in entries if e.name in rows]
    return ZooResult(ordered, scanned, time.perf_counter() - start)


def _results(
    runner: Runner, jobs: list[tuple[str, tuple[Any, ...]]], timeout: float | None, tick: Callable[[int], None]
) -> Iterator[tuple[str, Any]]:
    tick(min(len(jobs), _slots(runner)))
    yield from runner.run(scan_entry, jobs, timeout=timeout)


def _slots(runner: Runner) -> int:
    slots = getattr(runner, "slots", None)
    return int(slots()) if callable(slots) else 1


def scan_entry(
    entry: ZooEntry,
    out_dir: str,
    data: str,
    dataset: ImageData,
    config: ScanConfig,
    seed: int,
    device: str,
    timeout: float | None,
) -> dict[str, Any]:
    """Load and scan one model into ``out_dir`` (one task); its row. Never raises for a model's fault."""
    from ..jobs.scan import scan_model  # the job module imports the whole scan stack; tasks import it here
    from ..loading import load_model

    start = time.perf_counter()
    out = Path(out_dir)
    _remove_leftovers(out)
    progress = None if timeout is None else _deadline(start + timeout, timeout)
    try:
        loaded = load_model(entry.path, arch=entry.arch, preprocessing=entry.preprocessing, map_location=device)
        torch.manual_seed(seed)  # as the CLI's --seed: anything the model itself draws
        scan, _ = scan_model(loaded, entry.path, data, out, config, seed, progress=progress, dataset=dataset)
    except TaskTimeout as exc:
        return _error_row(entry, one_line(exc), TIMEOUT, time.perf_counter() - start)
    except Exception as exc:  # a model's fault becomes its row; the zoo goes on
        logger.info("%s failed: %s", entry.name, exc, exc_info=True)
        return _error_row(entry, one_line(exc), ERROR, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    verdict = (scan.infected, scan.flagged, scan.anomaly_index, seconds)
    second = scan.second_scan is not None
    return _row(entry, *verdict, skipped=False, warnings=scan.warnings, steadiness=scan.steadiness, second_scan=second)


def _deadline(deadline: float, timeout: float) -> ProgressCallback:
    """A progress callback that stops the scan (at its next event, once per epoch) after ``deadline``."""

    def check(_: ProgressEvent) -> None:
        if time.perf_counter() > deadline:
            raise TaskTimeout(f"stopped after {timeout:g} s (--timeout-per-model)")

    return check


def _remove_leftovers(out: Path) -> None:
    """Temporary files of an interrupted write (see :mod:`neuralcleanse.atomic`): never part of a report."""
    if out.is_dir():
        for tmp in out.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def finished_rows(entries: list[ZooEntry], out: str | Path) -> list[dict[str, Any]]:
    """The rows of the models of ``entries`` whose folders under ``out`` hold a complete report."""
    rows = [_complete_row(e, Path(out)) for e in entries]
    return [_judged(e, r) for e, r in zip(entries, rows, strict=True) if r is not None]


def _complete_row(entry: ZooEntry, out: Path) -> dict[str, Any] | None:
    """The row of a model whose folder holds a complete report, else None."""
    path = out / entry.name / REPORT_FILE
    if not path.is_file():
        return None
    import json

    try:
        report_ = json.loads(path.read_text(encoding="utf-8"))
        verdict = (report_["infected"], report_["flagged"], report_["anomaly_index"], report_["seconds"])
        warnings, steadiness = report_.get("warnings") or [], report_.get("verdict_steadiness")
        second = report_.get("second_scan") is not None
        return _row(entry, *verdict, skipped=True, warnings=warnings, steadiness=steadiness, second_scan=second)
    except (ValueError, KeyError, OSError):
        return None  # unreadable: scan again


def _row(
    entry: ZooEntry,
    infected: bool,
    flagged: list[int],
    index: float,
    seconds: float,
    skipped: bool,
    warnings: list[str],
    steadiness: float | None,
    second_scan: bool,
) -> dict[str, Any]:
    return {
        "model": entry.name,
        "path": entry.path,
        "status": DONE,
        "infected": bool(infected),
        "flagged": [int(f) for f in flagged],
        "anomaly_index": float(index),
        "seconds": round(float(seconds), 3),
        "skipped": skipped,
        "report": f"{entry.name}/report.html",
        "warnings": list(warnings),  # what makes the verdict less sure (the report's)
        "verdict_steadiness": steadiness,  # the report's; None for a report written before it was measured
        "second_scan": second_scan,  # a second scan joined the borderline verdict
    }


def _error_row(entry: ZooEntry, message: str, status: str = ERROR, seconds: float = 0.0) -> dict[str, Any]:
    return {
        "model": entry.name,
        "path": entry.path,
        "status": status,
        "infected": None,
        "flagged": [],
        "anomaly_index": None,
        "seconds": round(seconds, 3),
        "skipped": False,
        "error": message,
    }


def _judged(entry: ZooEntry, row: dict[str, Any]) -> dict[str, Any]:
    """The row with the manifest's truth and whether the verdict matches it."""
    if entry.truth is None:
        return row
    row = dict(row)
    row["truth_infected"] = entry.truth.infected
    row["truth_targets"] = list(entry.truth.targets)
    row["correct"] = None if row["status"] != DONE else entry.truth.judge(row["infected"], row["flagged"])
    return row
