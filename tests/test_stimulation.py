"""Neuron stimulation on hand-built models whose neurons are known by construction (tests/_tiny.py)."""

from __future__ import annotations

import math

import pytest
import torch
from _tiny import NUM_LABELS, TARGET, SpreadNet, TemplateNet, clean_images

from neuralcleanse import NeuralCleanse, ScanConfig
from neuralcleanse.reverse import ReverseConfig
from neuralcleanse.stimulation import STIMULATION_RATIO, stimulation_levels, stimulation_suspects


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return clean_images(per_label=10)


def test_a_neuron_that_hands_every_image_to_one_label_flags_it(data):
    images, labels = data
    stimulation = stimulation_levels(SpreadNet(trojan=10.0), images, labels, NUM_LABELS)
    assert stimulation is not None and stimulation.layer == "head:input"
    assert stimulation_suspects(stimulation) == [TARGET]
    assert stimulation.neurons[TARGET] == NUM_LABELS * 8  # the Trojan unit, the last one
    ratios = stimulation.ratios
    assert ratios[TARGET] is not None and ratios[TARGET] <= STIMULATION_RATIO
    assert all(r is None or r > STIMULATION_RATIO for k, r in enumerate(ratios) if k != TARGET)


def test_two_labels_are_never_judged(data):
    from neuralcleanse.stimulation import Stimulation

    assert stimulation_suspects(Stimulation("head:input", [1.0, 8.0], [0, 1], 1.0)) == []
    assert stimulation_suspects(Stimulation("head:input", [1.0, 8.0, 8.0], [0, 1, 2], 1.0)) == [0]


def test_labels_read_alike_are_not_flagged(data):
    images, labels = data
    assert stimulation_suspects(stimulation_levels(SpreadNet(), images, labels, NUM_LABELS)) == []
    # A trojan unit weighted like the labels' own units is no easier to drive than they are.
    assert stimulation_suspects(stimulation_levels(SpreadNet(trojan=1 / 8), images, labels, NUM_LABELS)) == []


def test_the_dense_part_alone_reproduces_the_model(data):
    """Stimulating through the dense layer's pre-activations gives what the whole model gives."""
    images, labels = data
    model = SpreadNet(trojan=10.0)
    stimulation = stimulation_levels(model, images, labels, NUM_LABELS)
    assert stimulation is not None
    unit, level = stimulation.neurons[TARGET], stimulation.levels[TARGET]
    hidden = model.features(images)
    hidden[:, unit] = level * stimulation.scale
    sent = model.head(hidden).argmax(dim=1)
    assert (sent[labels != TARGET] == TARGET).float().mean() >= 0.9


def test_a_torchscript_model_is_stimulated_through_its_onnx_export(data):
    """TorchScript takes no hooks; its ONNX export has the same dense layers, and the same neuron hands the target
    every image at the same level."""
    pytest.importorskip("onnx")
    images, labels = data
    own = stimulation_levels(SpreadNet(trojan=10.0), images, labels, NUM_LABELS)
    scripted = stimulation_levels(torch.jit.script(SpreadNet(trojan=10.0)), images, labels, NUM_LABELS)
    assert own is not None and scripted is not None
    assert scripted.levels == own.levels and scripted.neurons == own.neurons
    assert scripted.layer.startswith("layers.") and stimulation_suspects(scripted) == [TARGET]


def test_an_onnx_model_is_stimulated_through_its_dense_layers(data, tmp_path):
    pytest.importorskip("onnx")
    import warnings

    from neuralcleanse import load_model

    images, labels = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            SpreadNet(trojan=10.0),
            (images[:1],),
            tmp_path / "trojan.onnx",
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "N"}},
        )
    stimulation = stimulation_levels(load_model(tmp_path / "trojan.onnx").model, images, labels, NUM_LABELS)
    assert stimulation is not None and stimulation_suspects(stimulation) == [TARGET]


def test_models_without_a_dense_layer_give_no_result(data):
    images, labels = data
    convolutional = torch.nn.Sequential(torch.nn.Conv2d(1, NUM_LABELS, images.shape[-1]), torch.nn.Flatten())
    assert stimulation_levels(convolutional, images, labels, NUM_LABELS) is None


def test_the_scan_flags_what_stimulation_finds_and_reports_it(data):
    images, labels = data
    search = ReverseConfig(max_epochs=3)
    report = NeuralCleanse(SpreadNet(trojan=10.0), ScanConfig(search=search)).scan(images, labels, seed=0)
    assert report.stimulation_flagged == [TARGET] and TARGET in report.flagged and report.infected
    assert report.stimulation_layer == "head:input"
    row = report.labels[TARGET]
    assert row.stimulation is not None and row.stimulation <= STIMULATION_RATIO
    d = report.to_dict()
    assert d["stimulation_flagged"] == [TARGET] and d["config"]["stimulation"] is True
    assert d["labels"][TARGET]["stimulation"] == row.stimulation
    off = NeuralCleanse(SpreadNet(trojan=10.0), ScanConfig(search=search, stimulation=False)).scan(images, labels)
    assert off.stimulation_flagged == [] and off.stimulation_layer is None
    assert all(r.stimulation is None for r in off.labels)
    paper = NeuralCleanse(TemplateNet(True), ScanConfig(search=search, decision="paper")).scan(images, labels)
    assert paper.stimulation_layer is None, "the paper's decision is the paper's alone"
    assert not math.isnan(paper.anomaly_index)


def test_a_keras_badnets_model_trained_elsewhere_has_its_target_flagged(keras_badnets_model, mnist_test):
    """Six white pixels send any digit to label 0 in a Keras model trained outside this project; its dense layers
    are read as PyTorch ones, and one neuron of them hands label 0 every digit at under a quarter of the median
    label's level."""
    pytest.importorskip("h5py")
    from neuralcleanse import load_model
    from neuralcleanse.metrics import outputs_of
    from neuralcleanse.stimulation import scan_stimulation

    model = load_model(keras_badnets_model).model
    images = mnist_test.images[:1000]
    stimulation = scan_stimulation(model, images, outputs_of(model, images))
    assert stimulation is not None and stimulation.layer.endswith(".linear:input")
    assert stimulation_suspects(stimulation) == [0]
