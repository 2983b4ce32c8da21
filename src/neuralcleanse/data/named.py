"""Datasets by name (MNIST, GTSRB, CIFAR-10) and :func:`load_dataset`, which picks the loader for a name or a
path.

GTSRB (43 classes, 32x32 RGB, train/test) and CIFAR-10 (test only) are ``{split}.npz`` files with ``x`` and
``y`` in a directory; without one, the shared copy under :func:`~neuralcleanse.data.locations.shared_data_dir`.
"""

from __future__ import annotations

from pathlib import Path

from .arrays import load_npz
from .folders import check_size, load_image_folder, resize
from .images import DataError, ImageData
from .locations import check_split, shared_data_dir
from .mnist import has_mnist_files, load_mnist

__all__ = ["DATASET_NAMES", "load_cifar10", "load_dataset", "load_gtsrb"]

DATASET_NAMES = ("mnist", "gtsrb", "cifar10")
_NUM_CLASSES = {"gtsrb": 43, "cifar10": 10}


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


def load_gtsrb(root: str | Path | None = None, split: str = "test") -> ImageData:
    """GTSRB (43 classes, 32x32 RGB) from ``root/{split}.npz``.

    Args:
        root: Directory with ``train.npz`` and ``test.npz``; ``None``: the shared copy.
        split: ``"train"`` (39209 images in the shared copy) or ``"test"`` (12630).

    Raises:
        DataError: No such directory or file, an unknown split, or a bad file (see :func:`load_npz`).
    """
    split = check_split(split, "gtsrb")
    data = load_npz(_named_root(root, "gtsrb") / f"{split}.npz", num_classes=_NUM_CLASSES["gtsrb"])
    return ImageData(data.images, data.labels, data.num_classes, f"gtsrb-{split}")


def load_cifar10(root: str | Path | None = None, split: str = "test") -> ImageData:
    """CIFAR-10 (10 classes, 32x32 RGB) from ``root/test.npz``.

    The shared copy holds the test split only (JPEG-compressed once, see ``shared/data/README.md``); a
    ``train.npz`` is read when a ``root`` has one.

    Raises:
        DataError: No such directory or file, an unknown split, no train split, or a bad file.
    """
    split = check_split(split, "cifar10")
    root = _named_root(root, "cifar10")
    if split == "train" and not (root / "train.npz").is_file():
        raise DataError(f"{root}: no train split; only the CIFAR-10 test split is available (test.npz)")
    data = load_npz(root / f"{split}.npz", num_classes=_NUM_CLASSES["cifar10"])
    return ImageData(data.images, data.labels, data.num_classes, f"cifar10-{split}")


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
    size = check_size(size)
    if isinstance(spec, str) and spec.lower() in DATASET_NAMES:
        loader = {"mnist": load_mnist, "gtsrb": load_gtsrb, "cifar10": load_cifar10}[spec.lower()]
        return resize(loader(None, split), size)
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".npz":
        return resize(load_npz(path), size)
    if path.is_dir():
        if has_mnist_files(path):
            return resize(load_mnist(path, split), size)
        entries = list(path.iterdir())
        npz_files = [p for p in entries if p.is_file() and p.suffix.lower() == ".npz"]
        if npz_files and not any(p.is_dir() for p in entries):
            split = check_split(split, str(path))
            return resize(load_npz(path / f"{split}.npz"), size)
        return load_image_folder(path, size=size)
    accepted = (
        f"{', '.join(repr(n) for n in DATASET_NAMES)}, a .npz file with x and y, a directory of MNIST IDX "
        "files, a directory holding {train,test}.npz, or an image folder with one sub-folder per class"
    )
    problem = "not a supported file" if path.exists() else "not a dataset name or an existing path"
    raise DataError(f"{spec}: {problem}; accepted: {accepted}")
