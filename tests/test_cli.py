"""The command line: exit codes, one-line errors, files written (and not written)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import TARGET, Pixels255, TemplateNet, clean_images

from neuralcleanse.cli import _glue_dash_values, build_parser, main
from neuralcleanse.mitigate import InputFilter


class Saturating(torch.nn.Module):
    """Clips its input to [0, 1] first: fed 0-255 values, every pixel saturates and the model guesses."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.clamp(0, 1))


class Picky(Saturating):
    """Refuses negative input, as some exported models check their input range."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < -0.5).any()):
            raise ValueError("negative input")
        return self.inner(x.clamp(0, 1))


class SmallBatches(Saturating):
    """Takes at most 32 images at a time, as models exported with a fixed batch size do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 32:
            raise ValueError("at most 32 images per batch")
        return self.inner(x)


class Mutating(Saturating):
    """Centres its input in place before reading it, as some export wrappers do: it changes what it is given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.sub_(0.5)
        return self.inner(x + 0.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A TorchScript file of the hand-built infected model and an .npz of its clean images."""
    root = tmp_path_factory.mktemp("tiny")
    torch.jit.script(TemplateNet(backdoor=True)).save(str(root / "infected.pt"))
    torch.jit.script(TemplateNet(backdoor=False)).save(str(root / "clean.pt"))
    torch.jit.script(Saturating(TemplateNet(backdoor=True))).save(str(root / "saturating.pt"))
    torch.jit.script(Pixels255(TemplateNet(backdoor=True))).save(str(root / "pixels255.pt"))
    torch.jit.script(Picky(TemplateNet(backdoor=True))).save(str(root / "picky.pt"))
    torch.jit.script(Mutating(TemplateNet(backdoor=True))).save(str(root / "mutating.pt"))
    torch.jit.script(SmallBatches(TemplateNet(backdoor=True))).save(str(root / "small_batches.pt"))
    net = TemplateNet(backdoor=True)  # its layers without the Flatten: dense layers on vectors of 144 values
    torch.jit.script(torch.nn.Sequential(*net.features[1:], net.head)).save(str(root / "flat.pt"))
    images, labels = clean_images(per_label=20)
    np.savez(root / "clean.npz", x=(images.numpy() * 255).round().astype(np.uint8), y=labels.numpy())
    np.savez(root / "one_based.npz", x=(images.numpy() * 255).round().astype(np.uint8), y=labels.numpy() + 1)
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_scan_torchscript_flags_the_backdoor(tiny, tmp_path, capsys):
    code, out, _ = run(
        capsys, "scan", str(tiny / "infected.pt"), "--data", str(tiny / "clean.npz"), "--out", str(tmp_path / "r"), "-q"
    )
    assert code == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["infected"] and report["flagged"] == [TARGET] and report["anomaly_index"] > 3
    assert {"label", "mask_l1", "attack_success", "anomaly_index"} <= set(report["labels"][0])
    assert report["mode"] == "fast" and report["seed"] == 0 and report["seconds"] > 0
    assert report["warnings"] == [], "nothing about this scan makes its verdict less sure"
    for name in ("report.html", "triggers.npz", "norms.png", f"label_{TARGET}_mask.png"):
        assert (tmp_path / "r" / name).is_file()
    assert out.startswith(f"INFECTED: flagged labels [{TARGET}] (k-aware-ratio score ")
    assert f"paper's anomaly index {report['anomaly_index']:.2f}" in out.splitlines()[0]


def test_the_blend_search_is_in_both_reports_and_no_blend_leaves_it_out(tiny, tmp_path, capsys):
    scan = ["scan", str(tiny / "infected.pt"), "--data", str(tiny / "clean.npz"), "-q"]
    assert run(capsys, *scan, "--out", str(tmp_path / "with"))[0] == 0
    report = json.loads((tmp_path / "with" / "report.json").read_text())
    assert report["config"]["blend"] and report["mask_flagged"] == [TARGET] and report["blend_flagged"] == []
    assert all(r["blend_l1"] > 0 for r in report["labels"])
    html = (tmp_path / "with" / "report.html").read_text()
    assert "blend L1" in html and "The blend search (one faint pattern over the whole image per label)" in html
    assert run(capsys, *scan, "--no-blend", "--out", str(tmp_path / "without"))[0] == 0
    report = json.loads((tmp_path / "without" / "report.json").read_text())
    assert not report["config"]["blend"] and report["flagged"] == [TARGET]
    assert all(r["blend_l1"] is None for r in report["labels"])
    assert "The blend search" not in (tmp_path / "without" / "report.html").read_text()


def test_stimulation_is_reported_and_no_stimulation_leaves_it_out(tiny, tmp_path, capsys):
    from _tiny import TrojanSpreadNet

    torch.save(TrojanSpreadNet().state_dict(), tmp_path / "sd.pt")
    scan = ["scan", str(tmp_path / "sd.pt"), "--arch", "_tiny:TrojanSpreadNet", "--data", str(tiny / "clean.npz")]
    code, out, _ = run(capsys, *scan, "-q", "--no-blend", "--out", str(tmp_path / "with"))
    assert code == 0 and f"label {TARGET} flagged by neuron stimulation" in out.splitlines()[0]
    report = json.loads((tmp_path / "with" / "report.json").read_text())
    assert report["config"]["stimulation"] and report["stimulation_layer"] == "head:input"
    assert report["flagged"] == [TARGET] == report["stimulation_flagged"] and report["mask_flagged"] == []
    assert report["labels"][TARGET]["stimulation"] <= 0.25
    page = (tmp_path / "with" / "report.html").read_text()
    assert '<th class="num">stimulation</th>' in page and "FLAGGED (stimulation)" in page
    code, out, _ = run(capsys, *scan, "-q", "--no-blend", "--no-stimulation", "--out", str(tmp_path / "without"))
    report = json.loads((tmp_path / "without" / "report.json").read_text())
    assert code == 0 and report["flagged"] == [] and not report["config"]["stimulation"]
    assert report["stimulation_layer"] is None and all(r["stimulation"] is None for r in report["labels"])
    # A TorchScript model takes no hooks: it is stimulated through its ONNX export, whose layers are modules.
    assert run(capsys, "scan", str(tiny / "infected.pt"), "--data", str(tiny / "clean.npz"), "-q", "--no-blend",
               "--out", str(tmp_path / "scripted"))[0] == 0  # fmt: skip
    scripted = json.loads((tmp_path / "scripted" / "report.json").read_text())
    assert scripted["stimulation_layer"].startswith("layers.") and scripted["stimulation_flagged"] == []


def test_clean_model_verdict(tiny, tmp_path, capsys):
    code, out, _ = run(
        capsys,
        "scan",
        str(tiny / "clean.pt"),
        "--data",
        str(tiny / "clean.npz"),
        "--out",
        str(tmp_path / "r"),
        "-q",
        "--seed",
        "3",
        "--searches",
        "3",
        "--precision",
        "float32",
    )
    assert code == 0 and out.startswith("clean: flagged labels none (k-aware-ratio score ")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert not report["infected"] and report["flagged"] == [] and report["seed"] == 3
    assert report["config"]["restarts"] == 3 and report["config"]["restart_all"]
    assert report["config"]["reverse"]["precision"] == "float32" and report["config"]["compute_dtype"] == "float32"


def test_anomaly_threshold_decides_the_verdict(tiny, tmp_path, capsys):
    # The same search (same seed) judged against a threshold above the backdoor's index: nothing is flagged.
    args = ["scan", str(tiny / "infected.pt"), "--data", str(tiny / "clean.npz"), "-q", "--decision", "paper"]
    code, out, _ = run(capsys, *args, "--out", str(tmp_path / "r2"))
    default = json.loads((tmp_path / "r2" / "report.json").read_text())
    higher = default["anomaly_index"] + 0.5
    code, out, _ = run(capsys, *args, "--out", str(tmp_path / "r"), "--anomaly-threshold", str(higher))
    assert code == 0 and out.startswith(
        f"clean: flagged labels none (paper's anomaly index {default['anomaly_index']:.2f} <= {higher:g})"
    )
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert default["flagged"] == [TARGET] and report["flagged"] == [] and not report["infected"]
    assert report["anomaly_index"] == default["anomaly_index"] and report["anomaly_threshold"] == higher
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "r3"), "--anomaly-threshold", "0")
    assert code == 1 and "--anomaly-threshold must be > 0, got 0.0" in err and err.count("\n") == 1
    assert not (tmp_path / "r3").exists()


def test_searches_below_one_is_a_one_line_error(tiny, tmp_path, capsys):
    args = ["scan", str(tiny / "clean.pt"), "--data", str(tiny / "clean.npz"), "--out", str(tmp_path / "r")]
    code, _, err = run(capsys, *args, "--searches", "0")
    assert code == 1 and "--searches must be at least 1, got 0" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_existing_report_is_kept_unless_overwrite(tiny, tmp_path, capsys):
    out_dir = tmp_path / "r"
    out_dir.mkdir()
    (out_dir / "report.json").write_text("{}")
    code, _, err = run(
        capsys, "scan", str(tiny / "infected.pt"), "--data", str(tiny / "clean.npz"), "--out", str(out_dir)
    )
    assert code == 1 and "report.json already exists; pass --overwrite" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (out_dir / "report.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        ("missing.pt", "clean.npz", "missing.pt"),
        ("infected.pt", "missing.npz", "missing.npz"),
        ("garbage.pt", "clean.npz", "garbage.pt"),
        ("infected.pt", "one_based.npz", "has 7 labels but the model has only 6 outputs; the labels run from 1 to 6"),
    ],
)
def test_bad_inputs_get_one_line_errors_and_no_report(tiny, tmp_path, capsys, model, data, message):
    (tiny / "garbage.pt").write_bytes(b"not a model at all")
    code, _, err = run(capsys, "scan", str(tiny / model), "--data", str(tiny / data), "--out", str(tmp_path / "r"))
    assert code == 1 and message in err and err.startswith("neuralcleanse: error: ")
    assert err.count("\n") == 1
    assert not (tmp_path / "r" / "report.json").exists()


def test_wrong_preprocessing_stops_at_the_sanity_check(tiny, tmp_path, capsys):
    code, _, err = run(
        capsys,
        "scan",
        str(tiny / "saturating.pt"),
        "--data",
        str(tiny / "clean.npz"),
        "--out",
        str(tmp_path / "r"),
        "--value-range",
        "0-255",
    )
    assert code == 1 and "not preprocessed the way the model expects" in err
    assert "fed images in [0, 1] it classifies 100.0% of them: rerun with no preprocessing options" in err
    assert not (tmp_path / "r" / "report.json").exists()
    code, _, _ = run(
        capsys,
        "scan",
        str(tiny / "saturating.pt"),
        "--data",
        str(tiny / "clean.npz"),
        "--out",
        str(tmp_path / "r"),
        "-q",
    )
    assert code == 0, "the same model with the right preprocessing passes the check"


def test_a_model_of_0_255_pixels_is_scanned_so_when_no_preprocessing_is_given(tiny, tmp_path, capsys):
    """Fed [0, 1] images it gets 16.7% right: with no options given, the scan reads it as 0-255 (every image
    right), says so in a warning and records what it applied; options given are never overridden."""
    model, data = str(tiny / "pixels255.pt"), str(tiny / "clean.npz")
    code, out, _ = run(capsys, "scan", model, "--data", data, "--out", str(tmp_path / "auto"), "-q")
    report = json.loads((tmp_path / "auto" / "report.json").read_text())
    assert code == 0 and report["flagged"] == [TARGET] and report["extra"]["preprocessing"]["value_range"] == [0, 255]
    (warning,) = report["warnings"]
    assert "the model gets 16.7% of the clean images right fed in [0, 1] but 100.0% fed in [0, 255]" in warning
    assert "as with --value-range 0-255" in warning and "WARNING: no preprocessing was given" in out
    mitigate = ["mitigate", model, "--report", str(tmp_path / "auto"), "--data", data, "--method", "unlearn"]
    code, _, _ = run(capsys, *mitigate, "--out", str(tmp_path / "m"), "-q")  # fed as the scan fed it
    figures = json.loads((tmp_path / "m" / "mitigation.json").read_text())
    assert code == 0 and figures["clean_accuracy_before"] > 0.9
    code, _, err = run(capsys, "scan", model, "--data", data, "--out", str(tmp_path / "r"), "--value-range", "-1-1")
    error = err.splitlines()[-1]
    assert code == 1 and error.startswith("neuralcleanse: error: the model classifies only 16.7% of the clean images")
    assert error.endswith("; fed images in [0, 255] it classifies 100.0% of them: rerun with --value-range 0-255")
    assert not (tmp_path / "r" / "report.json").exists()
    out_dir = str(tmp_path / "r")
    code, _, _ = run(capsys, "scan", model, "--data", data, "--out", out_dir, "--value-range", "0-255", "-q")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert code == 0 and report["flagged"] == [TARGET] and report["warnings"] == []


@pytest.mark.parametrize(
    "pre",
    [
        {},
        {"value_range": (0, 255), "channel_order": "BGR", "mean": (103.939, 116.779, 123.68)},
        {"value_range": (-1, 1), "mean": (0.4914, 0.4822, 0.4465), "std": (0.2023, 0.1994, 0.201), "layout": "NHWC"},
        {"layout": "flat"},
    ],
)
def test_the_options_written_for_a_preprocessing_read_back_as_it(pre):
    from neuralcleanse.cli.verbs import _preprocessing
    from neuralcleanse.preprocess import Preprocessing, as_options

    given = Preprocessing(**pre)
    args = build_parser().parse_args(
        _glue_dash_values(["scan", "m.pt", "--data", "d", "--out", "o", *as_options(given)])
    )
    assert (_preprocessing(args) or Preprocessing()) == given


def test_a_sharded_scan_never_changes_the_preprocessing(tiny, tmp_path):
    """A sharded search's workers load the model themselves, as given: the scan stops and names the options."""
    from neuralcleanse import load_model
    from neuralcleanse.data import load_npz
    from neuralcleanse.jobs.scan import scan_model
    from neuralcleanse.reverse import reverse_engineer
    from neuralcleanse.scan import SanityCheckError

    loaded, data = load_model(tiny / "pixels255.pt"), load_npz(tiny / "clean.npz")
    with pytest.raises(SanityCheckError, match="rerun with --value-range 0-255$"):
        scan_model(loaded, "pixels255.pt", "clean.npz", tmp_path / "r", dataset=data, search=reverse_engineer)
    assert not (tmp_path / "r" / "report.json").exists()


def test_an_arch_in_a_local_file_is_named_by_its_absolute_path(tmp_path, monkeypatch):
    """So that Ray workers, started elsewhere, find the user's model.py too; importable and built-in archs stay."""
    from neuralcleanse.archspec import absolute_arch

    (tmp_path / "localnet_c.py").write_text("def Net(): ...\n")
    monkeypatch.chdir(tmp_path)
    assert absolute_arch("localnet_c:Net") == f"{tmp_path / 'localnet_c.py'}:Net"
    assert absolute_arch("./localnet_c.py:Net") == f"{tmp_path / 'localnet_c.py'}:Net"
    assert absolute_arch("neuralcleanse.models:build_model") == "neuralcleanse.models:build_model"
    assert absolute_arch("missing_d:Net") == "missing_d:Net"


def test_a_model_that_fails_on_another_convention_keeps_the_sanity_checks_own_error(tiny, tmp_path, capsys):
    out = str(tmp_path / "r")
    code, _, err = run(
        capsys,
        "scan",
        str(tiny / "picky.pt"),
        "--data",
        str(tiny / "clean.npz"),
        "--out",
        out,
        "--value-range",
        "0-255",
    )
    error = err.splitlines()[-1]
    assert code == 1 and error.endswith("or the labels do not match"), "no hint, and not the ranking's error"
    picky = ("scan", str(tiny / "picky.pt"), "--data", str(tiny / "clean.npz"), "--out", out)
    code, _, err = run(capsys, *picky, "--value-range", "-1-1")  # fails on the probe itself: TorchScript's error
    assert code == 1 and err == (
        f"neuralcleanse: error: {tiny / 'clean.npz'}: the model fails on input of shape (32, 1, 12, 12) "
        "(builtins.ValueError: negative input); check the input layout and image size\n"
    )


def test_a_torchscript_models_own_error_during_the_scan_is_one_line(tiny, tmp_path, capsys):
    """The probe's 32 images pass; the scan's larger batches make the scripted model raise, which TorchScript
    re-raises as torch.jit.Error (no RuntimeError): still one line, the model's own message, and no report."""
    model, data = str(tiny / "small_batches.pt"), str(tiny / "clean.npz")
    code, _, err = run(capsys, "scan", model, "--data", data, "--out", str(tmp_path / "r"), "-q")
    assert code == 1 and err == "neuralcleanse: error: builtins.ValueError: at most 32 images per batch\n"
    assert not (tmp_path / "r" / "report.json").exists()


def test_a_model_of_flattened_images_is_scanned_with_layout_flat(tiny, tmp_path, capsys):
    model, data = str(tiny / "flat.pt"), str(tiny / "clean.npz")
    code, _, err = run(capsys, "scan", model, "--data", data, "--out", str(tmp_path / "r"), "-q")
    assert code == 1 and "the model fails on input of shape (32, 1, 12, 12)" in err and "layout" in err
    code, _, _ = run(capsys, "scan", model, "--data", data, "--out", str(tmp_path / "r"), "--layout", "flat", "-q")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert code == 0 and report["flagged"] == [TARGET]


def test_a_model_that_changes_its_input_in_place_never_changes_the_scans_images(tiny, tmp_path, capsys):
    code, _, err = run(
        capsys, "scan", str(tiny / "mutating.pt"), "--data", str(tiny / "clean.npz"), "--out", str(tmp_path / "r"), "-q"
    )
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert code == 0 and err == "" and report["flagged"] == [TARGET] and report["clean_accuracy"] == 1.0


def test_the_sanity_check_blames_the_labels_when_no_convention_helps(tiny, tmp_path, capsys):
    data = np.load(tiny / "clean.npz")
    np.savez(tmp_path / "shifted.npz", x=data["x"], y=(data["y"] + 1) % 6)  # every image under the next label
    code, _, err = run(
        capsys, "scan", str(tiny / "infected.pt"), "--data", str(tmp_path / "shifted.npz"), "--out", str(tmp_path / "r")
    )
    error = err.splitlines()[-1]
    assert code == 1 and "or the labels do not match; no common input convention does better" in error


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, capsys, tiny):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump(Payload(), fh)
    code, _, err = run(
        capsys, "scan", str(tmp_path / "evil.pt"), "--data", str(tiny / "clean.npz"), "--out", str(tmp_path / "r")
    )
    assert code == 1 and "--unsafe-pickle" in err
    assert not marker.exists()


def test_debug_shows_the_traceback(tiny, tmp_path):
    with pytest.raises(Exception, match="missing.npz"):
        main(
            ["scan", str(tiny / "infected.pt"), "--data", str(tiny / "missing.npz"), "--out", str(tmp_path), "--debug"]
        )


def test_train_and_evaluate(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(300, 28, 28, generator=g) * 255).to(torch.uint8).numpy()
    y = (torch.arange(300) % 3).numpy()
    x[y == 1, :10] = 255  # make the labels learnable
    x[y == 2, 18:] = 255
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, out, _ = run(
        capsys,
        "train",
        "--dataset",
        str(tmp_path / "d.npz"),
        "--arch",
        "mnist",
        "--trigger",
        "square:size=4",
        "--target",
        "0",
        "--epochs",
        "3",
        "--out",
        str(tmp_path / "m"),
        "-q",
    )
    assert code == 0 and "clean accuracy" in out
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["architecture"] == "mnist" and meta["num_classes"] == 3 and meta["triggers"][0]["target"] == 0
    assert 0 <= meta["clean_accuracy"] <= 1 and "versions" in meta and meta["seed"] == 0
    code, out, _ = run(capsys, "evaluate", str(tmp_path / "m"), "--data", str(tmp_path / "d.npz"), "--json")
    figures = json.loads(out)
    assert code == 0 and figures["triggers"][0]["target"] == 0 and 0 <= figures["clean_accuracy"] <= 1
    # Training again into the same directory needs --overwrite.
    code, _, err = run(
        capsys, "train", "--dataset", str(tmp_path / "d.npz"), "--arch", "mnist", "--out", str(tmp_path / "m")
    )
    assert code == 1 and "--overwrite" in err


def test_train_a_trojan_model_from_a_victim(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(300, 28, 28, generator=g) * 100).to(torch.uint8).numpy()
    y = (torch.arange(300) % 3).numpy()
    x[y == 1, :10] = 255
    x[y == 2, 18:] = 255
    np.savez(tmp_path / "d.npz", x=x, y=y)
    base = ["train", "--dataset", str(tmp_path / "d.npz"), "--arch", "mnist", "-q"]
    assert run(capsys, *base, "--epochs", "2", "--out", str(tmp_path / "clean"))[0] == 0
    trojan = ["--trigger", "trojan:size=5,position=center", "--target", "0"]
    code, out, _ = run(capsys, *base, *trojan, "--from", str(tmp_path / "clean"), "--out", str(tmp_path / "t"))
    assert code == 0 and "attack success -> 0" in out
    meta = json.loads((tmp_path / "t" / "model.json").read_text())
    assert meta["attack"] == "trojan" and meta["victim"] == str(tmp_path / "clean")
    assert meta["triggers"] == [{"spec": "trojan:size=5,position=center", "target": 0}]
    assert len(meta["trojan_neurons"]) == 1 and len(meta["trojan_neurons"][0]) == 1
    victim = json.loads((tmp_path / "clean" / "model.json").read_text())
    assert meta["victim_clean_accuracy"] == victim["clean_accuracy"] and meta["epochs"] is None
    with np.load(tmp_path / "t" / "triggers.npz") as arrays:
        mask, pattern = arrays["mask_0"], arrays["pattern_0"]
    assert mask.sum() == 25 and pattern[mask == 0].max() == 0 and pattern[mask > 0].max() > 0  # crafted inside
    # evaluate uses the crafted trigger recorded with the model, and finds the figure train recorded
    code, out, _ = run(capsys, "evaluate", str(tmp_path / "t"), "--data", str(tmp_path / "d.npz"), "--json")
    assert code == 0
    assert json.loads(out)["triggers"][0]["attack_success"] == pytest.approx(meta["attack_success"], abs=0.05)
    # what cannot be done, one line each
    for extra, message in [
        (["--trigger", "square", "--target", "1", *trojan], "trojan triggers cannot be mixed with BadNets"),
        (["--from", str(tmp_path / "clean")], "--from starts a Trojan attack from a trained model"),
        ([*trojan, "--from", str(tmp_path / "missing")], "not a neuralcleanse model directory"),
        ([*trojan, "--from", str(tmp_path / "clean"), "--epochs", "1"], "--epochs trains the victim, but --from"),
        ([*trojan, "--from", str(tmp_path / "clean"), "--seed", "1"], "the victim's seed is 0, expected 1"),
    ]:
        code, _, err = run(capsys, *base, *extra, "--out", str(tmp_path / "x"))
        assert code == 1 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()
    code, _, err = run(capsys, "evaluate", str(tmp_path / "t"), "--data", str(tmp_path / "d.npz"), *trojan)
    assert code == 1 and "trojan trigger's pattern is crafted for one model" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["scan"])
    assert info.value.code == 2


def test_sigint_mid_scan_leaves_no_report(tiny, tmp_path):
    out_dir = tmp_path / "r"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "neuralcleanse.cli",
            "scan",
            str(tiny / "infected.pt"),
            "--data",
            str(tiny / "clean.npz"),
            "--out",
            str(out_dir),
            "--mode",
            "reference",
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A runner started in the background may ignore SIGINT, and children inherit that: restore the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(10)  # past start-up (imports), well inside the scan: a reference scan takes minutes here
    assert proc.poll() is None, "the reference scan should still be running"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err
    assert not (out_dir / "report.json").exists()
    assert not list(Path(tmp_path).rglob("*.tmp"))


def test_negative_value_range_needs_no_equals_sign():
    argv = ["scan", "m.pt", "--data", "d.npz", "--out", "r", "--value-range", "-1-1", "--mean", "-0.5"]
    args = build_parser().parse_args(_glue_dash_values(argv))
    assert (args.value_range, args.mean, args.out) == ("-1-1", [-0.5], "r")
    assert _glue_dash_values(["--value-range", "0-255", "-q"]) == ["--value-range", "0-255", "-q"]


# --- the output folder is checked before any work ------------------------------------------------------------


def _unwritable_dirs(tmp_path: Path) -> list[Path]:
    """Folders this process cannot write in: a read-only one made here (not for root, who writes anywhere),
    and /sys, read-only for everyone."""
    found = []
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        found.append(locked)
    if Path("/sys").is_dir() and not os.access("/sys", os.W_OK):
        found.append(Path("/sys"))
    return found


@pytest.mark.parametrize("verb", ["scan", "mitigate", "train"])
def test_unusable_out_fails_before_the_model_is_loaded(tiny, tmp_path, capsys, verb):
    (tmp_path / "a-file").write_text("")
    outs = [tmp_path / "a-file", tmp_path / "a-file" / "below", *(d / "r" for d in _unwritable_dirs(tmp_path))]
    args = {
        "scan": ["scan", "missing-model.pt", "--data", "missing.npz"],
        "mitigate": ["mitigate", "missing-model.pt", "--report", "r", "--data", "d", "--method", "unlearn"],
        "train": ["train", "--dataset", "missing.npz", "--arch", "mnist"],
    }[verb]
    for out in outs:
        code, _, err = run(capsys, *args, "--out", str(out))
        assert code == 1 and err.startswith(f"neuralcleanse: error: --out {out}"), err
        assert "missing-model" not in err and err.count("\n") == 1  # nothing was loaded: the model is never named


def test_unusable_out_fails_within_two_seconds(tmp_path):
    (tmp_path / "a-file").write_text("")
    argv = ["scan", "missing-model.pt", "--data", "missing.npz", "--out", str(tmp_path / "a-file")]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "neuralcleanse", *argv], capture_output=True, text=True)
    assert time.perf_counter() - start < 2.0
    assert done.returncode == 1 and "--out" in done.stderr and "is a file, not a folder" in done.stderr


def test_existing_report_is_refused_before_the_model_is_loaded(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_text("{}")
    code, _, err = run(capsys, "scan", str(tmp_path / "missing.pt"), "--data", "d.npz", "--out", str(tmp_path / "r"))
    assert code == 1 and "report.json already exists; pass --overwrite" in err and "missing.pt" not in err


# --- too few clean images ------------------------------------------------------------------------------------


def _npz(path: Path, per_label: dict[int, int]) -> Path:
    images, labels = clean_images(per_label=max(per_label.values()))
    keep = torch.cat([torch.nonzero(labels == k).flatten()[:n] for k, n in per_label.items()])
    x = (images[keep].numpy() * 255).round().astype(np.uint8)
    np.savez(path, x=x, y=labels[keep].numpy())
    return path


def test_a_missing_or_short_label_is_refused_with_the_list(tiny, tmp_path, capsys):
    model = str(tiny / "infected.pt")
    missing = _npz(tmp_path / "missing.npz", {0: 20, 1: 20, 2: 20, 3: 20, 5: 20})  # label 4 absent
    code, _, err = run(capsys, "scan", model, "--data", str(missing), "--out", str(tmp_path / "a"))
    assert code == 1 and "too few clean images for a scan: label 4 has 0 (at least 10" in err
    assert "--allow-few-images" in err and not (tmp_path / "a").exists()
    short = _npz(tmp_path / "short.npz", {0: 20, 1: 4, 2: 20, 3: 20, 4: 20, 5: 20})
    code, _, err = run(capsys, "scan", model, "--data", str(short), "--out", str(tmp_path / "b"))
    assert code == 1 and "label 1 has 4 (at least 10" in err
    code, _, err = run(
        capsys, "scan", model, "--data", str(tiny / "clean.npz"), "--out", str(tmp_path / "c"), "--samples", "30"
    )
    assert code == 1 and "--samples 30 leaves 5 images per label for 6 labels" in err


def test_allow_few_images_warns_in_the_verdict_and_both_reports(tiny, tmp_path, capsys):
    data = _npz(tmp_path / "few.npz", {0: 8, 1: 8, 2: 8, 3: 8, 5: 8})  # label 4 absent, 8 of the others
    out = tmp_path / "r"
    code, stdout, _ = run(
        capsys,
        "scan",
        str(tiny / "infected.pt"),
        "--data",
        str(data),
        "--out",
        str(out),
        "-q",
        "--allow-few-images",
        "--precision",
        "float32",
        "--searches",
        "1",
    )
    assert code == 0
    verdict = stdout.splitlines()[0]
    assert "WARNING: scanned with too few clean images: label 0 has 8" in verdict and "label 4 has 0" in verdict
    report = json.loads((out / "report.json").read_text())
    assert len(report["warnings"]) == 1 and "label 4 has 0" in report["warnings"][0]
    page = (out / "report.html").read_text()
    assert 'class="warning"' in page and "label 4 has 0" in page


# --- progress when stderr is not a terminal --------------------------------------------------------------------


def test_piped_scan_logs_progress_lines(tiny, tmp_path, capsys, monkeypatch):
    from neuralcleanse.cli import bars

    monkeypatch.setattr(bars, "LOG_INTERVAL_S", 0.0)  # a line per event: the tiny scan takes seconds
    code, _, err = run(
        capsys,
        "scan",
        str(tiny / "infected.pt"),
        "--data",
        str(tiny / "clean.npz"),
        "--out",
        str(tmp_path / "r"),
        "--searches",
        "1",
        "--precision",
        "float32",
    )
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("reversing triggers: ")]
    assert len(lines) >= 3 and all(" elapsed" in line and "/6, " in line for line in lines)
    assert lines[-1].startswith("reversing triggers: 6/6, ")


def test_progress_lines_come_at_a_steady_rhythm_and_bars_hide_the_eta_at_first():
    import io

    from neuralcleanse.cli.bars import LOG_INTERVAL_S, ProgressBars
    from neuralcleanse.progress import ProgressEvent

    now = [0.0]

    def clock() -> float:
        now[0] += LOG_INTERVAL_S / 3
        return now[0]

    stream = io.StringIO()
    bars = ProgressBars(stream=stream, clock=clock)
    for done in range(31):
        bars(ProgressEvent("train", done, 30, {"loss": 0.5}))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "training: 0/30, 0 s elapsed (loss=0.5)"
    assert [line.split(",")[0] for line in lines] == [
        f"training: {d}/30" for d in (0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30)
    ]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bars = ProgressBars(stream=screen)
    bars(ProgressEvent("train", 1, 100))
    assert "<" not in screen.getvalue()  # 1 of 100: no estimate of the time left yet
    bars(ProgressEvent("train", 20, 100))
    assert "<" in screen.getvalue().split("\r")[-1]
    bars(ProgressEvent("reverse", 9, 10))
    assert "<" not in screen.getvalue().split("\r")[-1]  # labels finish unevenly: never an estimate


def test_mitigate_prints_where_the_patched_model_and_the_page_are(tiny, tmp_path, capsys):
    from _tiny import CORNER, NUM_LABELS, SIZE

    from neuralcleanse.decision import Decision
    from neuralcleanse.scan import LabelResult, ScanReport
    from neuralcleanse.store.scan_dir import write_scan_report

    torch.save(TemplateNet(backdoor=True).state_dict(), tmp_path / "sd.pt")
    model = [str(tmp_path / "sd.pt"), "--arch", "_tiny:TemplateNet"]
    masks = torch.zeros(NUM_LABELS, 1, SIZE, SIZE)  # a scan that found the true corner trigger of the target
    masks[TARGET, 0][CORNER] = 1.0
    masks[2, 0, :2, :2] = 1.0  # and flagged label 2 as well
    rows = [LabelResult(k, float(masks[k].sum()), 1.0, 5.0 if k == TARGET else 0.5, True, 1, 1, 0.0) for k in range(6)]
    decision = Decision("k-aware", [TARGET, 2], 5.0, 3.0, [0.0] * 6)
    write_scan_report(
        ScanReport(
            True,
            5.0,
            [TARGET, 2],
            decision,
            [TARGET],
            [],
            rows,
            20.0,
            1.0,
            1.0,
            "fast",
            0,
            120,
            1.0,
            False,
            {},
            masks,
            torch.ones(NUM_LABELS, 1, SIZE, SIZE),
        ),
        tmp_path / "s",
    )
    prune_args = ["--report", str(tmp_path / "s"), "--data", str(tiny / "clean.npz"), "--method", "prune"]
    code, out, _ = run(capsys, "mitigate", *model, *prune_args, "--out", str(tmp_path / "p"), "-q")
    assert code == 0
    rows = dict(line.strip().split("  ", 1) for line in out.splitlines())
    assert rows["patched model"].strip().startswith(str(tmp_path / "p" / "model.torchscript.pt"))
    assert rows["page"].strip() == str(tmp_path / "p" / "mitigation.html")
    assert (tmp_path / "p" / "mitigation.html").is_file()
    assert rows["labels"].strip() == f"{TARGET}, 2" and "not repaired" not in rows
    assert "label 2's reversed trigger success" in rows
    figures = json.loads((tmp_path / "p" / "mitigation.json").read_text())
    assert figures["labels"] == [TARGET, 2] and list(figures["others_reversed_attack_success"]) == ["2"]
    assert all(len(step["others_reversed_attack_success"]) == 1 for step in figures["curve"])
    assert "The triggers used" in (tmp_path / "p" / "mitigation.html").read_text()

    # The same network as a TorchScript file is pruned through its ONNX copy, as the PyTorch one was, and the
    # pruned network is saved as TorchScript.
    code, out, _ = run(capsys, "mitigate", str(tiny / "infected.pt"), *prune_args, "--out", str(tmp_path / "t"), "-q")
    scripted = json.loads((tmp_path / "t" / "mitigation.json").read_text())
    assert code == 0 and scripted["layer"] == "layers.head_Gemm:input" and figures["layer"] == "head:input"
    same = ("pruned", "neurons", "stop_reason", "reversed_attack_success_after", "clean_accuracy_after")
    assert {k: scripted[k] for k in same} == {k: figures[k] for k in same}
    patched = torch.jit.load(str(tmp_path / "t" / "model.torchscript.pt"))
    assert patched(torch.rand(2, 1, SIZE, SIZE)).shape == (2, NUM_LABELS)

    filter_args = ["--report", str(tmp_path / "s"), "--data", str(tiny / "clean.npz"), "--method", "filter"]
    code, out, _ = run(capsys, "mitigate", *model, *filter_args, "--out", str(tmp_path / "f"), "-q")
    rows = dict(line.strip().split("  ", 1) for line in out.splitlines())
    assert code == 0 and rows["labels"].strip() == f"{TARGET}, 2" and "label 2's reversed trigger success" in rows
    figures = json.loads((tmp_path / "f" / "mitigation.json").read_text())
    assert [part["label"] for part in figures["others_filter"]] == [2]
    assert list(figures["others_reversed_false_negative_rate"]) == ["2"]
    assert InputFilter.load(tmp_path / "f" / "filter.json").labels == [TARGET, 2]
    page = (tmp_path / "f" / "mitigation.html").read_text()
    assert "The triggers used" in page and "false-negative rate, label 2&#39;s reversed trigger" in page

    unlearn = ["--report", str(tmp_path / "s"), "--data", str(tiny / "clean.npz"), "--method", "unlearn"]
    code, out, _ = run(capsys, "mitigate", *model, *unlearn, "--out", str(tmp_path / "u"), "-q")
    rows = dict(line.strip().split("  ", 1) for line in out.splitlines())
    assert code == 0 and rows["labels"].strip() == f"{TARGET}, 2" and "not repaired" not in rows
    assert "label 2's reversed trigger success" in rows
    figures = json.loads((tmp_path / "u" / "mitigation.json").read_text())
    assert figures["labels"] == [TARGET, 2] and figures["flagged"] == [TARGET, 2]
    assert list(figures["others_reversed_attack_success"]) == ["2"]
    page = (tmp_path / "u" / "mitigation.html").read_text()
    assert "The triggers used" in page and "The reversed trigger of label 2" in page
