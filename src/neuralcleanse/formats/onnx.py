"""ONNX models, converted to a differentiable PyTorch module (:class:`OnnxModule`).

Not through ``onnx2torch``, which needs torchvision. The graph is read as protobuf: nothing in it runs as code.
The operators are in :mod:`~neuralcleanse.formats.onnx_ops`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._torch import MODEL_ERRORS
from ..store.model_dir import ModelFileError
from .onnx_layers import weight_layer
from .onnx_ops import ONNX_DTYPES, ONNX_OPS
from .raw import RawModel, first_line, layout_from_dims

__all__ = ["OnnxModule", "load_onnx"]


def load_onnx(path: Path, map_location: str | torch.device) -> RawModel:
    try:
        import onnx
    except ImportError:
        raise ModelFileError(
            f"{path}: an ONNX model; reading it needs the onnx package: pip install 'neuralcleanse[onnx]'"
        ) from None
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:  # protobuf's DecodeError, onnx's ValidationError, external-data OSErrors
        raise ModelFileError(
            f"{path}: not a valid ONNX model ({first_line(exc)}); it may be corrupt or truncated: re-export it"
        ) from None
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    module = OnnxModule(proto.graph, opset, str(path)).eval()
    module.fix_batch()
    module = module.to(map_location)
    dims = module.input_dims
    layout, input_shape = layout_from_dims(dims, channels_last_hint=None)
    out_dims = module.output_dims
    num_classes = out_dims[-1] if out_dims and len(out_dims) == 2 else None
    return RawModel(
        module,
        layout=layout,
        input_shape=input_shape,
        num_classes=num_classes,
        declared_shape=dims,
        probabilities=True if module.ends_in_softmax else None,
    )


def _onnx_attrs(node: Any) -> dict[str, Any]:
    from onnx import helper, numpy_helper

    attrs: dict[str, Any] = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif hasattr(value, "dims") and hasattr(value, "data_type"):  # a TensorProto
            value = torch.from_numpy(np.array(numpy_helper.to_array(value)))
        attrs[a.name] = value
    return attrs


class OnnxModule(nn.Module):
    """An ONNX graph run op by op with differentiable torch functions (ops in :data:`ONNX_OPS`).

    Float initializers become parameters (so pruning and fine-tuning see them), other initializers and
    ``Constant`` nodes buffers; a ``Gemm``, ``MatMul`` or ``Conv`` node whose weights no other node reads becomes a
    module of :attr:`layers` (:mod:`~neuralcleanse.formats.onnx_layers`), which owns them. The graph must have one
    input; its first output is returned.
    """

    def __init__(self, graph: Any, opset: int, source: str = "ONNX model") -> None:
        super().__init__()
        from onnx import numpy_helper

        self.opset = opset
        init_names = {t.name for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in init_names]
        if len(inputs) != 1 or not graph.output:
            raise ModelFileError(
                f"{source}: the graph has {len(inputs)} inputs and {len(graph.output)} outputs; "
                "neuralcleanse needs one image input and a class-score output"
            )
        self.input_name, self.output_name = inputs[0].name, graph.output[0].name
        self.input_dims = _onnx_dims(inputs[0])
        self.output_dims = _onnx_dims(graph.output[0])
        elem = inputs[0].type.tensor_type.elem_type
        self.input_dtype = ONNX_DTYPES.get(elem, torch.float32)
        self._tensor_attr: dict[str, str] = {}  # ONNX tensor name -> attribute name of its parameter/buffer
        for t in graph.initializer:
            self._add_constant(t.name, torch.from_numpy(np.array(numpy_helper.to_array(t))))
        unsupported = sorted(
            {
                (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}")
                for n in graph.node
                if n.domain not in ("", "ai.onnx") or n.op_type not in ONNX_OPS
            }
        )
        if unsupported:
            raise ModelFileError(
                f"{source}: unsupported ONNX operator(s) {', '.join(unsupported)}; export the model "
                "without them (or as TorchScript)"
            )
        defined = {self.input_name, *self._tensor_attr, ""}
        readers = Counter([i for n in graph.node for i in n.input] + [o.name for o in graph.output])
        self.layers = nn.ModuleDict()
        # (op, inputs, outputs, attributes, the key of its module in self.layers or None)
        self.nodes: list[tuple[str, list[str], list[str], dict[str, Any], str | None]] = []
        producers: dict[str, tuple[str, list[str]]] = {}
        for n in graph.node:
            attrs = _onnx_attrs(n)
            missing = [i for i in n.input if i not in defined]
            if missing:
                raise ModelFileError(
                    f"{source}: node {n.name or n.op_type!r} reads {missing[0]!r}, which no earlier node "
                    "produces; the graph is not a valid static ONNX graph"
                )
            if n.op_type == "Constant":
                self._add_constant(n.output[0], _onnx_constant(attrs, source))
                defined.add(n.output[0])
                continue
            produced = list(n.output[: _ONNX_OUTPUTS.get(n.op_type, len(n.output))])
            key = self._add_layer(n, attrs, readers)
            self.nodes.append((n.op_type, list(n.input[:1]) if key else list(n.input), produced, attrs, key))
            defined.update(produced)
            for o in produced:
                producers[o] = (n.op_type, list(n.input))
        if self.output_name not in defined:
            raise ModelFileError(f"{source}: no node produces the graph output {self.output_name!r}")
        self.ends_in_softmax = _ends_in(producers, self.output_name, "Softmax")
        self.fixed_batch: int | None = None  # set by :meth:`fix_batch` when the graph takes no other batch size

    def _add_constant(self, name: str, value: torch.Tensor) -> None:
        attr = "t_" + re.sub(r"\W", "_", name)
        while hasattr(self, attr):
            attr += "_"
        if value.is_floating_point():
            self.register_parameter(attr, nn.Parameter(value, requires_grad=True))
        else:
            self.register_buffer(attr, value)
        self._tensor_attr[name] = attr

    def _add_layer(self, node: Any, attrs: dict[str, Any], readers: Counter[str]) -> str | None:
        """Rebuild ``node`` as a module of :attr:`layers` when its inputs after the first are float constants that
        no other node reads (or left out); returns its key there, None when the node stays an operator."""
        names = list(node.input[1:])
        if not names or any(name and (name not in self._tensor_attr or readers[name] != 1) for name in names):
            return None
        constants = [getattr(self, self._tensor_attr[name]).detach() if name else None for name in names]
        if any(c is not None and not c.is_floating_point() for c in constants):
            return None
        layer = weight_layer(node.op_type, attrs, self.opset, constants)
        if layer is None:
            return None
        for name in names:
            if name:
                delattr(self, self._tensor_attr.pop(name))
        key = re.sub(r"\W", "_", node.name or node.op_type.lower()).strip("_") or "layer"
        while key in self.layers or hasattr(self.layers, key):
            key += "_"
        self.layers[key] = layer
        return key

    def fix_batch(self) -> None:
        """Run the graph in batches of its declared size when it takes no other: a model exported without a
        dynamic batch axis often bakes that size into a reshape (``x.view(x.size(0), -1)`` traced at batch 1).
        Decided once, on two random images; a graph whose other dimensions are not all declared is left as is."""
        declared = self.input_dims or ()
        dims = [d for d in declared if isinstance(d, int) and d > 0]
        if not dims or len(dims) != len(declared) or dims[0] == 2:
            return
        probe = torch.rand(2, *dims[1:], generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                works = self._run(probe).shape[0] == 2
        except MODEL_ERRORS:
            works = False
        if not works:
            self.fixed_batch = dims[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.fixed_batch
        if size is None or x.shape[0] == size:
            return self._run(x)
        chunks = list(x.split(size))
        short = size - chunks[-1].shape[0]  # the last batch, filled up to the size with copies of its first image
        chunks[-1] = torch.cat([chunks[-1], chunks[-1][:1].expand(short, *x.shape[1:])]) if short else chunks[-1]
        return torch.cat([self._run(c) for c in chunks])[: x.shape[0]]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point() and self.input_dtype.is_floating_point:
            x = x.to(self.input_dtype)
        env: dict[str, torch.Tensor | None] = {self.input_name: x, "": None}
        for name, attr in self._tensor_attr.items():
            env[name] = getattr(self, attr)
        for op, inputs, outputs, attrs, key in self.nodes:
            if key is None:
                result = ONNX_OPS[op]([env[i] for i in inputs], attrs, self.opset)
            else:
                result = self.layers[key](env[inputs[0]])
            results = result if isinstance(result, tuple) else (result,)
            for o, r in zip(outputs, results, strict=False):
                if o:
                    env[o] = r
        out = env[self.output_name]
        assert out is not None  # the constructor checked that a node produces it
        return out


def _onnx_dims(value_info: Any) -> tuple[int | None, ...] | None:
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)


def _onnx_constant(attrs: Mapping[str, Any], source: str) -> torch.Tensor:
    if "value" in attrs:
        return attrs["value"]
    for key, dtype in (
        ("value_float", torch.float32),
        ("value_floats", torch.float32),
        ("value_int", torch.int64),
        ("value_ints", torch.int64),
    ):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=dtype)
    raise ModelFileError(f"{source}: unsupported Constant node attributes {sorted(attrs)}")


def _ends_in(producers: Mapping[str, tuple[str, list[str]]], name: str, op: str) -> bool:
    passthrough = {"Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Cast"}
    while name in producers:
        kind, inputs = producers[name]
        if kind == op:
            return True
        if kind not in passthrough or not inputs:
            return False
        name = inputs[0]
    return False


_ONNX_OUTPUTS = {"MaxPool": 1, "Dropout": 1, "BatchNormalization": 1}  # optional extra outputs not produced
