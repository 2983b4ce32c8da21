"""A whole Keras Sequential or functional model rebuilt as one torch module (:class:`KerasModule`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .keras_config import UnsupportedKerasLayer, keras_inbound, keras_layer_configs
from .keras_layers import keras_layer

__all__ = ["KerasModule"]


class KerasModule(nn.Module):
    """A Keras Sequential or functional model rebuilt in torch from its config and weights (no Keras needed).

    It takes input in the Keras model's own layout (channels-last unless the model says otherwise) and returns
    what the Keras model returns; each layer is a submodule named after the Keras layer.
    """

    def __init__(self, config: Mapping[str, Any], weights: Mapping[str, list[np.ndarray]]) -> None:
        super().__init__()
        cls = config.get("class_name")
        if cls not in ("Sequential", "Functional", "Model"):
            raise UnsupportedKerasLayer(f"model class {cls}")
        layers = keras_layer_configs(config)
        self.layers = nn.ModuleDict()
        self.names: dict[str, str] = {}  # Keras layer name -> submodule key
        self.inbound: dict[str, list[str]] = {}
        sequential = cls == "Sequential"
        previous = "__input__"
        self.input_name = previous
        for layer in layers:
            lcls, c = str(layer["class_name"]), layer.get("config", {})
            name = str(c.get("name", layer.get("name")))
            if lcls in ("Sequential", "Functional", "Model"):
                raise UnsupportedKerasLayer(f"nested model {name!r}")
            self.layers[self._key(name)] = keras_layer(lcls, c, list(weights.get(name, [])))
            if sequential:
                self.inbound[name] = [previous]
                previous = name
            else:
                self.inbound[name] = keras_inbound(layer) or []
                if lcls == "InputLayer":
                    self.input_name = name
        if sequential:
            self.output_name = previous
        else:
            cfg = config["config"]
            ins, outs = cfg.get("input_layers", []), cfg.get("output_layers", [])
            ins = [ins] if ins and isinstance(ins[0], str) else ins
            outs = [outs] if outs and isinstance(outs[0], str) else outs
            if len(ins) != 1 or len(outs) != 1:
                raise ValueError(f"the model has {len(ins)} inputs and {len(outs)} outputs, not one each")
            self.input_name, self.output_name = str(ins[0][0]), str(outs[0][0])
            self.inbound[self.input_name] = []
        self.order = _toposort(self.inbound, self.output_name)

    def _key(self, name: str) -> str:
        key = re.sub(r"\W", "_", name) or "layer"
        while key in self.layers:
            key += "_"
        self.names[name] = key
        return key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {"__input__": x, self.input_name: x}
        for name in self.order:
            if name == self.input_name and not self.inbound.get(name):
                values[name] = x
                continue
            args = [values[i] for i in self.inbound[name]]
            values[name] = self.layers[self.names[name]](*args)
        return values[self.output_name]


def _toposort(inbound: Mapping[str, list[str]], output: str) -> list[str]:
    """The layers that ``output`` depends on, each after its inputs."""
    order: list[str] = []
    state: dict[str, int] = {}
    stack: list[tuple[str, bool]] = [(output, False)]
    while stack:
        name, done = stack.pop()
        if done:
            state[name] = 2
            order.append(name)
            continue
        if state.get(name):
            if state[name] == 1:
                raise ValueError(f"the layer graph has a cycle through {name!r}")
            continue
        if name != "__input__" and name not in inbound:
            raise ValueError(f"layer {name!r} is used but not defined")
        state[name] = 1
        stack.append((name, True))
        for i in reversed(inbound.get(name, [])):
            if state.get(i) != 2:
                stack.append((i, False))
    return [n for n in order if n != "__input__"]
