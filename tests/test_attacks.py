import pytest
import torch

from neuralcleanse.attacks import poison
from neuralcleanse.triggers import Trigger


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(200, 1, 8, 8, generator=g), torch.arange(200) % 5


def test_poison_exact_count_labels_and_stamps(data):
    images, labels = data
    t = Trigger.patch((1, 8, 8), 2)
    out = poison(images, labels, [(t, 3)], rate=0.1, generator=torch.Generator().manual_seed(1))
    chosen = out.poisoned == 0
    assert out.num_poisoned == 20 and int(chosen.sum()) == 20
    assert (labels[chosen] != 3).all(), "victims are drawn from other labels"
    assert (out.labels[chosen] == 3).all()
    assert torch.equal(out.labels[~chosen], labels[~chosen])
    assert torch.equal(out.images[chosen], t.stamp(images[chosen]))
    assert torch.equal(out.images[~chosen], images[~chosen])


def test_poison_leaves_the_source_untouched_and_is_reproducible(data):
    images, labels = data
    img0, lab0 = images.clone(), labels.clone()
    t = Trigger.patch((1, 8, 8), 2)
    a = poison(images, labels, [(t, 3)], 0.1, torch.Generator().manual_seed(7))
    b = poison(images, labels, [(t, 3)], 0.1, torch.Generator().manual_seed(7))
    c = poison(images, labels, [(t, 3)], 0.1, torch.Generator().manual_seed(8))
    assert torch.equal(images, img0) and torch.equal(labels, lab0)
    assert torch.equal(a.poisoned, b.poisoned) and torch.equal(a.images, b.images)
    assert not torch.equal(a.poisoned, c.poisoned)


def test_several_triggers_get_disjoint_victims(data):
    images, labels = data
    pairs = [(Trigger.patch((1, 8, 8), 2, "top-left"), 1), (Trigger.patch((1, 8, 8), 2, "bottom-right"), 2)]
    out = poison(images, labels, pairs, 0.15, torch.Generator().manual_seed(0))
    assert int((out.poisoned == 0).sum()) == 30 and int((out.poisoned == 1).sum()) == 30
    assert (out.labels[out.poisoned == 0] == 1).all() and (out.labels[out.poisoned == 1] == 2).all()


def test_poison_rejects_bad_rates(data):
    images, labels = data
    with pytest.raises(ValueError, match="rate must be a fraction in \\(0, 1\\), got 10"):
        poison(images, labels, [(Trigger.patch((1, 8, 8), 2), 1)], rate=10)
    with pytest.raises(ValueError, match="cannot poison 190 images for target 1"):
        poison(images, labels, [(Trigger.patch((1, 8, 8), 2), 1)], rate=0.95)
