"""Image arrays as the library holds them, and ``.npz`` files of images and labels.

An image array may come as ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` and as uint8 (0-255) or float
(0-1) pixels; it leaves here as ``(N, C, H, W)`` float32 in [0, 1]. Labels leave as ``(N,)`` int64.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .images import DataError, ImageData, one_line

__all__ = ["images_from_array", "labels_from_array", "load_npz", "to_float"]

logger = logging.getLogger(__name__)


def to_float(x: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` (any strides) -> contiguous float32 in [0, 1], in one pass."""
    out = np.empty(x.shape, dtype=np.float32)
    np.divide(x, np.float32(255), out=out, dtype=np.float32)
    return torch.from_numpy(out)


def _channels_last(shape: tuple[int, ...]) -> bool:
    """Whether a 4-D image array is ``(N, H, W, C)`` rather than ``(N, C, H, W)``.

    Raises:
        ValueError: Neither axis can hold the channels.
    """
    second, last = shape[1], shape[3]
    if last in (1, 3, 4) and second not in (1, 3, 4):
        return True
    if second in (1, 3, 4) and last not in (1, 3, 4):
        return False
    if last in (1, 3):  # ambiguous, e.g. (N, 3, 3, 3): prefer the numpy/PIL convention
        return True
    if second in (1, 3, 4):
        return False
    raise ValueError("no channel axis")


def images_from_array(x: np.ndarray, where: str) -> torch.Tensor:
    """Check an image array and convert it to float32 ``(N, C, H, W)`` in [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]  # (N, 1, H, W)
    elif x.ndim == 4:
        try:
            if _channels_last(x.shape):
                x = x.transpose(0, 3, 1, 2)  # (N, C, H, W), a view
        except ValueError:
            raise DataError(
                f"{where}: x has shape {x.shape}; cannot tell the channel axis "
                "(expected 1, 3 or 4 channels first or last)"
            ) from None
    else:
        raise DataError(f"{where}: x has shape {x.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if x.dtype == np.uint8:
        return to_float(x)
    if x.dtype == np.bool_:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{where}: integer pixel values must lie in [0, 255], got [{x.min()}, {x.max()}]")
        return to_float(x)
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DataError(f"{where}: x holds NaN or infinite pixel values")
        low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if low < 0.0 or high > 1.0:
            looks_255 = low >= 0 and high <= 255
            hint = "; they look like 0-255 values: divide by 255 or store uint8" if looks_255 else ""
            raise DataError(f"{where}: float pixel values must lie in [0, 1], got [{low:g}, {high:g}]{hint}")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    raise DataError(f"{where}: x has dtype {x.dtype}; expected uint8 (0-255) or float (0-1)")


def labels_from_array(y: np.ndarray, n: int, num_classes: int | None, where: str) -> tuple[torch.Tensor, int]:
    """Check a label array, class labels ``(N,)`` or one-hot rows ``(N, K)`` (Keras' ``to_categorical``); return
    it as int64 and the number of classes."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and _one_hot(y):
        num_classes = y.shape[1] if num_classes is None else num_classes
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise DataError(f"{where}: y has shape {y.shape}; expected (N,) class labels")
    if len(y) != n:
        raise DataError(f"{where}: x holds {n} images but y holds {len(y)} labels")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not (y == np.round(y)).all():
            raise DataError(f"{where}: y holds non-integer labels")
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise DataError(f"{where}: y has dtype {y.dtype}; expected integer class labels")
    labels = torch.from_numpy(y.astype(np.int64))
    if n and labels.min() < 0:
        raise DataError(f"{where}: negative label {int(labels.min())}")
    top = int(labels.max()) if n else -1
    if num_classes is None:
        num_classes = top + 1
    elif top >= num_classes:
        raise DataError(f"{where}: label {top} is out of range for {num_classes} classes (0-{num_classes - 1})")
    return labels, num_classes


def _one_hot(y: np.ndarray) -> bool:
    """Whether every row of a 2-D array holds one 1 and zeros elsewhere."""
    return y.shape[1] > 1 and bool(((y == 0) | (y == 1)).all()) and bool((y.sum(axis=1) == 1).all())


#: The names an ``.npz`` file's images and labels go by, in the order they are looked for: the library's own, then
#: common ones (``x_test``/``y_test``: Keras' ``mnist.npz``, whose test split is the one to scan with).
IMAGE_KEYS = ("x", "X", "images", "x_test", "data")
LABEL_KEYS = ("y", "Y", "labels", "y_test", "targets")


def load_npz(path: str | Path, num_classes: int | None = None) -> ImageData:
    """Images ``x`` and labels ``y`` from an ``.npz`` file (read with ``allow_pickle=False``).

    ``x`` may be ``(N, H, W)`` (one channel), ``(N, H, W, C)`` or ``(N, C, H, W)``: the axis of size 1, 3 or 4
    is the channel axis, and channels-last wins when both fit and the last axis is 1 or 3. uint8 (and other
    integer) pixels are divided by 255; float pixels must already lie in [0, 1]. ``y`` holds class labels or
    one-hot rows. Other common names are read too (:data:`IMAGE_KEYS`, :data:`LABEL_KEYS`).

    Args:
        path: The ``.npz`` file.
        num_classes: Number of classes; ``None``: the largest label + 1.

    Returns:
        The images and labels, named after ``path``.

    Raises:
        DataError: A missing or unreadable file, a missing ``x`` or ``y``, lengths that differ, labels out of
            range, NaN pixels or float pixels outside [0, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: not an .npz archive (a single .npy array?); expected keys x and y")
        with loaded as npz:
            x_key, y_key = (next((k for k in names if k in npz.files), None) for names in (IMAGE_KEYS, LABEL_KEYS))
            if x_key is None or y_key is None:
                missing = " or ".join(name for name, key in (("x", x_key), ("y", y_key)) if key is None)
                raise DataError(
                    f"{path}: no array {missing} (found: {', '.join(npz.files) or 'none'}); "
                    f"expected images under {'/'.join(IMAGE_KEYS)} and labels under {'/'.join(LABEL_KEYS)}"
                )
            x, y = npz[x_key], npz[y_key]
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: unreadable .npz file ({one_line(exc)})") from exc
    where = str(path)
    if len(x) == 0:
        raise DataError(f"{where}: x holds no images")
    labels, num_classes = labels_from_array(y, len(x), num_classes, where)
    images = images_from_array(x, where)
    logger.debug("loaded %d images %s from %s", len(images), tuple(images.shape[1:]), path)
    return ImageData(images, labels, num_classes, where)
