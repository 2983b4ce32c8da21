"""Image folders with one sub-folder per class, and resizing an image set to a given size."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .arrays import to_float
from .images import DataError, ImageData, one_line

__all__ = ["IMAGE_EXTENSIONS", "check_size", "load_image_folder", "resize"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp")


def check_size(size: tuple[int, int] | int | None) -> tuple[int, int] | None:
    """``size`` as ``(height, width)`` (one int means both), or ``None`` for none."""
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
    root = Path(path)
    size = check_size(size)
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
                raise DataError(f"{file}: unreadable image ({one_line(exc)})") from exc
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
        images=to_float(x),
        labels=torch.tensor(labels, dtype=torch.int64),
        num_classes=max(class_labels) + 1,
        name=str(root),
    )


def resize(data: ImageData, size: tuple[int, int] | None) -> ImageData:
    """``data`` with images resized bilinearly (antialiased, as Pillow does) to ``size`` when they differ."""
    if size is None or data.image_shape[1:] == size:
        return data
    images = torch.nn.functional.interpolate(
        data.images, size=size, mode="bilinear", align_corners=False, antialias=True
    ).clamp_(0.0, 1.0)
    return ImageData(images, data.labels, data.num_classes, data.name)
