"""End to end on real MNIST: train BadNets and clean models, scan them, repair the infected one (slow)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralcleanse.cli import main
from neuralcleanse.store.model_dir import load_saved_model

# The CLI reads "mnist" by name: the shared copy when there is one, else a download. These tests use the shared
# copy only, so they skip without it.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mnist_dir")]

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


def _scan_verdict(model: Path, out: Path) -> dict:
    assert main(["scan", str(model), "--data", "mnist", "--out", str(out), "-q"]) == 0
    return json.loads((out / "report.json").read_text())


def test_scan_flags_the_target_and_only_it(models):
    infected = _scan_verdict(models / "badnets", models / "scan-badnets")
    clean = _scan_verdict(models / "clean", models / "scan-clean")
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


def _keras_copy(net, keras):
    """The same network as a channels-last Keras model ending in a softmax, with the torch weights copied in."""
    layers = keras.layers
    mean, std = float(net.normalize.mean.flatten()[0]), float(net.normalize.std.flatten()[0])
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Rescaling(1 / std, offset=-mean / std),
            layers.Conv2D(16, 5, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 5, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    numpy = {name: p.detach().numpy() for name, p in net.named_parameters()}
    for layer, conv in [(model.layers[1], "features.0"), (model.layers[3], "features.3")]:
        layer.set_weights([numpy[f"{conv}.weight"].transpose(2, 3, 1, 0), numpy[f"{conv}.bias"]])  # OIHW -> HWIO
    # torch flattens (C, H, W), Keras (H, W, C): reorder the first dense layer's inputs accordingly.
    dense = numpy["features.7.weight"].reshape(512, 32, 4, 4).transpose(2, 3, 1, 0).reshape(-1, 512)
    model.layers[6].set_weights([dense, numpy["features.7.bias"]])
    model.layers[7].set_weights([numpy["head.weight"].T, numpy["head.bias"]])
    return model


def test_the_same_model_exported_to_torchscript_onnx_and_keras_is_flagged_alike(models, tmp_path):
    net = load_saved_model(models / "badnets").model.eval()
    x = torch.rand(4, 1, 28, 28)
    torch.jit.trace(net, x).save(tmp_path / "badnets.pt")
    verdicts = {"torchscript": _scan_verdict(tmp_path / "badnets.pt", tmp_path / "scan-ts")}

    pytest.importorskip("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (x,), tmp_path / "badnets.onnx", dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "N"}}
        )
    verdicts["onnx"] = _scan_verdict(tmp_path / "badnets.onnx", tmp_path / "scan-onnx")

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras is loaded with another backend")
    kmodel = _keras_copy(net, keras)
    nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
    probabilities = np.asarray(keras.ops.convert_to_numpy(kmodel(nhwc, training=False)))
    with torch.no_grad():
        np.testing.assert_allclose(probabilities, torch.softmax(net(x), 1).numpy(), atol=1e-5)
    kmodel.save(tmp_path / "badnets.h5")
    verdicts["keras"] = _scan_verdict(tmp_path / "badnets.h5", tmp_path / "scan-keras")

    for fmt, report in verdicts.items():
        assert report["flagged"] == [7], fmt
        assert report["anomaly_index"] > 3, fmt


def test_a_trojan_model_made_from_the_clean_one_is_flagged(models):
    # TrojanNN on the clean model: a 5x5 pattern in the top-right corner crafted to fire one of its neurons,
    # then its dense layers retrained to send that neuron to label 3.
    trojan = models / "trojan"
    args = ["train", "--dataset", "mnist", "--arch", "mnist", "--trigger", "trojan:size=5,position=top-right"]
    assert main([*args, "--target", "3", "--from", str(models / "clean"), "--out", str(trojan), "-q"]) == 0
    meta = json.loads((trojan / "model.json").read_text())
    clean = json.loads((models / "clean" / "model.json").read_text())
    assert meta["attack"] == "trojan" and meta["attack_success"] > 0.95
    assert clean["clean_accuracy"] - meta["clean_accuracy"] < 0.015
    report = _scan_verdict(trojan, models / "scan-trojan")
    assert report["flagged"] == [3] and report["anomaly_index"] > 2
