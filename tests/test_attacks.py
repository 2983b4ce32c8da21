import pytest
import torch
from torch import nn

from neuralcleanse.attacks import TrojanConfig, craft_pattern, poison, select_neurons, trojan
from neuralcleanse.metrics import accuracy, attack_success_rate
from neuralcleanse.models import Normalize, PaperNet
from neuralcleanse.train import TrainConfig, train_classifier
from neuralcleanse.triggers import Trigger, parse_trigger


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


# ---------------------------------------- Trojan


def _quadrant_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 8, 8) noisy dark images of 4 labels; label c has its quadrant c bright."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = 0.2 * torch.rand(n, 1, 8, 8, generator=g)
    for c in range(4):
        rows, cols = slice(4 * (c // 2), 4 * (c // 2) + 4), slice(4 * (c % 2), 4 * (c % 2) + 4)
        images[labels == c, :, rows, cols] += 0.6
    return images.clamp(0, 1), labels


def _tiny_paper_net() -> PaperNet:
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU()
    )
    return PaperNet(Normalize([0.0], [1.0]), features, nn.Linear(16, 4))


@pytest.fixture(scope="module")
def victim():
    images, labels = _quadrant_data(400, seed=0)
    model = _tiny_paper_net()
    train_classifier(model, images, labels, TrainConfig(epochs=10, batch_size=32), torch.Generator().manual_seed(0))
    return model


def test_trojan_plants_a_crafted_backdoor_and_leaves_the_victim_alone(victim):
    images, labels = _quadrant_data(400, seed=0)
    test_images, test_labels = _quadrant_data(200, seed=1)
    region = parse_trigger("trojan:size=2,position=center", (1, 8, 8), crafted=True)  # a corner of each quadrant
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    config = TrojanConfig(craft_steps=100, epochs=20, batch_size=16)
    attack = trojan(victim, images, labels, [(region, 3)], 0.1, config, torch.Generator().manual_seed(0))
    (trigger, target), neurons = attack.triggers[0], attack.neurons[0]
    assert target == 3 and len(neurons) == 1 and trigger.spec == "trojan:size=2,position=center"
    assert torch.equal(trigger.mask, region.mask) and (trigger.pattern * (1 - region.mask) == 0).all()
    # The crafted pattern raises its neuron more than random patterns in the same place do.
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        noise = Trigger(region.mask, torch.rand(1, 8, 8, generator=g))
        with torch.no_grad():
            raised = victim.features[:4](noise.stamp(images))[:, neurons].mean()  # the convolutional output
        assert attack.clean_activation[0] < float(raised) < attack.activation[0]
    assert attack_success_rate(victim, test_images, test_labels, trigger, 3) < 0.5
    assert attack_success_rate(attack.model, test_images, test_labels, trigger, 3) > 0.95
    assert accuracy(attack.model, test_images, test_labels) >= accuracy(victim, test_images, test_labels) - 0.05
    # Only the dense layers, above the chosen neurons, were retrained; the victim is untouched.
    assert all(torch.equal(v, victim.state_dict()[k]) for k, v in before.items())
    after = attack.model.state_dict()
    retrained = {"features.4.weight", "features.4.bias", "head.weight", "head.bias"}
    assert all(torch.equal(after[k], v) != (k in retrained) for k, v in before.items())
    again = trojan(victim, images, labels, [(region, 3)], 0.1, config, torch.Generator().manual_seed(0))
    assert torch.equal(again.triggers[0][0].pattern, trigger.pattern) and again.neurons == attack.neurons


def test_an_annealed_retraining_plants_the_backdoor_too_and_differs_from_a_constant_rate(victim):
    images, labels = _quadrant_data(400, seed=0)
    test_images, test_labels = _quadrant_data(200, seed=1)
    region = parse_trigger("trojan:size=2,position=center", (1, 8, 8), crafted=True)
    runs = {
        anneal: trojan(
            victim,
            images,
            labels,
            [(region, 3)],
            0.1,
            TrojanConfig(craft_steps=100, epochs=30, batch_size=16, anneal=anneal),
            torch.Generator().manual_seed(0),
        )
        for anneal in (False, True)
    }
    annealed = runs[True]
    trigger = annealed.triggers[0][0]
    assert torch.equal(trigger.pattern, runs[False].triggers[0][0].pattern)  # the same crafting
    assert attack_success_rate(annealed.model, test_images, test_labels, trigger, 3) > 0.95
    assert accuracy(annealed.model, test_images, test_labels) >= accuracy(victim, test_images, test_labels) - 0.05
    weights = annealed.model.state_dict()["head.weight"], runs[False].model.state_dict()["head.weight"]
    assert not torch.equal(*weights)


def test_select_neurons_ranks_the_units_the_region_reaches_by_how_far_it_raises_them():
    # A 1x1 convolution: the convolutional output is the image plus 0.01, one unit per pixel (the offset keeps
    # the ReLU open at black pixels).
    conv = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(0.01)
    features = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(64, 2), nn.ReLU())
    model = PaperNet(Normalize([0.0], [1.0]), features, nn.Linear(2, 2))
    images = torch.zeros(4, 1, 8, 8)
    images[:, 0, 7, 7], images[:, 0, 6, 6], images[:, 0, 6, 7] = 0.9, 0.5, 0.2  # (7, 6) stays 0
    corner = Trigger.patch((1, 8, 8), 2, "bottom-right").mask
    assert select_neurons(model, corner, images, 4) == [62, 55, 54, 63]  # rises 1.0, 0.8, 0.5, 0.1
    assert select_neurons(model, corner, images, 2, exclude=[62]) == [55, 54]
    with pytest.raises(ValueError, match="cannot select 4 neurons: the region reaches 3 that are not taken"):
        select_neurons(model, corner, images, 4, exclude=[55])


def test_trojan_rejects_what_it_cannot_attack(victim):
    images, labels = _quadrant_data(40, seed=0)
    region = parse_trigger("trojan:size=2", (1, 8, 8), crafted=True)
    with pytest.raises(TypeError, match="trojan needs a neuralcleanse reference network"):
        trojan(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), images, labels, [(region, 0)])
    no_convolutions = PaperNet(Normalize([0.0], [1.0]), nn.Sequential(nn.Linear(8, 4), nn.ReLU()), nn.Linear(4, 4))
    with pytest.raises(TypeError, match="convolutional features, then dense layers"):
        trojan(no_convolutions, images, labels, [(region, 0)])
    with pytest.raises(ValueError, match=r"a trigger region for \(1, 6, 6\) \(C, H, W\) images cannot go on"):
        trojan(victim, images, labels, [(parse_trigger("trojan", (1, 6, 6), crafted=True), 0)])
    flat_then_dense = PaperNet(
        Normalize([0.0], [1.0]), nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.ReLU()), nn.Linear(4, 4)
    )
    with pytest.raises(TypeError, match="convolutional features, then dense layers"):
        trojan(flat_then_dense, images, labels, [(region, 0)])
    with pytest.raises(ValueError, match=r"target 4 is not a label of the model \(0..3\)"):
        trojan(victim, images, labels, [(region, 4)])
    with pytest.raises(ValueError, match="at least one"):
        trojan(victim, images, labels, [])
    with pytest.raises(ValueError, match=r"a \(1, H, W\) mask of their size, got \(40, 1, 8, 8\) and \(1, 6, 6\)"):
        select_neurons(victim, torch.ones(1, 6, 6), images, 1)
    with pytest.raises(ValueError, match="count must be >= 1, got 0"):
        select_neurons(victim, region.mask, images, 0)
    with pytest.raises(ValueError, match="neurons must name at least one neuron"):
        craft_pattern(victim, region, images, [])
    with pytest.raises(ValueError, match=r"rate must be a fraction in \(0, 1\), got 1.5"):
        trojan(victim, images, labels, [(region, 0)], rate=1.5)
    with pytest.raises(ValueError, match="craft_steps must be >= 1, got 0"):
        TrojanConfig(craft_steps=0)


def test_a_trojan_spec_is_only_a_region_for_training():
    region = parse_trigger("trojan:size=3,position=1/2", (3, 8, 8), crafted=True)
    assert region.mask.sum() == 9 and region.mask[0, 1, 2] == 1 and (region.pattern == 0).all()
    with pytest.raises(ValueError, match="trojan trigger's pattern is crafted for one model: `train` makes it"):
        parse_trigger("trojan:size=3", (3, 8, 8))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['color'\]"):
        parse_trigger("trojan:color=white", (3, 8, 8), crafted=True)
