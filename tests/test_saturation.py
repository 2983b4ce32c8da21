"""Softmax models confident enough to round labels to 0 where a trigger search starts (hand-built, see _tiny.py)."""

import torch
from _tiny import ConfidentSoftmax, TemplateNet, clean_images

from neuralcleanse.config import FAST
from neuralcleanse.reverse import ReverseConfig
from neuralcleanse.saturation import Float64LogProbabilities, saturates


def test_a_softmax_that_rounds_a_label_to_zero_on_noisy_images_saturates():
    images, _ = clean_images(per_label=20)
    assert not saturates(ConfidentSoftmax(TemplateNet(True), 1.0), images)
    # times 8: labels far below 1e-12 on noisy images, still above float32's floor
    assert not saturates(ConfidentSoftmax(TemplateNet(True), 8.0), images)
    assert saturates(ConfidentSoftmax(TemplateNet(True), 20.0), images)


def test_float64_log_probabilities_keep_what_float32_rounds_to_zero():
    images, _ = clean_images(per_label=2)
    model = ConfidentSoftmax(TemplateNet(True), 40.0)
    x = images[:4].clone().requires_grad_(True)
    assert bool((model(x) == 0).any())  # float32 loses some labels entirely
    log_p = Float64LogProbabilities(model)(x)
    assert log_p.dtype == torch.float32 and bool(torch.isfinite(log_p).all())
    expected = torch.log_softmax(TemplateNet(True)(images[:4]).double() * 40.0, dim=1).float()
    torch.testing.assert_close(log_p, expected, atol=1e-3, rtol=1e-5)
    log_p[:, 1].sum().backward()  # a label hundreds of nats below the top still moves the input
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_the_probe_stamps_its_images_as_the_search_starts():
    images, _ = clean_images(per_label=20)
    model = ConfidentSoftmax(TemplateNet(True), 8.0)
    # masks drawn at 0 leave the clean images, where the network is surest of itself: labels round to 0 there ...
    assert saturates(model, images, config=ReverseConfig(init_range=(0.0, 0.0)))
    # ... but not on the noisy images fast mode's searches start from
    assert not saturates(model, images, config=FAST)
