"""Which format a model file is in, told from its first bytes (and, for zip archives, their member names).

The file extension only decides between formats whose bytes are unrecognisable (a corrupt file): the format's
own loader then reports the file as corrupt.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

from ..store.model_dir import METADATA_FILE, ModelFileError, is_saved_model_dir

__all__ = ["FORMATS", "detect_format", "is_safetensors"]


FORMATS = ("neuralcleanse", "torchscript", "onnx", "state_dict", "keras")

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_TEXT_PROBE_BYTES = 4096  # ours: enough of a file to tell text (a log, a config, notes) from binary data
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
        start = fh.read(_TEXT_PROBE_BYTES)
    head = start[:64]
    size = path.stat().st_size
    if not head:
        raise ModelFileError(f"{path}: empty file; re-export the model")
    if head.startswith(_HDF5_MAGIC):
        return "keras"
    if head.startswith(_ZIP_MAGIC):
        return _zip_format(path)
    if is_safetensors(head, size):
        return "state_dict"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "state_dict"  # a pickle: legacy torch.save (or anything else pickled; torch.load decides)
    if _looks_like_onnx(head):
        return "onnx"
    if _is_text(start):
        raise ModelFileError(
            f"{path}: a text file, not a model file of any known format; expected a neuralcleanse model "
            "directory, TorchScript, ONNX, a state dict (.pt/.pth/.safetensors) or Keras (.h5/.keras)"
        )
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


def _is_text(start: bytes) -> bool:
    """Whether a file's first bytes are UTF-8 text: no NUL, no control byte but tabs and line ends. Every model
    format's first bytes hold binary (magic numbers, lengths, protobuf tags), so text is never a model."""
    try:
        text = start.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(start) - 3:  # not merely a character cut at the probe's end
            return False
        text = start[: exc.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\t\n\r\f" for ch in text)


def is_safetensors(head: bytes, size: int) -> bool:
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
