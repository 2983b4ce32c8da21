"""Preprocessing: each step does exactly what it says, in the documented order, and gradients pass through."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuralcleanse.preprocess import (
    PreprocessedModel,
    Preprocessing,
    is_probabilities,
    log_probabilities,
    parse_value_range,
)


class Recorder(nn.Module):
    """Returns its input unchanged and keeps what it saw."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return x


def _images(n: int = 2, c: int = 3, h: int = 4, w: int = 5) -> torch.Tensor:
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(0))


def _seen(pre: Preprocessing, x: torch.Tensor) -> torch.Tensor:
    rec = Recorder()
    PreprocessedModel(rec, pre)(x)
    return rec.seen


def test_identity_passes_images_unchanged():
    x = _images()
    pre = Preprocessing()
    assert pre.is_identity and Preprocessing(layout="NCHW").is_identity
    assert torch.equal(_seen(pre, x), x)


@pytest.mark.parametrize(
    ("value_range", "expected"),
    [((0, 255), lambda x: x * 255), ((-1, 1), lambda x: 2 * x - 1), ((0.0, 1.0), lambda x: x)],
)
def test_value_range_scales_from_unit_interval(value_range, expected):
    x = _images()
    torch.testing.assert_close(_seen(Preprocessing(value_range=value_range), x), expected(x))


def test_mean_std_apply_after_scaling_per_channel():
    x = _images()
    pre = Preprocessing(value_range=(0, 255), mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0))
    mean = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    std = torch.tensor([2.0, 4.0, 8.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(_seen(pre, x), (x * 255 - mean) / std)


def test_bgr_reverses_channels_before_the_mean_which_is_in_model_order():
    x = _images()
    pre = Preprocessing(channel_order="bgr", mean=(0.1, 0.2, 0.3))  # B, G, R means
    assert pre.channel_order == "BGR"
    expected = x.flip(1) - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(_seen(pre, x), expected)
    torch.testing.assert_close(_seen(Preprocessing(channel_order="BGR"), x)[:, 0], x[:, 2])


def test_nhwc_moves_channels_last_and_nhw_drops_a_single_channel():
    x = _images(c=3, h=4, w=5)
    seen = _seen(Preprocessing(layout="NHWC"), x)
    assert seen.shape == (2, 4, 5, 3)
    torch.testing.assert_close(seen[:, 1, 2], x[:, :, 1, 2])
    gray = _images(c=1)
    assert torch.equal(_seen(Preprocessing(layout="NHW"), gray), gray[:, 0])
    with pytest.raises(ValueError, match="single-channel"):
        _seen(Preprocessing(layout="NHW"), x)


def test_flat_gives_each_image_as_one_vector_in_chw_order():
    x = _images(c=3, h=4, w=5)
    pre = Preprocessing(layout="FLAT")
    assert pre.layout == "flat" and not pre.is_identity
    seen = _seen(pre, x)
    assert seen.shape == (2, 60) and torch.equal(seen[:, 20 + 5 * 1 + 2], x[:, 1, 1, 2])


def test_wrapper_rejects_non_image_input_and_non_modules():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        PreprocessedModel(Recorder(), Preprocessing())(torch.rand(2, 3))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        PreprocessedModel(lambda x: x, Preprocessing())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Preprocessing"):
        PreprocessedModel(Recorder(), {"layout": "NHWC"})  # type: ignore[arg-type]


def test_gradients_reach_the_unit_interval_input():
    conv = nn.Conv2d(3, 2, 3)
    model = nn.Sequential(conv, nn.Flatten(), nn.LazyLinear(4))
    pre = Preprocessing(value_range=(0, 255), mean=(120.0,), std=(60.0,), channel_order="BGR")
    wrapped = PreprocessedModel(model, pre)
    x = _images(c=3, h=6, w=6).requires_grad_()
    wrapped(x)[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()


def test_wrapper_follows_dtype_and_device_moves():
    wrapped = PreprocessedModel(Recorder(), Preprocessing(mean=(0.5,), std=(0.25,))).double()
    x = _images().double()
    torch.testing.assert_close(wrapped(x), (x - 0.5) / 0.25)


def test_to_dict_round_trip_and_string_value_range():
    pre = Preprocessing(value_range=(0, 255), mean=[1, 2, 3], std=[4, 5, 6], channel_order="BGR", layout="NHWC")
    assert pre.mean == (1.0, 2.0, 3.0)
    d = pre.to_dict()
    assert d == {
        "value_range": [0.0, 255.0],
        "mean": [1.0, 2.0, 3.0],
        "std": [4.0, 5.0, 6.0],
        "channel_order": "BGR",
        "layout": "NHWC",
    }
    assert Preprocessing.from_dict(d) == pre
    assert Preprocessing.from_dict({"value_range": "-1-1"}).value_range == (-1.0, 1.0)
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        Preprocessing.from_dict({"scale": 2})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-1", (0.0, 1.0)),
        ("0-255", (0.0, 255.0)),
        ("-1-1", (-1.0, 1.0)),
        ("0,255", (0.0, 255.0)),
        ("[-1, 1]", (-1.0, 1.0)),
        ("-0.5,0.5", (-0.5, 0.5)),
    ],
)
def test_parse_value_range(text, expected):
    assert parse_value_range(text) == expected


def test_parse_value_range_rejects_nonsense():
    with pytest.raises(ValueError, match="value range must be one of"):
        parse_value_range("bright")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"value_range": (1, 0)}, "low < high"),
        ({"value_range": (0, 1, 2)}, "low < high"),
        ({"std": (0.5, 0.0)}, "std must be positive"),
        ({"mean": (0.1, 0.2), "std": (1.0, 1.0, 1.0)}, "same length"),
        ({"mean": "0.5"}, "mean must be a sequence"),
        ({"mean": (float("nan"),)}, "finite"),
        ({"channel_order": "GBR"}, "channel_order must be one of"),
        ({"layout": "CHW"}, "layout must be one of"),
    ],
)
def test_invalid_preprocessing_is_refused(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Preprocessing(**kwargs)


def test_is_probabilities_tells_softmax_from_logits():
    logits = torch.randn((8, 10), generator=torch.Generator().manual_seed(1)) * 3
    assert is_probabilities(torch.softmax(logits, 1))
    assert not is_probabilities(logits)
    assert not is_probabilities(torch.sigmoid(logits))  # non-negative but rows do not sum to 1
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        is_probabilities(torch.rand(10))


def test_log_probabilities_agree_for_logits_and_probabilities():
    logits = torch.randn((4, 6), generator=torch.Generator().manual_seed(2))
    expected = torch.log_softmax(logits, 1)
    torch.testing.assert_close(log_probabilities(logits, outputs_probabilities=False), expected)
    from_probabilities = log_probabilities(torch.softmax(logits, 1), outputs_probabilities=True)
    torch.testing.assert_close(from_probabilities, expected)
    zero = log_probabilities(torch.tensor([[1.0, 0.0]]), outputs_probabilities=True)
    assert torch.isfinite(zero).all()  # a probability of exactly 0 gives a large negative number, not -inf


def test_log_probabilities_keep_the_gradient_of_a_label_far_below_the_top():
    logits = torch.tensor([[0.0, -45.0]], requires_grad=True)  # the second label's probability: e^-45, about 3e-20
    log_probabilities(torch.softmax(logits, 1), outputs_probabilities=True)[0, 1].backward()
    assert logits.grad is not None
    torch.testing.assert_close(logits.grad, torch.tensor([[-1.0, 1.0]]), atol=1e-6, rtol=0)  # d log p1 / dz = 1 - p
