"""Triggers: a mask and a pattern stamped onto images as ``(1 - m) * x + m * p``.

A mask is ``(1, H, W)`` in [0, 1] (shared by all channels), a pattern ``(C, H, W)`` in [0, 1]. Patch triggers
(BadNets' sticker) have a binary mask; blended triggers (a full-image watermark) have a constant mask equal to
their opacity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["POSITIONS", "Trigger", "parse_trigger"]

POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
_COLORS = {"white": 1.0, "black": 0.0, "gray": 0.5, "grey": 0.5}


@dataclass(frozen=True, eq=False)
class Trigger:
    """A trigger: ``mask`` (1, H, W) and ``pattern`` (C, H, W), both float in [0, 1].

    ``spec`` is an optional human-readable description (the string :func:`parse_trigger` understands), kept so
    that metadata and reports can say what the trigger was.

    Shape:
        mask: (1, H, W); pattern: (C, H, W); ``stamp`` takes (N, C, H, W) or (C, H, W).

    Example:
        >>> t = Trigger.patch((1, 28, 28), size=4, position="bottom-right", color=1.0)
        >>> stamped = t.stamp(torch.zeros(2, 1, 28, 28))
        >>> float(stamped[0, 0, -1, -1])
        1.0
    """

    mask: torch.Tensor
    pattern: torch.Tensor
    spec: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.mask.dim() != 3 or self.mask.shape[0] != 1:
            raise ValueError(f"mask must have shape (1, H, W), got {tuple(self.mask.shape)}")
        if self.pattern.dim() != 3 or self.pattern.shape[1:] != self.mask.shape[1:]:
            raise ValueError(
                f"pattern must have shape (C, H, W) with H, W = {tuple(self.mask.shape[1:])}, "
                f"got {tuple(self.pattern.shape)}"
            )
        for name, t in (("mask", self.mask), ("pattern", self.pattern)):
            if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
                raise ValueError(f"{name} values must be finite and in [0, 1]")
        object.__setattr__(self, "mask", self.mask.detach().float())
        object.__setattr__(self, "pattern", self.pattern.detach().float())

    def __repr__(self) -> str:
        spec = "" if self.spec is None else f", spec={self.spec!r}"
        return f"Trigger(mask={tuple(self.mask.shape)}, pattern={tuple(self.pattern.shape)}, l1={self.l1:.1f}{spec})"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images this trigger applies to."""
        c, h, w = self.pattern.shape
        return (c, h, w)

    def stamp(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``(1 - mask) * images + mask * pattern`` as a new tensor on the images' device and dtype."""
        if images.shape[-3:] != self.pattern.shape:
            raise ValueError(
                f"images must end in shape {tuple(self.pattern.shape)} (C, H, W) to take this trigger, "
                f"got {tuple(images.shape)}"
            )
        mask = self.mask.to(images.device, images.dtype)
        pattern = self.pattern.to(images.device, images.dtype)
        return (1 - mask) * images + mask * pattern

    def to(self, device: torch.device | str) -> Trigger:
        return Trigger(self.mask.to(device), self.pattern.to(device), self.spec)

    @property
    def l1(self) -> float:
        """The mask's L1 norm: the 'size' Neural Cleanse compares across labels."""
        return float(self.mask.abs().sum())

    # --- constructors -------------------------------------------------------------------------------------

    @classmethod
    def patch(
        cls,
        image_shape: tuple[int, int, int],
        size: int | tuple[int, int] = 4,
        position: str | tuple[int, int] = "bottom-right",
        color: float | tuple[float, ...] | torch.Tensor = 1.0,
        margin: int = 0,
        spec: str | None = None,
    ) -> Trigger:
        """A rectangular sticker (BadNets). ``color`` is a grey level, one value per channel, or a
        ``(C, h, w)`` tensor giving the patch's own pattern. ``position`` is a corner name, ``"center"``,
        or the (row, col) of the patch's top-left pixel; ``margin`` is the distance in pixels from the named
        corner (default 0: flush with the border, as in the paper's 'bottom right corner' trigger).
        """
        c, h, w = _check_shape(image_shape)
        ph, pw = (size, size) if isinstance(size, int) else size
        if not (0 < ph <= h and 0 < pw <= w):
            raise ValueError(f"patch size must be between 1 and the image size {(h, w)}, got {(ph, pw)}")
        top, left = _place(position, (h, w), (ph, pw), margin)
        mask = torch.zeros(1, h, w)
        mask[:, top : top + ph, left : left + pw] = 1.0
        pattern = torch.zeros(c, h, w)
        pattern[:, top : top + ph, left : left + pw] = _patch_pattern(color, c, ph, pw)
        return cls(mask, pattern, spec)

    @classmethod
    def random_patch(
        cls,
        image_shape: tuple[int, int, int],
        size: int | tuple[int, int] = 4,
        position: str | tuple[int, int] = "bottom-right",
        seed: int = 0,
        margin: int = 0,
        spec: str | None = None,
    ) -> Trigger:
        """A patch of random black/white pixels (the same in every channel), reproducible from ``seed``."""
        c, _, _ = _check_shape(image_shape)
        ph, pw = (size, size) if isinstance(size, int) else size
        g = torch.Generator().manual_seed(seed)
        bits = torch.randint(0, 2, (1, ph, pw), generator=g).float().expand(c, ph, pw)
        return cls.patch(image_shape, (ph, pw), position, bits, margin, spec)

    @classmethod
    def pixels(
        cls,
        image_shape: tuple[int, int, int],
        count: int = 4,
        seed: int = 0,
        color: float | tuple[float, ...] = 1.0,
        spec: str | None = None,
    ) -> Trigger:
        """``count`` single pixels at distinct positions drawn over the whole image from ``seed``, all of
        ``color`` (a grey level or one value per channel): a dispersed trigger, with no patch around it."""
        c, h, w = _check_shape(image_shape)
        if not 0 < count <= h * w:
            raise ValueError(f"count must be between 1 and the image's {h * w} pixels, got {count}")
        g = torch.Generator().manual_seed(seed)
        mask = torch.zeros(1, h * w)
        mask[0, torch.randperm(h * w, generator=g)[:count]] = 1.0
        mask = mask.view(1, h, w)
        return cls(mask, _patch_pattern(color, c, h, w) * mask, spec)

    @classmethod
    def image_patch(
        cls,
        image_shape: tuple[int, int, int],
        path: str | Path,
        size: int | tuple[int, int] | None = None,
        position: str | tuple[int, int] = "bottom-right",
        margin: int = 0,
        spec: str | None = None,
    ) -> Trigger:
        """A patch whose pattern is an image file (resized to ``size`` when given)."""
        c, _, _ = _check_shape(image_shape)
        pattern = _read_image(path, c, None if size is None else ((size, size) if isinstance(size, int) else size))
        _, ph, pw = pattern.shape
        return cls.patch(image_shape, (ph, pw), position, pattern, margin, spec)

    @classmethod
    def blend(
        cls,
        pattern: torch.Tensor,
        alpha: float = 0.1,
        spec: str | None = None,
    ) -> Trigger:
        """A full-image pattern mixed in with opacity ``alpha``: ``(1 - alpha) * x + alpha * pattern``."""
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be a fraction in (0, 1], got {alpha}")
        if pattern.dim() != 3:
            raise ValueError(f"pattern must have shape (C, H, W), got {tuple(pattern.shape)}")
        mask = torch.full((1, *pattern.shape[1:]), float(alpha))
        return cls(mask, pattern.float(), spec)

    @classmethod
    def random_blend(
        cls, image_shape: tuple[int, int, int], alpha: float = 0.1, seed: int = 0, spec: str | None = None
    ) -> Trigger:
        """A blended trigger whose pattern is uniform noise, reproducible from ``seed``."""
        g = torch.Generator().manual_seed(seed)
        return cls.blend(torch.rand(_check_shape(image_shape), generator=g), alpha, spec)

    # --- persistence --------------------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mask": self.mask.cpu().numpy(), "pattern": self.pattern.cpu().numpy()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], spec: str | None = None) -> Trigger:
        return cls(
            torch.from_numpy(np.asarray(arrays["mask"], dtype=np.float32)),
            torch.from_numpy(np.asarray(arrays["pattern"], dtype=np.float32)),
            spec,
        )


def _check_shape(image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {tuple(image_shape)}")
    c, h, w = (int(v) for v in image_shape)
    return c, h, w


def _place(position: str | tuple[int, int], hw: tuple[int, int], size: tuple[int, int], margin: int) -> tuple[int, int]:
    (h, w), (ph, pw) = hw, size
    if isinstance(position, str):
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS} or (row, col), got {position!r}")
        if margin < 0 or ph + margin > h or pw + margin > w:
            raise ValueError(f"margin {margin} does not fit a {(ph, pw)} patch in a {(h, w)} image")
        if position == "center":
            return (h - ph) // 2, (w - pw) // 2
        top = margin if position.startswith("top") else h - ph - margin
        left = margin if position.endswith("left") else w - pw - margin
        return top, left
    top, left = (int(v) for v in position)
    if not (0 <= top <= h - ph and 0 <= left <= w - pw):
        raise ValueError(f"a {(ph, pw)} patch at (row, col) {(top, left)} does not fit in a {(h, w)} image")
    return top, left


def _patch_pattern(color: float | tuple[float, ...] | torch.Tensor, c: int, ph: int, pw: int) -> torch.Tensor:
    if isinstance(color, torch.Tensor):
        if color.shape != (c, ph, pw):
            raise ValueError(f"patch pattern must have shape {(c, ph, pw)}, got {tuple(color.shape)}")
        return color.float()
    values = (float(color),) * c if isinstance(color, int | float) else tuple(float(v) for v in color)
    if len(values) != c:
        raise ValueError(f"color needs 1 or {c} values (one per channel), got {len(values)}")
    if any(not 0 <= v <= 1 for v in values):
        raise ValueError(f"color values must be in [0, 1], got {values}")
    return torch.tensor(values).view(c, 1, 1).expand(c, ph, pw)


def _read_image(path: str | Path, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    try:
        with Image.open(path) as opened:
            im = opened.convert("L" if channels == 1 else "RGB")
            if size is not None:
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise ValueError(f"{path}: trigger image not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: cannot read the trigger image ({exc})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if arr.shape[0] != channels:
        arr = np.repeat(arr, channels, axis=0)
    return torch.from_numpy(np.ascontiguousarray(arr))


def parse_trigger(spec: str, image_shape: tuple[int, int, int], crafted: bool = False) -> Trigger:
    """Build a trigger from a command-line description.

    Forms (keys optional, defaults in brackets)::

        square[:size=4,position=bottom-right,color=white,margin=0]   a solid patch; color is white, black,
                                                                      gray, a grey level or R/G/B levels
        random[:size=4,position=bottom-right,seed=0,margin=0]        a random black/white patch
        pixels[:count=4,seed=0,color=white]                          count pixels scattered over the image
        image:path=FILE[,size=S,position=...,margin=0]              a patch read from an image file
        blend[:alpha=0.1,seed=0] or blend:path=FILE,alpha=0.1        a full-image pattern with opacity alpha
        trojan[:size=4,position=bottom-right,margin=0]               a patch whose pattern is crafted for the
                                                                      model (Trojan attack, training only)

    ``position`` is a corner name, ``center`` or ``ROW/COL`` (the patch's top-left pixel). A ``trojan`` spec is
    accepted only with ``crafted=True`` and then gives the patch's region with a black pattern:
    :func:`neuralcleanse.attacks.trojan` crafts the pattern.
    """
    kind, _, rest = spec.partition(":")
    opts: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"trigger {spec!r}: expected key=value, got {item!r}")
        opts[key.strip()] = value.strip()

    def take(key: str, default: str | None = None) -> str | None:
        return opts.pop(key, default)

    def position() -> str | tuple[int, int]:
        pos = take("position", "bottom-right") or "bottom-right"
        if "/" in pos:
            row, col = pos.split("/", 1)
            return int(row), int(col)
        return pos

    def color() -> float | tuple[float, ...]:
        name = take("color", "white") or "white"
        levels = (_COLORS[name],) if name in _COLORS else tuple(float(v) for v in name.split("/"))
        return levels[0] if len(levels) == 1 else levels

    try:
        if kind == "square":
            trig = Trigger.patch(
                image_shape, int(take("size", "4") or 4), position(), color(), int(take("margin", "0") or 0), spec
            )
        elif kind == "pixels":
            count, seed = int(take("count", "4") or 4), int(take("seed", "0") or 0)
            trig = Trigger.pixels(image_shape, count, seed, color(), spec)
        elif kind == "random":
            trig = Trigger.random_patch(
                image_shape,
                int(take("size", "4") or 4),
                position(),
                int(take("seed", "0") or 0),
                int(take("margin", "0") or 0),
                spec,
            )
        elif kind == "image":
            path = take("path")
            if not path:
                raise ValueError("needs path=FILE")
            size = take("size")
            trig = Trigger.image_patch(
                image_shape, path, None if size is None else int(size), position(), int(take("margin", "0") or 0), spec
            )
        elif kind == "trojan":
            if not crafted:
                raise ValueError(
                    "a trojan trigger's pattern is crafted for one model: `train` makes it and records it with "
                    "the model, which evaluate and mitigate then use"
                )
            trig = Trigger.patch(
                image_shape, int(take("size", "4") or 4), position(), 0.0, int(take("margin", "0") or 0), spec
            )
        elif kind == "blend":
            alpha = float(take("alpha", "0.1") or 0.1)
            path = take("path")
            if path:
                trig = Trigger.blend(_read_image(path, image_shape[0], (image_shape[1], image_shape[2])), alpha, spec)
            else:
                trig = Trigger.random_blend(image_shape, alpha, int(take("seed", "0") or 0), spec)
        else:
            raise ValueError(f"unknown kind {kind!r}; expected square, random, pixels, image, blend or trojan")
    except ValueError as exc:
        raise ValueError(f"trigger {spec!r}: {exc}") from None
    if opts:
        raise ValueError(f"trigger {spec!r}: unknown option(s) {sorted(opts)} for kind {kind!r}")
    return trig
