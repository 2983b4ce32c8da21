"""Mitigation: input filter, neuron pruning, unlearning.

The outcome tests use a small BadNets model trained here in seconds: a PaperNet with two small convolutions
and a 64-unit hidden layer, trained on 6000 MNIST images, 10% of them stamped with a 4x4 white bottom-right
square and relabelled 7. The "reversed" trigger given to the mitigations is the true one, so the tests check
the mitigation, not the scan.
They use the shared MNIST copy (the ``mnist_train`` and ``mnist_test`` fixtures of ``conftest.py``) and skip,
saying why, without it.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
import torch
from torch import nn

from neuralcleanse import models
from neuralcleanse.attacks import poison
from neuralcleanse.data import ImageData
from neuralcleanse.metrics import accuracy, attack_success_rate
from neuralcleanse.mitigate import (
    FilteredModel,
    InputFilter,
    LabelNeurons,
    Mitigation,
    UnlearnConfig,
    penultimate_layer,
    resolve_layer,
)
from neuralcleanse.mitigate.layers import NeuronMask, record_activations, silence_neurons
from neuralcleanse.preprocess import PreprocessedModel, Preprocessing
from neuralcleanse.store.model_dir import load_saved_model, save_model
from neuralcleanse.train import TrainConfig, train_classifier
from neuralcleanse.triggers import Trigger

TARGET = 7
TRIGGER = Trigger.patch((1, 28, 28), 4, "bottom-right", 1.0, spec="square")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train far faster on one thread, above all on a machine shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mnist(mnist_train: ImageData, mnist_test: ImageData) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """train (6000), spare clean training data (3000), clean (1000) and held-out (2000) test images."""
    x, y = mnist_train.images[:9000].clone(), mnist_train.labels[:9000].clone()
    tx, ty = mnist_test.images[:3000].clone(), mnist_test.labels[:3000].clone()
    return {
        "train": (x[:6000], y[:6000]),
        "spare": (x[6000:], y[6000:]),
        "clean": (tx[:1000], ty[:1000]),
        "heldout": (tx[1000:], ty[1000:]),
    }


def tiny_net() -> models.PaperNet:
    features = nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=4),
        nn.ReLU(),  # (N, 16, 7, 7): one output per 4x4 patch
        nn.Conv2d(16, 32, 3, stride=2),
        nn.ReLU(),  # (N, 32, 3, 3)
        nn.Flatten(),
        nn.Linear(32 * 9, 64),
        nn.ReLU(),  # (N, 64)
    )
    return models.PaperNet(models.Normalize([0.1307], [0.3081]), features, nn.Linear(64, 10))


@pytest.fixture(scope="session")
def backdoored(mnist: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> models.PaperNet:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = poison(*mnist["train"], [(TRIGGER, TARGET)], 0.1, g)
    net = tiny_net()
    train_classifier(net, data.images, data.labels, TrainConfig(epochs=5, batch_size=64, lr=3e-3), g)
    return net


@pytest.fixture()
def model(backdoored: models.PaperNet) -> models.PaperNet:
    return copy.deepcopy(backdoored)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# --- layers -----------------------------------------------------------------------------------------------


def test_penultimate_layer_of_a_papernet_is_its_features() -> None:
    net = models.mnist_net()
    assert penultimate_layer(net) == "features"
    acts = record_activations(net, resolve_layer(net), torch.rand(3, 1, 28, 28))
    assert acts.shape == (3, 512)


def test_penultimate_layer_of_another_model_is_the_input_of_its_last_linear() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    layer = resolve_layer(net)
    assert (layer.spec, layer.module_name, layer.side) == ("3:input", "3", "input")
    assert record_activations(net, layer, torch.rand(5, 1, 4, 4)).shape == (5, 8)


def test_layer_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="has no torch.nn.Linear module; name the layer"):
        penultimate_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))
    with pytest.raises(ValueError, match="layer 'fc9': the model has no module named 'fc9'"):
        resolve_layer(models.mnist_net(), "fc9")


def test_conv_channels_are_the_neurons_of_a_conv_layer() -> None:
    net = models.mnist_net()
    acts = record_activations(net, resolve_layer(net, "features.1"), torch.rand(2, 1, 28, 28))
    assert acts.shape == (2, 16)  # 16 channels of (24, 24), averaged over space


def test_convolutional_layers_are_found_by_name() -> None:
    net = models.mnist_net()
    assert resolve_layer(net, "conv-output").spec == "features.7:input"  # (N, 32 * 4 * 4) flattened
    assert resolve_layer(net, "last-conv").spec == "features.3"
    with pytest.raises(ValueError, match="'conv-output': this Sequential has no torch.nn.Conv2d module followed"):
        resolve_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "conv-output")


@pytest.mark.parametrize("layer", [None, "head:input", "features.3", "conv-output"])
def test_silenced_neurons_live_in_the_weights(tmp_path: Path, layer: str | None) -> None:
    torch.manual_seed(0)
    net = models.mnist_net().eval()
    x = torch.rand(8, 1, 28, 28)
    resolved = resolve_layer(net, layer)
    drop = [0, 3, 5, 9]
    remove = NeuronMask(resolved, drop).attach()
    with torch.no_grad():
        masked = net(x)
    remove()
    assert silence_neurons(net, resolved, drop) is True
    assert _hooks(net) == 0
    save_model(tmp_path, net, {"architecture": "mnist", "num_classes": 10})
    with torch.no_grad():
        assert torch.allclose(load_saved_model(tmp_path).model(x), masked, atol=1e-6)


def test_a_layer_without_a_plain_producer_is_silenced_by_a_hook() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)), nn.Linear(6, 2)).eval()
    reference = copy.deepcopy(net)
    x = torch.rand(3, 4)
    assert silence_neurons(net, resolve_layer(net, "0"), [1, 2]) is False  # BatchNorm: zero rows would not do
    assert _same_state(net, reference.state_dict())
    with torch.no_grad():
        expected = reference[1](reference[0](x) * torch.tensor([1.0, 0, 0, 1, 1, 1]))
        assert torch.allclose(net(x), expected)


# --- the bound setup --------------------------------------------------------------------------------------


def _setup_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    return net, torch.rand(20, 1, 28, 28, generator=g), torch.arange(20) % 10


def test_a_bad_argument_is_refused_at_construction() -> None:
    net, x, y = _setup_data()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
        Mitigation(lambda t: t, TRIGGER, TARGET, x, y, x, y)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="trigger must be a Trigger, got Tensor"):
        Mitigation(net, TRIGGER.mask, TARGET, x, y, x, y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target must be a label \\(an int >= 0\\), got True"):
        Mitigation(net, TRIGGER, True, x, y, x, y)
    with pytest.raises(ValueError, match=r"heldout_images must be in \[0, 1\], got values in \[0, 255\]"):
        Mitigation(net, TRIGGER, TARGET, x, y, x.round() * 255, y)
    with pytest.raises(ValueError, match=r"images labels must have shape \(20,\), got \(19,\)"):
        Mitigation(net, TRIGGER, TARGET, x, y[1:], x, y)
    with pytest.raises(ValueError, match=r"the trigger is for \(1, 28, 28\) \(C, H, W\) images but images are"):
        Mitigation(net, TRIGGER, TARGET, x[..., :27], y, x, y)
    with pytest.raises(ValueError, match="heldout_images need images whose label is not the target 7"):
        Mitigation(net, TRIGGER, TARGET, x, y, x[7:8], y[7:8])
    with pytest.raises(TypeError, match=r"true_trigger must be a \(Trigger, target label\) pair"):
        Mitigation(net, TRIGGER, TARGET, x, y, x, y, true_trigger=TRIGGER)  # type: ignore[arg-type]
    # the checked arguments cannot be swapped afterwards, so the methods need not check them again
    mitigation = Mitigation(net, TRIGGER, TARGET, x, y, x, y)
    with pytest.raises(FrozenInstanceError):
        mitigation.images = x * 255  # type: ignore[misc]


def test_the_figures_before_are_measured_once() -> None:
    net, x, y = _setup_data()
    passes: list[int] = []
    net.register_forward_hook(lambda module, inputs, output: passes.append(len(output)))
    mitigation = Mitigation(net, TRIGGER, TARGET, x, y, x, y, true_trigger=(TRIGGER, 3))
    assert passes == []  # nothing runs at construction
    before = mitigation.before
    assert sorted(passes) == [18, 18, 20]  # accuracy on all 20; each trigger on the 18 not of its target
    assert mitigation.before is before and len(passes) == 3
    assert before.clean_accuracy == accuracy(net, x, y)
    assert before.attack_success == attack_success_rate(net, x, y, TRIGGER, 3)
    with pytest.raises(ValueError, match="images need clean images whose label is not the target 7 to rank"):
        Mitigation(net, TRIGGER, TARGET, x[7:8], y[7:8], x, y).filter()


# --- the backdoored model ---------------------------------------------------------------------------------


def test_the_test_model_is_backdoored(backdoored: models.PaperNet, mnist: dict) -> None:
    images, labels = mnist["heldout"]
    assert accuracy(backdoored, images, labels) > 0.9
    assert attack_success_rate(backdoored, images, labels, TRIGGER, TARGET) > 0.9


# --- filter -----------------------------------------------------------------------------------------------


def test_filter_is_calibrated_and_rejects_triggered_inputs(model: models.PaperNet, mnist: dict) -> None:
    state = _state(model)
    model.train()
    events: list[str] = []
    mitigation = Mitigation(model, TRIGGER, TARGET, *mnist["clean"], *mnist["heldout"], true_trigger=(TRIGGER, TARGET))
    result = mitigation.filter(top_fraction=0.05, progress=lambda e: events.append(e.phase))
    assert abs(result.false_positive_rate - 0.05) < 0.03  # calibrated on 1000 images, measured on 2000 others
    assert result.false_negative_rate is not None and result.false_negative_rate < 0.2
    assert result.after.attack_success is not None and result.after.attack_success < 0.2
    assert result.before.attack_success is not None and result.before.attack_success > 0.9
    assert result.after.clean_accuracy > result.before.clean_accuracy - 0.1
    assert len(result.filter.neurons) == 4  # ceil(5% of 64)
    assert set(events) == {"filter"}
    d = result.to_dict()
    assert d["method"] == "filter" and d["label"] == TARGET and d["fpr_target"] == 0.05
    json.dumps(d)
    # the model is left as it was: weights, training mode, no hooks
    assert _same_state(model, state) and model.training and _hooks(model) == 0


def test_filter_saves_loads_and_wraps_the_model(model: models.PaperNet, mnist: dict, tmp_path: Path) -> None:
    images, labels = mnist["clean"]
    result = Mitigation(model, TRIGGER, TARGET, images, labels, *mnist["heldout"]).filter(top_fraction=0.05)
    path = result.filter.save(tmp_path / "filter.json")
    loaded = InputFilter.load(path)
    assert loaded == result.filter and loaded.layer == "features" and loaded.num_neurons == 64
    victims = images[labels != TARGET][:100]
    batch = torch.cat([victims, TRIGGER.stamp(victims)])
    rejected = loaded(model, batch)
    assert rejected.dtype == torch.bool and rejected.shape == (200,)
    assert rejected[100:].float().mean() > 0.8 and rejected[:100].float().mean() < 0.2
    predictions, wrapped_rejected = loaded.wrap(model)(batch)
    assert isinstance(loaded.wrap(model), FilteredModel)
    assert torch.equal(wrapped_rejected, rejected)
    assert torch.equal(predictions, model(batch).argmax(1))


def test_filter_files_and_arguments_are_checked(model: models.PaperNet, mnist: dict, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: cannot read the input filter"):
        InputFilter.load(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="bad.json: not a neuralcleanse input filter"):
        InputFilter.load(bad)
    with pytest.raises(ValueError, match="input filter file not found"):
        InputFilter.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"fpr must be a fraction in \(0, 1\), got 5"):
        Mitigation(model, TRIGGER, TARGET, *mnist["clean"], *mnist["heldout"]).filter(fpr=5)
    with pytest.raises(ValueError, match="layer 'head' has 10 neurons, the filter expects more than 50: it was"):
        InputFilter("head", (50,), 0.0).reject(model, mnist["clean"][0][:2])
    with pytest.raises(ValueError, match="layer 'features' has 64 neurons, the filter expects 512"):
        InputFilter("features", (3,), 0.0, num_neurons=512).reject(model, mnist["clean"][0][:2])
    with pytest.raises(ValueError, match="layer 'features' has 64 neurons, the filter expects more than 70"):
        InputFilter("features", (3,), 0.0, others=(LabelNeurons(2, (70,), 0.0),)).reject(model, mnist["clean"][0][:2])
    version_1 = {k: v for k, v in InputFilter("features", (3,), 0.5, label=7).to_dict().items() if k != "others"}
    assert InputFilter.from_dict({**version_1, "version": 1}) == InputFilter("features", (3,), 0.5, label=7)
    with pytest.raises(ValueError, match="unsupported input-filter version 3"):
        InputFilter.from_dict({**version_1, "version": 3})


# --- pruning ----------------------------------------------------------------------------------------------


def test_pruning_removes_the_backdoor_from_a_copy(model: models.PaperNet, mnist: dict) -> None:
    state = _state(model)
    events: list[tuple[str, int, int]] = []
    mitigation = Mitigation(model, TRIGGER, TARGET, *mnist["clean"], *mnist["heldout"], true_trigger=(TRIGGER, TARGET))
    result = mitigation.prune(progress=lambda e: events.append((e.phase, e.done, e.total)))
    assert events[0] == ("prune", 0, 96)  # 288 neurons, 3 a step and len(events) == len(result.steps)
    assert result.layer == "features.5:input"  # the flattened output of the convolutions
    assert result.stop_reason == "attack_success" and result.persistent
    assert result.after.reversed_attack_success < 0.01
    assert result.before.clean_accuracy - result.after.clean_accuracy <= 0.05
    assert result.after.attack_success is not None and result.after.attack_success < 0.05
    assert result.steps[0].pruned == 0 and result.steps[-1].pruned == len(result.neurons) > 0
    assert _same_state(model, state) and _hooks(model) == 0
    # the pruning is in the weights: a fresh network loading the state dict behaves the same
    fresh = tiny_net()
    fresh.load_state_dict(result.model.state_dict())
    images, labels = mnist["heldout"]
    assert attack_success_rate(fresh, images, labels, TRIGGER, TARGET) == result.after.attack_success
    d = result.to_dict()
    assert d["method"] == "prune" and len(d["curve"]) == len(result.steps)
    json.dumps(d)


def test_pruning_stops_at_the_accuracy_budget(model: models.PaperNet, mnist: dict) -> None:
    # an attack-success target of 0 is never reached, so only the budget stops the sweep
    result = Mitigation(model, TRIGGER, TARGET, *mnist["clean"], *mnist["heldout"]).prune(
        layer="penultimate", step=0.01, max_attack_success=0.0, max_accuracy_loss=0.02
    )
    assert result.layer == "features" and result.stop_reason == "accuracy_budget"
    assert result.before.clean_accuracy - result.after.clean_accuracy <= 0.02
    assert result.before.clean_accuracy - result.steps[-1].clean_accuracy > 0.02
    assert len(result.neurons) == result.steps[-2].pruned > 0


# --- unlearning -------------------------------------------------------------------------------------------


def test_unlearning_removes_the_backdoor_from_a_copy(model: models.PaperNet, mnist: dict) -> None:
    state = _state(model)
    events: list[str] = []
    mitigation = Mitigation(model, TRIGGER, TARGET, *mnist["spare"], *mnist["heldout"], true_trigger=(TRIGGER, TARGET))
    result = mitigation.unlearn(
        config=UnlearnConfig(fraction=0.5),
        generator=torch.Generator().manual_seed(0),
        progress=lambda e: events.append(e.phase),
    )
    assert (result.num_images, result.num_triggered) == (1500, 300)
    assert result.before.attack_success is not None and result.before.attack_success > 0.9
    assert result.after.attack_success is not None and result.after.attack_success < 0.05
    assert result.before.clean_accuracy - result.after.clean_accuracy < 0.03
    assert set(events) == {"unlearn"}
    assert _same_state(model, state) and not result.model.training
    d = result.to_dict()
    assert d["method"] == "unlearn" and d["config"]["trigger_fraction"] == 0.2
    json.dumps(d)


def test_unlearning_in_place_trains_the_model_given(model: models.PaperNet, mnist: dict) -> None:
    model.train()
    mitigation = Mitigation(model, TRIGGER, TARGET, *mnist["spare"], *mnist["heldout"])
    result = mitigation.unlearn(config=UnlearnConfig(fraction=0.1), inplace=True)
    assert result.model is model and model.training  # the mode it came in
    images, labels = mnist["heldout"]
    assert attack_success_rate(model, images, labels, TRIGGER, TARGET) == result.after.reversed_attack_success


def test_unlearning_that_costs_too_much_accuracy_is_redone_at_a_smaller_rate(model: models.PaperNet, mnist: dict):
    state = _state(model)
    reckless = UnlearnConfig(fraction=0.5, lr=2.0, max_accuracy_loss=0.02, lr_retries=3, lr_divisor=10.0)
    mitigation = Mitigation(model, TRIGGER, TARGET, *mnist["spare"], *mnist["heldout"])
    result = mitigation.unlearn(config=reckless, generator=torch.Generator().manual_seed(0))
    losses = result.validation_loss
    assert losses is not None and len(losses) >= 2 and losses[0] > 0.02, "lr 2.0 wrecks the model"
    assert all(loss > 0.02 for loss in losses[:-1]), "a run within the budget is kept"
    assert result.lr == pytest.approx(2.0 / 10 ** (len(losses) - 1))
    assert losses[-1] <= 0.02 and result.before.clean_accuracy - result.after.clean_accuracy < 0.04
    assert _same_state(model, state)
    once = mitigation.unlearn(config=replace(reckless, max_accuracy_loss=None))
    assert once.validation_loss is None and once.lr == 2.0


def test_unlearning_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"trigger_fraction must be a fraction in \[0, 1\], got 1.5"):
        UnlearnConfig(trigger_fraction=1.5)
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        UnlearnConfig(epochs=0)
    with pytest.raises(ValueError, match="optimizer must be 'adam' or 'sgd'"):
        UnlearnConfig(optimizer="rmsprop")  # type: ignore[arg-type]


def test_a_torchscript_model_is_unlearned_pruned_and_filtered(model: models.PaperNet, mnist: dict) -> None:
    # Users bring TorchScript files; a deep copy of one has non-leaf parameters that no optimiser takes, so the
    # copy to unlearn is made by saving and loading it, bare or inside a preprocessing wrapper. Its modules take no
    # hooks: pruning and the filter read it through its ONNX export.
    pytest.importorskip("onnx")
    example = mnist["clean"][0][:2]
    scripted = torch.jit.trace(model.eval(), example)
    wrapped = PreprocessedModel(torch.jit.trace(copy.deepcopy(model).eval(), example), Preprocessing(layout="NCHW"))
    for net in (scripted, wrapped):
        state = _state(net)
        data = (*mnist["spare"], *mnist["heldout"])
        mitigation = Mitigation(net, TRIGGER, TARGET, *data, true_trigger=(TRIGGER, TARGET))
        result = mitigation.unlearn(config=UnlearnConfig(fraction=0.5), generator=torch.Generator().manual_seed(0))
        assert result.before.attack_success is not None and result.before.attack_success > 0.9
        assert result.after.attack_success is not None and result.after.attack_success < 0.05
        pruned = mitigation.prune()
        assert pruned.after.attack_success is not None and pruned.after.attack_success < 0.05
        assert pruned.layer.startswith("layers.")  # the ONNX copy's name for the convolutions' output
        assert _same_state(net, state)  # the model given is left as it was
    # The filter of the scripted model is the PyTorch network's, and rejects the same inputs of the scripted model.
    data = (*mnist["clean"], *mnist["heldout"])
    own = Mitigation(model, TRIGGER, TARGET, *data).filter(top_fraction=0.05).filter
    filtered = Mitigation(scripted, TRIGGER, TARGET, *data).filter(top_fraction=0.05).filter
    assert filtered.neurons == own.neurons and filtered.threshold == pytest.approx(own.threshold, rel=1e-4)
    images, labels = mnist["heldout"]
    triggered = TRIGGER.stamp(images[labels != TARGET])
    rejected = filtered.reject(scripted, triggered)
    assert torch.equal(rejected, own.reject(model, triggered)) and rejected.float().mean() > 0.8
    # Wrapped, the scripted model predicts as itself and rejects as the filter does; it needs images to be wrapped.
    predictions, wrapped_rejected = filtered.wrap(scripted, images[:8])(triggered)
    assert torch.equal(wrapped_rejected, rejected)
    assert torch.equal(predictions, scripted(triggered).argmax(dim=1))
    with pytest.raises(ValueError, match="wrap\\(model, images\\)"):
        filtered.wrap(scripted)


class CumulativeNet(nn.Module):
    """A dense network that sums its input cumulatively first: an operator neuralcleanse's ONNX reader lacks."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cumsum(x.flatten(1), dim=1) / 784)


def test_a_torchscript_model_that_cannot_be_read_through_onnx_is_left_to_unlearning() -> None:
    pytest.importorskip("onnx")
    _, x, y = _setup_data()
    scripted = torch.jit.script(CumulativeNet().eval())
    mitigation = Mitigation(scripted, TRIGGER, TARGET, x, y, x, y)
    with pytest.raises(ValueError, match="cannot be re-read through ONNX .*; mitigate it by unlearning"):
        mitigation.prune()
    with pytest.raises(ValueError, match="cannot be re-read through ONNX"):
        mitigation.filter()


def test_an_onnx_model_is_pruned_through_its_dense_layers(model: models.PaperNet, mnist: dict, tmp_path: Path):
    """An ONNX graph's Gemm and Conv nodes are torch layers once loaded: pruning finds the convolutions' output and
    silences the backdoor as it does in the PyTorch network."""
    pytest.importorskip("onnx")
    from neuralcleanse import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (mnist["clean"][0][:1],),
            tmp_path / "badnets.onnx",
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "N"}},
        )
    onnx_model = load_model(tmp_path / "badnets.onnx").model
    mitigation = Mitigation(
        onnx_model, TRIGGER, TARGET, *mnist["clean"], *mnist["heldout"], true_trigger=(TRIGGER, TARGET)
    )
    result = mitigation.prune()
    assert result.layer.startswith("layers.") and result.layer.endswith("Gemm:input")
    assert result.before.attack_success is not None and result.before.attack_success > 0.9
    assert result.after.attack_success is not None and result.after.attack_success < 0.05
    assert result.before.clean_accuracy - result.after.clean_accuracy <= 0.05


SECOND = Trigger.patch((1, 28, 28), 4, "top-left", 1.0, spec="top-left square")


@pytest.fixture(scope="session")
def two_targets(mnist: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> models.PaperNet:
    """The backdoored model's recipe with a second trigger, the top-left square, sending images to label 2."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = poison(*mnist["train"], [(TRIGGER, TARGET), (SECOND, 2)], 0.1, g)
    net = tiny_net()
    train_classifier(net, data.images, data.labels, TrainConfig(epochs=5, batch_size=64, lr=3e-3), g)
    return net


def test_unlearning_with_every_flagged_trigger_removes_every_backdoor(two_targets: models.PaperNet, mnist: dict):
    images, labels = mnist["heldout"]
    assert attack_success_rate(two_targets, images, labels, SECOND, 2) > 0.9
    bound = (two_targets, TRIGGER, TARGET, *mnist["spare"], *mnist["heldout"])
    config, seed = UnlearnConfig(fraction=0.5, max_accuracy_loss=0.03), 0  # a tiny model: it pays more accuracy
    first_only = Mitigation(*bound).unlearn(config=config, generator=torch.Generator().manual_seed(seed))
    both = Mitigation(*bound, other_triggers=((SECOND, 2),)).unlearn(
        config=config, generator=torch.Generator().manual_seed(seed)
    )
    assert attack_success_rate(first_only.model, images, labels, SECOND, 2) > 0.5, "the second backdoor stays"
    assert both.after.reversed_attack_success < 0.05 and both.num_triggered == first_only.num_triggered
    before, after = both.others[2]
    assert before > 0.9 and after < 0.05
    assert after == attack_success_rate(both.model, images, labels, SECOND, 2)
    assert both.before.clean_accuracy - both.after.clean_accuracy < 0.04
    d = both.to_dict()
    assert d["labels"] == [TARGET, 2] and d["others_reversed_attack_success"] == {"2": [before, after]}
    json.dumps(d)


def test_pruning_against_every_flagged_trigger_silences_every_backdoor(two_targets: models.PaperNet, mnist: dict):
    images, labels = mnist["heldout"]
    bound = (two_targets, TRIGGER, TARGET, *mnist["spare"], *mnist["heldout"])
    first_only = Mitigation(*bound).prune()
    both = Mitigation(*bound, other_triggers=((SECOND, 2),)).prune()
    assert attack_success_rate(first_only.model, images, labels, SECOND, 2) > 0.9, "the second backdoor stays"
    before, after = both.others[2]
    assert before > 0.9 and after < 0.05 and both.after.reversed_attack_success < 0.05
    assert after == attack_success_rate(both.model, images, labels, SECOND, 2)
    assert both.before.clean_accuracy - both.after.clean_accuracy <= 0.05  # the default accuracy budget
    assert len(both.neurons) > len(first_only.neurons)  # the second trigger's neurons are silenced too
    assert all(len(step.others_reversed_attack_success) == 1 for step in both.steps)
    d = both.to_dict()
    assert d["labels"] == [TARGET, 2] and d["others_reversed_attack_success"] == {"2": [before, after]}
    assert first_only.to_dict()["labels"] == [TARGET]
    json.dumps(d)


def test_filtering_for_every_flagged_trigger_blocks_every_backdoor(two_targets: models.PaperNet, mnist: dict):
    images, labels = mnist["heldout"]
    bound = (two_targets, TRIGGER, TARGET, *mnist["spare"], *mnist["heldout"])
    first_only = Mitigation(*bound).filter(top_fraction=0.2)  # 13 of the tiny model's 64 neurons per trigger
    both = Mitigation(*bound, other_triggers=((SECOND, 2),)).filter(top_fraction=0.2)
    assert first_only.filter.labels == [TARGET] and both.filter.labels == [TARGET, 2]
    passed = ~first_only.filter.reject(two_targets, SECOND.stamp(images[labels != 2]))
    assert passed.float().mean() > 0.5, "the first label's neurons miss the second trigger"
    before, after = both.others[2]
    assert before > 0.9 and after < 0.1 and both.after.reversed_attack_success < 0.1
    assert both.others_false_negative_rate[2] < 0.1
    # The budget is shared: the two thresholds together reject at most 5% of the calibration images.
    calibration = Mitigation(*bound, other_triggers=((SECOND, 2),)).images
    assert both.filter.reject(two_targets, calibration).float().mean() <= 0.05
    assert abs(both.false_positive_rate - 0.05) < 0.03  # and about 5% of held-out clean images
    assert InputFilter.from_dict(json.loads(json.dumps(both.filter.to_dict()))) == both.filter
    d = both.to_dict()
    assert d["labels"] == [TARGET, 2] and d["others_reversed_attack_success"] == {"2": [before, after]}
    assert [part["label"] for part in d["others_filter"]] == [2] and "2" in d["others_reversed_false_negative_rate"]
    json.dumps(d)


def test_other_triggers_are_checked(model: models.PaperNet, mnist: dict) -> None:
    bound = (model, TRIGGER, TARGET, *mnist["spare"], *mnist["heldout"])
    with pytest.raises(ValueError, match="labels other than the target 7, got 7"):
        Mitigation(*bound, other_triggers=((SECOND, TARGET),))
    with pytest.raises(TypeError, match=r"\(Trigger, label\) pairs"):
        Mitigation(*bound, other_triggers=((SECOND,),))
    with pytest.raises(ValueError, match="trigger of label 2 is for"):
        Mitigation(*bound, other_triggers=((Trigger.patch((3, 28, 28), 4, "top-left", 1.0), 2),))
