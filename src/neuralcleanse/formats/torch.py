"""PyTorch's own formats: neuralcleanse model directories, TorchScript archives and state dicts.

State dicts (``.pt``/``.pth``/``.safetensors``, or a training checkpoint holding one) are read with
``torch.load(weights_only=True)`` or safetensors and need an architecture: ``"mnist"``/``"gtsrb"``,
``"package.module:callable"`` or ``"path/to/file.py:callable"``. A pickle that needs more than the weights-only
unpickler (a whole pickled ``nn.Module``) is refused, naming what it imports, unless the caller passes
``unsafe_pickle=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import pickle
import pickletools
import re
import struct
import sys
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..archspec import absolute_arch
from ..models import ARCHITECTURES, build_model
from ..store.model_dir import ModelFileError, load_saved_model
from .detect import is_safetensors
from .raw import RawModel, first_line

__all__ = ["load_neuralcleanse", "load_state_dict", "load_torchscript"]

logger = logging.getLogger(__name__)


def load_neuralcleanse(path: Path, arch: str | None, map_location: str | torch.device) -> RawModel:
    saved = load_saved_model(path, map_location=map_location)
    name = saved.metadata["architecture"]
    if arch is not None and arch != name:
        raise ValueError(f"{path}: the model's architecture is {name!r}, but arch={arch!r} was given; drop arch")
    num_classes = int(saved.metadata.get("num_classes", ARCHITECTURES[name].num_classes))
    return RawModel(
        saved.model,
        layout="NCHW",
        input_shape=ARCHITECTURES[name].input_shape,
        probabilities=False,
        num_classes=num_classes,
        metadata=dict(saved.metadata),
        triggers=list(saved.triggers),
    )


def load_torchscript(path: Path, map_location: str | torch.device) -> RawModel:
    # TorchScript archives hold TorchScript (a restricted language compiled by torch), not Python, and their
    # tensors are read by torch's own restricted unpickler: no Python code from the file runs.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # deprecated, still supported
            model = torch.jit.load(str(path), map_location=map_location)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path}: cannot read the TorchScript archive ({first_line(exc)}); it may be corrupt or "
            "truncated: re-export it with torch.jit.save"
        ) from None
    model.eval()
    return RawModel(model, probabilities=True if _torchscript_ends_in_softmax(model) else None)


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


def load_state_dict(path: Path, arch: str | None, unsafe_pickle: bool, map_location: str | torch.device) -> RawModel:
    obj = _read_weights_file(path, unsafe_pickle, map_location)
    if isinstance(obj, nn.Module):  # only reachable with unsafe_pickle
        if arch is not None:
            logger.warning("%s holds a whole model; ignoring arch=%r", path, arch)
        obj.eval()
        return RawModel(obj)
    state = _unwrap_state_dict(obj, path)
    if arch is None:
        raise ModelFileError(
            f"{path}: holds only weights (a state dict); give the architecture: arch={sorted(ARCHITECTURES)} "
            "or 'package.module:callable' (CLI: --arch)"
        )
    model, input_shape = _build_arch(arch, state)
    _load_weights(model, state, path, arch)
    model.eval()
    return RawModel(model, input_shape=input_shape)


def _read_weights_file(path: Path, unsafe_pickle: bool, map_location: str | torch.device) -> Any:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if path.suffix.lower() == ".safetensors" or is_safetensors(head, path.stat().st_size):
        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise ModelFileError(
                f"{path}: corrupt or truncated safetensors file ({first_line(exc)}); re-export the weights"
            ) from None
    try:
        with warnings.catch_warnings():
            # a pickle protocol torch does not write: refused below if it matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise ModelFileError(
                f"{path}: corrupt or truncated file ({first_line(exc)}); re-export the model"
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
        raise ModelFileError(f"{path}: corrupt or truncated file ({first_line(exc)}); re-export the model") from None
    logger.warning("%s: unpickling with weights_only=False (unsafe_pickle=True); code in it may run", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)  # opted in: unsafe_pickle
    except Exception as exc:  # anything the file's own code raises
        raise ModelFileError(f"{path}: cannot unpickle the file ({first_line(exc)})") from None


_SAFE_MODULES = ("torch.", "collections.", "_codecs.")  # what state dicts themselves import


def _pickled_globals(path: Path) -> list[str] | None:
    """The ``module.name`` globals a pickle would import, read with :mod:`pickletools` (which never executes
    anything); None when the file holds no readable pickle. Looks into ``data.pkl`` of torch.save archives and
    at the first pickles of a legacy torch.save file."""

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
        module_name, _, attr = absolute_arch(arch).partition(":")
        try:
            target: Any = _arch_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError, OSError) as exc:
            raise ValueError(f"arch={arch!r}: cannot import it ({first_line(exc)})") from None
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


def _arch_module(name: str) -> Any:
    """The module an arch names (:func:`~neuralcleanse.archspec.absolute_arch` has written a user's file as its
    path): a Python file or an importable module. Importing it runs its code: the user named it."""
    if not name.endswith(".py"):
        return importlib.import_module(name)
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    spec = importlib.util.spec_from_file_location(f"neuralcleanse_arch_{path.stem}", path.resolve())
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: the module's classes can then be pickled by name
    spec.loader.exec_module(module)
    return module


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
        raise ModelFileError(f"{path}: the weights do not match architecture {arch!r} ({first_line(exc)})") from None
