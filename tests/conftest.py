"""Fixtures for the data tests cannot build themselves: the project's shared MNIST copy and a foreign Keras model.

The shared folder is found as the library finds it (:func:`neuralcleanse.data.shared_data_dir`). A fixture
whose files are missing skips its tests and says which files and how to provide them; ``pytest -rs`` lists
every such reason. Everything else (tiny models, tiny image sets) the tests build themselves.

The loaded image sets are shared by the whole session: take a ``subset`` or ``clone`` before changing them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from neuralcleanse.data import ImageData, load_mnist, shared_data_dir

NO_SHARED_DATA = (
    "no shared data directory: set NEURALCLEANSE_DATA to one, or put a shared/data folder in the current "
    "directory, in the directory of the neuralcleanse package, or in a parent of either"
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data directory (``shared/data``, holding ``mnist/``, ``gtsrb/``, ``cifar10/``)."""
    path = shared_data_dir()  # a NEURALCLEANSE_DATA that names no directory is an error, not a skip
    if path is None:
        pytest.skip(NO_SHARED_DATA)
    return path


@pytest.fixture(scope="session")
def mnist_dir(shared_data: Path) -> Path:
    """The directory of the four official MNIST IDX files in the shared data."""
    path = shared_data / "mnist"
    if not path.is_dir():
        pytest.skip(f"no MNIST in the shared data directory: {path} is missing")
    return path


@pytest.fixture(scope="session")
def mnist_train(mnist_dir: Path) -> ImageData:
    """The 60000 MNIST training images, loaded once."""
    return load_mnist(mnist_dir, "train")


@pytest.fixture(scope="session")
def mnist_test(mnist_dir: Path) -> ImageData:
    """The 10000 MNIST test images, loaded once."""
    return load_mnist(mnist_dir, "test")


@pytest.fixture(scope="session")
def keras_badnets_model(shared_data: Path) -> Path:
    """A BadNets MNIST model trained with Keras outside this project (``shared/models/keras-mnist-badnets``,
    beside ``shared/data``): six white pixels in the bottom-right corner send any digit to label 0."""
    path = shared_data.parent / "models" / "keras-mnist-badnets" / "pattern_all_to_one.h5"
    if not path.is_file():
        pytest.skip(f"no shared Keras BadNets model: {path} is missing")
    return path
