"""The whole ``report.json`` of a CLI scan of the hand-built infected model, compared with a stored copy.

It guards refactoring: the same seed must give the same report, key for key. Times, versions and paths (which
differ between runs and machines) are left out; floats are compared to a relative tolerance because another
CPU may sum in another order. After an intended change of the report, regenerate the copy with
``NEURALCLEANSE_UPDATE_GOLDEN=1 pytest tests/test_golden.py``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _tiny import TemplateNet, clean_images

from neuralcleanse.cli import main

GOLDEN = Path(__file__).parent / "golden" / "tiny_scan_report.json"
VOLATILE = {"seconds", "versions"}  # differ between runs and machines
VOLATILE_EXTRA = {"model", "data"}  # temporary paths
REL_TOL = 1e-3


def _stable(report: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in report.items() if k not in VOLATILE}
    out["extra"] = {k: v for k, v in out.get("extra", {}).items() if k not in VOLATILE_EXTRA}
    return out


def _assert_close(got: Any, want: Any, where: str = "report") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            _assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, int | float) and math.isclose(got, want, rel_tol=REL_TOL, abs_tol=1e-6), (
            f"{where}: {got!r} != {want!r}"
        )
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_report_matches_the_stored_copy(tmp_path):
    torch.jit.script(TemplateNet(backdoor=True)).save(str(tmp_path / "infected.pt"))
    images, labels = clean_images(per_label=20)
    np.savez(tmp_path / "clean.npz", x=(images.numpy() * 255).round().astype(np.uint8), y=labels.numpy())
    argv = ["scan", str(tmp_path / "infected.pt"), "--data", str(tmp_path / "clean.npz")]
    code = main([*argv, "--out", str(tmp_path / "r"), "--precision", "float32", "--seed", "1", "-q"])
    assert code == 0
    report = _stable(json.loads((tmp_path / "r" / "report.json").read_text()))
    if os.environ.get("NEURALCLEANSE_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"wrote {GOLDEN}")
    _assert_close(report, json.loads(GOLDEN.read_text()))
