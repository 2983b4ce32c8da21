"""End to end on real MNIST: train BadNets and clean models, scan them, repair the infected one (slow)."""

from __future__ import annotations

import json

import pytest

from neuralcleanse.cli import main
from neuralcleanse.data import shared_data_dir

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data not present")]

TRIGGER = "square:size=4,position=bottom-right,color=white"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    assert (
        main(
            [
                "train",
                "--dataset",
                "mnist",
                "--arch",
                "mnist",
                "--trigger",
                TRIGGER,
                "--target",
                "7",
                "--out",
                str(root / "badnets"),
                "-q",
            ]
        )
        == 0
    )
    assert main(["train", "--dataset", "mnist", "--arch", "mnist", "--out", str(root / "clean"), "-q"]) == 0
    return root


def test_trained_models_reach_the_paper_figures(models):
    badnets = json.loads((models / "badnets" / "model.json").read_text())
    clean = json.loads((models / "clean" / "model.json").read_text())
    assert badnets["clean_accuracy"] >= 0.985 and badnets["attack_success"] >= 0.99
    assert abs(clean["clean_accuracy"] - badnets["clean_accuracy"]) <= 0.01


def test_scan_flags_the_target_and_only_it(models):
    assert main(["scan", str(models / "badnets"), "--data", "mnist", "--out", str(models / "scan-badnets"), "-q"]) == 0
    assert main(["scan", str(models / "clean"), "--data", "mnist", "--out", str(models / "scan-clean"), "-q"]) == 0
    infected = json.loads((models / "scan-badnets" / "report.json").read_text())
    clean = json.loads((models / "scan-clean" / "report.json").read_text())
    assert infected["flagged"] == [7] and infected["anomaly_index"] > 3
    assert infected["extra"]["true_triggers"][0]["reversed_mask_iou"] > 0.3
    assert clean["flagged"] == [] and clean["anomaly_index"] < 2


def test_unlearning_removes_the_backdoor(models):
    if not (models / "scan-badnets" / "report.json").exists():
        pytest.skip("needs the scan of test_scan_flags_the_target_and_only_it")
    assert (
        main(
            [
                "mitigate",
                str(models / "badnets"),
                "--report",
                str(models / "scan-badnets"),
                "--data",
                "mnist",
                "--method",
                "unlearn",
                "--out",
                str(models / "patched"),
                "-q",
            ]
        )
        == 0
    )
    figures = json.loads((models / "patched" / "mitigation.json").read_text())
    assert figures["attack_success_before"] > 0.99 and figures["attack_success_after"] < 0.05
    assert figures["clean_accuracy_before"] - figures["clean_accuracy_after"] < 0.02
    evaluated = json.loads((models / "patched" / "model.json").read_text())
    assert evaluated["architecture"] == "mnist"
