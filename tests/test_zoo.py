"""scan-zoo in this process (no Ray): the manifest, verdicts, error rows, the summary, resuming and timeouts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _tiny import TARGET, Pixels255, TemplateNet
from _zoo import BROKEN, SMALL, build_zoo, one_thread  # noqa: F401  (a fixture)

import neuralcleanse
from neuralcleanse.cli import main
from neuralcleanse.engine import InProcessRunner
from neuralcleanse.jobs import scan_zoo_job
from neuralcleanse.steadiness import STEADY
from neuralcleanse.zoo import Truth, read_zoo, scan_zoo, zoo_summary

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The tiny zoo scanned once in this process; (manifest, truth, out)."""
    root = tmp_path_factory.mktemp("zoo")
    manifest, truth = build_zoo(root)
    out = root / "out"
    scan_zoo_job(manifest, None, out, SMALL, workers=1)
    return manifest, truth, out


def test_csv_manifest_gives_each_model_its_data_and_truth(zoo):
    manifest, truth, _ = zoo
    entries = {e.name: e for e in read_zoo(manifest)}
    assert set(entries) == set(truth)
    assert entries["infected_b.pt"].truth == Truth(True, (0,))
    assert entries["clean_a.pt"].truth == Truth(False, ())
    assert entries["infected_b.pt"].data == str(manifest.parent / "models" / "clean_b.npz")
    assert Path(entries["infected_b.pt"].path).is_file()


def test_a_manifests_arch_file_is_taken_from_the_manifests_folder(tmp_path):
    (tmp_path / "nets_e.py").write_text("def Net(): ...\n")
    (tmp_path / "zoo.csv").write_text("model,arch\nw.pt,nets_e.py:Net\nv.pt,mnist\n")
    first, second = read_zoo(tmp_path / "zoo.csv")
    assert first.arch == f"{(tmp_path / 'nets_e.py').resolve()}:Net" and second.arch == "mnist"


def test_manifest_errors_name_the_line(tmp_path):
    bad = tmp_path / "zoo.csv"
    bad.write_text("model,infected\na.pt,maybe\n")
    with pytest.raises(ValueError, match=r"line 2: infected must be true or false, got 'maybe'"):
        read_zoo(bad)
    bad.write_text("model,colour\na.pt,red\n")
    with pytest.raises(ValueError, match=r"unknown columns \['colour'\]"):
        read_zoo(bad)
    text = tmp_path / "zoo.txt"
    text.write_text("# two files of one name\nx/a.pt\ny/a.pt\n")
    with pytest.raises(ValueError, match="two models are named 'a.pt'"):
        read_zoo(text)


def test_directory_zoo_takes_model_files_and_train_folders(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "trained").mkdir()
    (tmp_path / "trained" / "model.json").write_text("{}")
    assert [e.name for e in read_zoo(tmp_path)] == ["a.pt", "trained"]


def test_zoo_verdicts_are_the_known_ones_and_reports_are_complete(zoo):
    _, truth, out = zoo
    rows = {r["model"]: r for r in json.loads((out / "zoo.json").read_text())}
    for name, (infected, target) in truth.items():
        if name in BROKEN:
            continue
        assert rows[name]["status"] == "done"
        assert rows[name]["infected"] is infected
        assert rows[name]["flagged"] == ([target] if infected else [])
        assert rows[name]["correct"] is True
        report = json.loads((out / name / "report.json").read_text())
        assert report["flagged"] == rows[name]["flagged"]
        assert rows[name]["verdict_steadiness"] == report["verdict_steadiness"] >= STEADY
    summary = zoo_summary(list(rows.values()))
    assert (summary["scanned"], summary["flagged"], summary["failed"]) == (5, 3, 2)
    assert (summary["right"], summary["wrong"], summary["tpr"], summary["fpr"]) == (5, 0, 1.0, 0.0)


def test_broken_models_are_error_rows_with_the_message_scan_prints(zoo, capsys):
    manifest, _, out = zoo
    rows = {r["model"]: r for r in json.loads((out / "zoo.json").read_text())}
    data = manifest.parent / "models" / "clean_a.npz"
    for name in BROKEN:
        code = main(["scan", str(manifest.parent / "models" / name), "--data", str(data), "--out", "unused", "-q"])
        printed = capsys.readouterr().err.strip()
        assert code == 1 and rows[name]["status"] == "error"
        assert printed == f"neuralcleanse: error: {rows[name]['error']}"
        assert not (out / name / "report.json").exists()


def test_summary_page_links_each_report_and_sorts(zoo):
    _, truth, out = zoo
    page = (out / "zoo.html").read_text()
    assert "7 models: 5 scanned, 3 flagged as infected, 2 failed" in page
    assert "5 right, 0 wrong; TPR 100%, FPR 0%" in page
    for name in truth:
        assert (f'href="{name}/report.html"' in page) is (name not in BROKEN)
    assert "<script>" in page and "sort" in page
    assert page.index("INFECTED") < page.index("infected_a.pt")  # the verdict is the first column


def test_rerun_after_deleting_two_reports_scans_only_those_two(zoo, tmp_path):
    manifest, _, out = zoo
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for name in ("infected_b.pt", "clean_a.pt"):
        (copy / name / "report.json").unlink()
    kept = {p.parent.name: p.stat().st_mtime_ns for p in copy.glob("*/report.json")}
    result = scan_zoo(read_zoo(manifest), copy, data=None, runner=InProcessRunner(), config=SMALL)
    assert sorted(result.scanned) == sorted(["infected_b.pt", "clean_a.pt", *BROKEN])  # errors are retried
    assert {p.parent.name: p.stat().st_mtime_ns for p in copy.glob("*/report.json") if p.parent.name in kept} == kept
    assert all(r["skipped"] for r in result.rows if r["model"] in kept)
    assert [r["flagged"] for r in result.rows if r["model"] == "infected_b.pt"] == [[0]]
    kept_rows = [r for r in result.rows if r["model"] in kept]
    assert kept_rows and all(r["verdict_steadiness"] is not None for r in kept_rows)  # read back from the report


def test_the_summary_counts_borderline_verdicts():
    row = {"status": "done", "infected": True, "flagged": [3], "skipped": False}
    rows = [{**row, "verdict_steadiness": 0.6}, {**row, "verdict_steadiness": 1.0}, {**row, "verdict_steadiness": None}]
    summary = zoo_summary(rows)
    assert summary["borderline"] == 1
    assert summary["line"].endswith("1 borderline verdicts (worth a second scan)")
    assert "borderline verdicts" not in zoo_summary(rows[1:])["line"]
    twice = zoo_summary([{**rows[0], "second_scan": True}, *rows[1:]])
    assert twice["scanned_twice"] == 1 and twice["line"].endswith("1 borderline verdicts (1 scanned twice)")


def test_a_model_scanned_under_a_convention_it_chose_carries_the_warning_to_the_zoo_page(zoo, tmp_path):
    """No preprocessing given: the 0-255 model is scanned as such, and its row and the page say so."""
    manifest, _, _ = zoo
    directory = tmp_path / "models"
    directory.mkdir()
    torch.jit.script(Pixels255(TemplateNet(backdoor=True))).save(str(directory / "pixels255.pt"))
    data = str(manifest.parent / "models" / "clean_a.npz")
    result, _, html = scan_zoo_job(directory, data, tmp_path / "out", SMALL, workers=1)
    (row,) = result.rows
    assert row["status"] == "done" and row["flagged"] == [TARGET]
    (warning,) = row["warnings"]
    assert "as with --value-range 0-255" in warning and warning in html.read_text()


def test_a_model_past_its_timeout_is_stopped_and_marked(zoo, tmp_path):
    manifest, _, _ = zoo
    entries = [e for e in read_zoo(manifest) if e.name == "infected_a.pt"]
    result = scan_zoo(entries, tmp_path, data=None, runner=InProcessRunner(), config=SMALL, timeout=0.01)
    (row,) = result.rows
    assert row["status"] == "timeout" and row["error"] == "stopped after 0.01 s (--timeout-per-model)"
    assert not (tmp_path / "infected_a.pt" / "report.json").exists()


def test_cli_exits_1_when_a_model_fails_and_prints_the_summary(zoo, tmp_path, capsys):
    manifest, _, _ = zoo
    broken = tmp_path / "broken.txt"
    broken.write_text("".join(f"{manifest.parent / 'models' / name}\n" for name in BROKEN))
    data = str(manifest.parent / "models" / "clean_a.npz")
    code = main(["scan-zoo", str(broken), "--data", data, "--out", str(tmp_path / "out"), "--workers", "1", "-q"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "corrupt.pt: error: " in printed and "2 models: 0 scanned, 0 flagged as infected, 2 failed" in printed
    assert (tmp_path / "out" / "zoo.json").is_file() and (tmp_path / "out" / "zoo.html").is_file()


def test_a_killed_run_resumes_without_scanning_a_model_twice(zoo, tmp_path):
    manifest, _, _ = zoo
    models = manifest.parent / "models"
    directory = tmp_path / "zoo"
    directory.mkdir()
    for i in range(4):
        shutil.copy(models / ("infected_a.pt" if i % 2 else "clean_a.pt"), directory / f"m{i}.pt")
    out = tmp_path / "out"
    argv = ["scan-zoo", str(directory), "--data", str(models / "clean_a.npz"), "--out", str(out), "--workers", "1"]
    argv += ["--searches", "1", "--samples", "60", "--precision", "float32", "-q"]
    src = str(Path(neuralcleanse.__file__).parents[1])
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "neuralcleanse", *argv], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(out.glob("*/report.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    assert 1 <= len(before) < 4, "the run was killed after its first report and before its last"
    result = scan_zoo(read_zoo(directory), out, data=str(models / "clean_a.npz"), runner=InProcessRunner(),
                      config=SMALL)  # fmt: skip
    assert set(result.scanned).isdisjoint(before) and set(result.scanned) | set(before) == {
        f"m{i}.pt" for i in range(4)
    }
    assert {
        n: t for n, t in ((p.parent.name, p.stat().st_mtime_ns) for p in out.glob("*/report.json")) if n in before
    } == before
    assert [r["infected"] for r in result.rows] == [False, True, False, True]
    assert not list(out.rglob("*.tmp")), "no half-written file is left"


def test_without_ray_one_worker_runs_in_process_and_more_say_how_to_install_it(zoo, tmp_path, monkeypatch):
    import neuralcleanse.jobs.scan_zoo as job

    manifest, _, _ = zoo
    broken = tmp_path / "broken.txt"
    broken.write_text(f"{manifest.parent / 'models' / 'corrupt.pt'}\n")
    monkeypatch.setattr(job, "ray_available", lambda: False)
    result, _, _ = scan_zoo_job(broken, "unused.npz", tmp_path / "one", SMALL, workers=1)
    assert [r["status"] for r in result.rows] == ["error"]
    with pytest.raises(RuntimeError, match=r"^Ray is not installed: pip install 'neuralcleanse\[ray\]'"):
        scan_zoo_job(broken, "unused.npz", tmp_path / "two", SMALL, workers=2)
