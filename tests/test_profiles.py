"""Natural label profiles: how they are measured, what they discount, and what a scan does with one."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from _tiny import TARGET, TemplateNet, clean_images

from neuralcleanse.cli import main
from neuralcleanse.config import ScanConfig
from neuralcleanse.decision import decide
from neuralcleanse.profiles import (
    LabelProfile,
    ProfileError,
    builtin_profile,
    discounted,
    profile_from_scans,
    resolve_profile,
)
from neuralcleanse.scan import NeuralCleanse


def profile(ratios: list[float], weight: float = 1.0) -> LabelProfile:
    return LabelProfile("test", tuple(math.log(r) for r in ratios), weight, 2, 2, "by hand")


def test_a_profile_is_the_mean_log_ratio_and_its_weight_how_well_one_model_follows_the_others():
    a = [100.0, 50.0, 200.0, 100.0]  # ratios to the median (100): 1, 0.5, 2, 1
    twice = [200.0, 100.0, 400.0, 200.0]  # the same ratios at another scale
    p = profile_from_scans({"a": [a], "b": [twice]}, "same")
    assert p.expected_ratios() == pytest.approx([1, 0.5, 2, 1]) and p.weight == pytest.approx(1)
    assert (p.models, p.scans) == (2, 2)
    # Models that disagree follow each other less: the weight drops, and a single model gives no weight at all.
    other = [100.0, 200.0, 50.0, 100.0]
    assert profile_from_scans({"a": [a], "b": [other]}, "opposed").weight == 0
    assert profile_from_scans({"a": [a, twice]}, "one model").weight == 0
    with pytest.raises(ProfileError, match="one number of labels"):
        profile_from_scans({"a": [a], "b": [a[:3]]}, "mixed")


def test_only_naturally_small_labels_are_discounted():
    norms = torch.tensor([100.0, 20.0, 300.0, 100.0])
    p = profile([1.0, 0.25, 3.0, 1.0], weight=0.5)
    # 20 / 0.25**0.5 = 40; the naturally large label is not made smaller.
    assert discounted(norms, p).tolist() == pytest.approx([100, 40, 300, 100])
    assert discounted(norms, None) is norms
    with pytest.raises(ProfileError, match="has 4 labels, the scan 3"):
        discounted(norms[:3], p)


def test_a_label_as_small_on_clean_models_is_not_flagged_and_a_real_outlier_still_is():
    norms = torch.tensor([100.0, 105, 95, 22, 110, 98, 102, 97, 103, 99])
    natural = profile([1.0, 1.0, 1.0, 0.22, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert decide(norms).flagged == [3]
    assert decide(discounted(norms, natural)).flagged == []
    infected = norms.clone()
    infected[6] = 5.0  # a few pixels' trigger where clean models need the median's
    assert decide(discounted(infected, natural)).flagged == [6]


def test_the_built_in_profiles_fit_their_datasets_and_auto_finds_them(tmp_path):
    for name, labels in (("mnist", 10), ("cifar10", 10)):
        p = builtin_profile(name, labels)
        assert p is not None and p.num_labels == labels and 0 < p.weight <= 1 and p.models >= 10
        assert resolve_profile("auto", name, labels) == p == resolve_profile(name, "folder/of/images", labels)
    # GTSRB's profile is measured on too few clean models to ship: its scans read the norms as they are.
    assert builtin_profile("gtsrb", 43) is None and resolve_profile("auto", "gtsrb", 43) is None
    assert builtin_profile("mnist", 9) is None and resolve_profile("auto", "mnist", 9) is None
    assert resolve_profile("auto", "my-images.npz", 10) is None and resolve_profile("none", "mnist", 10) is None
    (tmp_path / "p.json").write_text(json.dumps(profile([1.0, 0.5, 1.0]).to_dict()))
    assert resolve_profile(str(tmp_path / "p.json"), None, 3).num_labels == 3
    with pytest.raises(ProfileError, match="the profile has 3 labels, the model 10"):
        resolve_profile(str(tmp_path / "p.json"), None, 10)
    with pytest.raises(ProfileError, match="cannot read a profile"):
        resolve_profile(str(tmp_path / "missing.json"), None, 10)


def test_a_scan_reads_its_norms_through_the_profile_and_says_so():
    """The backdoor's corner is a 4-pixel trigger; a profile whose clean models reach label 5 as easily explains it
    away (that is what a profile is for: a label small on every model of the task is no backdoor)."""
    images, labels = clean_images(per_label=20)
    model = TemplateNet(backdoor=True)
    easy = profile([1.0] * 5 + [0.15])
    masks_only = ScanConfig(blend=False, stimulation=False)
    plain = NeuralCleanse(model, masks_only).scan(images, labels, seed=0)
    profiled = NeuralCleanse(model, masks_only, profile=easy).scan(images, labels, seed=0)
    assert plain.flagged == [TARGET] and plain.profile is None and plain.labels[TARGET].natural_ratio is None
    assert profiled.mask_flagged == [] and profiled.profile == easy
    assert profiled.labels[TARGET].natural_ratio == pytest.approx(0.15)
    report = profiled.to_dict()
    assert report["profile"]["name"] == "test" and report["config"]["profile"] == "auto"
    # The same norms either way: only the decision reads them through the profile; the paper's never does.
    assert [r.mask_l1 for r in plain.labels] == [r.mask_l1 for r in profiled.labels]
    paper = NeuralCleanse(model, replace(masks_only, decision="paper"), profile=easy).scan(images, labels, seed=0)
    assert paper.flagged == [TARGET] and paper.profile is None and paper.to_dict()["config"]["profile"] == "none"
    off = NeuralCleanse(model, replace(masks_only, profile="none"), profile=easy).scan(images, labels, seed=0)
    assert off.profile is None and off.mask_flagged == plain.mask_flagged


def test_the_profile_command_measures_clean_scans_and_scan_uses_the_file(tmp_path, capsys):
    def data(seed: int) -> list[str]:
        images, labels = clean_images(per_label=40, template_seed=seed)
        path = tmp_path / f"clean-{seed}.npz"
        np.savez(path, x=(images.numpy() * 255).round().astype(np.uint8), y=labels.numpy())
        return ["--data", str(path), "-q", "--samples", "120", "--no-second-scan", "--no-blend", "--no-stimulation"]

    scans = []
    for seed in (0, 1):  # two clean models whose templates differ
        path = tmp_path / f"clean-{seed}.pt"
        torch.jit.script(TemplateNet(backdoor=False, seed=seed)).save(str(path))
        assert main(["scan", str(path), *data(seed), "--out", str(tmp_path / f"scan-{seed}")]) == 0
        scans.append(str(tmp_path / f"scan-{seed}"))
    common = data(0)
    out = tmp_path / "templates.json"
    assert main(["profile", *scans, "--name", "templates", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["name"] == "templates" and written["models"] == 2 and 0 <= written["weight"] <= 1
    assert len(written["log_ratios"]) == 6 and "2 scans of 2 clean models" in written["source"]
    assert main(["profile", *scans, "--name", "templates", "--out", str(out)]) == 1  # no --overwrite
    assert main(["profile", scans[0], "--name", "one", "--out", str(tmp_path / "one.json")]) == 1
    assert "2 clean models or more" in capsys.readouterr().err
    infected = tmp_path / "infected.pt"
    torch.jit.script(TemplateNet(backdoor=True)).save(str(infected))
    assert main(["scan", str(infected), *common, "--profile", str(out), "--out", str(tmp_path / "scan")]) == 0
    report = json.loads((tmp_path / "scan" / "report.json").read_text())
    assert report["flagged"] == [TARGET] and report["profile"]["name"] == "templates"
    assert report["config"]["profile"] == str(out)
    assert "natural label\nprofile templates (2 clean models" in (tmp_path / "scan" / "report.html").read_text()
    capsys.readouterr()
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(profile([1.0, 0.5, 1.0]).to_dict()))
    assert main(["scan", str(infected), *common, "--profile", str(wrong), "--out", str(tmp_path / "no")]) == 1
    assert "the profile has 3 labels, the model 6" in capsys.readouterr().err
