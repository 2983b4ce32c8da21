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
    relative_gaps,
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


def test_a_profile_holds_each_class_s_clean_gap_over_the_median_gap():
    a = [1.0, 2.0, 4.0]
    gaps = {"a": [[2.0, 4.0, 4.0], [2.0, 4.0, None]], "b": [[1.0, 2.0, 2.0], [1.0, 0.0, 2.0]]}
    p = profile_from_scans({"a": [a, a], "b": [a, a]}, "gaps", gaps_by_model=gaps)
    # Only the scans whose gaps are all known and positive count: one of each model, each [0.5, 1, 1] x its median.
    assert p.expected_gap_ratios() == pytest.approx([0.5, 1.0, 1.0]) and p.gap_weight == pytest.approx(1.0)
    assert p.scans == 4 and p.expected_ratios() == pytest.approx([0.5, 1.0, 2.0])
    assert profile_from_scans({"a": [a]}, "no gaps").expected_gap_ratios() is None
    with pytest.raises(ProfileError, match="gaps need one per label"):
        profile_from_scans({"a": [a]}, "short", gaps_by_model={"a": [[1.0, 2.0]]})
    # A profile file of before the gaps still reads (its gaps are then read as they are); bad gap ratios do not.
    old = {k: v for k, v in p.to_dict().items() if not k.startswith("gap_")}
    assert LabelProfile.from_dict(old).gap_log_ratios == ()
    with pytest.raises(ProfileError, match="gap log ratios must be finite, one per label \\(3\\)"):
        LabelProfile.from_dict({**p.to_dict(), "gap_log_ratios": [0.0, 1.0]})


def test_every_label_s_gap_is_read_over_its_class_s_both_ways():
    gaps = torch.tensor([4.0, 2.0, 8.0, math.nan], dtype=torch.float64)
    p = replace(profile([1.0] * 4), gap_log_ratios=tuple(math.log(r) for r in (1.0, 0.5, 2.0, 1.0)), gap_weight=1.0)
    read = relative_gaps(gaps, p)
    assert read[:3].tolist() == pytest.approx([4.0, 4.0, 4.0]) and math.isnan(read[3])
    assert relative_gaps(gaps, replace(p, gap_weight=0.5))[:3].tolist() == pytest.approx([4, 2 * 2**0.5, 8 / 2**0.5])
    assert relative_gaps(gaps, None) is gaps and relative_gaps(gaps, profile([1.0] * 4)) is gaps
    with pytest.raises(ProfileError, match="has 4 labels, the scan 3"):
        relative_gaps(gaps[:3], p)


def test_a_class_s_natural_lean_is_not_taken_for_a_backdoor():
    """A clean CIFAR-10 model of the zoo's test half (cifar10-clean-28, scan seed 1): its airplane needs the
    smallest trigger (0.36 of the median, read through the norm profile 0.39) and its clean gap lies far below the
    line the other labels' gaps draw against their norms, which the automobile's gap (largest of any class on every
    CIFAR-10 model) tilts downhill. Read over what each class leaves on clean models of the task, the airplane's gap
    is ordinary and nothing is flagged. An infected model's target (cifar10-pixels-04, seed 0) stays flagged, and
    the bird beside it, the class that lies nearest to the model's choice on every model, no longer joins it."""
    cifar10 = builtin_profile("cifar10", 10)
    assert cifar10 is not None and cifar10.gap_log_ratios
    ratios = cifar10.expected_gap_ratios()
    assert ratios[1] == max(ratios) and ratios[2] == min(ratios)  # the automobile furthest, the bird nearest
    clean_norms = torch.tensor([15.62, 22.01, 27.72, 73.74, 63.25, 61.78, 59.76, 34.73, 50.0, 36.45]).double()
    clean_gaps = torch.tensor([4.86, 7.323, 3.555, 3.899, 4.047, 4.121, 5.339, 4.717, 6.329, 6.29]).double()
    norms = discounted(clean_norms, cifar10)
    assert decide(norms, gaps=clean_gaps, pixels=1024).flagged == [0]
    assert decide(norms, gaps=relative_gaps(clean_gaps, cifar10), pixels=1024).flagged == []
    infected_norms = torch.tensor([6.02, 5.59, 4.07, 17.05, 61.72, 9.76, 25.59, 25.74, 2.27, 11.66]).double()
    infected_gaps = torch.tensor([4.62, 6.581, 3.516, 3.818, 4.01, 4.335, 5.301, 4.808, 5.515, 5.988]).double()
    norms = discounted(infected_norms, cifar10)
    assert sorted(decide(norms, gaps=infected_gaps, pixels=1024).flagged) == [2, 8]
    assert decide(norms, gaps=relative_gaps(infected_gaps, cifar10), pixels=1024).flagged == [8]


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
    assert len(written["gap_log_ratios"]) == 6 and 0 <= written["gap_weight"] <= 1  # from the reports' clean gaps
    assert main(["profile", *scans, "--name", "templates", "--out", str(out)]) == 1  # no --overwrite
    assert main(["profile", scans[0], "--name", "one", "--out", str(tmp_path / "one.json")]) == 1
    assert "2 clean models or more" in capsys.readouterr().err
    infected = tmp_path / "infected.pt"
    torch.jit.script(TemplateNet(backdoor=True)).save(str(infected))
    assert main(["scan", str(infected), *common, "--profile", str(out), "--out", str(tmp_path / "scan")]) == 0
    report = json.loads((tmp_path / "scan" / "report.json").read_text())
    assert report["flagged"] == [TARGET] and report["profile"]["name"] == "templates"
    assert report["config"]["profile"] == str(out)
    expected = [math.exp(x) for x in written["gap_log_ratios"]]
    assert [r["natural_gap_ratio"] for r in report["labels"]] == pytest.approx(expected)
    html = (tmp_path / "scan" / "report.html").read_text()
    assert "natural label\nprofile templates (2 clean models" in html and "share of the median gap its class" in html
    capsys.readouterr()
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(profile([1.0, 0.5, 1.0]).to_dict()))
    assert main(["scan", str(infected), *common, "--profile", str(wrong), "--out", str(tmp_path / "no")]) == 1
    assert "the profile has 3 labels, the model 6" in capsys.readouterr().err
