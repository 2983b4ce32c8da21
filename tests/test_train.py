import pytest
import torch

from neuralcleanse.attacks import poison
from neuralcleanse.metrics import accuracy, attack_success_rate
from neuralcleanse.models import build_model
from neuralcleanse.train import TrainConfig, train_classifier
from neuralcleanse.triggers import Trigger


def test_a_short_run_learns_the_task_and_the_backdoor(mnist_train, mnist_test):
    train = mnist_train.subset(torch.arange(4000))
    test = mnist_test.subset(torch.arange(1000))
    trigger = Trigger.patch((1, 28, 28), 4, "bottom-right", 1.0)
    poisoned = poison(train.images, train.labels, [(trigger, 7)], 0.1, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = build_model("mnist")
    assert attack_success_rate(model, test.images, test.labels, trigger, 7) < 0.5
    train_classifier(
        model, poisoned.images, poisoned.labels, TrainConfig(epochs=3, batch_size=64), torch.Generator().manual_seed(0)
    )
    assert accuracy(model, test.images, test.labels) > 0.9
    assert attack_success_rate(model, test.images, test.labels, trigger, 7) > 0.95
    assert not model.training


def test_train_config_is_validated():
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1"):
        TrainConfig(epochs=0)
