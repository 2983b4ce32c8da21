"""A TorchScript model as a module whose layers can be hooked: the same network re-read through an ONNX export.

TorchScript modules take no Python hooks, so what reads a layer's activations (neuron stimulation, pruning, the
input filter) cannot run on them. The TorchScript exporter of ``torch.onnx`` writes the compiled graph out as ONNX
(to a temporary file), and :class:`~neuralcleanse.formats.onnx.OnnxModule` reads it back with its dense and
convolutional nodes as ``nn.Linear`` and ``nn.Conv2d`` modules (:mod:`~neuralcleanse.formats.onnx_layers`). The
copy is used only where it gives the model's own outputs on the images it is checked on. A model's copy is kept
while the model lives and handed out again as long as it gives the model's outputs on the next call's images (the
filter asks for it at every batch; a model whose weights changed since is exported again). Reading the graph needs
the ``onnx`` package (``neuralcleanse[onnx]``).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
import weakref
from pathlib import Path

import torch
from torch import nn

from .._torch import MODEL_ERRORS, eval_mode, holds_script, model_device
from .onnx import OnnxModule

__all__ = ["unscripted"]

logger = logging.getLogger(__name__)

_CHECKED = 8  # images the copy's outputs are compared on
_COPIES: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()  # a model's checked copy


@torch.no_grad()
def unscripted(model: nn.Module, images: torch.Tensor) -> nn.Module | None:
    """``model`` itself when it holds no TorchScript module; else an :class:`OnnxModule` copy of it, in eval mode on
    the model's device, that gives the model's outputs on ``images`` (N, C, H, W); None when there is none (the
    reason is logged).
    """
    if not holds_script(model):
        return model
    try:
        import onnx
    except ImportError:
        logger.info("a TorchScript model's layers are read through ONNX: pip install 'neuralcleanse[onnx]'")
        return None
    device = model_device(model)
    images = images[:_CHECKED].to(device)
    kept = _COPIES.get(model)
    if kept is not None and _same_outputs(model, kept, images):
        return kept
    example = images[:2]  # exported on two images, checked on more: a batch size baked into the graph shows
    try:
        with eval_mode(model), warnings.catch_warnings(), tempfile.TemporaryDirectory() as folder:
            warnings.simplefilter("ignore")  # the tracer's and exporter's notes
            # A Python module around a TorchScript one (a preprocessing wrapper) is traced into one graph first: the
            # exporter's own tracing cannot enter a TorchScript submodule.
            graph = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.trace(model, example)
            path = Path(folder) / "model.onnx"
            torch.onnx.export(graph, (example,), path, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "N"}})
            proto = onnx.load(str(path))
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        copy = OnnxModule(proto.graph, opset, "the TorchScript model's ONNX export").eval().to(device)
        same = _same_outputs(model, copy, images)
    except MODEL_ERRORS as exc:  # the exporter's errors are RuntimeErrors; OnnxModule's ModelFileError a ValueError
        logger.info("the TorchScript model cannot be read as ONNX: %s", str(exc).splitlines()[0] if str(exc) else exc)
        return None
    if not same:
        logger.info("the TorchScript model's ONNX export does not give the model's outputs")
        return None
    _COPIES[model] = copy
    return copy


def _same_outputs(model: nn.Module, copy: nn.Module, images: torch.Tensor) -> bool:
    """Whether ``copy`` gives ``model``'s outputs on ``images`` (the model in eval mode for the call)."""
    with eval_mode(model):
        expected = model(images)
    again = copy(images)
    return again.shape == expected.shape and torch.allclose(again.float(), expected.float(), rtol=1e-3, atol=1e-4)
