"""scan-zoo and label sharding on a local Ray of 2 workers, started once for the module on 127.0.0.1 only (no
dashboard, no usage reporting) and shut down afterwards."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from _tiny import TemplateNet, clean_images
from _zoo import BROKEN, SMALL, build_zoo, one_thread  # noqa: F401  (a fixture)

from neuralcleanse.cli import main
from neuralcleanse.engine import InProcessRunner, RayRunner
from neuralcleanse.scan import NeuralCleanse
from neuralcleanse.sharding import RayShards, ShardedSearch
from neuralcleanse.zoo import read_zoo, scan_zoo

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'neuralcleanse[ray]'")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


def test_ray_zoo_gives_the_verdicts_of_scanning_each_model_alone(tmp_path):
    manifest, truth = build_zoo(tmp_path)
    entries = read_zoo(manifest)
    on_ray = scan_zoo(entries, tmp_path / "ray", data=None, runner=RayRunner(cpus=1), config=SMALL)
    alone = scan_zoo(entries, tmp_path / "alone", data=None, runner=InProcessRunner(), config=SMALL)
    rows = {r["model"]: r for r in on_ray.rows}
    assert [r["model"] for r in on_ray.rows] == [e.name for e in entries]  # the zoo's order, not completion's
    for want in alone.rows:
        got = rows[want["model"]]
        assert (got["status"], got["infected"], got["flagged"]) == (want["status"], want["infected"], want["flagged"])
        assert got.get("error") == want.get("error")
    for name, (infected, target) in truth.items():
        if name in BROKEN:
            assert rows[name]["status"] == "error" and rows[name]["error"]
        else:
            assert rows[name]["infected"] is infected and rows[name]["flagged"] == ([target] if infected else [])
            assert rows[name]["correct"] is True
            assert (tmp_path / "ray" / name / "report.json").is_file()


def test_label_shards_on_ray_give_the_unsharded_report(tmp_path):
    torch.jit.script(TemplateNet(backdoor=True)).save(str(tmp_path / "infected.pt"))
    model = torch.jit.load(str(tmp_path / "infected.pt"))
    images, labels = clean_images(per_label=10)
    config = replace(SMALL, searches=2)  # two searches: the restarts are sharded too
    want = NeuralCleanse(model, config).scan(images, labels, seed=3)
    pool = RayShards(2)  # a TorchScript model travels as its saved bytes (the CLI passes a loader instead)
    try:
        got = NeuralCleanse(model, config, search=ShardedSearch(pool)).scan(images, labels, seed=3)
    finally:
        pool.close()
    assert got.flagged == want.flagged == [5]
    torch.testing.assert_close(
        torch.tensor([r.mask_l1 for r in got.labels]),
        torch.tensor([r.mask_l1 for r in want.labels]),
        rtol=1e-4,
        atol=1e-4,
    )
    assert [r.epochs for r in got.labels] == [r.epochs for r in want.labels]


def test_cli_scan_with_workers_shards_the_labels_and_writes_the_same_report(tmp_path):
    torch.jit.script(TemplateNet(backdoor=True)).save(str(tmp_path / "infected.pt"))
    images, labels = clean_images(per_label=10)
    np.savez(tmp_path / "clean.npz", x=(images.numpy() * 255).round().astype(np.uint8), y=labels.numpy())
    argv = ["scan", str(tmp_path / "infected.pt"), "--data", str(tmp_path / "clean.npz"), "--precision", "float32"]
    assert main([*argv, "--out", str(tmp_path / "one"), "-q"]) == 0
    assert main([*argv, "--out", str(tmp_path / "two"), "--workers", "2", "-q"]) == 0
    one, two = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    assert two["flagged"] == one["flagged"] == [5]
    for a, b in zip(one["labels"], two["labels"], strict=True):
        assert (a["label"], a["epochs"]) == (b["label"], b["epochs"])
        assert a["mask_l1"] == pytest.approx(b["mask_l1"], rel=1e-4)
