import pytest
import torch

from neuralcleanse.compactness import WINDOW_SHARE, compactness


def _masks(*drawn: torch.Tensor) -> torch.Tensor:
    return torch.stack(drawn).unsqueeze(1)  # (K, 1, H, W)


def test_a_sticker_is_compact_and_a_stroke_across_the_image_is_not():
    sticker, stroke, blend = torch.zeros(28, 28), torch.zeros(28, 28), torch.full((28, 28), 0.1)
    sticker[20:24, 3:7] = 1.0  # a 4x4 square in a corner
    stroke[2:26, 13:15] = 0.6  # a vertical bar two pixels wide, like a digit 1
    shares = compactness(_masks(sticker, stroke, blend))  # window: a quarter of 28, 7 pixels
    assert shares[0] == pytest.approx(1.0)
    assert shares[1] == pytest.approx(7 / 24)  # 7 of the bar's 24 rows fit in one window
    assert shares[2] == pytest.approx(49 / 784)  # an even mask: the window's share of the image


def test_the_window_follows_the_image_and_can_be_given():
    square = torch.zeros(32, 32)
    square[0:8, 0:8] = 1.0  # fits the default window of 32x32 images (8 pixels) exactly
    assert compactness(_masks(square)).item() == pytest.approx(1.0)
    assert compactness(_masks(square), window=4).item() == pytest.approx(0.25)
    assert WINDOW_SHARE * 32 == 8


def test_an_empty_mask_has_no_share_and_bad_input_says_what_was_expected():
    assert compactness(torch.zeros(2, 1, 10, 10)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"expected masks \(K, 1, H, W\), got \(3, 28, 28\)"):
        compactness(torch.zeros(3, 28, 28))
    with pytest.raises(ValueError, match="window must be 1 to 10 pixels for 10x10 masks, got 11"):
        compactness(torch.zeros(1, 1, 10, 10), window=11)
