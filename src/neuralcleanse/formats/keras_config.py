"""Reading a Keras model config (the file's JSON): its layers, their inputs, the declared input shape, whether it
ends in a softmax, and which layers would run code when loaded (``Lambda`` layers, custom objects)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "UnsupportedKerasLayer",
    "activation_name",
    "keras_code_layers",
    "keras_ends_in_softmax",
    "keras_inbound",
    "keras_input",
    "keras_layer_configs",
]


_KERAS_CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}


def keras_layer_configs(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    cfg = config.get("config", {})
    layers = cfg.get("layers", []) if isinstance(cfg, Mapping) else cfg  # very old Sequential: a bare list
    return [layer for layer in layers if isinstance(layer, dict)]


def keras_code_layers(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, kind) of every layer whose loading would run code: Lambda layers, custom (non-Keras) objects."""
    found = []
    for layer in keras_layer_configs(config):
        cls = str(layer.get("class_name", ""))
        name = str(layer.get("config", {}).get("name", layer.get("name", "?")))
        module = layer.get("module")
        if cls in _KERAS_CODE_LAYERS:
            found.append((name, f"{cls} layer"))
        elif isinstance(module, str) and not module.startswith("keras"):
            found.append((name, f"custom object {module}.{cls}"))
        elif isinstance(layer.get("registered_name"), str) and ">" in layer["registered_name"]:
            found.append((name, f"custom object {layer['registered_name']}"))
        elif cls in ("Sequential", "Functional", "Model"):
            found += keras_code_layers(layer)
    return found


def keras_input(config: Mapping[str, Any]) -> tuple[tuple[int | None, ...] | None, bool]:
    """The declared input shape ``(None, ...)`` and whether the model is channels-last."""
    layers = keras_layer_configs(config)
    dims = None
    cfg = config.get("config", {})
    if isinstance(cfg, Mapping) and isinstance(cfg.get("build_input_shape"), list):
        dims = tuple(cfg["build_input_shape"])
    for layer in layers:
        c = layer.get("config", {})
        shape = c.get("batch_input_shape") or c.get("batch_shape")
        if shape:
            dims = tuple(shape)
            break
    channels_last = all(
        layer.get("config", {}).get("data_format", "channels_last") != "channels_first" for layer in layers
    )
    return dims, channels_last


def keras_ends_in_softmax(config: Mapping[str, Any]) -> bool:
    try:
        return _keras_softmax_walk(config)
    except (UnsupportedKerasLayer, KeyError, IndexError, TypeError, ValueError):
        return False


def _keras_softmax_walk(config: Mapping[str, Any]) -> bool:
    layers = keras_layer_configs(config)
    by_name = {layer.get("config", {}).get("name", layer.get("name")): layer for layer in layers}
    cfg = config.get("config", {})
    current: dict[str, Any] | None = layers[-1] if layers else None
    if isinstance(cfg, Mapping) and cfg.get("output_layers"):
        outs = cfg["output_layers"]
        current = by_name.get(outs[0] if isinstance(outs[0], str) else outs[0][0])
    passthrough = {"Dropout", "Flatten", "Reshape", "ActivityRegularization", "GaussianNoise"}
    while current is not None:
        cls, c = current.get("class_name"), current.get("config", {})
        activation = activation_name(c.get("activation"))
        if cls == "Softmax" or activation == "softmax":
            return True
        if cls not in passthrough and not (cls == "Activation" and activation == "linear"):
            return False
        inbound = keras_inbound(current)
        if inbound is None:  # Sequential: the previous layer
            i = layers.index(current)
            current = layers[i - 1] if i > 0 else None
        else:
            current = by_name.get(inbound[0]) if len(inbound) == 1 else None
    return False


def activation_name(act: Any) -> str | None:
    if act is None:
        return "linear"
    if isinstance(act, str):
        return act
    if isinstance(act, Mapping) and str(act.get("module", "keras")).startswith("keras"):
        inner = act.get("config")
        return inner if isinstance(inner, str) else act.get("class_name")
    return None


def keras_inbound(layer: Mapping[str, Any]) -> list[str] | None:
    """The names of the layers feeding a functional-model layer; None in a Sequential model."""
    nodes = layer.get("inbound_nodes")
    if nodes is None:
        return None
    if not nodes:
        return []
    if len(nodes) > 1:
        raise UnsupportedKerasLayer(f"shared layer {layer.get('name')!r} (called more than once)")
    node = nodes[0]
    names: list[str] = []
    if isinstance(node, Mapping):  # Keras 3: {"args": [...keras tensors...], "kwargs": {...}}
        for history in _keras_histories(node.get("args", [])):
            names.append(str(history[0]))
            if history[1] != 0 or history[2] != 0:
                raise UnsupportedKerasLayer(f"multi-output or shared layer feeding {layer.get('name')!r}")
    else:  # Keras 2: [[layer_name, node_index, tensor_index, kwargs], ...]
        for entry in node:
            names.append(str(entry[0]))
            if entry[1] != 0 or entry[2] != 0:
                raise UnsupportedKerasLayer(f"multi-output or shared layer feeding {layer.get('name')!r}")
    return names


def _keras_histories(obj: Any) -> Iterator[list[Any]]:
    if isinstance(obj, Mapping):
        if obj.get("class_name") == "__keras_tensor__":
            yield obj["config"]["keras_history"]
        else:
            for v in obj.values():
                yield from _keras_histories(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _keras_histories(v)


class UnsupportedKerasLayer(Exception):
    pass
