"""A borderline verdict's second scan: when it runs, and what the joined report flags and keeps."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from _tiny import TARGET, TemplateNet, clean_images

import neuralcleanse.jobs.scan as jobs_scan
import neuralcleanse.second_scan as second_scan
from neuralcleanse.cli import main
from neuralcleanse.config import ScanConfig
from neuralcleanse.scan import NeuralCleanse, borderline_warning
from neuralcleanse.second_scan import join_scans, wants_second_scan


@pytest.fixture(scope="module")
def scans():
    """A clean model's scan (seed 0) and an infected one's (seed 1, other images) of the same labels."""
    first = NeuralCleanse(TemplateNet(backdoor=False)).scan(*clean_images(per_label=20, seed=0), seed=0)
    second = NeuralCleanse(TemplateNet(backdoor=True)).scan(*clean_images(per_label=20, seed=1), seed=1)
    assert first.flagged == [] and second.flagged == [TARGET]
    return first, second


def test_the_joined_report_flags_what_either_scan_flags_with_the_trigger_that_flagged_it(scans):
    first, second = scans
    first = replace(first, steadiness=0.6, warnings=[borderline_warning(0.6) + "; scan again"])
    joined = join_scans(first, second)
    assert joined.infected and joined.flagged == [TARGET] and joined.mask_flagged == [TARGET]
    assert joined.second_scan is not None and joined.second_scan.added == [TARGET]
    assert joined.second_scan.seed == 1 and joined.second_scan.flagged == [TARGET]
    # The added label's row and trigger are the second scan's (a mitigation then uses the trigger that flagged it);
    # every other label's are the first scan's, as are its decision, seed and steadiness.
    assert joined.labels[TARGET] == second.labels[TARGET] and torch.equal(joined.masks[TARGET], second.masks[TARGET])
    assert torch.equal(joined.trigger(TARGET).mask, second.masks[TARGET])
    assert torch.equal(joined.blend_masks[TARGET], second.blend_masks[TARGET])
    others = [i for i in range(len(first.labels)) if i != TARGET]
    assert all(joined.labels[i] == first.labels[i] for i in others)
    assert torch.equal(joined.masks[others], first.masks[others])
    assert joined.decision == first.decision and joined.seed == 0 and joined.steadiness == 0.6
    assert joined.seconds == pytest.approx(first.seconds + second.seconds)
    # The borderline warning no longer asks for a second scan: it says what the second scan found.
    assert len(joined.warnings) == 1 and "scan again" not in joined.warnings[0]
    assert joined.warnings[0].startswith("the verdict is borderline") and f"label {TARGET} added" in joined.warnings[0]
    assert json.loads(json.dumps(joined.to_dict()))["second_scan"]["added"] == [TARGET]


def test_a_second_scan_flagging_nothing_new_adds_nothing(scans):
    first, second = scans
    joined = join_scans(second, first)
    assert joined.flagged == [TARGET] and joined.second_scan is not None and joined.second_scan.added == []
    assert torch.equal(joined.masks, second.masks) and joined.labels == second.labels


def test_scans_of_other_labels_are_not_joined(scans):
    first, second = scans
    with pytest.raises(ValueError, match="the same labels"):
        join_scans(first, replace(second, labels=second.labels[:-1]))


def test_only_a_borderline_verdict_of_a_decision_other_than_the_papers_wants_a_second_scan(scans):
    report = scans[0]
    assert not wants_second_scan(report, ScanConfig())  # steady
    borderline = replace(report, steadiness=0.5)
    assert wants_second_scan(borderline, ScanConfig())
    assert not wants_second_scan(borderline, ScanConfig(second_scan=False))
    assert not wants_second_scan(borderline, ScanConfig(decision="paper"))
    assert not wants_second_scan(replace(report, steadiness=None), ScanConfig())  # too few labels to judge


def test_the_scan_command_scans_a_borderline_verdict_again_with_the_next_seed(tmp_path, capsys, monkeypatch):
    """Every verdict counts as borderline here (the line above which a verdict is steady moved past 1)."""
    torch.jit.script(TemplateNet(backdoor=True)).save(str(tmp_path / "infected.pt"))
    images, labels = clean_images(per_label=40)
    np.savez(tmp_path / "clean.npz", x=(images.numpy() * 255).round().astype(np.uint8), y=labels.numpy())
    monkeypatch.setattr(second_scan, "STEADY", 1.01)
    scan = ["scan", str(tmp_path / "infected.pt"), "--data", str(tmp_path / "clean.npz"), "-q", "--samples", "120"]
    assert main([*scan, "--out", str(tmp_path / "twice")]) == 0
    report = json.loads((tmp_path / "twice" / "report.json").read_text())
    second = report["second_scan"]
    assert report["flagged"] == [TARGET] and second["seed"] == 1 and second["flagged"] == [TARGET]
    assert second["num_images"] == report["num_images"] == 120 and second["added"] == []
    assert report["config"]["second_scan"] and "a second scan (seed 1" in report["warnings"][-1]
    assert "scanned a\nsecond time, with seed 1" in (tmp_path / "twice" / "report.html").read_text()
    capsys.readouterr()
    for flag, out in (("--no-second-scan", "once"), ("--decision=paper", "paper")):
        assert main([*scan, flag, "--out", str(tmp_path / out)]) == 0
        report = json.loads((tmp_path / out / "report.json").read_text())
        assert report["second_scan"] is None and not report["config"]["second_scan"]


def test_ctrl_c_during_the_second_scan_keeps_the_first(tmp_path, capsys, monkeypatch):
    """The second scan is interrupted (as Ctrl-C interrupts it) on its first reversal: the first scan is whole,
    and its report is written, saying so; the command exits 130 naming the folder."""
    torch.jit.script(TemplateNet(backdoor=True)).save(str(tmp_path / "infected.pt"))
    images, labels = clean_images(per_label=40)
    np.savez(tmp_path / "clean.npz", x=(images.numpy() * 255).round().astype(np.uint8), y=labels.numpy())
    monkeypatch.setattr(second_scan, "STEADY", 1.01)
    reverse = jobs_scan.reverse_engineer

    def interrupted_at_seed_1(*args, **kwargs):
        if args[4].initial_seed() == 1:  # (model, images, targets, config, generator, ...)
            raise KeyboardInterrupt
        return reverse(*args, **kwargs)

    monkeypatch.setattr(jobs_scan, "reverse_engineer", interrupted_at_seed_1)
    out = tmp_path / "r"
    scan = ["scan", str(tmp_path / "infected.pt"), "--data", str(tmp_path / "clean.npz"), "-q", "--samples", "120"]
    assert main([*scan, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted during the second scan" in err and str(out) in err and err.count("\n") == 1
    report = json.loads((out / "report.json").read_text())
    assert report["flagged"] == [TARGET] and report["second_scan"] is None and report["seed"] == 0
    assert report["warnings"][-1] == jobs_scan.SECOND_SCAN_INTERRUPTED
    assert not list(tmp_path.rglob("*.tmp"))
