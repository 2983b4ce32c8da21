"""Time ``neuralcleanse demo`` as a new user meets it: an empty model cache, so both demo models are trained,
then both scans, in the precision asked for (float32 by default: what a CPU without native bfloat16 runs).

    python benchmarks/demo_time.py [--precision float32]

Writes results/demo.json and results/demo.md: the wall-clock and CPU seconds of the whole run, the machine (CPU
model, cores, load average: the figures mean little on a shared machine without it), and each demo model's
accuracy, attack success and verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import markdown_table, write_results


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="float32", choices=["auto", "float32", "bfloat16"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        load_before = os.getloadavg()
        start = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "neuralcleanse",
                "demo",
                "--out",
                str(Path(tmp) / "demo"),
                "-q",
                "--precision",
                args.precision,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            sys.exit(f"the demo failed:\n{done.stderr}")
        rows: list[dict[str, Any]] = []
        for report_path in sorted((Path(tmp) / "demo").glob("*/report.json")):
            report = json.loads(report_path.read_text())
            model = json.loads((Path(report["extra"]["model"]) / "model.json").read_text())
            rows.append(
                {
                    "model": report_path.parent.name,
                    "epochs": model["epochs"],
                    "train_seconds": model["seconds"],
                    "clean_accuracy": model["clean_accuracy"],
                    "attack_success": model["attack_success"],
                    "flagged": report["flagged"],
                    "anomaly_index": report["anomaly_index"],
                    "scan_seconds": report["seconds"],
                    "compute_dtype": report["config"]["compute_dtype"],
                }
            )
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()}
    whole = {
        "precision": args.precision,
        "demo_wall_seconds": wall,
        "demo_cpu_seconds": usage.ru_utime + usage.ru_stime,
        "load_average_before": load_before[0],
        "load_average_after": os.getloadavg()[0],
        "machine": machine,
    }
    rows = [{**row, **whole} for row in rows]  # one row per demo model, each with the whole run's figures
    table = markdown_table(
        ["model", "epochs", "train s", "clean acc", "attack success", "flagged", "index", "scan s", "dtype"],
        [
            [
                r["model"],
                r["epochs"],
                r["train_seconds"],
                r["clean_accuracy"],
                r["attack_success"],
                r["flagged"],
                r["anomaly_index"],
                r["scan_seconds"],
                r["compute_dtype"],
            ]
            for r in rows
        ],
    )
    head = (
        f"`neuralcleanse demo --precision {args.precision}` from an empty cache: {wall:.0f} s wall, "
        f"{whole['demo_cpu_seconds']:.0f} s CPU on {machine['cpu']} ({machine['cores']} cores, load average "
        f"{load_before[0]:.1f} before)\n\n"
    )
    write_results("demo", rows, head + table)
    print(head + table)


if __name__ == "__main__":
    main()
