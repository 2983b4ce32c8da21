"""Which common input convention a model expects, read from its accuracy on labelled clean images."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuralcleanse.conventions import CONVENTIONS, ConventionFit, better_convention, rank_conventions
from neuralcleanse.preprocess import PreprocessedModel, Preprocessing


class NearestPrototype(nn.Module):
    """Scores each label by minus the squared distance of the input to the label's prototype, in whatever units
    the prototypes are given: fed other units, it mistakes most images."""

    def __init__(self, prototypes: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("prototypes", prototypes)  # (K, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x[:, None] - self.prototypes[None]) ** 2).flatten(2).sum(2)  # (N, K)


def _labelled(channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    prototypes = torch.rand(6, channels, 6, 6, generator=g)
    labels = torch.arange(6).repeat(5)
    images = (prototypes[labels] + 0.05 * torch.randn(30, channels, 6, 6, generator=g)).clamp(0, 1)
    return prototypes, images, labels


@pytest.mark.parametrize("convention", CONVENTIONS, ids=lambda c: c.name)
def test_a_model_built_for_a_convention_is_read_best_under_it(convention):
    channels = convention.channels or 3
    prototypes, images, labels = _labelled(channels)
    model = NearestPrototype(PreprocessedModel(nn.Identity(), convention.preprocessing).convert(prototypes))
    fits = rank_conventions(model, images, labels)
    own = next(fit for fit in fits if fit.convention == convention)
    assert own.accuracy == 1.0 and fits[0].accuracy == 1.0
    assert all(fit.convention.channels in (None, channels) for fit in fits)
    if convention.preprocessing.value_range == (0, 255):
        plain = next(fit for fit in fits if fit.convention == CONVENTIONS[0])
        assert plain.accuracy < 0.5, "a model of 0-255 pixels fed [0, 1] images mistakes most of them"


def test_only_conventions_for_the_images_channels_are_tried():
    _, images, labels = _labelled(1)
    names = [fit.convention.name for fit in rank_conventions(NearestPrototype(images[:6]), images, labels)]
    assert "normalised by MNIST's mean and std" in names and not any("BGR" in n or "ImageNet" in n for n in names)


def test_a_better_convention_is_named_only_when_it_reaches_the_level_and_is_not_the_one_given():
    plain, pixels = CONVENTIONS[0], CONVENTIONS[1]  # [0, 1] and [0, 255]
    fits = [ConventionFit(pixels, 0.96), ConventionFit(plain, 0.10)]
    assert better_convention(fits, 0.5, None) == fits[0]
    assert better_convention(fits, 0.97, None) is None, "not good enough"
    assert better_convention(fits, 0.5, Preprocessing(value_range=(0, 255), layout="NHWC")) is None, "it is given"
    ties = [ConventionFit(plain, 0.98), ConventionFit(pixels, 0.98)]
    assert better_convention(ties, 0.5, None) is None, "the plainest of equals is the default itself"
    weak = [ConventionFit(pixels, 0.55), ConventionFit(plain, 0.45)]  # a weak model just under the floor
    assert better_convention(weak, 0.5, None, reached=0.45) is None, "not moved by a few images"
    assert better_convention(fits, 0.5, None, reached=0.10) == fits[0]
