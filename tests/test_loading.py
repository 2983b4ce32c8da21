"""load_model: every format round-trips to the same outputs with gradients reaching the input; bad files give
one-line errors; nothing in a file runs code unless the caller opts in."""

from __future__ import annotations

import json
import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neuralcleanse.loading import KerasModule, LoadedModel, detect_format, load_model, outputs_probabilities
from neuralcleanse.mitigate.layers import conv_output_layer
from neuralcleanse.models import build_model
from neuralcleanse.preprocess import PreprocessedModel, Preprocessing
from neuralcleanse.probe import ProbeError, probe_outputs
from neuralcleanse.store.model_dir import ModelFileError, save_model

# Keras's own numpy conversion warns under numpy 2; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _check(loaded: LoadedModel, expected: torch.Tensor, x: torch.Tensor, atol: float = 1e-5) -> None:
    """Same outputs as the original model on ``x`` ((N, C, H, W) in [0, 1]) and a gradient at the input."""
    x = x.clone().requires_grad_()
    out = loaded.model(x)
    torch.testing.assert_close(out.detach(), expected.detach(), atol=atol, rtol=1e-4)
    out[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


class TinyNet(nn.Module):
    """An architecture importable as ``test_loading:TinyNet``."""

    input_shape = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class SoftmaxNet(TinyNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(torch.relu(self.conv(x)).flatten(1)), dim=1)


# ------------------------------------------------------------------------------- neuralcleanse, state dicts


def test_neuralcleanse_directory(tmp_path):
    model = build_model("mnist", 10).eval()
    save_model(tmp_path / "m", model, {"architecture": "mnist", "num_classes": 10})
    assert detect_format(tmp_path / "m") == "neuralcleanse"
    loaded = load_model(tmp_path / "m")
    assert loaded.format == "neuralcleanse" and loaded.input_shape == (1, 28, 28) and loaded.num_classes == 10
    assert loaded.outputs_probabilities is False and loaded.metadata["architecture"] == "mnist"
    assert type(loaded.model).__name__ == "PaperNet"  # not wrapped: features/head stay reachable
    x = _rand(4, 1, 28, 28)
    _check(loaded, model(x), x)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_state_dict_with_builtin_arch(tmp_path, suffix):
    model = build_model("mnist", 7).eval()  # the number of classes is read from the weights
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    assert detect_format(path) == "state_dict"
    loaded = load_model(path, arch="mnist")
    assert (loaded.format, loaded.num_classes, loaded.input_shape) == ("state_dict", 7, (1, 28, 28))
    assert loaded.outputs_probabilities is False
    x = _rand(3, 1, 28, 28)
    _check(loaded, model(x), x)


def test_state_dict_with_importable_arch_and_checkpoint_wrapping(tmp_path):
    model = SoftmaxNet().eval()
    path = tmp_path / "ckpt.pt"
    # a training checkpoint from nn.DataParallel: weights under "state_dict", keys prefixed with "module."
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = load_model(path, arch=f"{__name__}:SoftmaxNet")
    assert loaded.input_shape == (3, 8, 8)  # from the class's input_shape attribute
    assert loaded.outputs_probabilities is True and loaded.num_classes == 5  # probed
    x = _rand(2, 3, 8, 8)
    _check(loaded, model(x), x)


def test_state_dict_legacy_serialization(tmp_path):
    model = TinyNet().eval()
    path = tmp_path / "legacy.pt"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    loaded = load_model(path, arch=f"{__name__}:TinyNet")
    x = _rand(2, 3, 8, 8)
    _check(loaded, model(x), x)
    assert loaded.outputs_probabilities is False


_USER_NET = """
from torch import nn


def Net():
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
"""


def test_state_dict_with_an_arch_in_the_users_own_file(tmp_path, monkeypatch):
    """A user's network in model.py beside the weights: named as a file, or by module name from its folder (the
    command line's import path does not hold the working directory)."""
    (tmp_path / "usernet_a.py").write_text(_USER_NET)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    x = _rand(2, 1, 3, 4)
    loaded = load_model(tmp_path / "weights.pt", arch=f"{tmp_path / 'usernet_a.py'}:Net")
    _check(loaded, net(x), x)
    monkeypatch.chdir(tmp_path)
    _check(load_model("weights.pt", arch="usernet_a:Net"), net(x), x)
    with pytest.raises(ValueError, match=r"arch='usernet_b:Net': cannot import it \(No module named 'usernet_b'\)"):
        load_model("weights.pt", arch="usernet_b:Net")


def test_pickled_whole_module_is_refused_unless_opted_in(tmp_path):
    model = TinyNet().eval()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: refused")
    assert "would execute code from the file" in msg and f"it imports {__name__}.TinyNet" in msg
    assert "unsafe_pickle=True" in msg and "--unsafe-pickle" in msg
    loaded = load_model(path, unsafe_pickle=True)
    x = _rand(2, 3, 8, 8)
    _check(loaded, model(x), x)


class _Payload:
    """Unpickling this creates a file: stands for any code an attacker would run."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path, writer):
    target = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    payload = {"weight": torch.zeros(2), "evil": _Payload(target)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    with pytest.raises(ModelFileError, match=r"refused: .*would execute code from the file.*--unsafe-pickle"):
        load_model(path, arch="mnist")
    assert not target.exists()
    # The payload is real: opting in runs it (which is why it takes an explicit flag).
    with pytest.raises(ModelFileError):
        load_model(path, arch="mnist", unsafe_pickle=True)
    assert target.exists()


# ------------------------------------------------------------------------------------------------ TorchScript


def test_torchscript_scripted_and_traced(tmp_path):
    model = SoftmaxNet().eval()
    x = _rand(3, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), tmp_path / "scripted.pt")
        torch.jit.save(torch.jit.trace(TinyNet().eval(), x), tmp_path / "traced.pt")
    assert detect_format(tmp_path / "scripted.pt") == "torchscript"
    loaded = load_model(tmp_path / "scripted.pt")
    assert loaded.format == "torchscript" and loaded.outputs_probabilities is True  # read from the graph
    _check(loaded, model(x), x)
    traced = load_model(tmp_path / "traced.pt")
    assert traced.outputs_probabilities is None and traced.input_shape is None  # the file does not say
    probed = traced.probe(x)
    assert (probed.outputs_probabilities, probed.num_classes, probed.input_shape) == (False, 5, (3, 8, 8))
    assert outputs_probabilities(loaded.model, x) and not outputs_probabilities(traced.model, x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_a_model_saved_in_another_precision_runs_in_float32(tmp_path, dtype):
    """Saved after .double() or .half(), a model refuses the scan's float32 images; loaded, it takes them."""
    model = SoftmaxNet().eval().to(dtype)
    x = _rand(3, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), tmp_path / "m.pt")
    with pytest.raises(RuntimeError, match="should be the same"):
        torch.jit.load(str(tmp_path / "m.pt"))(x)
    loaded = load_model(tmp_path / "m.pt")
    _check(loaded, model.float()(x), x)  # the weights as saved, in float32


class WithFeatures(nn.Module):
    """Returns its scores with its features, as models written for feature-space defences do."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.body, self.head, self.as_dict = nn.Flatten(), nn.Linear(3 * 8 * 8, 5), as_dict

    def forward(self, x: torch.Tensor) -> Any:
        features = self.body(x)
        scores = self.head(features)
        return {"logits": scores, "features": features} if self.as_dict else (scores, features)


def test_a_model_returning_more_than_scores_is_told_what_it_returned():
    x = _rand(4, 3, 8, 8)
    with pytest.raises(ProbeError, match=r"returns a tuple of \(4, 5\), \(4, 192\); expected class scores"):
        probe_outputs(WithFeatures(), x)
    with pytest.raises(ProbeError, match=r"returns a dict of 'logits': \(4, 5\), 'features': \(4, 192\);"):
        probe_outputs(WithFeatures(as_dict=True), x)


# ------------------------------------------------------------------------------------------------------- ONNX


class OnnxNet(nn.Module):
    """Conv, BatchNorm, Relu, Pad, LeakyRelu, MaxPool (ceil), AveragePool, Concat, Slice, Mul, view, Gemm,
    Clip, Softmax: what the exporter writes for a typical classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 6, 3, stride=2, padding=(0, 1))
        self.pool, self.avg = nn.MaxPool2d(2, ceil_mode=True), nn.AvgPool2d(3, stride=1, padding=1)
        self.fc, self.bn1 = nn.Linear(150, 5), nn.BatchNorm1d(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.c1(x)))
        x = F.leaky_relu(self.c2(F.pad(x, (1, 0, 2, 1))), 0.1)
        x = self.avg(self.pool(x))
        x = torch.cat([x, x * 0.5], 1)[:, :6]
        x = x.view(x.size(0), -1)
        return torch.softmax(self.bn1(self.fc(x)).clamp(-3, 3), 1)


@pytest.mark.parametrize("opset", [9, 17])
def test_onnx_export_round_trip(tmp_path, opset):
    pytest.importorskip("onnx")
    model = OnnxNet().eval()
    gen = torch.Generator().manual_seed(3)
    for bn in (model.bn, model.bn1):
        bn.running_mean.uniform_(-1, 1, generator=gen)
        bn.running_var.uniform_(0.5, 2, generator=gen)
    x = _rand(3, 3, 16, 16)
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            dynamic_axes={"input": {0: "N"}},
        )
    assert detect_format(path) == "onnx"
    loaded = load_model(path)
    assert (loaded.format, loaded.input_shape, loaded.num_classes) == ("onnx", (3, 16, 16), 5)
    assert loaded.outputs_probabilities is True and loaded.preprocessing.layout == "NCHW"
    with torch.no_grad():
        expected = model(x)
    _check(loaded, expected, x)
    assert any(p.requires_grad for p in loaded.model.parameters())  # weights are parameters (for pruning)


def _onnx_file(path: Path, nodes, input_shape, inits, opset: int = 13, n_out: int = 5) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", n_out])],
        [numpy_helper.from_array(np.asarray(v), name=k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def _reference(path: Path, x: np.ndarray) -> torch.Tensor:
    import onnx
    from onnx.reference import ReferenceEvaluator

    return torch.from_numpy(ReferenceEvaluator(onnx.load(str(path))).run(None, {"X": x})[0])


class ViewNet(nn.Module):
    """Flattens with ``x.view(x.size(0), -1)``, which an export without a dynamic batch axis bakes in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


@pytest.mark.parametrize(("flatten", "fixed"), [(False, 1), (True, None)])
def test_onnx_exported_at_a_fixed_batch_size_takes_any(tmp_path, flatten, fixed):
    """Exported at batch 1 without a dynamic axis: a graph whose reshape baked the 1 in runs one image at a
    time; a graph that takes other sizes (a Flatten) keeps running whole batches."""
    pytest.importorskip("onnx")
    model = (
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5)) if flatten else ViewNet()
    ).eval()
    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (_rand(1, 3, 8, 8),), path, dynamo=False)
    loaded = load_model(path)
    assert loaded.model.fixed_batch == fixed
    x = _rand(5, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
    _check(loaded, expected, x)


def test_onnx_hand_built_graph_matches_the_reference_implementation(tmp_path):
    pytest.importorskip("onnx")
    from onnx import helper

    rng = np.random.default_rng(0)
    f32 = np.float32
    inits = {
        "shift": np.array([0.1], f32),
        "two": np.array([2.0], f32),
        "pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64),
        "W": rng.normal(size=(4, 3, 3, 3)).astype(f32),
        "B": rng.normal(size=4).astype(f32),
        "lo": np.array(-0.2, f32),
        "hi": np.array(0.7, f32),
        "shape": np.array([0, -1], np.int64),
        "Wg": rng.normal(size=(5, 72)).astype(f32),
        "Bg": rng.normal(size=5).astype(f32),
    }
    nodes = [
        helper.make_node("Constant", [], ["half"], value_float=0.5),
        helper.make_node("Mul", ["X", "half"], ["a"]),
        helper.make_node("Sub", ["a", "shift"], ["b"]),
        helper.make_node("Div", ["b", "two"], ["c"]),
        helper.make_node("Pad", ["c", "pads"], ["d"], mode="reflect"),
        helper.make_node("Conv", ["d", "W", "B"], ["e"], auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("Sigmoid", ["e"], ["f"]),
        helper.make_node("Tanh", ["e"], ["g"]),
        helper.make_node("Concat", ["f", "g"], ["h"], axis=1),
        helper.make_node("MaxPool", ["h"], ["i"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["i"], ["j"], kernel_shape=[3, 3], pads=[1, 1, 0, 0], strides=[2, 2]),
        helper.make_node("Clip", ["j", "lo", "hi"], ["k"]),
        helper.make_node("LeakyRelu", ["k"], ["l"], alpha=0.1),
        helper.make_node("Transpose", ["l"], ["m"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["m", "shape"], ["n"]),
        helper.make_node("Gemm", ["n", "Wg", "Bg"], ["o"], transB=1),
        helper.make_node("Identity", ["o"], ["p"]),
        helper.make_node("Dropout", ["p"], ["q"]),
        helper.make_node("Softmax", ["q"], ["Y"], axis=-1),
    ]
    path = _onnx_file(tmp_path / "ops.onnx", nodes, ["N", 3, 8, 8], inits)
    x = _rand(4, 3, 8, 8)
    loaded = load_model(path)
    assert loaded.outputs_probabilities is True and loaded.input_shape == (3, 8, 8)
    _check(loaded, _reference(path, x.numpy()), x)


def test_onnx_weight_nodes_become_layers_that_compute_what_the_operators_do(tmp_path):
    """Conv, Gemm and MatMul nodes whose weights no other node reads are nn.Conv2d and nn.Linear modules (which the
    mitigations and stimulation hook); a weight two nodes read stays an operator's; the outputs are the graph's."""
    pytest.importorskip("onnx")
    from onnx import helper

    rng = np.random.default_rng(1)
    f32 = np.float32
    inits = {
        "W": rng.normal(size=(4, 3, 3, 3)).astype(f32),
        "shape": np.array([0, -1], np.int64),
        "Wm": rng.normal(size=(64, 6)).astype(f32),
        "Bm": rng.normal(size=6).astype(f32),
        "Wg": rng.normal(size=(6, 5)).astype(f32),
        "Bg": rng.normal(size=(1, 5)).astype(f32),
        "S": rng.normal(size=(5, 5)).astype(f32),
    }
    nodes = [
        helper.make_node("Conv", ["X", "W"], ["a"], pads=[0, 1, 2, 1]),  # uneven padding, no bias
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("MaxPool", ["b"], ["c"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["c", "shape"], ["d"]),
        helper.make_node("MatMul", ["d", "Wm"], ["e"]),
        helper.make_node("Add", ["e", "Bm"], ["f"]),
        helper.make_node("Relu", ["f"], ["g"]),
        helper.make_node("Gemm", ["g", "Wg", "Bg"], ["h"], alpha=0.5, beta=2.0),
        helper.make_node("Gemm", ["h", "S"], ["i"]),  # S is read twice: stays an operator
        helper.make_node("Gemm", ["i", "S"], ["Y"]),
    ]
    path = _onnx_file(tmp_path / "layers.onnx", nodes, ["N", 3, 8, 8], inits)
    model = load_model(path).model
    kinds = [type(m).__name__ for m in model.layers.values()]
    assert kinds == ["OnnxConv2d", "Linear", "Linear"]
    assert conv_output_layer(model) == "layers." + list(model.layers)[1] + ":input"
    float_values = sum(v.size for k, v in inits.items() if v.dtype == f32)
    assert sum(p.numel() for p in model.parameters()) == float_values  # every weight held once
    x = _rand(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), _reference(path, x.numpy()), rtol=1e-4, atol=1e-4)


def test_onnx_convolution_layers_state_the_nodes_stride_dilation_and_padding(tmp_path):
    """A rebuilt ``Conv`` reads as the node it computes (stride, dilation, even padding), as nn.Conv2d would; padding
    nn.Conv2d cannot state reads as 0 and is still applied."""
    pytest.importorskip("onnx")
    from onnx import helper

    rng = np.random.default_rng(2)
    weights = {name: rng.normal(size=(2, 3, 3, 3)).astype(np.float32) for name in ("W1", "W2", "W3")}
    nodes = [
        helper.make_node("Conv", ["X", "W1"], ["a"], strides=[2, 1], dilations=[1, 2], pads=[1, 2, 1, 2]),
        helper.make_node("Conv", ["X", "W2"], ["b"], pads=[0, 1, 2, 1]),
        helper.make_node("Conv", ["X", "W3"], ["c"], auto_pad="SAME_UPPER"),
        *(helper.make_node("Flatten", [name], [name + "f"]) for name in "abc"),
        helper.make_node("Concat", ["af", "bf", "cf"], ["Y"], axis=1),
    ]
    path = _onnx_file(tmp_path / "convs.onnx", nodes, ["N", 3, 8, 8], weights, n_out=320)
    model = load_model(path).model
    convs = list(model.layers.values())
    assert [(c.stride, c.dilation, c.padding) for c in convs] == [
        ((2, 1), (1, 2), (1, 2)),
        ((1, 1), (1, 1), (0, 0)),
        ((1, 1), (1, 1), (0, 0)),
    ]
    x = _rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), _reference(path, x.numpy()), rtol=1e-4, atol=1e-4)


def test_onnx_channels_last_input_is_read_from_the_declared_shape(tmp_path):
    pytest.importorskip("onnx")
    from onnx import helper

    rng = np.random.default_rng(1)
    f32 = np.float32
    inits = {
        "scale": rng.uniform(0.5, 2, 3).astype(f32),
        "bias": rng.normal(size=3).astype(f32),
        "mean": rng.normal(size=3).astype(f32),
        "var": rng.uniform(0.5, 2, 3).astype(f32),
        "W": rng.normal(size=(3, 4)).astype(f32),
        "B": rng.normal(size=4).astype(f32),
    }
    nodes = [
        helper.make_node("Transpose", ["X"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("BatchNormalization", ["t", "scale", "bias", "mean", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["Y"]),
    ]
    # opset 15: the reference implementation of BatchNormalization before opset 14 mixes in batch statistics
    path = _onnx_file(tmp_path / "nhwc.onnx", nodes, ["N", 6, 6, 3], inits, opset=15, n_out=4)
    loaded = load_model(path)
    assert loaded.preprocessing.layout == "NHWC" and loaded.input_shape == (3, 6, 6)
    assert isinstance(loaded.model, PreprocessedModel)
    assert loaded.outputs_probabilities is False  # probed: logits
    x = _rand(2, 3, 6, 6)
    _check(loaded, _reference(path, x.permute(0, 2, 3, 1).contiguous().numpy()), x)
    with pytest.raises(ValueError, match=r"declares NHWC input .* layout='NCHW' was given"):
        load_model(path, preprocessing=Preprocessing(layout="NCHW"))


def test_onnx_asymmetric_pool_padding_follows_the_spec(tmp_path):
    """pads = [x1_begin, x2_begin, x1_end, x2_end]: max pools pad with -inf, average pools count real pixels.
    (Checked by hand: onnx's reference MaxPool reads asymmetric pads in another order.)"""
    pytest.importorskip("onnx")
    from onnx import helper

    nodes = [
        helper.make_node("MaxPool", ["X"], ["m"], kernel_shape=[2, 2], pads=[0, 1, 1, 0]),
        helper.make_node("AveragePool", ["m"], ["a"], kernel_shape=[2, 2], pads=[1, 0, 0, 0]),
        helper.make_node("Flatten", ["a"], ["Y"]),
    ]
    path = _onnx_file(tmp_path / "pools.onnx", nodes, ["N", 1, 4, 4], {}, n_out=20)
    x = _rand(2, 1, 4, 4) - 0.5  # negative values: padding with 0 instead of -inf would show
    m = F.max_pool2d(F.pad(x, (1, 0, 0, 1), value=-float("inf")), 2, stride=1)  # (N, 1, 4, 5)
    ones = F.pad(torch.ones_like(m), (0, 0, 1, 0))
    a = F.avg_pool2d(F.pad(m, (0, 0, 1, 0)), 2, stride=1) / F.avg_pool2d(ones, 2, stride=1)
    _check(load_model(path), a.flatten(1), x)


def test_onnx_unsupported_operator_is_named(tmp_path):
    pytest.importorskip("onnx")
    from onnx import helper

    nodes = [helper.make_node("Round", ["X"], ["r"]), helper.make_node("Flatten", ["r"], ["Y"])]
    path = _onnx_file(tmp_path / "round.onnx", nodes, ["N", 1, 2, 2], {}, n_out=4)
    with pytest.raises(ModelFileError, match=r"round\.onnx: unsupported ONNX operator\(s\) Round; export"):
        load_model(path)


# ------------------------------------------------------------------------------------------------------ Keras


def _write_keras2_h5(path: Path, config: dict, weights: dict[str, list[tuple[str, np.ndarray]]]) -> Path:
    """A full-model HDF5 file laid out as Keras 2 writes it (no Keras needed)."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"], f.attrs["backend"] = "2.11.0", "tensorflow"
        mw = f.create_group("model_weights")
        names = [layer["config"]["name"] for layer in config["config"]["layers"]]
        mw.attrs["layer_names"] = np.array([n.encode() for n in names])
        for name in names:
            g = mw.create_group(name)
            ws = weights.get(name, [])
            g.attrs["weight_names"] = np.array([f"{name}/{w}:0".encode() for w, _ in ws])
            for w, array in ws:
                g.create_dataset(f"{name}/{w}:0", data=array)
    return path


def _keras2_sequential(rng: np.random.Generator):
    layers = [
        {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, 6, 6, 2]}},
        {
            "class_name": "Conv2D",
            "config": {
                "name": "conv",
                "filters": 3,
                "kernel_size": [3, 3],
                "strides": [1, 1],
                "padding": "same",
                "activation": "relu",
            },
        },
        {
            "class_name": "MaxPooling2D",
            "config": {"name": "pool", "pool_size": [2, 2], "padding": "valid", "strides": [2, 2]},
        },
        {"class_name": "Flatten", "config": {"name": "flat"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 4, "activation": "softmax"}},
    ]
    weights = {
        "conv": [
            ("kernel", rng.normal(size=(3, 3, 2, 3)).astype(np.float32)),
            ("bias", rng.normal(size=3).astype(np.float32)),
        ],
        "dense": [
            ("kernel", rng.normal(size=(27, 4)).astype(np.float32)),
            ("bias", rng.normal(size=4).astype(np.float32)),
        ],
    }
    return {"class_name": "Sequential", "config": {"name": "seq", "layers": layers}}, weights


def test_keras2_h5_without_keras(tmp_path):
    config, weights = _keras2_sequential(np.random.default_rng(0))
    path = _write_keras2_h5(tmp_path / "k2.h5", config, weights)
    assert detect_format(path) == "keras"
    loaded = load_model(path)
    assert loaded.preprocessing.layout == "NHWC" and loaded.input_shape == (2, 6, 6)
    assert loaded.outputs_probabilities is True
    x = _rand(3, 2, 6, 6)
    # The Keras computation written out by hand: channels-last, 'same' padding, flatten in (H, W, C) order.
    kernel = torch.from_numpy(weights["conv"][0][1]).permute(3, 2, 0, 1)
    h = torch.relu(F.conv2d(x, kernel, torch.from_numpy(weights["conv"][1][1]), padding=1))
    h = F.max_pool2d(h, 2).permute(0, 2, 3, 1).reshape(3, -1)
    dense_kernel, dense_bias = (torch.from_numpy(w) for _, w in weights["dense"])
    expected = torch.softmax(h @ dense_kernel + dense_bias, 1)
    _check(loaded, expected, x)


def test_keras2_dense_model_on_flattened_images(tmp_path):
    """A Keras MLP declares (None, 12): its layout is read as flat, the image shape is left to the data."""
    rng = np.random.default_rng(1)
    layers = [
        {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, 12]}},
        {"class_name": "Dense", "config": {"name": "hidden", "units": 5, "activation": "relu"}},
        {"class_name": "Dense", "config": {"name": "out", "units": 3, "activation": "linear"}},
    ]
    weights = {
        "hidden": [("kernel", rng.normal(size=(12, 5)).astype(np.float32)), ("bias", np.zeros(5, np.float32))],
        "out": [("kernel", rng.normal(size=(5, 3)).astype(np.float32)), ("bias", np.zeros(3, np.float32))],
    }
    config = {"class_name": "Sequential", "config": {"name": "mlp", "layers": layers}}
    loaded = load_model(_write_keras2_h5(tmp_path / "mlp.h5", config, weights))
    assert loaded.preprocessing.layout == "flat" and loaded.input_shape is None
    x = _rand(4, 1, 3, 4)
    (w1, b1), (w2, b2) = ((torch.from_numpy(w) for _, w in weights[name]) for name in ("hidden", "out"))
    _check(loaded, torch.relu(x.flatten(1) @ w1 + b1) @ w2 + b2, x)


def test_keras_layer_it_cannot_rebuild_without_keras_installed(tmp_path, monkeypatch):
    config, weights = _keras2_sequential(np.random.default_rng(0))
    config["config"]["layers"][1]["class_name"] = "Conv3D"
    path = _write_keras2_h5(tmp_path / "conv3d.h5", config, weights)
    monkeypatch.setitem(sys.modules, "keras", None)  # import keras now fails, as when it is not installed
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    msg = _one_line(err, path)
    assert "unsupported Keras layer type Conv3D ('conv')" in msg
    assert "pip install 'neuralcleanse[keras]'" in msg


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras is loaded with another backend")
    return keras


def _keras_functional(keras):
    layers = keras.layers
    inp = keras.Input((12, 12, 3))
    x = layers.Rescaling(2.0, offset=-1.0)(inp)
    x = layers.ZeroPadding2D(((1, 0), (2, 1)))(x)
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.BatchNormalization()(x)
    a = layers.MaxPooling2D(3, strides=1, padding="same")(x)
    b = layers.AveragePooling2D(3, strides=1, padding="same")(x)
    x = layers.Conv2D(6, 1, use_bias=False)(layers.Concatenate()([a, b]))
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Add()([x, layers.Conv2D(6, 3, padding="same", dilation_rate=2)(x)])
    x = layers.ReLU(max_value=6.0)(x)
    pooled = layers.Flatten()(layers.AveragePooling2D(2)(x))
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), pooled])
    x = layers.Dense(16, activation="tanh")(layers.Dropout(0.5)(x))
    out = layers.Activation("softmax")(layers.Dense(5)(x))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign((rng.normal(size=w.shape) * 0.5).astype("float32"))
    bn = next(layer for layer in model.layers if isinstance(layer, layers.BatchNormalization))
    bn.moving_variance.assign(rng.uniform(0.5, 2, size=6).astype("float32"))
    return model


def _keras_out(keras, model, x_nchw: torch.Tensor, nhwc: bool = True) -> torch.Tensor:
    x = x_nchw.permute(0, 2, 3, 1) if nhwc else x_nchw
    out = model(x.contiguous().numpy(), training=False)
    return torch.from_numpy(np.asarray(keras.ops.convert_to_numpy(out)))


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_keras_functional_model_round_trip(tmp_path, keras, suffix):
    model = _keras_functional(keras)
    path = tmp_path / f"func{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    assert detect_format(path) == "keras"
    loaded = load_model(path)
    assert loaded.preprocessing.layout == "NHWC" and loaded.input_shape == (3, 12, 12)
    assert loaded.outputs_probabilities is True and loaded.num_classes == 5
    assert isinstance(loaded.model, PreprocessedModel) and isinstance(loaded.model.model, KerasModule)
    x = _rand(4, 3, 12, 12)
    _check(loaded, _keras_out(keras, model, x), x)


def test_keras_channels_first_and_channelless_inputs(tmp_path, keras):
    layers = keras.layers
    cf = keras.Sequential(
        [
            keras.Input((2, 8, 8)),
            layers.Conv2D(3, 3, data_format="channels_first", activation="relu"),
            layers.MaxPooling2D(2, data_format="channels_first"),
            layers.Flatten(data_format="channels_first"),
            layers.Dense(4),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cf.save(tmp_path / "cf.h5")
    loaded = load_model(tmp_path / "cf.h5")
    assert loaded.preprocessing.layout == "NCHW" and loaded.input_shape == (2, 8, 8)
    assert loaded.outputs_probabilities is False
    x = _rand(3, 2, 8, 8)
    _check(loaded, _keras_out(keras, cf, x, nhwc=False), x)

    mlp = keras.Sequential([keras.Input((10, 10)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    mlp.save(tmp_path / "mlp.keras")
    loaded = load_model(tmp_path / "mlp.keras")
    assert loaded.preprocessing.layout == "NHW" and loaded.input_shape == (1, 10, 10)
    x = _rand(2, 1, 10, 10)
    _check(loaded, _keras_out(keras, mlp, x[:, 0], nhwc=False), x)


def test_keras_layers_it_cannot_rebuild_load_through_keras(tmp_path, keras):
    layers = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 2)), layers.DepthwiseConv2D(3), layers.Flatten(), layers.Dense(3)])
    model.save(tmp_path / "dw.keras")
    loaded = load_model(tmp_path / "dw.keras")
    assert loaded.preprocessing.layout == "NHWC" and loaded.num_classes == 3
    x = _rand(2, 2, 8, 8)
    _check(loaded, _keras_out(keras, model, x), x)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_keras_lambda_layer_is_refused_and_never_runs(tmp_path, keras, suffix):
    target = tmp_path / "lambda_ran"
    code = f"lambda t: (open({str(target)!r}, 'w').close(), t)[1]"
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Lambda(eval(code)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    path = tmp_path / f"lambda{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    target.unlink(missing_ok=True)  # building the model above ran it once
    refused = r"refused: Keras layer 'lambda\w*' is a Lambda layer.*--unsafe-pickle"
    with pytest.raises(ModelFileError, match=refused):
        load_model(path)
    assert not target.exists()
    load_model(path, unsafe_pickle=True)  # opted in: Keras rebuilds the layer and runs its code
    assert target.exists()


def test_foreign_keras_badnets_model_loads_with_no_options(keras_badnets_model, mnist_test):
    pytest.importorskip("h5py")
    loaded = load_model(keras_badnets_model)
    assert loaded.format == "keras" and loaded.preprocessing.layout == "NHWC"
    assert loaded.outputs_probabilities is True
    assert loaded.input_shape == (1, 28, 28) and loaded.num_classes == 10
    x, labels = mnist_test.images, mnist_test.labels
    with torch.no_grad():
        pred = torch.cat([loaded.model(x[i : i + 2500]).argmax(1) for i in range(0, len(x), 2500)])
        accuracy = (pred == labels).float().mean().item()
        triggered = x[labels != 0][:1000].clone()
        for r, c in [(27, 27), (25, 27), (27, 25), (25, 25), (23, 27), (27, 23)]:  # the README's trigger
            triggered[:, 0, r, c] = 1.0
        attack_success = (loaded.model(triggered).argmax(1) == 0).float().mean().item()
    assert accuracy > 0.98
    assert attack_success > 0.99


# -------------------------------------------------------------------------------------------------- bad input


def _one_line(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def test_missing_and_empty_and_unknown_files(tmp_path):
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "nope.pt")
    assert "no such file or directory; check the path" in _one_line(err, tmp_path / "nope.pt")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty file; re-export the model"):
        load_model(tmp_path / "empty.onnx")
    (tmp_path / "notes.txt").write_text("not a model at all\n")
    with pytest.raises(ModelFileError) as err:
        load_model(tmp_path / "notes.txt")
    assert "a text file, not a model file of any known format" in _one_line(err, tmp_path / "notes.txt")
    (tmp_path / "somedir").mkdir()
    with pytest.raises(ModelFileError, match="a directory without model.json"):
        load_model(tmp_path / "somedir")


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    out = path.with_name("truncated_" + path.name)
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def test_truncated_and_corrupt_files(tmp_path):
    model = TinyNet().eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.save(model.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), tmp_path / "ts.pt")
    cases = {
        "w.pt": "corrupt or truncated",
        "legacy.pt": "corrupt or truncated",
        "w.safetensors": "corrupt or truncated safetensors file",
        "ts.pt": "corrupt or truncated",
    }
    for name, expected in cases.items():
        path = _truncate(tmp_path / name)
        with pytest.raises(ModelFileError) as err:
            load_model(path, arch=f"{__name__}:TinyNet")
        assert expected in _one_line(err, path), name
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01 this is noise, not a checkpoint " * 4)
    with pytest.raises(ModelFileError, match="corrupt or truncated file"):
        load_model(tmp_path / "garbage.pt", arch="mnist")


def test_truncated_onnx_and_keras_files(tmp_path):
    pytest.importorskip("onnx")
    from onnx import helper

    nodes = [helper.make_node("Flatten", ["X"], ["Y"])]
    onnx_path = _truncate(_onnx_file(tmp_path / "m.onnx", nodes, ["N", 1, 2, 2], {}, n_out=4), keep=0.6)
    with pytest.raises(ModelFileError) as err:
        load_model(onnx_path)
    assert "not a valid ONNX model" in _one_line(err, onnx_path)
    config, weights = _keras2_sequential(np.random.default_rng(0))
    keras_path = _truncate(_write_keras2_h5(tmp_path / "k.h5", config, weights), keep=0.5)
    with pytest.raises(ModelFileError) as err:
        load_model(keras_path)
    assert "cannot read the Keras file" in _one_line(err, keras_path)


def test_corrupt_neuralcleanse_directory(tmp_path):
    save_model(tmp_path / "m", build_model("mnist"), {"architecture": "mnist", "num_classes": 10})
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="corrupt or truncated weights"):
        load_model(tmp_path / "m")


def test_weights_without_arch_and_wrong_arch(tmp_path):
    path = tmp_path / "mnist.pt"
    torch.save(build_model("mnist").state_dict(), path)
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    assert "holds only weights (a state dict); give the architecture" in _one_line(err, path)
    with pytest.raises(ModelFileError) as err:
        load_model(path, arch="gtsrb")
    msg = _one_line(err, path)
    assert "the weights do not match architecture 'gtsrb'" in msg and "check arch (--arch)" in msg
    with pytest.raises(ModelFileError, match="do not match architecture '.*:TinyNet'"):
        load_model(path, arch=f"{__name__}:TinyNet")
    with pytest.raises(ValueError, match="unknown arch 'resnet'"):
        load_model(path, arch="resnet")
    with pytest.raises(ValueError, match="cannot import it"):
        load_model(path, arch="no_such_package.models:Net")


def test_arch_for_a_whole_model_and_preprocessing_for_a_neuralcleanse_model(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(TinyNet()), tmp_path / "ts.pt")
    with pytest.raises(ValueError, match="arch='mnist' is only for state-dict files"):
        load_model(tmp_path / "ts.pt", arch="mnist")
    save_model(tmp_path / "m", build_model("mnist"), {"architecture": "mnist", "num_classes": 10})
    with pytest.raises(ValueError, match="take \\[0, 1\\] NCHW RGB images; drop the preprocessing"):
        load_model(tmp_path / "m", preprocessing=Preprocessing(value_range=(0, 255)))


def test_keras_weights_only_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    assert "a Keras weights-only file (no model_config)" in _one_line(err, path)


def test_preprocessing_is_applied_around_a_loaded_model(tmp_path):
    model = TinyNet().eval()
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    pre = Preprocessing(value_range=(0, 255), mean=(120.0, 115.0, 100.0), std=(60.0,), channel_order="BGR")
    loaded = load_model(path, arch=f"{__name__}:TinyNet", preprocessing=pre)
    assert isinstance(loaded.model, PreprocessedModel) and loaded.preprocessing.layout == "NCHW"
    x = _rand(2, 3, 8, 8)
    mean = torch.tensor([120.0, 115.0, 100.0]).view(1, 3, 1, 1)
    _check(loaded, model((x.flip(1) * 255 - mean) / 60.0), x)
    with pytest.raises(ValueError, match="takes 3 channel\\(s\\), but mean has 2 values"):
        load_model(path, arch=f"{__name__}:TinyNet", preprocessing=Preprocessing(mean=(0.5, 0.5)))
    assert loaded.to_dict()["preprocessing"]["value_range"] == [0.0, 255.0]


def test_a_torchscript_models_onnx_copy_is_kept_while_it_gives_the_models_outputs() -> None:
    """The filter asks for the copy at every batch: the export runs once, and again only once the model changed."""
    pytest.importorskip("onnx")
    from neuralcleanse.formats.unscript import unscripted

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    scripted = torch.jit.script(net)
    images = torch.rand(8, 1, 8, 8)
    first = unscripted(scripted, images)
    assert first is not None and first is not scripted
    assert unscripted(scripted, torch.rand(5, 1, 8, 8)) is first
    with torch.no_grad():
        scripted.state_dict()["3.weight"].mul_(2)  # the same module, other weights
    second = unscripted(scripted, images)
    assert second is not None and second is not first
    with torch.no_grad():
        assert torch.allclose(second(images), scripted(images), atol=1e-5)
