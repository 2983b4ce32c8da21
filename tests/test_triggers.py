import pytest
import torch

from neuralcleanse.triggers import Trigger, parse_trigger


def test_patch_stamps_exact_values_and_leaves_the_rest():
    x = torch.rand(3, 3, 10, 10)
    t = Trigger.patch((3, 10, 10), size=4, position="bottom-right", color=(1.0, 0.0, 0.5))
    out = t.stamp(x)
    assert torch.equal(out[:, 0, 6:, 6:], torch.ones(3, 4, 4))
    assert torch.equal(out[:, 1, 6:, 6:], torch.zeros(3, 4, 4))
    assert torch.equal(out[:, 2, 6:, 6:], torch.full((3, 4, 4), 0.5))
    outside = t.mask.expand(3, 3, 10, 10) == 0
    assert torch.equal(out[outside], x[outside])
    assert t.l1 == 16


@pytest.mark.parametrize(
    ("position", "top_left"),
    [("top-left", (0, 0)), ("top-right", (0, 7)), ("bottom-left", (7, 0)), ("center", (3, 3)), ((2, 5), (2, 5))],
)
def test_patch_positions(position, top_left):
    t = Trigger.patch((1, 10, 10), size=3, position=position)
    rows, cols = torch.nonzero(t.mask[0], as_tuple=True)
    assert (int(rows.min()), int(cols.min())) == top_left


def test_margin_moves_the_patch_off_the_border():
    t = Trigger.patch((1, 28, 28), size=4, position="bottom-right", margin=1)
    assert t.mask[0, 23:27, 23:27].sum() == 16 and t.mask[0, 27].sum() == 0


def test_blend_mixes_with_opacity():
    pattern = torch.rand(3, 8, 8)
    t = Trigger.blend(pattern, alpha=0.2)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(t.stamp(x), 0.8 * x + 0.2 * pattern)


def test_random_patch_is_binary_and_reproducible():
    a = Trigger.random_patch((3, 16, 16), size=5, seed=3)
    b = Trigger.random_patch((3, 16, 16), size=5, seed=3)
    assert torch.equal(a.pattern, b.pattern)
    values = set(a.pattern[:, 11:, 11:].unique().tolist())
    assert values <= {0.0, 1.0} and len(values) == 2


def test_pixels_are_scattered_single_pixels_reproducible_from_their_seed():
    t = parse_trigger("pixels:count=6,seed=2,color=0.2/0.4/0.6", (3, 16, 16))
    assert t.l1 == 6 and set(t.mask.unique().tolist()) == {0.0, 1.0}
    where = t.mask[0].nonzero()
    assert (where.max(0).values - where.min(0).values).max() > 3  # no patch: spread over the image
    assert torch.allclose(t.pattern[:, where[:, 0], where[:, 1]], torch.tensor([[0.2], [0.4], [0.6]]).expand(3, 6))
    assert t.pattern.sum() == pytest.approx(6 * 1.2)  # nothing painted outside the pixels
    assert torch.equal(t.mask, parse_trigger("pixels:count=6,seed=2", (1, 16, 16)).mask)
    assert not torch.equal(t.mask, parse_trigger("pixels:count=6,seed=3", (1, 16, 16)).mask)


def test_image_patch(tmp_path):
    from PIL import Image

    Image.new("RGB", (2, 2), (255, 0, 0)).save(tmp_path / "p.png")
    t = parse_trigger(f"image:path={tmp_path / 'p.png'},size=4", (3, 12, 12))
    assert torch.equal(t.pattern[:, 8:, 8:], torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 4, 4))


def test_stamp_does_not_mutate_its_input():
    x = torch.rand(2, 1, 6, 6)
    before = x.clone()
    Trigger.patch((1, 6, 6), 2).stamp(x)
    assert torch.equal(x, before)


def test_parse_trigger_forms():
    t = parse_trigger("square:size=3,position=top-left,color=black", (1, 8, 8))
    assert t.mask[0, :3, :3].sum() == 9 and t.pattern.sum() == 0
    assert parse_trigger("square", (1, 28, 28)).mask[0, 24:, 24:].sum() == 16
    assert parse_trigger("square:position=2/3", (1, 28, 28)).mask[0, 2, 3] == 1
    assert torch.allclose(parse_trigger("blend:alpha=0.3", (3, 8, 8)).mask, torch.full((1, 8, 8), 0.3))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("star", "unknown kind 'star'"),
        ("square:size=40", "patch size must be between 1"),
        ("square:colour=white", "unknown option(s) ['colour']"),
        ("square:size", "expected key=value"),
        ("pixels:count=0", "count must be between 1 and the image's 784 pixels"),
        ("pixels:size=3", "unknown option(s) ['size']"),
        ("square:position=middle", "position must be one of"),
        ("blend:alpha=2", "alpha must be a fraction"),
        ("image:path=/nonexistent.png", "trigger image not found"),
    ],
)
def test_parse_trigger_errors(spec, message):
    with pytest.raises(ValueError) as info:
        parse_trigger(spec, (1, 28, 28))
    assert message in str(info.value)


def test_invalid_masks_are_refused():
    with pytest.raises(ValueError, match=r"mask must have shape \(1, H, W\)"):
        Trigger(torch.zeros(2, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        Trigger(torch.full((1, 4, 4), 2.0), torch.zeros(1, 4, 4))
