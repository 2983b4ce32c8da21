"""Load an image classifier from the formats users bring, behind one :func:`load_model`.

The format is read from the file's first bytes (and, for zip archives, their member names); the file
extension only decides between formats whose bytes are unrecognisable (a corrupt file). Each format has its
own module in :mod:`neuralcleanse.formats`:

- ``neuralcleanse``: a directory written by ``neuralcleanse train`` (``model.json`` + ``model.safetensors``).
- ``torchscript``: ``torch.jit.save`` archives.
- ``onnx``: ONNX models, converted to a differentiable PyTorch module (:class:`OnnxModule`); not through
  ``onnx2torch``, which needs torchvision.
- ``state_dict``: ``.pt``/``.pth`` state dicts (read with ``torch.load(weights_only=True)``) and
  ``.safetensors``, with an architecture: ``arch="mnist"``/``"gtsrb"`` or ``"package.module:callable"``.
- ``keras``: Keras 2 and 3 full-model HDF5 (``.h5``) and Keras 3 ``.keras`` files, rebuilt as PyTorch
  modules from the file's JSON config and HDF5 weights (:class:`KerasModule`; why rebuilt:
  :mod:`neuralcleanse.formats.keras`).

Loading never executes code from the file unless ``unsafe_pickle=True``: ``torch.load`` always runs with
``weights_only=True`` first, Keras configs are read as JSON and their weights as arrays, ONNX graphs as
protobuf. A pickled whole ``nn.Module`` and Keras ``Lambda`` layers are refused with a message saying why and
how to opt in.

This module turns what a format's loader found (:class:`~neuralcleanse.formats.raw.RawModel`) into a
:class:`LoadedModel`: it applies the preprocessing, checks it against the file, and probes the outputs.

Every problem with the file raises :class:`~neuralcleanse.store.model_dir.ModelFileError` with a one-line message naming
the file and what to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .formats import (
    FORMATS,
    KERAS_LAYERS,
    ONNX_OPS,
    KerasModule,
    OnnxModule,
    detect_format,
    load_keras,
    load_neuralcleanse,
    load_onnx,
    load_state_dict,
    load_torchscript,
)
from .preprocess import PreprocessedModel, Preprocessing
from .probe import ModelOutputs, ProbeError, probe_outputs
from .store.model_dir import ModelFileError

__all__ = [
    "FORMATS",
    "KERAS_LAYERS",
    "ONNX_OPS",
    "KerasModule",
    "LoadedModel",
    "OnnxModule",
    "detect_format",
    "load_model",
    "outputs_probabilities",
]

logger = logging.getLogger(__name__)


_PROBE_BATCH = 4  # random images pushed through a model whose input shape is known, to read its outputs


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready for the scan: ``model`` takes ``(N, C, H, W)`` images in [0, 1] and is in eval mode.

    Attributes:
        model: the loaded model, wrapped in :class:`~neuralcleanse.preprocess.PreprocessedModel` when it
            expects anything other than [0, 1] NCHW RGB input (the neuralcleanse format never is wrapped, so
            its ``features``/``head`` stay reachable).
        format: one of :data:`FORMATS`.
        outputs_probabilities: True when the model ends in a softmax (optimise the log of its outputs, not
            a second softmax; see :func:`~neuralcleanse.preprocess.log_probabilities`); None when neither the
            file nor a probe could tell (no declared input shape): call :meth:`probe` with a few real images.
        input_shape: ``(C, H, W)`` when the file declares it (or the architecture fixes it).
        num_classes: the number of outputs, when known.
        preprocessing: what the wrapped model expects, layout resolved.
        metadata: the neuralcleanse metadata (``model.json``) when present.
        triggers: ``(trigger, target)`` pairs recorded with a neuralcleanse model (for evaluation).
        path: the file or directory it came from.
    """

    model: nn.Module
    format: str
    outputs_probabilities: bool | None
    input_shape: tuple[int, int, int] | None
    num_classes: int | None
    preprocessing: Preprocessing
    metadata: dict[str, Any] = field(default_factory=dict)
    triggers: list[Any] = field(default_factory=list)
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model and triggers, JSON-ready (for reports)."""
        return {
            "path": self.path,
            "format": self.format,
            "outputs_probabilities": self.outputs_probabilities,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "num_classes": self.num_classes,
            "preprocessing": self.preprocessing.to_dict(),
        }

    def probe(self, images: torch.Tensor) -> LoadedModel:
        """A copy with ``outputs_probabilities``, ``num_classes`` and ``input_shape`` read from running the
        model on ``images`` (what the file left unknown; known values are kept).

        Shape:
            - images: ``(N, C, H, W)`` in [0, 1], N >= 2 preferred.
        """
        if images.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        outputs = _run(self.model, images, self.path)
        probs = self.outputs_probabilities
        if probs is None:
            probs = outputs.probabilities
        c, h, w = images.shape[1:]
        return replace(
            self,
            outputs_probabilities=probs,
            num_classes=self.num_classes if self.num_classes is not None else outputs.num_outputs,
            input_shape=self.input_shape or (int(c), int(h), int(w)),
        )


def outputs_probabilities(model: nn.Module, images: torch.Tensor) -> bool:
    """True when ``model`` returns probabilities on ``images``: every row non-negative and summing to 1 within
    1e-3 (a softmax at the end). Runs in eval mode without gradients; the model's mode is restored.

    Shape:
        - images: ``(N, C, H, W)``, what ``model`` takes.
    """
    return _run(model, images, "").probabilities


def _run(model: nn.Module, images: torch.Tensor, path: str) -> ModelOutputs:
    """The model's outputs on ``images``; a model that fails on them is a :class:`ModelFileError`."""
    try:
        return probe_outputs(model, images, where=path)
    except ProbeError as exc:
        raise ModelFileError(str(exc)) from None


def _to_float32(model: nn.Module, path: Path) -> None:
    """Turn the floating-point weights of a model saved in half or double precision to float32, in place: the
    scan feeds float32 images, which such a model refuses (its arithmetic during the search is the scan's own
    choice, :func:`~neuralcleanse._torch.compute_dtype`, whatever the file's)."""
    tensors = [*model.parameters(), *model.buffers()]
    saved = sorted({str(t.dtype) for t in tensors if t.is_floating_point() and t.dtype != torch.float32})
    if saved:
        logger.info("%s: weights in %s, run in float32", path, ", ".join(saved))
        model.float()


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    preprocessing: Preprocessing | None = None,
    unsafe_pickle: bool = False,
    map_location: str | torch.device = "cpu",
) -> LoadedModel:
    """Load the classifier at ``path`` so that it takes ``(N, C, H, W)`` images in [0, 1].

    Args:
        path: a model file or a neuralcleanse model directory; the format is detected (:func:`detect_format`).
        arch: the architecture for a state-dict file: a built-in name (``"mnist"``, ``"gtsrb"``) or
            ``"package.module:callable"`` returning an ``nn.Module`` when called without arguments
            (importing it runs that package's code, which you named, never the file's).
        preprocessing: what the model expects (value range, mean/std, channel order, layout). The layout is
            read from Keras and ONNX files when they declare an input shape; stating a different one is an
            error.
            None: [0, 1] RGB, layout from the file (NCHW when it does not say).
        unsafe_pickle: allow code stored in the file to run: unpickling a whole pickled ``nn.Module``, Keras
            ``Lambda`` layers and custom objects. Only for files you trust.
        map_location: the device the weights are loaded onto.

    Raises:
        ModelFileError: the file is missing, truncated, corrupt, of an unknown format, holds code (without
            ``unsafe_pickle``), or its weights do not match ``arch``.
        ValueError: an argument does not fit the file (``arch`` for a whole model, a conflicting layout).

    Example:
        >>> loaded = load_model("badnets.h5")  # Keras: NHWC and softmax read from the file
        >>> loaded.model(torch.rand(8, 1, 28, 28)).shape
        torch.Size([8, 10])
    """
    path = Path(path)
    fmt = detect_format(path)
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise TypeError(f"preprocessing must be a Preprocessing or None, got {type(preprocessing).__name__}")
    if arch is not None and fmt not in ("state_dict", "neuralcleanse"):
        raise ValueError(
            f"arch={arch!r} is only for state-dict files, but {path} is a {fmt} model that holds its own "
            "architecture; drop arch"
        )
    if fmt == "neuralcleanse":
        raw = load_neuralcleanse(path, arch, map_location)
        if preprocessing is not None and not preprocessing.is_identity:
            raise ValueError(
                f"{path}: models saved by neuralcleanse take [0, 1] NCHW RGB images; drop the preprocessing"
            )
    elif fmt == "torchscript":
        raw = load_torchscript(path, map_location)
    elif fmt == "onnx":
        raw = load_onnx(path, map_location)
    elif fmt == "state_dict":
        raw = load_state_dict(path, arch, unsafe_pickle, map_location)
    else:
        raw = load_keras(path, unsafe_pickle, map_location)

    if raw.declared_shape is not None and len(raw.declared_shape) not in (2, 3, 4):
        raise ModelFileError(
            f"{path}: the model takes input of shape {raw.declared_shape}, not images (N, C, H, W) or "
            "(N, H, W, C) or flattened images (N, C*H*W); neuralcleanse scans image classifiers"
        )
    pre = preprocessing or Preprocessing()
    if pre.layout is None:
        pre = replace(pre, layout=raw.layout or "NCHW")
    elif raw.layout is not None and pre.layout != raw.layout:
        raise ValueError(
            f"{path}: the model declares {raw.layout} input {raw.declared_shape}, but layout={pre.layout!r} "
            "was given; drop the layout option"
        )
    if raw.input_shape is not None:
        channels = raw.input_shape[0]
        for name, values in (("mean", pre.mean), ("std", pre.std)):
            if values is not None and len(values) not in (1, channels):
                raise ValueError(f"{path}: the model takes {channels} channel(s), but {name} has {len(values)} values")
    _to_float32(raw.model, path)
    model = raw.model if pre.is_identity else PreprocessedModel(raw.model, pre)
    if raw.movable:
        model = model.to(map_location)
    model.eval()
    loaded = LoadedModel(
        model=model,
        format=fmt,
        outputs_probabilities=raw.probabilities,
        input_shape=raw.input_shape,
        num_classes=raw.num_classes,
        preprocessing=pre,
        metadata=raw.metadata,
        triggers=raw.triggers,
        path=str(path),
    )
    if raw.input_shape is not None:
        device = next((t.device for t in model.parameters()), torch.device("cpu"))
        gen = torch.Generator().manual_seed(0)  # a fixed probe: loading is deterministic
        images = torch.rand((_PROBE_BATCH, *raw.input_shape), generator=gen).to(device)
        outputs = _run(model, images, str(path))
        if raw.num_classes is not None and outputs.num_outputs != raw.num_classes:
            raise ModelFileError(
                f"{path}: the model returns {outputs.num_outputs} scores but declares {raw.num_classes} classes; "
                "the file may be corrupt"
            )
        probabilities = raw.probabilities if raw.probabilities is not None else outputs.probabilities
        loaded = replace(loaded, outputs_probabilities=probabilities, num_classes=outputs.num_outputs)
    logger.info("loaded %s model %s: %s", fmt, path, loaded.to_dict())
    return loaded
