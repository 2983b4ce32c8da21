"""A zoo of tiny models whose verdicts are known by construction (see _tiny.py), for the zoo and sharding tests.

Infected models: the hand-built TemplateNet, and copies whose outputs are permuted so that the backdoor's target
is another label (each with its clean images relabelled to match). Clean models: the same without the backdoor.
Broken models: a file of random bytes, and a model that takes 3-channel images where the data has 1 channel.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import TARGET, TemplateNet, clean_images
from torch import nn

from neuralcleanse.config import FAST, ScanConfig

#: A search short enough for ~2 s scans of the tiny models that still separates the corner trigger (norm ~3.5)
#: from the templates (~17-23): every label stops early well before 40 epochs.
SMALL = ScanConfig(search=replace(FAST, max_epochs=40, precision="float32"), searches=1, samples=60)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: the tiny models run several times faster so on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PERMUTATIONS = {"a": None, "b": [5, 0, 1, 2, 3, 4], "c": [1, 2, 5, 0, 3, 4]}


class Relabelled(nn.Module):
    """``net`` with output j being ``net``'s output ``perm[j]``."""

    def __init__(self, net: nn.Module, perm: list[int]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("perm", torch.tensor(perm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, self.perm]


def _target(perm: list[int] | None) -> int:
    return TARGET if perm is None else perm.index(TARGET)


def _save_data(path: Path, perm: list[int] | None) -> Path:
    images, labels = clean_images(per_label=10)
    if perm is not None:
        labels = torch.tensor([perm.index(int(y)) for y in labels])
    np.savez(path, x=(images.numpy() * 255).round().astype(np.uint8), y=labels.numpy())
    return path


def _save_model(path: Path, backdoor: bool, perm: list[int] | None) -> Path:
    net: nn.Module = TemplateNet(backdoor=backdoor)
    if perm is not None:
        net = Relabelled(net, perm)
    torch.jit.script(net.eval()).save(str(path))
    return path


def build_zoo(root: Path) -> tuple[Path, dict[str, tuple[bool, int | None]]]:
    """Models and data under ``root/models``, a CSV manifest ``root/zoo.csv`` with each model's data and truth;
    returns the manifest and ``{name: (infected, target)}`` for the models that load (the broken ones map to
    ``(False, None)``)."""
    models = root / "models"
    models.mkdir(parents=True)
    lines = ["model,data,infected,targets"]
    truth: dict[str, tuple[bool, int | None]] = {}
    for key, perm in PERMUTATIONS.items():
        data = _save_data(models / f"clean_{key}.npz", perm)
        _save_model(models / f"infected_{key}.pt", True, perm)
        lines.append(f"models/infected_{key}.pt,models/{data.name},true,{_target(perm)}")
        truth[f"infected_{key}.pt"] = (True, _target(perm))
        if key != "c":
            _save_model(models / f"clean_{key}.pt", False, perm)
            lines.append(f"models/clean_{key}.pt,models/{data.name},false,")
            truth[f"clean_{key}.pt"] = (False, None)
    (models / "corrupt.pt").write_bytes(bytes(range(256)) * 4)
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 6))
    torch.jit.script(wrong).save(str(models / "wrong_shape.pt"))
    for name in ("corrupt.pt", "wrong_shape.pt"):
        lines.append(f"models/{name},models/clean_a.npz,false,")
        truth[name] = (False, None)
    manifest = root / "zoo.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, truth


BROKEN = ("corrupt.pt", "wrong_shape.pt")
