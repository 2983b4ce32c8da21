"""Load an image classifier from the formats users bring, behind one :func:`load_model`.

The format is read from the file's first bytes (and, for zip archives, their member names); the file
extension only decides between formats whose bytes are unrecognisable (a corrupt file):

- ``neuralcleanse``: a directory written by ``neuralcleanse train`` (``model.json`` + ``model.safetensors``).
- ``torchscript``: ``torch.jit.save`` archives.
- ``onnx``: ONNX models, converted here to a differentiable PyTorch module (:class:`OnnxModule`); not through
  ``onnx2torch``, which needs torchvision.
- ``state_dict``: ``.pt``/``.pth`` state dicts (read with ``torch.load(weights_only=True)``) and
  ``.safetensors``, with an architecture: ``arch="mnist"``/``"gtsrb"`` or ``"package.module:callable"``.
- ``keras``: Keras 2 and 3 full-model HDF5 (``.h5``) and Keras 3 ``.keras`` files, rebuilt here as PyTorch
  modules from the file's JSON config and HDF5 weights (:class:`KerasModule`).

Loading never executes code from the file unless ``unsafe_pickle=True``: ``torch.load`` always runs with
``weights_only=True`` first, Keras configs are read as JSON and their weights as arrays, ONNX graphs as
protobuf. A pickled whole ``nn.Module`` and Keras ``Lambda`` layers are refused with a message saying why and
how to opt in.

Why Keras files are rebuilt rather than loaded through Keras 3: it needs only ``h5py``; the result is a plain
PyTorch module (follows ``.to(device)``, ``eval()``, hooks and state dicts like any other); there is no code
path through Keras's deserialiser, whose ``safe_mode`` has been bypassed several times; and it reads Keras 2
files (the format of most published backdoored models) exactly as they were written. Layers outside
:data:`KERAS_LAYERS` fall back to Keras 3 on its PyTorch backend when ``keras`` is installed, with
``safe_mode=not unsafe_pickle``.

Every problem with the file raises :class:`~neuralcleanse.io.ModelFileError` with a one-line message naming
the file and what to do.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import math
import os
import pickle
import re
import struct
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from .io import METADATA_FILE, ModelFileError, is_saved_model_dir, load_saved_model
from .models import ARCHITECTURES, build_model
from .preprocess import PreprocessedModel, Preprocessing, is_probabilities

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

FORMATS = ("neuralcleanse", "torchscript", "onnx", "state_dict", "keras")

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_SUFFIX_FORMATS = {
    ".onnx": "onnx",
    ".h5": "keras",
    ".hdf5": "keras",
    ".keras": "keras",
    ".pt": "state_dict",
    ".pth": "state_dict",
    ".bin": "state_dict",
    ".safetensors": "state_dict",
    ".ckpt": "state_dict",
}
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
        out = _run(self.model, images, self.path)
        probs = self.outputs_probabilities
        if probs is None:
            probs = is_probabilities(out)
        c, h, w = images.shape[1:]
        return replace(
            self,
            outputs_probabilities=probs,
            num_classes=self.num_classes if self.num_classes is not None else int(out.shape[1]),
            input_shape=self.input_shape or (int(c), int(h), int(w)),
        )


def outputs_probabilities(model: nn.Module, images: torch.Tensor) -> bool:
    """True when ``model`` returns probabilities on ``images``: every row non-negative and summing to 1 within
    1e-3 (a softmax at the end). Runs in eval mode without gradients; the model's mode is restored.

    Shape:
        - images: ``(N, C, H, W)``, what ``model`` takes.
    """
    return is_probabilities(_run(model, images, ""))


def _run(model: nn.Module, images: torch.Tensor, path: str) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(images)
    except (RuntimeError, ValueError, IndexError, TypeError, KeyError) as exc:
        where = f"{path}: " if path else ""
        raise ModelFileError(
            f"{where}the model fails on input of shape {tuple(images.shape)} ({_first_line(exc)}); "
            "check the input layout and image size"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        where = f"{path}: " if path else ""
        raise ModelFileError(f"{where}the model returns {shape}; expected class scores of shape (N, classes)")
    return out


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, with its type when the message alone says little."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines[0]) >= 20 else f"{type(exc).__name__}: {lines[0]}"


# ------------------------------------------------------------------------------------------------ detection


def detect_format(path: str | Path) -> str:
    """The format of the model at ``path``, one of :data:`FORMATS`, read from the file's contents.

    Raises:
        ModelFileError: the path does not exist, is empty, or holds no format that can be loaded.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file or directory; check the path")
    if path.is_dir():
        if is_saved_model_dir(path):
            return "neuralcleanse"
        if (path / "saved_model.pb").is_file():
            raise ModelFileError(
                f"{path}: a TensorFlow SavedModel, which neuralcleanse cannot load; save the model as Keras "
                "(.h5/.keras) or convert it to ONNX"
            )
        raise ModelFileError(
            f"{path}: a directory without {METADATA_FILE}; give a model file or a directory written by "
            "`neuralcleanse train`"
        )
    with open(path, "rb") as fh:
        head = fh.read(64)
    size = path.stat().st_size
    if not head:
        raise ModelFileError(f"{path}: empty file; re-export the model")
    if head.startswith(_HDF5_MAGIC):
        return "keras"
    if head.startswith(_ZIP_MAGIC):
        return _zip_format(path)
    if _is_safetensors(head, size):
        return "state_dict"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "state_dict"  # a pickle: legacy torch.save (or anything else pickled; torch.load decides)
    if _looks_like_onnx(head):
        return "onnx"
    by_suffix = _SUFFIX_FORMATS.get(path.suffix.lower())
    if by_suffix is not None:
        return by_suffix  # unrecognisable bytes: the format's own loader reports the file as corrupt
    raise ModelFileError(
        f"{path}: format not recognised; expected a neuralcleanse model directory, TorchScript, ONNX, a "
        "state dict (.pt/.pth/.safetensors) or Keras (.h5/.keras)"
    )


def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated archive ({exc}); re-export the model") from None
    if "config.json" in names and "model.weights.h5" in names:
        return "keras"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "state_dict"  # a torch.save archive
    raise ModelFileError(
        f"{path}: a zip archive that is neither TorchScript, a torch.save file nor a Keras .keras model"
    )


def _is_safetensors(head: bytes, size: int) -> bool:
    # safetensors: a little-endian u64 header length, then the JSON header
    return len(head) >= 9 and head[8:9] == b"{" and 8 + struct.unpack("<Q", head[:8])[0] <= size


def _looks_like_onnx(head: bytes) -> bool:
    # An ONNX ModelProto starts with field 1 (ir_version, a small varint), followed by another known field.
    return (
        len(head) >= 3
        and head[0] == 0x08
        and 1 <= head[1] <= 0x7F
        and head[2] in {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}
    )


# ------------------------------------------------------------------------------------------------ load_model


@dataclass
class _Raw:
    """What a format's loader found, before preprocessing is applied."""

    model: nn.Module
    layout: str | None = None  # declared by the file
    input_shape: tuple[int, int, int] | None = None
    probabilities: bool | None = None  # True when the graph ends in a softmax; None when it does not say
    num_classes: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    triggers: list[Any] = field(default_factory=list)
    movable: bool = True  # False for models whose device the loader cannot move (the Keras fallback)
    declared_shape: tuple[int | None, ...] | None = None  # the file's own input shape, for messages


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
        raw = _load_neuralcleanse(path, arch, map_location)
        if preprocessing is not None and not preprocessing.is_identity:
            raise ValueError(
                f"{path}: models saved by neuralcleanse take [0, 1] NCHW RGB images; drop the preprocessing"
            )
    elif fmt == "torchscript":
        raw = _load_torchscript(path, map_location)
    elif fmt == "onnx":
        raw = _load_onnx(path, map_location)
    elif fmt == "state_dict":
        raw = _load_state_dict(path, arch, unsafe_pickle, map_location)
    else:
        raw = _load_keras(path, unsafe_pickle, map_location)

    if raw.declared_shape is not None and len(raw.declared_shape) not in (3, 4):
        raise ModelFileError(
            f"{path}: the model takes input of shape {raw.declared_shape}, not images (N, C, H, W) or "
            "(N, H, W, C); neuralcleanse scans image classifiers"
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
        out = _run(model, images, str(path))
        if raw.num_classes is not None and out.shape[1] != raw.num_classes:
            raise ModelFileError(
                f"{path}: the model returns {out.shape[1]} scores but declares {raw.num_classes} classes; "
                "the file may be corrupt"
            )
        probabilities = raw.probabilities if raw.probabilities is not None else is_probabilities(out)
        loaded = replace(loaded, outputs_probabilities=probabilities, num_classes=int(out.shape[1]))
    logger.info("loaded %s model %s: %s", fmt, path, loaded.to_dict())
    return loaded


# ------------------------------------------------------------------------------ neuralcleanse and TorchScript


def _load_neuralcleanse(path: Path, arch: str | None, map_location: str | torch.device) -> _Raw:
    saved = load_saved_model(path, map_location=map_location)
    name = saved.metadata["architecture"]
    if arch is not None and arch != name:
        raise ValueError(f"{path}: the model's architecture is {name!r}, but arch={arch!r} was given; drop arch")
    num_classes = int(saved.metadata.get("num_classes", ARCHITECTURES[name].num_classes))
    return _Raw(
        saved.model,
        layout="NCHW",
        input_shape=ARCHITECTURES[name].input_shape,
        probabilities=False,
        num_classes=num_classes,
        metadata=dict(saved.metadata),
        triggers=list(saved.triggers),
    )


def _load_torchscript(path: Path, map_location: str | torch.device) -> _Raw:
    # TorchScript archives hold TorchScript (a restricted language compiled by torch), not Python, and their
    # tensors are read by torch's own restricted unpickler: no Python code from the file runs.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # deprecated, still supported
            model = torch.jit.load(str(path), map_location=map_location)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path}: cannot read the TorchScript archive ({_first_line(exc)}); it may be corrupt or "
            "truncated: re-export it with torch.jit.save"
        ) from None
    model.eval()
    return _Raw(model, probabilities=True if _torchscript_ends_in_softmax(model) else None)


_TORCHSCRIPT_PASSTHROUGH = ("aten::contiguous", "aten::view", "aten::reshape", "aten::flatten")


def _torchscript_ends_in_softmax(model: torch.jit.ScriptModule) -> bool:
    try:
        graph = model.inlined_graph
        outputs = list(graph.return_node().inputs())
        if len(outputs) != 1:
            return False
        node = outputs[0].node()
        while node.kind() in _TORCHSCRIPT_PASSTHROUGH:
            node = next(iter(node.inputs())).node()
        return node.kind() == "aten::softmax"
    except (RuntimeError, AttributeError, StopIteration):
        return False


# ------------------------------------------------------------------------------------------------ state dicts


def _load_state_dict(path: Path, arch: str | None, unsafe_pickle: bool, map_location: str | torch.device) -> _Raw:
    obj = _read_weights_file(path, unsafe_pickle, map_location)
    if isinstance(obj, nn.Module):  # only reachable with unsafe_pickle
        if arch is not None:
            logger.warning("%s holds a whole model; ignoring arch=%r", path, arch)
        obj.eval()
        return _Raw(obj)
    state = _unwrap_state_dict(obj, path)
    if arch is None:
        raise ModelFileError(
            f"{path}: holds only weights (a state dict); give the architecture: arch={sorted(ARCHITECTURES)} "
            "or 'package.module:callable' (CLI: --arch)"
        )
    model, input_shape = _build_arch(arch, state)
    _load_weights(model, state, path, arch)
    model.eval()
    return _Raw(model, input_shape=input_shape)


def _read_weights_file(path: Path, unsafe_pickle: bool, map_location: str | torch.device) -> Any:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if path.suffix.lower() == ".safetensors" or _is_safetensors(head, path.stat().st_size):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise ModelFileError(
                f"{path}: corrupt or truncated safetensors file ({_first_line(exc)}); re-export the weights"
            ) from None
    try:
        with warnings.catch_warnings():
            # a pickle protocol torch does not write: refused below if it matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise ModelFileError(
                f"{path}: corrupt or truncated file ({_first_line(exc)}); re-export the model"
            ) from None
        imported = _pickled_globals(path)
        if imported is None:  # not even a pickle
            raise ModelFileError(
                f"{path}: corrupt or truncated file (neither a torch.save file nor a pickle); re-export the model"
            ) from None
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        code = named.group(1) if named else next((g for g in imported if not g.startswith(_SAFE_MODULES)), "")
        what = f"it imports {code}" if code else "it needs more than the weights-only unpickler"
        if not unsafe_pickle:
            raise ModelFileError(
                f"{path}: refused: the file holds pickled Python objects, not only weights ({what}), and "
                "loading it would execute code from the file; if you trust the file, pass unsafe_pickle=True "
                "(CLI: --unsafe-pickle)"
            ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, struct.error) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated file ({_first_line(exc)}); re-export the model") from None
    logger.warning("%s: unpickling with weights_only=False (unsafe_pickle=True); code in it may run", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)  # opted in: unsafe_pickle
    except Exception as exc:  # anything the file's own code raises
        raise ModelFileError(f"{path}: cannot unpickle the file ({_first_line(exc)})") from None


_SAFE_MODULES = ("torch.", "collections.", "_codecs.")  # what state dicts themselves import


def _pickled_globals(path: Path) -> list[str] | None:
    """The ``module.name`` globals a pickle would import, read with :mod:`pickletools` (which never executes
    anything); None when the file holds no readable pickle. Looks into ``data.pkl`` of torch.save archives and
    at the first pickles of a legacy torch.save file."""
    import pickletools

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
            data = zf.read(member) if member else b""
    else:
        data = path.read_bytes()
    stream, found, parsed = io.BytesIO(data), [], False
    for _ in range(4):  # legacy torch.save: magic number, protocol, system info, then the object
        strings: list[str] = []
        memo: dict[int, str] = {}
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
                elif op.name in ("BINPUT", "LONG_BINPUT", "MEMOIZE") and strings:
                    memo[arg if isinstance(arg, int) else len(memo)] = strings[-1]
                elif op.name in ("BINGET", "LONG_BINGET") and isinstance(arg, int) and arg in memo:
                    strings.append(memo[arg])
        except Exception:  # noqa: BLE001 - pickletools raises ValueError and others on non-pickle bytes
            break
        parsed = True
        if stream.tell() >= len(data):
            break
    return found if parsed else None


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor mapping from a state dict or a training checkpoint that holds one."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = {str(k): v for k, v in obj.items()}
            prefix = "module."  # nn.DataParallel / DistributedDataParallel checkpoints
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
            return state
        for key in ("state_dict", "model_state_dict", "model", "net", "weights"):
            if isinstance(obj.get(key), Mapping):
                return _unwrap_state_dict(obj[key], path)
    kind = type(obj).__name__
    raise ModelFileError(f"{path}: holds a {kind}, not a state dict or a model; save model.state_dict() instead")


def _build_arch(arch: str, state: Mapping[str, torch.Tensor]) -> tuple[nn.Module, tuple[int, int, int] | None]:
    if ":" in arch:
        module_name, _, attr = arch.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"arch={arch!r}: cannot import it ({_first_line(exc)})") from None
        if not callable(target):
            raise ValueError(f"arch={arch!r} is not callable")
        model = target()
        if not isinstance(model, nn.Module):
            raise ValueError(f"arch={arch!r} returned a {type(model).__name__}, not a torch.nn.Module")
        shape = getattr(model, "input_shape", None)
        if not (isinstance(shape, tuple) and len(shape) == 3 and all(isinstance(s, int) for s in shape)):
            shape = None
        return model, shape
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHITECTURES)} or 'package.module:callable'")
    head = state.get("head.weight")
    num_classes = int(head.shape[0]) if isinstance(head, torch.Tensor) and head.dim() == 2 else None
    return build_model(arch, num_classes), ARCHITECTURES[arch].input_shape


def _load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, arch: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if mismatched:
        k = mismatched[0]
        problems.append(
            f"{k} has shape {tuple(state[k].shape)} in the file but {tuple(expected[k].shape)} in the "
            "architecture" + (f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else "")
        )
    if missing:
        problems.append(f"{len(missing)} weight(s) missing from the file (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} weight(s) not in the architecture (e.g. {unexpected[0]})")
    if problems:
        raise ModelFileError(
            f"{path}: the weights do not match architecture {arch!r}: {'; '.join(problems)}; check arch (--arch)"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: the weights do not match architecture {arch!r} ({_first_line(exc)})") from None


# ------------------------------------------------------------------------------------------------------- ONNX

_ONNX_DTYPES = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    16: torch.bfloat16,
}


def _load_onnx(path: Path, map_location: str | torch.device) -> _Raw:
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
            f"{path}: not a valid ONNX model ({_first_line(exc)}); it may be corrupt or truncated: re-export it"
        ) from None
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    module = OnnxModule(proto.graph, opset, str(path)).to(map_location).eval()
    dims = module.input_dims
    layout, input_shape = _layout_from_dims(dims, channels_last_hint=None)
    out_dims = module.output_dims
    num_classes = out_dims[-1] if out_dims and len(out_dims) == 2 else None
    return _Raw(
        module,
        layout=layout,
        input_shape=input_shape,
        num_classes=num_classes,
        declared_shape=dims,
        probabilities=True if module.ends_in_softmax else None,
    )


def _layout_from_dims(
    dims: tuple[int | None, ...] | None, channels_last_hint: bool | None
) -> tuple[str | None, tuple[int, int, int] | None]:
    """(layout, (C, H, W)) from a declared input shape ``(N, ...)``; None where it cannot be told."""
    if dims is None:
        return None, None
    if len(dims) == 3:  # (N, H, W): single-channel images without a channel axis
        h, w = dims[1], dims[2]
        return "NHW", (1, h, w) if h and w else None
    if len(dims) != 4:
        return None, None
    channel_like = (1, 2, 3, 4)
    if channels_last_hint is None:
        first, last = dims[1] in channel_like, dims[3] in channel_like
        if first == last:
            return None, None  # ambiguous or unknown: the user states it; NCHW by default
        channels_last_hint = last
    c, h, w = (dims[3], dims[1], dims[2]) if channels_last_hint else (dims[1], dims[2], dims[3])
    layout = "NHWC" if channels_last_hint else "NCHW"
    return layout, (c, h, w) if c and h and w else None


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
    ``Constant`` nodes buffers. The graph must have one input; its first output is returned.
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
        self.input_dtype = _ONNX_DTYPES.get(elem, torch.float32)
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
        self.nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
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
            self.nodes.append((n.op_type, list(n.input), produced, attrs))
            defined.update(produced)
            for o in produced:
                producers[o] = (n.op_type, list(n.input))
        if self.output_name not in defined:
            raise ModelFileError(f"{source}: no node produces the graph output {self.output_name!r}")
        self.ends_in_softmax = _ends_in(producers, self.output_name, "Softmax")

    def _add_constant(self, name: str, value: torch.Tensor) -> None:
        attr = "t_" + re.sub(r"\W", "_", name)
        while hasattr(self, attr):
            attr += "_"
        if value.is_floating_point():
            self.register_parameter(attr, nn.Parameter(value, requires_grad=True))
        else:
            self.register_buffer(attr, value)
        self._tensor_attr[name] = attr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point() and self.input_dtype.is_floating_point:
            x = x.to(self.input_dtype)
        env: dict[str, torch.Tensor | None] = {self.input_name: x, "": None}
        for name, attr in self._tensor_attr.items():
            env[name] = getattr(self, attr)
        for op, inputs, outputs, attrs in self.nodes:
            result = ONNX_OPS[op]([env[i] for i in inputs], attrs, self.opset)
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


# The ONNX operators, each a small function of (inputs, attributes, opset); omitted inputs are None.
_OnnxOp = Callable[[list[Any], dict[str, Any], int], Any]


def _ints(t: torch.Tensor | Sequence[int] | None) -> list[int]:
    if t is None:
        return []
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


def _spatial_pads(
    a: Mapping[str, Any], x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> tuple[list[int], list[int]]:
    """(begin, end) padding per spatial axis, from ``pads`` or ``auto_pad``."""
    nd = len(kernel)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            begins.append(small if auto == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
        return begins, ends
    if auto == "VALID":
        return [0] * nd, [0] * nd
    pads = list(a.get("pads", [0] * 2 * nd))
    return pads[:nd], pads[nd:]


def _torch_pad(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    out: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends), strict=True):
        out += [b, e]
    return out


def _op_conv(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    inp, w = x[0], x[1]
    b = x[2] if len(x) > 2 else None
    nd = w.dim() - 2
    kernel = list(a.get("kernel_shape", w.shape[2:]))
    strides, dil = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
    begins, ends = _spatial_pads(a, inp, kernel, strides, dil)
    padding: list[int] | int = begins
    if begins != ends:
        inp, padding = F.pad(inp, _torch_pad(begins, ends)), 0
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    return conv(inp, w, b, strides, padding, dil, int(a.get("group", 1)))


def _op_pool(kind: str) -> _OnnxOp:
    def op(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
        inp = x[0]
        kernel = list(a["kernel_shape"])
        nd = len(kernel)
        strides, dil = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
        ceil = bool(a.get("ceil_mode", 0))
        begins, ends = _spatial_pads(a, inp, kernel, strides, dil)
        symmetric = begins == ends and all(p <= k // 2 for p, k in zip(begins, kernel, strict=True))
        if kind == "max":
            pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
            if not symmetric:
                inp, begins = F.pad(inp, _torch_pad(begins, ends), value=-math.inf), [0] * nd
            return pool(inp, kernel, strides, begins, dil, ceil_mode=ceil)
        if any(d != 1 for d in dil):
            raise ModelFileError(f"AveragePool with dilations {dil} is not supported")
        avg = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
        include = bool(a.get("count_include_pad", 0))
        if symmetric:
            return avg(inp, kernel, strides, begins, ceil_mode=ceil, count_include_pad=include)
        pad = _torch_pad(begins, ends)
        total = avg(F.pad(inp, pad), kernel, strides, 0, ceil_mode=ceil)
        if include:
            return total
        ones = F.pad(torch.ones_like(inp[:1, :1]), pad)
        return total / avg(ones, kernel, strides, 0, ceil_mode=ceil)  # the mean over the real pixels only

    return op


def _op_gemm(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    A, B = x[0], x[1]
    if a.get("transA", 0):
        A = A.t()
    if a.get("transB", 0):
        B = B.t()
    y = float(a.get("alpha", 1.0)) * (A @ B)
    if len(x) > 2 and x[2] is not None:
        y = y + float(a.get("beta", 1.0)) * x[2]
    return y


def _op_div(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    if not x[0].is_floating_point() and not x[1].is_floating_point():
        return torch.div(x[0], x[1], rounding_mode="trunc")
    return x[0] / x[1]


def _op_softmax(log: bool) -> _OnnxOp:
    def op(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
        inp = x[0]
        fn = torch.log_softmax if log else torch.softmax
        if opset >= 13:
            return fn(inp, dim=int(a.get("axis", -1)))
        axis = int(a.get("axis", 1)) % inp.dim()  # before opset 13: over all axes from `axis` on, flattened
        flat = inp.reshape(int(np.prod(inp.shape[:axis])), -1)
        return fn(flat, dim=1).reshape(inp.shape)

    return op


def _op_batchnorm(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    inp, scale, bias, mean, var = x[:5]
    shape = (1, -1) + (1,) * (inp.dim() - 2)  # per channel, axis 1
    factor = scale.view(shape) / torch.sqrt(var.view(shape) + float(a.get("epsilon", 1e-5)))
    return (inp - mean.view(shape)) * factor + bias.view(shape)  # inference mode, differentiable


def _op_flatten(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    inp = x[0]
    axis = int(a.get("axis", 1)) % (inp.dim() + 1)
    return inp.reshape(int(np.prod(inp.shape[:axis])), -1)


def _op_reshape(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    inp = x[0]
    shape = _ints(x[1]) if len(x) > 1 else _ints(a.get("shape"))
    if not a.get("allowzero", 0):
        shape = [inp.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return inp.reshape(shape)


def _op_transpose(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    perm = a.get("perm") or list(reversed(range(x[0].dim())))
    return x[0].permute(*perm)


def _op_clip(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    if opset < 11:
        low, high = a.get("min"), a.get("max")
    else:
        low = x[1] if len(x) > 1 else None
        high = x[2] if len(x) > 2 else None
    return torch.clamp(x[0], low, high)


def _op_pad(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    inp = x[0]
    mode = a.get("mode", "constant")
    if opset < 11:
        pads, value = list(a.get("pads", [])), float(a.get("value", 0.0))
        axes = list(range(inp.dim()))
    else:
        pads = _ints(x[1])
        value = float(x[2].item()) if len(x) > 2 and x[2] is not None and x[2].numel() else 0.0
        has_axes = len(x) > 3 and x[3] is not None
        axes = [ax % inp.dim() for ax in _ints(x[3])] if has_axes else list(range(inp.dim()))
    begins, ends = [0] * inp.dim(), [0] * inp.dim()
    for i, ax in enumerate(axes):
        begins[ax], ends[ax] = pads[i], pads[i + len(axes)]
    torch_pad = _torch_pad(begins, ends)
    while len(torch_pad) > 2 and torch_pad[-2:] == [0, 0]:
        torch_pad = torch_pad[:-2]  # pads of the leading (batch, channel) axes are zero
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    if torch_mode == "constant":
        return F.pad(inp, torch_pad, value=value)
    return F.pad(inp, torch_pad, mode=torch_mode)


def _axes(x: list[Any], a: dict[str, Any], index: int = 1) -> list[int] | None:
    if "axes" in a:
        return list(a["axes"])
    if len(x) > index and x[index] is not None:
        return _ints(x[index])
    return None


def _op_unsqueeze(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    out = x[0]
    axes = _axes(x, a) or []
    rank = out.dim() + len(axes)
    for ax in sorted(ax % rank for ax in axes):
        out = out.unsqueeze(ax)
    return out


def _op_squeeze(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    axes = _axes(x, a)
    if axes is None:
        return x[0].squeeze()
    return x[0].squeeze(tuple(ax % x[0].dim() for ax in axes))


def _op_gather(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    data, idx = x[0], x[1].long()
    axis = int(a.get("axis", 0)) % data.dim()
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    out = data.index_select(axis, idx.reshape(-1).to(data.device))
    return out.reshape((*data.shape[:axis], *idx.shape, *data.shape[axis + 1 :]))


def _op_reduce_mean(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    axes = _axes(x, a)
    keep = bool(a.get("keepdims", 1))
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return x[0]
        return x[0].mean(dim=tuple(range(x[0].dim())), keepdim=keep)
    return x[0].mean(dim=tuple(axes), keepdim=keep)


def _op_shape(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    shape = list(x[0].shape)[a.get("start", 0) : a.get("end")]
    return torch.tensor(shape, dtype=torch.int64, device=x[0].device)


def _op_slice(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    data = x[0]
    if opset < 10:
        starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
    else:
        starts, ends = _ints(x[1]), _ints(x[2])
        axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else None
        steps = _ints(x[4]) if len(x) > 4 and x[4] is not None else None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = list(steps) if steps is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= data.dim()
        lo, hi, st = slice(start, end, step).indices(data.shape[axis])  # ONNX clamps like Python
        if st > 0:
            data = data[(slice(None),) * axis + (slice(lo, hi, st),)]
        else:
            data = data.index_select(axis, torch.arange(lo, hi, st, device=data.device))
    return data


def _op_constant_of_shape(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    value = a.get("value", torch.zeros(1))
    return torch.full(_ints(x[0]), value.reshape(-1)[0].item(), dtype=value.dtype, device=x[0].device)


def _op_expand(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    return torch.broadcast_to(x[0], torch.broadcast_shapes(x[0].shape, tuple(_ints(x[1]))))


def _op_cast(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
    return x[0].to(_ONNX_DTYPES[int(a["to"])])


def _elementwise(fn: Callable[..., torch.Tensor]) -> _OnnxOp:
    return lambda x, a, opset: fn(*x)


def _variadic(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> _OnnxOp:
    def op(x: list[Any], a: dict[str, Any], opset: int) -> torch.Tensor:
        out = x[0]
        for t in x[1:]:
            out = fn(out, t)
        return out

    return op


ONNX_OPS: dict[str, _OnnxOp] = {
    "Conv": _op_conv,
    "Gemm": _op_gemm,
    "MatMul": _elementwise(torch.matmul),
    "Add": _elementwise(torch.add),
    "Sub": _elementwise(torch.sub),
    "Mul": _elementwise(torch.mul),
    "Div": _op_div,
    "Pow": _elementwise(torch.pow),
    "Sum": _variadic(torch.add),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Neg": _elementwise(torch.neg),
    "Abs": _elementwise(torch.abs),
    "Exp": _elementwise(torch.exp),
    "Log": _elementwise(torch.log),
    "Sqrt": _elementwise(torch.sqrt),
    "Reciprocal": _elementwise(torch.reciprocal),
    "Erf": _elementwise(torch.erf),
    "Relu": _elementwise(torch.relu),
    "LeakyRelu": lambda x, a, opset: F.leaky_relu(x[0], float(a.get("alpha", 0.01))),
    "PRelu": lambda x, a, opset: torch.where(x[0] >= 0, x[0], x[1] * x[0]),
    "Elu": lambda x, a, opset: F.elu(x[0], float(a.get("alpha", 1.0))),
    "Sigmoid": _elementwise(torch.sigmoid),
    "HardSigmoid": lambda x, a, opset: torch.clamp(
        float(a.get("alpha", 0.2)) * x[0] + float(a.get("beta", 0.5)), 0.0, 1.0
    ),
    "HardSwish": _elementwise(F.hardswish),
    "Tanh": _elementwise(torch.tanh),
    "Softmax": _op_softmax(log=False),
    "LogSoftmax": _op_softmax(log=True),
    "MaxPool": _op_pool("max"),
    "AveragePool": _op_pool("avg"),
    "GlobalAveragePool": lambda x, a, opset: x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda x, a, opset: x[0].amax(dim=tuple(range(2, x[0].dim())), keepdim=True),
    "BatchNormalization": _op_batchnorm,
    "Flatten": _op_flatten,
    "Reshape": _op_reshape,
    "Transpose": _op_transpose,
    "Concat": lambda x, a, opset: torch.cat([t for t in x if t is not None], dim=int(a["axis"])),
    "Identity": lambda x, a, opset: x[0],
    "Dropout": lambda x, a, opset: x[0],
    "Clip": _op_clip,
    "Pad": _op_pad,
    "Constant": lambda x, a, opset: None,  # folded into a buffer when the module is built
    "Shape": _op_shape,
    "Gather": _op_gather,
    "Unsqueeze": _op_unsqueeze,
    "Squeeze": _op_squeeze,
    "Cast": _op_cast,
    "Slice": _op_slice,
    "ConstantOfShape": _op_constant_of_shape,
    "Expand": _op_expand,
    "Equal": _elementwise(torch.eq),
    "Where": _elementwise(torch.where),
    "ReduceMean": _op_reduce_mean,
}
_ONNX_OUTPUTS = {"MaxPool": 1, "Dropout": 1, "BatchNormalization": 1}  # optional extra outputs not produced


# ------------------------------------------------------------------------------------------------------ Keras

_KERAS_CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}
_KERAS_IDENTITY = {  # at inference: no noise, no dropout
    "InputLayer",
    "Dropout",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
}


def _load_keras(path: Path, unsafe_pickle: bool, map_location: str | torch.device) -> _Raw:
    try:
        import h5py
    except ImportError:
        raise ModelFileError(
            f"{path}: a Keras model; reading it needs h5py: pip install 'neuralcleanse[keras]'"
        ) from None
    config, weights = _read_keras_file(path, h5py)
    code = _keras_code_layers(config)
    if code and not unsafe_pickle:
        name, kind = code[0]
        raise ModelFileError(
            f"{path}: refused: Keras layer {name!r} is a {kind}, whose Python code is stored in the file and "
            "would run when loading it; if you trust the file, pass unsafe_pickle=True (CLI: --unsafe-pickle)"
        )
    try:
        module = KerasModule(config, weights)
    except _UnsupportedKerasLayer as exc:
        return _load_with_keras(path, config, str(exc), safe_mode=not unsafe_pickle)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(
            f"{path}: cannot rebuild the Keras model ({_first_line(exc)}); the file may be corrupt"
        ) from None
    module = module.to(map_location).eval()
    return _keras_raw(module, config)


def _keras_raw(module: nn.Module, config: Mapping[str, Any], movable: bool = True) -> _Raw:
    dims, channels_last = _keras_input(config)
    layout, input_shape = _layout_from_dims(dims, channels_last_hint=channels_last)
    return _Raw(
        module,
        layout=layout,
        input_shape=input_shape,
        probabilities=True if _keras_ends_in_softmax(config) else None,
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
            f"{path}: cannot read the Keras file ({_first_line(exc)}); it may be corrupt or truncated: re-save it"
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


def _keras_layers(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    cfg = config.get("config", {})
    layers = cfg.get("layers", []) if isinstance(cfg, Mapping) else cfg  # very old Sequential: a bare list
    return [layer for layer in layers if isinstance(layer, dict)]


def _keras_code_layers(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, kind) of every layer whose loading would run code: Lambda layers, custom (non-Keras) objects."""
    found = []
    for layer in _keras_layers(config):
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
            found += _keras_code_layers(layer)
    return found


def _keras_input(config: Mapping[str, Any]) -> tuple[tuple[int | None, ...] | None, bool]:
    """The declared input shape ``(None, ...)`` and whether the model is channels-last."""
    layers = _keras_layers(config)
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


def _keras_ends_in_softmax(config: Mapping[str, Any]) -> bool:
    try:
        return _keras_softmax_walk(config)
    except (_UnsupportedKerasLayer, KeyError, IndexError, TypeError, ValueError):
        return False


def _keras_softmax_walk(config: Mapping[str, Any]) -> bool:
    layers = _keras_layers(config)
    by_name = {layer.get("config", {}).get("name", layer.get("name")): layer for layer in layers}
    cfg = config.get("config", {})
    current: dict[str, Any] | None = layers[-1] if layers else None
    if isinstance(cfg, Mapping) and cfg.get("output_layers"):
        outs = cfg["output_layers"]
        current = by_name.get(outs[0] if isinstance(outs[0], str) else outs[0][0])
    passthrough = {"Dropout", "Flatten", "Reshape", "ActivityRegularization", "GaussianNoise"}
    while current is not None:
        cls, c = current.get("class_name"), current.get("config", {})
        activation = _activation_name(c.get("activation"))
        if cls == "Softmax" or activation == "softmax":
            return True
        if cls not in passthrough and not (cls == "Activation" and activation == "linear"):
            return False
        inbound = _keras_inbound(current)
        if inbound is None:  # Sequential: the previous layer
            i = layers.index(current)
            current = layers[i - 1] if i > 0 else None
        else:
            current = by_name.get(inbound[0]) if len(inbound) == 1 else None
    return False


def _activation_name(act: Any) -> str | None:
    if act is None:
        return "linear"
    if isinstance(act, str):
        return act
    if isinstance(act, Mapping) and str(act.get("module", "keras")).startswith("keras"):
        inner = act.get("config")
        return inner if isinstance(inner, str) else act.get("class_name")
    return None


def _keras_inbound(layer: Mapping[str, Any]) -> list[str] | None:
    """The names of the layers feeding a functional-model layer; None in a Sequential model."""
    nodes = layer.get("inbound_nodes")
    if nodes is None:
        return None
    if not nodes:
        return []
    if len(nodes) > 1:
        raise _UnsupportedKerasLayer(f"shared layer {layer.get('name')!r} (called more than once)")
    node = nodes[0]
    names: list[str] = []
    if isinstance(node, Mapping):  # Keras 3: {"args": [...keras tensors...], "kwargs": {...}}
        for history in _keras_histories(node.get("args", [])):
            names.append(str(history[0]))
            if history[1] != 0 or history[2] != 0:
                raise _UnsupportedKerasLayer(f"multi-output or shared layer feeding {layer.get('name')!r}")
    else:  # Keras 2: [[layer_name, node_index, tensor_index, kwargs], ...]
        for entry in node:
            names.append(str(entry[0]))
            if entry[1] != 0 or entry[2] != 0:
                raise _UnsupportedKerasLayer(f"multi-output or shared layer feeding {layer.get('name')!r}")
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


class _UnsupportedKerasLayer(Exception):
    pass


def _keras_activation(act: Any, where: str) -> Callable[[torch.Tensor], torch.Tensor]:
    name = _activation_name(act)
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "linear": lambda x: x,
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "softmax": lambda x: torch.softmax(x, dim=-1),
        "elu": F.elu,
        "selu": F.selu,
        "softplus": F.softplus,
        "softsign": F.softsign,
        "swish": F.silu,
        "silu": F.silu,
        "relu6": F.relu6,
        "exponential": torch.exp,
    }
    if name not in fns:
        raise _UnsupportedKerasLayer(f"activation {act!r} in {where}")
    return fns[name]


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    return int(v[0]), int(v[1])


def _same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow 'same' padding: (before, after), the larger half after."""
    total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


class _KerasLayer(nn.Module):
    """A Keras layer rebuilt in torch; takes and returns tensors in the Keras model's own layout."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.channels_last = config.get("data_format", "channels_last") != "channels_first"

    def to_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2) if self.channels_last else x

    def from_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1) if self.channels_last else x

    def same_pad(
        self,
        x: torch.Tensor,
        kernel: Sequence[int],
        strides: Sequence[int],
        dilation: Sequence[int] = (1, 1),
        value: float = 0.0,
    ) -> torch.Tensor:  # x: (N, C, H, W)
        (t, b), (left, r) = (_same_pads(x.shape[2 + i], kernel[i], strides[i], dilation[i]) for i in range(2))
        return F.pad(x, (left, r, t, b), value=value)


class _KConv2D(_KerasLayer):
    def __init__(self, c: Mapping[str, Any], w: list[np.ndarray]) -> None:
        super().__init__(c)
        kernel = torch.from_numpy(np.array(w[0], dtype=np.float32))  # (kh, kw, in / groups, out)
        self.conv = skip_init(
            nn.Conv2d,
            kernel.shape[2] * int(c.get("groups", 1)),
            kernel.shape[3],
            tuple(kernel.shape[:2]),
            stride=_pair(c.get("strides", 1)),
            dilation=_pair(c.get("dilation_rate", 1)),
            groups=int(c.get("groups", 1)),
            bias=bool(c.get("use_bias", True)),
        )
        self.conv.weight.data.copy_(kernel.permute(3, 2, 0, 1))  # (out, in / groups, kh, kw)
        if self.conv.bias is not None:
            self.conv.bias.data.copy_(torch.from_numpy(np.array(w[1], dtype=np.float32)))
        self.same = c.get("padding", "valid") == "same"
        self.activation = _keras_activation(c.get("activation"), f"Conv2D {c.get('name')!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_nchw(x)
        if self.same:
            x = self.same_pad(x, self.conv.kernel_size, self.conv.stride, self.conv.dilation)
        return self.activation(self.from_nchw(self.conv(x)))


class _KDense(nn.Module):
    def __init__(self, c: Mapping[str, Any], w: list[np.ndarray]) -> None:
        super().__init__()
        kernel = torch.from_numpy(np.array(w[0], dtype=np.float32))  # (in, out)
        bias = bool(c.get("use_bias", True))
        self.linear = skip_init(nn.Linear, kernel.shape[0], kernel.shape[1], bias=bias)
        self.linear.weight.data.copy_(kernel.t())
        if self.linear.bias is not None:
            self.linear.bias.data.copy_(torch.from_numpy(np.array(w[1], dtype=np.float32)))
        self.activation = _keras_activation(c.get("activation"), f"Dense {c.get('name')!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


class _KPool2D(_KerasLayer):
    def __init__(self, c: Mapping[str, Any], kind: str) -> None:
        super().__init__(c)
        self.kind = kind
        self.kernel = _pair(c.get("pool_size", 2))
        self.strides = _pair(c.get("strides") or self.kernel)  # Keras: strides default to the pool size
        self.same = c.get("padding", "valid") == "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_nchw(x)
        if self.kind == "max":
            if self.same:
                x = self.same_pad(x, self.kernel, self.strides, value=-math.inf)
            return self.from_nchw(F.max_pool2d(x, self.kernel, self.strides))
        if not self.same:
            return self.from_nchw(F.avg_pool2d(x, self.kernel, self.strides))
        total = F.avg_pool2d(self.same_pad(x, self.kernel, self.strides), self.kernel, self.strides)
        ones = self.same_pad(torch.ones_like(x[:1, :1]), self.kernel, self.strides)
        count = F.avg_pool2d(ones, self.kernel, self.strides)
        return self.from_nchw(total / count)  # TensorFlow averages over the real pixels only


class _KGlobalPool2D(_KerasLayer):
    def __init__(self, c: Mapping[str, Any], kind: str) -> None:
        super().__init__(c)
        self.kind, self.keepdims = kind, bool(c.get("keepdims", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (1, 2) if self.channels_last else (2, 3)
        if self.kind == "max":
            return x.amax(dim=dims, keepdim=self.keepdims)
        return x.mean(dim=dims, keepdim=self.keepdims)


class _KFlatten(_KerasLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last and x.dim() > 2:
            x = x.permute(0, *range(2, x.dim()), 1)  # Keras flattens channels_first input channels-last
        return x.reshape(x.shape[0], -1)


class _KZeroPadding2D(_KerasLayer):
    def __init__(self, c: Mapping[str, Any]) -> None:
        super().__init__(c)
        p = c.get("padding", 1)
        if isinstance(p, int):
            p = ((p, p), (p, p))
        elif isinstance(p[0], int):
            p = ((p[0], p[0]), (p[1], p[1]))
        (self.top, self.bottom), (self.left, self.right) = (_pair(v) for v in p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_nchw(x)
        return self.from_nchw(F.pad(x, (self.left, self.right, self.top, self.bottom)))


class _KBatchNorm(nn.Module):
    moving_mean: torch.Tensor
    moving_variance: torch.Tensor

    def __init__(self, c: Mapping[str, Any], w: list[np.ndarray]) -> None:
        super().__init__()
        axis = c.get("axis", -1)
        self.axis = int(axis[0] if isinstance(axis, list) else axis)
        self.eps = float(c.get("epsilon", 1e-3))  # Keras's default
        arrays = [torch.from_numpy(np.array(a, dtype=np.float32)) for a in w]
        n = arrays[-1].shape[0]
        gamma = arrays.pop(0) if c.get("scale", True) else torch.ones(n)
        beta = arrays.pop(0) if c.get("center", True) else torch.zeros(n)
        self.gamma, self.beta = nn.Parameter(gamma), nn.Parameter(beta)
        self.register_buffer("moving_mean", arrays[0])
        self.register_buffer("moving_variance", arrays[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.axis] = -1

        def b(t: torch.Tensor) -> torch.Tensor:
            return t.view(shape)

        scale = b(self.gamma) / torch.sqrt(b(self.moving_variance) + self.eps)
        return (x - b(self.moving_mean)) * scale + b(self.beta)


class _KFunction(nn.Module):
    """A weightless Keras layer: a function of its input(s)."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


def _keras_relu(c: Mapping[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    max_value, slope = c.get("max_value"), float(c.get("negative_slope", 0.0))
    threshold = float(c.get("threshold", 0.0))

    def relu(x: torch.Tensor) -> torch.Tensor:
        y = torch.where(x >= threshold, x, slope * (x - threshold))
        return y if max_value is None else y.clamp(max=float(max_value))

    return relu


def _keras_layer(cls: str, c: Mapping[str, Any], w: list[np.ndarray]) -> nn.Module:
    """The torch module for one Keras layer config ``c`` with weights ``w``."""
    if cls == "Conv2D":
        return _KConv2D(c, w)
    if cls == "Dense":
        return _KDense(c, w)
    if cls in ("MaxPooling2D", "MaxPool2D"):
        return _KPool2D(c, "max")
    if cls in ("AveragePooling2D", "AvgPool2D"):
        return _KPool2D(c, "avg")
    if cls in ("GlobalAveragePooling2D", "GlobalAvgPool2D"):
        return _KGlobalPool2D(c, "avg")
    if cls in ("GlobalMaxPooling2D", "GlobalMaxPool2D"):
        return _KGlobalPool2D(c, "max")
    if cls == "Flatten":
        return _KFlatten(c)
    if cls == "ZeroPadding2D":
        return _KZeroPadding2D(c)
    if cls == "BatchNormalization":
        return _KBatchNorm(c, w)
    if cls in _KERAS_IDENTITY:
        return _KFunction(lambda x: x)
    if cls == "Activation":
        return _KFunction(_keras_activation(c.get("activation"), f"Activation {c.get('name')!r}"))
    if cls == "ReLU":
        return _KFunction(_keras_relu(c))
    if cls == "LeakyReLU":
        slope = float(c.get("negative_slope", c.get("alpha", 0.3)))  # Keras's default slope
        return _KFunction(lambda x: F.leaky_relu(x, slope))
    if cls == "Softmax":
        axis = c.get("axis", -1)
        axis = int(axis[0] if isinstance(axis, list) else axis)
        return _KFunction(lambda x: torch.softmax(x, dim=axis))
    if cls == "Rescaling":
        scale, offset = torch.tensor(c.get("scale", 1.0)), torch.tensor(c.get("offset", 0.0))
        return _KFunction(lambda x: x * scale.to(x) + offset.to(x))
    if cls == "Reshape":
        target = [int(v) for v in c["target_shape"]]
        return _KFunction(lambda x: x.reshape(x.shape[0], *target))
    if cls == "Permute":
        dims = [int(v) for v in c["dims"]]
        return _KFunction(lambda x: x.permute(0, *dims))
    if cls == "Add":
        return _KFunction(lambda *xs: _fold(torch.add, xs))
    if cls == "Multiply":
        return _KFunction(lambda *xs: _fold(torch.mul, xs))
    if cls == "Maximum":
        return _KFunction(lambda *xs: _fold(torch.maximum, xs))
    if cls == "Average":
        return _KFunction(lambda *xs: _fold(torch.add, xs) / len(xs))
    if cls == "Concatenate":
        axis = int(c.get("axis", -1))
        return _KFunction(lambda *xs: torch.cat(xs, dim=axis))
    raise _UnsupportedKerasLayer(f"layer type {cls} ({c.get('name')!r})")


def _fold(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], xs: Sequence[torch.Tensor]) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out


KERAS_LAYERS = (
    "Conv2D",
    "Dense",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "Flatten",
    "ZeroPadding2D",
    "BatchNormalization",
    "InputLayer",
    "Dropout",
    "SpatialDropout2D",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "Softmax",
    "Rescaling",
    "Reshape",
    "Permute",
    "Add",
    "Multiply",
    "Maximum",
    "Average",
    "Concatenate",
)


class KerasModule(nn.Module):
    """A Keras Sequential or functional model rebuilt in torch from its config and weights (no Keras needed).

    It takes input in the Keras model's own layout (channels-last unless the model says otherwise) and returns
    what the Keras model returns; each layer is a submodule named after the Keras layer.
    """

    def __init__(self, config: Mapping[str, Any], weights: Mapping[str, list[np.ndarray]]) -> None:
        super().__init__()
        cls = config.get("class_name")
        if cls not in ("Sequential", "Functional", "Model"):
            raise _UnsupportedKerasLayer(f"model class {cls}")
        layers = _keras_layers(config)
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
                raise _UnsupportedKerasLayer(f"nested model {name!r}")
            self.layers[self._key(name)] = _keras_layer(lcls, c, list(weights.get(name, [])))
            if sequential:
                self.inbound[name] = [previous]
                previous = name
            else:
                self.inbound[name] = _keras_inbound(layer) or []
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


def _load_with_keras(path: Path, config: Mapping[str, Any], why: str, safe_mode: bool) -> _Raw:
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
        raise ModelFileError(
            f"{path}: unsupported Keras {why}, and Keras cannot load it ({_first_line(exc)})"
        ) from None
    return _keras_raw(_KerasFallback(km), config, movable=False)


class _KerasFallback(nn.Module):
    """A Keras 3 model on the PyTorch backend (itself an ``nn.Module``), called in inference mode."""

    def __init__(self, keras_model: nn.Module) -> None:
        super().__init__()
        self.keras_model = keras_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.keras_model(x, training=False)
