"""The blend search and its verdict (blends.py), on hand-built models whose backdoor is known by construction."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from _tiny import NUM_LABELS, TARGET, BlendNet, TemplateNet, blend_backdoored, clean_images, pair_templates

from neuralcleanse.blends import BLEND_RATIO, NATURAL_BLEND_RATIO, blend_companions, blend_suspects
from neuralcleanse.config import ScanConfig
from neuralcleanse.decision import SMALL_RATIO
from neuralcleanse.jobs.mitigate import flagged_triggers
from neuralcleanse.reverse import ReverseConfig, reverse_engineer
from neuralcleanse.scan import NeuralCleanse
from neuralcleanse.store.scan_dir import TRIGGERS_FILE, read_scan, write_scan_report


@pytest.fixture(scope="module")
def blend_scan():
    model, (images, labels) = blend_backdoored()
    return NeuralCleanse(model).scan(images, labels, seed=0)


def test_a_blend_backdoor_is_flagged_by_its_blend_trigger(blend_scan):
    report = blend_scan
    assert report.flagged == [TARGET] and report.blend_flagged == [TARGET]
    blend = torch.tensor([r.blend_l1 for r in report.labels])
    mask = torch.tensor([r.mask_l1 for r in report.labels])
    # the target's blend is a fraction of the other labels', far more so than its mask
    assert blend[TARGET] / blend.median() < BLEND_RATIO
    assert mask[TARGET] / mask.median() > 2 * blend[TARGET] / blend.median()


def test_the_blend_trigger_is_one_opacity_that_reaches_the_target():
    model, (images, labels) = blend_backdoored()
    result = reverse_engineer(model, images, [TARGET], ReverseConfig(shape="blend", max_epochs=60, lr=0.1))
    m = result.masks[0]
    assert torch.allclose(m, m.flatten()[0].expand_as(m)), "one opacity over the whole image"
    assert result.norms[0] == pytest.approx(float(m.sum()), rel=1e-5)
    stamped = (1 - m) * images[labels != TARGET] + m * result.patterns[0]
    assert (model(stamped).argmax(1) == TARGET).float().mean() >= 0.99


def test_a_model_without_the_blend_backdoor_flags_nothing():
    model, (images, labels) = blend_backdoored()
    model.gain = 0.0  # the same templates, no backdoor
    report = NeuralCleanse(model).scan(images, labels, seed=0)
    assert report.flagged == [] and report.blend_flagged == [] and not report.infected


def test_without_the_blend_search_nothing_of_it_is_reported():
    images, labels = clean_images(per_label=20)
    for config in (ScanConfig(blend=False), ScanConfig(decision="paper")):
        report = NeuralCleanse(TemplateNet(backdoor=True), config).scan(images, labels, seed=0)
        assert report.flagged == [TARGET] and report.blend_flagged == []
        assert all(r.blend_l1 is None for r in report.labels)
        assert report.to_dict()["config"]["blend"] is False


def test_a_patch_backdoor_keeps_its_verdict_with_the_blend_search():
    images, labels = clean_images(per_label=20)
    report = NeuralCleanse(TemplateNet(backdoor=True)).scan(images, labels, seed=0)
    assert report.flagged == [TARGET] and report.mask_flagged == [TARGET] and report.blend_cleared == []
    assert all(r.blend_l1 is not None for r in report.labels)


def test_blend_suspects_need_the_order_statistic_and_the_ratio():
    natural = torch.tensor([60.0, 62.0, 65.0, 66.0, 70.0, 72.0, 75.0, 64.0, 68.0, 71.0])
    assert blend_suspects(natural) == []
    with_target = natural.clone()
    with_target[3] = 6.0
    assert blend_suspects(with_target) == [3]
    near = natural.clone()
    near[3] = 1.2 * BLEND_RATIO * float(natural.median())  # far below the others, but not under the ratio
    assert blend_suspects(near) == []


def test_labels_flagged_beside_a_blend_target_are_cleared_unless_smaller():
    mask = torch.tensor([10.0, 30.0, 40.0, 100.0, 100.0])
    blend = torch.tensor([60.0, 60.0, 6.0, 60.0, 60.0])
    # blend target 2 (mask 40): label 1, smaller by mask, stays (a patch target); label 3 is cleared
    assert blend_companions(mask, [1, 2, 3], [2], blend) == [3]
    assert blend_companions(mask, [1, 3], [], blend) == []


def test_a_flagged_label_with_a_small_blend_norm_is_another_target_not_a_companion():
    # A several-target patch model: targets 0 and 2 by both searches; target 3's mask is larger than theirs, and
    # its blend norm, over the suspects' ratio, lies well under a natural label's: it stays flagged.
    mask = torch.tensor([10.0, 100.0, 15.0, 30.0, 100.0, 90.0, 110.0])
    blend = torch.tensor([12.0, 60.0, 15.0, 0.4 * 60.0, 60.0, 65.0, 55.0])
    assert blend_suspects(blend) == [0, 2]
    assert blend_companions(mask, [0, 2, 3], [0, 2], blend) == []
    natural = blend.clone()
    natural[3] = NATURAL_BLEND_RATIO * float(blend.median())
    assert blend_companions(mask, [0, 2, 3], [0, 2], natural) == [3]
    # a mask small enough to be flagged by size alone keeps a label flagged, however natural its blend norm
    small = mask.clone()
    small[3] = 0.9 * SMALL_RATIO * float(mask.median())
    assert blend_companions(small, [0, 2, 3], [0, 2], natural) == []


def test_pair_templates_keep_the_clean_images_pairs_even():
    reads = pair_templates()
    assert torch.equal(reads[..., 0::2], reads[..., 1::2])
    assert reads.sum(dim=(1, 2)).min() >= 20 and reads.shape[0] == NUM_LABELS
    assert isinstance(blend_backdoored()[0], BlendNet)


def test_a_blend_targets_trigger_is_its_blend_trigger_in_the_report_and_its_folder(blend_scan, tmp_path):
    model, (images, labels) = blend_backdoored()
    assert blend_scan.mask_flagged == [TARGET]  # flagged by both searches: its blend trigger is kept
    trigger = blend_scan.trigger(TARGET)
    m = trigger.mask
    assert torch.allclose(m, m.flatten()[0].expand_as(m)), "one opacity over the whole image"
    assert float(m.sum()) == pytest.approx(blend_scan.labels[TARGET].blend_l1, rel=1e-4)
    assert (model(trigger.stamp(images[labels != TARGET])).argmax(1) == TARGET).float().mean() >= 0.99
    natural = next(r.label for r in blend_scan.labels if r.label != TARGET)
    assert torch.equal(blend_scan.trigger(natural).mask, blend_scan.masks[natural])  # the mask search's

    write_scan_report(blend_scan, tmp_path)
    with np.load(tmp_path / TRIGGERS_FILE) as arrays:
        assert np.allclose(arrays["blend_l1"], [r.blend_l1 for r in blend_scan.labels])
        assert np.allclose(arrays["masks"][TARGET], blend_scan.masks[TARGET].numpy())
    _, by_label, _ = read_scan(tmp_path)
    assert np.allclose(by_label[TARGET][0], m.numpy()) and np.allclose(by_label[TARGET][1], trigger.pattern.numpy())
    assert np.allclose(by_label[natural][0], blend_scan.masks[natural].numpy())
    [(label, chosen)] = flagged_triggers(tmp_path)  # what `mitigate` repairs the model with
    assert label == TARGET and "blend" in chosen.spec and torch.allclose(chosen.mask, m)
    html = (tmp_path / "report.html").read_text()
    assert f"Reversed blend trigger of flagged label {TARGET}" in html
    assert "flagged by the blend search &middot;" in html

    write_scan_report(replace(blend_scan, mask_flagged=[]), tmp_path / "alone")  # as if the blend search alone had
    html = (tmp_path / "alone" / "report.html").read_text()
    assert "flagged by the blend search alone" in html and "FLAGGED (blend)" in html


def test_without_a_blend_flag_every_trigger_is_the_mask_searchs(tmp_path):
    images, labels = clean_images(per_label=20)
    report = NeuralCleanse(TemplateNet(backdoor=True)).scan(images, labels, seed=0)
    assert report.blend_flagged == [] and report.blend_masks is not None
    assert all(report.trigger(r.label).mask.equal(report.masks[i]) for i, r in enumerate(report.labels))
    write_scan_report(report, tmp_path)
    _, by_label, _ = read_scan(tmp_path)
    assert np.allclose(by_label[TARGET][0], report.masks[TARGET].numpy())
    assert "blend" not in flagged_triggers(tmp_path)[0][1].spec
