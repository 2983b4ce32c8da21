"""The folders' readers and writers not covered elsewhere: reading a scan folder back, and the mitigation folder
in its three forms (filter, model folder, TorchScript)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from test_report import FLAGGED, K, make_report

from neuralcleanse.mitigate import InputFilter
from neuralcleanse.models import build_model
from neuralcleanse.store import mitigation_dir
from neuralcleanse.store.mitigation_dir import (
    FILTER_FILE,
    MITIGATION_FILE,
    MITIGATION_HTML,
    PATCHED_TORCHSCRIPT,
    write_mitigation,
)
from neuralcleanse.store.model_dir import load_saved_model
from neuralcleanse.store.scan_dir import REPORT_FILE, read_scan, write_scan_report
from neuralcleanse.triggers import Trigger

FIGURES = {
    "clean_accuracy_before": 0.99,
    "clean_accuracy_after": 0.97,
    "reversed_attack_success_before": 1.0,
    "reversed_attack_success_after": 0.02,
    "attack_success_before": None,
    "attack_success_after": None,
    "curve": [0.5, 0.25],
    "method": "prune",
    "label": 7,
    "model": "models/<m>",
    "scan": "scans/s",
    "data": "mnist",
    "seed": 0,
}


def test_read_scan_returns_what_was_written(tmp_path):
    rep = make_report(channels=3)
    write_scan_report(rep, tmp_path)
    report, by_label, labels = read_scan(tmp_path)
    assert report["flagged"] == [FLAGGED] and labels.tolist() == list(range(K))
    mask, pattern = by_label[FLAGGED]
    assert np.array_equal(mask, rep.masks[FLAGGED].numpy()) and np.array_equal(pattern, rep.patterns[FLAGGED].numpy())
    (tmp_path / REPORT_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="not a scan directory"):
        read_scan(tmp_path)


def test_filter_folder(tmp_path):
    figures = {**FIGURES, "method": "filter", "false_positive_rate": 0.05, "false_negative_rate": 0.1}
    input_filter = InputFilter("features", (3, 1), 0.5, label=7)
    written = write_mitigation(tmp_path, figures, filter=input_filter)
    assert written == {**figures, "filter_file": FILTER_FILE}
    assert {p.name for p in tmp_path.iterdir()} == {FILTER_FILE, MITIGATION_HTML, MITIGATION_FILE}
    assert json.loads((tmp_path / MITIGATION_FILE).read_text()) == written
    assert InputFilter.from_dict(json.loads((tmp_path / FILTER_FILE).read_text())) == input_filter
    page = (tmp_path / MITIGATION_HTML).read_text()
    assert "Input filter" in page and "10.00%" in page and "models/&lt;m&gt;" in page and "<m>" not in page


def test_patched_model_in_the_model_folder_format(tmp_path):
    torch.manual_seed(0)
    patched = build_model("mnist").eval()
    trigger = Trigger.patch((1, 28, 28), 4, spec="square")
    metadata = {"architecture": "mnist", "num_classes": 10, "clean_accuracy": 0.99, "dataset": "mnist"}
    written = write_mitigation(tmp_path, FIGURES, patched=patched, model_metadata=metadata, triggers=[(trigger, 7)])
    assert written["model_dir"] == str(tmp_path) and json.loads((tmp_path / MITIGATION_FILE).read_text()) == written
    saved = load_saved_model(tmp_path)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(saved.model(x), patched(x))
    assert saved.metadata["clean_accuracy"] == FIGURES["clean_accuracy_after"] and saved.metadata["dataset"] == "mnist"
    assert saved.metadata["mitigation"] == {k: v for k, v in FIGURES.items() if k != "curve"}
    ((t, target),) = saved.triggers
    assert target == 7 and torch.equal(t.mask, trigger.mask)
    assert "Input filter" not in (tmp_path / MITIGATION_HTML).read_text()


def test_patched_foreign_model_as_torchscript(tmp_path):
    patched = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    example = torch.rand(2, 3, 2, 2)
    written = write_mitigation(tmp_path, FIGURES, patched=patched, example=example)
    assert written["model_file"] == PATCHED_TORCHSCRIPT
    traced = torch.jit.load(str(tmp_path / PATCHED_TORCHSCRIPT))
    assert torch.equal(traced(example), patched(example))


def test_wrong_arguments_and_failures_leave_no_mitigation_json(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="either filter or patched, got neither"):
        write_mitigation(tmp_path / "a", FIGURES)
    with pytest.raises(ValueError, match="example images are needed"):
        write_mitigation(tmp_path / "b", FIGURES, patched=torch.nn.Linear(2, 2))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mitigation_dir, "mitigation_page", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mitigation(tmp_path / "c", FIGURES, filter=InputFilter("features", (0,), 0.0))
    assert not (tmp_path / "c" / MITIGATION_FILE).exists()


def test_the_mitigation_page_gives_the_verdict_the_trigger_the_chart_and_how_to_load_the_result(tmp_path):
    figures = {
        **FIGURES,
        "method": "unlearn",
        "clean_accuracy_after": 0.991100013256073,
        "lr": 0.000123456,
        "attack_success_before": 0.97,
        "attack_success_after": 0.004,
        "config": {"epochs": 1},
    }
    trigger = Trigger.patch((1, 28, 28), 4, spec="reversed trigger of label 7")
    write_mitigation(
        tmp_path / "m",
        figures,
        patched=build_model("mnist").eval(),
        model_metadata={"architecture": "mnist", "num_classes": 10},
        trigger=trigger,
    )
    page = (tmp_path / "m" / MITIGATION_HTML).read_text()
    assert "BACKDOOR REMOVED" in page and "attack success of the true trigger 97.0% &rarr;" in page
    assert "<strong>0.4%</strong>" in page and "(+0.11 points)" in page
    assert "The trigger used" in page and "mask L1 16.0" in page
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', page)) == 4  # the chart and 3 trigger pictures
    path = str((tmp_path / "m").resolve())
    assert f"<code>{path}</code>" in page
    assert f"from neuralcleanse import load_model; model = load_model(&#39;{path}&#39;).model" in page
    assert "0.991100013256073" not in page and "99.11%" in page and "0.0001235" in page
    assert "<th>fine-tuning epochs</th><td>1</td>" in page


def test_the_mitigation_page_says_when_the_backdoor_stays(tmp_path):
    figures = {
        **FIGURES,
        "method": "filter",
        "false_positive_rate": 0.05,
        "false_negative_rate": 0.4,
        "attack_success_before": 0.97,
        "attack_success_after": 0.4,
    }
    write_mitigation(tmp_path, figures, filter=InputFilter("features", (3, 1), 0.5, label=7))
    page = (tmp_path / MITIGATION_HTML).read_text()
    assert "BACKDOOR NOT BLOCKED" in page and 'class="verdict bad"' in page
    assert f"InputFilter.load(&#39;{(tmp_path / FILTER_FILE).resolve()}&#39;)" in page


def test_the_mitigation_page_judges_every_label_repaired_and_names_those_left(tmp_path):
    figures = {
        **FIGURES,
        "method": "unlearn",
        "labels": [7, 2],
        "flagged": [7, 2, 4],
        "others_reversed_attack_success": {"2": [0.99, 0.41]},
        "attack_success_before": 0.97,
        "attack_success_after": 0.004,
    }
    first, second = Trigger.patch((1, 28, 28), 4), Trigger.patch((1, 28, 28), 3, position="top-left")
    model = build_model("mnist").eval()
    write_mitigation(
        tmp_path, figures, patched=model, model_metadata={"architecture": "mnist"}, trigger=first, others=[(2, second)]
    )
    page = (tmp_path / MITIGATION_HTML).read_text()
    assert "The triggers used" in page and "The reversed trigger of label 2" in page and "mask L1 9.0" in page
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', page)) == 7  # the chart and 3 per trigger
    assert "BACKDOOR NOT REMOVED" in page, "label 2's trigger still works on 41% of images"
    assert "label 2&#39;s reversed trigger&#39;s attack success" in page and "41.00%" in page
    assert "not repaired by unlearn: label 4" in page
