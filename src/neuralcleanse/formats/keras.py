"""Keras 2 and 3 full-model HDF5 (``.h5``) and Keras 3 ``.keras`` files, rebuilt as PyTorch modules from the
file's JSON config and HDF5 weights (:class:`~neuralcleanse.formats.keras_model.KerasModule`).

Why Keras files are rebuilt rather than loaded through Keras 3: it needs only ``h5py``; the result is a plain
PyTorch module (follows ``.to(device)``, ``eval()``, hooks and state dicts like any other); there is no code
path through Keras's deserialiser, whose ``safe_mode`` has been bypassed several times; and it reads Keras 2
files (the format of most published backdoored models) exactly as they were written. ``Lambda`` layers and
custom objects are refused unless the caller passes ``unsafe_pickle=True``. Layers outside
:data:`~neuralcleanse.formats.keras_layers.KERAS_LAYERS` fall back to Keras 3 on its PyTorch backend when
``keras`` is installed, with ``safe_mode=not unsafe_pickle``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..store.model_dir import ModelFileError
from .keras_config import UnsupportedKerasLayer, keras_code_layers, keras_ends_in_softmax, keras_input
from .keras_layers import KERAS_LAYERS
from .keras_model import KerasModule
from .raw import RawModel, first_line, layout_from_dims

__all__ = ["load_keras"]

logger = logging.getLogger(__name__)


def load_keras(path: Path, unsafe_pickle: bool, map_location: str | torch.device) -> RawModel:
    try:
        import h5py
    except ImportError:
        raise ModelFileError(
            f"{path}: a Keras model; reading it needs h5py: pip install 'neuralcleanse[keras]'"
        ) from None
    config, weights = _read_keras_file(path, h5py)
    code = keras_code_layers(config)
    if code and not unsafe_pickle:
        name, kind = code[0]
        raise ModelFileError(
            f"{path}: refused: Keras layer {name!r} is a {kind}, whose Python code is stored in the file and "
            "would run when loading it; if you trust the file, pass unsafe_pickle=True (CLI: --unsafe-pickle)"
        )
    try:
        module = KerasModule(config, weights)
    except UnsupportedKerasLayer as exc:
        return _load_with_keras(path, config, str(exc), safe_mode=not unsafe_pickle)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(
            f"{path}: cannot rebuild the Keras model ({first_line(exc)}); the file may be corrupt"
        ) from None
    module = module.to(map_location).eval()
    return _keras_raw(module, config)


def _keras_raw(module: nn.Module, config: Mapping[str, Any], movable: bool = True) -> RawModel:
    dims, channels_last = keras_input(config)
    layout, input_shape = layout_from_dims(dims, channels_last_hint=channels_last)
    return RawModel(
        module,
        layout=layout,
        input_shape=input_shape,
        probabilities=True if keras_ends_in_softmax(config) else None,
        movable=movable,
        declared_shape=dims,
    )


def _read_keras_file(path: Path, h5py: Any) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """The model config and each layer's weight arrays (in the layer's own order) from .h5 or .keras."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                config = json.loads(zf.read("config.json"))
                with h5py.File(io.BytesIO(zf.read("model.weights.h5")), "r") as f:
                    weights = _keras3_weights(f)
            return config, weights
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                if "layer_names" in f.attrs or "layers" in f:
                    raise ModelFileError(
                        f"{path}: a Keras weights-only file (no model_config); save the whole model with "
                        "model.save(), or export it to ONNX"
                    )
                raise ModelFileError(f"{path}: an HDF5 file without a Keras model (no model_config)")
            config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
            weights = _keras_h5_weights(f["model_weights"] if "model_weights" in f else f)
        return config, weights
    except ModelFileError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as exc:  # JSON: ValueError
        raise ModelFileError(
            f"{path}: cannot read the Keras file ({first_line(exc)}); it may be corrupt or truncated: re-save it"
        ) from None


def _decode_all(values: Any) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _keras_h5_weights(group: Any) -> dict[str, list[np.ndarray]]:
    names = _decode_all(group.attrs.get("layer_names", list(group.keys())))
    weights = {}
    for layer in names:
        g = group[layer]
        weights[layer] = [np.asarray(g[w]) for w in _decode_all(g.attrs.get("weight_names", []))]
    return weights


def _keras3_weights(f: Any) -> dict[str, list[np.ndarray]]:
    weights: dict[str, list[np.ndarray]] = {}
    layers = f.get("layers") or f.get("_layer_checkpoint_dependencies") or {}
    for key in layers:
        vars_ = layers[key].get("vars", {})
        # groups are named by attribute path ("dense_1"); the layer's own name is an attribute of "vars"
        name = vars_.attrs.get("name", key) if hasattr(vars_, "attrs") else key
        name = name.decode("utf-8") if isinstance(name, bytes) else str(name)
        weights[name] = [np.asarray(vars_[str(i)]) for i in range(len(vars_))]
    return weights


def _load_with_keras(path: Path, config: Mapping[str, Any], why: str, safe_mode: bool) -> RawModel:
    """Fallback for what :class:`KerasModule` cannot rebuild: Keras 3 itself, on its PyTorch backend."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"  # must be set before keras is first imported
    try:
        import keras
    except ImportError:
        raise ModelFileError(
            f"{path}: unsupported Keras {why}; neuralcleanse rebuilds {', '.join(KERAS_LAYERS)} by itself; "
            "install keras to load other layers through Keras 3: pip install 'neuralcleanse[keras]'"
        ) from None
    if keras.backend.backend() != "torch":
        raise ModelFileError(
            f"{path}: unsupported Keras {why}, and keras is already loaded with the "
            f"{keras.backend.backend()} backend; set KERAS_BACKEND=torch before importing keras"
        )
    logger.info(
        "%s: unsupported Keras %s; loading it with Keras %s (safe_mode=%s)", path, why, keras.__version__, safe_mode
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            km = keras.saving.load_model(str(path), compile=False, safe_mode=safe_mode)
    except Exception as exc:  # Keras raises many types
        raise ModelFileError(f"{path}: unsupported Keras {why}, and Keras cannot load it ({first_line(exc)})") from None
    return _keras_raw(_KerasFallback(km), config, movable=False)


class _KerasFallback(nn.Module):
    """A Keras 3 model on the PyTorch backend (itself an ``nn.Module``), called in inference mode."""

    def __init__(self, keras_model: nn.Module) -> None:
        super().__init__()
        self.keras_model = keras_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.keras_model(x, training=False)
