"""The input conventions published models are commonly trained with, and which of them a model fits best, read
from its accuracy on labelled clean images.

A scan refuses a model that classifies under half of the clean images (:data:`~neuralcleanse.config.
MIN_CLEAN_ACCURACY`); nearly always the images are not what the model expects. Trying each common convention on
the same images finds the one the model reads: the scan job goes on under it when no preprocessing was given, and
names its options when some were. Nothing is chosen silently: under a wrong convention a scan would not fail, it
would scan a different function, so the choice is always in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ._torch import eval_mode, model_device
from .metrics import accuracy
from .preprocess import PreprocessedModel, Preprocessing, as_options

__all__ = ["CLEAR_MARGIN", "CONVENTIONS", "Convention", "ConventionFit", "better_convention", "rank_conventions"]

#: A convention replaces the one that failed the sanity check only when it reads at least this share more of the
#: clean images right (ours): a wrong convention leaves a model near chance and the right one at its accuracy, far
#: apart, while a weak model just under the check's floor must not be moved to another convention by noise.
CLEAR_MARGIN = 0.2


@dataclass(frozen=True)
class Convention:
    """A way models are commonly fed images: ``name`` in words (after "images"), ``preprocessing`` as the scan
    applies it (layout left open), and the ``channels`` it applies to (None: any)."""

    name: str
    preprocessing: Preprocessing
    channels: int | None = None

    @property
    def options(self) -> str:
        """The command-line options that state it."""
        return " ".join(as_options(self.preprocessing)) or "no preprocessing options"


def _normalised(name: str, mean: tuple[float, ...], std: tuple[float, ...]) -> Convention:
    return Convention(name, Preprocessing(mean=mean, std=std), len(mean))


_BGR = Preprocessing(channel_order="BGR")

#: The conventions tried, each with where it comes from.
CONVENTIONS: tuple[Convention, ...] = (
    Convention("in [0, 1]", Preprocessing()),  # ToTensor(); the scan's own
    Convention("in [0, 255]", Preprocessing(value_range=(0, 255))),  # raw uint8 pixels
    Convention("in [-1, 1]", Preprocessing(value_range=(-1, 1))),  # Keras applications' "tf" mode
    # pytorch/examples mnist/main.py: Normalize((0.1307,), (0.3081,))
    _normalised("normalised by MNIST's mean and std", (0.1307,), (0.3081,)),
    # torchvision's ImageNet reference scripts
    _normalised("normalised by ImageNet's mean and std", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # the CIFAR-10 training set's per-channel mean and std
    _normalised("normalised by CIFAR-10's mean and std", (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)),
    # kuangliu/pytorch-cifar main.py, copied by many CIFAR-10 training scripts
    _normalised(
        "normalised by CIFAR-10's mean and std as pytorch-cifar does", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.201)
    ),
    # images read with OpenCV
    Convention("in [0, 1], BGR", _BGR, 3),
    Convention("in [0, 255], BGR", replace(_BGR, value_range=(0, 255)), 3),
    # Keras applications' "caffe" mode: BGR, 0-255, the ImageNet mean subtracted
    Convention(
        "Caffe-style (BGR in [0, 255], ImageNet's mean subtracted)",
        replace(_BGR, value_range=(0, 255), mean=(103.939, 116.779, 123.68)),
        3,
    ),
)


@dataclass(frozen=True)
class ConventionFit:
    """The model's ``accuracy`` on the clean images when fed them under ``convention``."""

    convention: Convention
    accuracy: float


def rank_conventions(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, layout: str | None = None
) -> list[ConventionFit]:
    """The model's accuracy on labelled clean images under each of :data:`CONVENTIONS` that fits their channels,
    best first (ties keep the table's order, the plainest first).

    Args:
        model: the model as it was given, taking whatever it expects (not wrapped in a
            :class:`~neuralcleanse.preprocess.PreprocessedModel`).
        layout: the tensor layout the model takes (``"NCHW"``, ``"NHWC"``, ``"NHW"``, ``"flat"``; None: NCHW).

    Shape:
        images: (N, C, H, W) in [0, 1]; labels: (N,).
    """
    if images.dim() != 4 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    channels, device = images.shape[1], model_device(model)
    fits = []
    with eval_mode(model):  # the model's own mode is restored, whatever the wrappers do to it
        for convention in CONVENTIONS:
            if convention.channels not in (None, channels):
                continue
            fed = PreprocessedModel(model, replace(convention.preprocessing, layout=layout)).to(device).eval()
            fits.append(ConventionFit(convention, accuracy(fed, images, labels)))
    return sorted(fits, key=lambda fit: -fit.accuracy)


def better_convention(
    fits: list[ConventionFit], floor: float, given: Preprocessing | None, reached: float | None = None
) -> ConventionFit | None:
    """The best of ``fits`` (:func:`rank_conventions`) when it classifies at least ``floor`` of the images, at
    least :data:`CLEAR_MARGIN` more than the ``given`` preprocessing ``reached`` (when known), and is not ``given``
    itself; None otherwise."""
    least = floor if reached is None else max(floor, reached + CLEAR_MARGIN)
    if not fits or fits[0].accuracy < least:
        return None
    best = fits[0]
    given = given or Preprocessing()
    return None if replace(best.convention.preprocessing, layout=given.layout) == given else best
