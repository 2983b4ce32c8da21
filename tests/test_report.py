import html
import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from neuralcleanse.decision import Decision
from neuralcleanse.pairs import PairCheck
from neuralcleanse.render.pages import render_page
from neuralcleanse.render.pictures import png_data_uri
from neuralcleanse.scan import LabelResult, ScanReport
from neuralcleanse.store import scan_dir
from neuralcleanse.store.scan_dir import (
    HTML_FILE,
    NORMS_PLOT,
    REPORT_FILE,
    TRIGGERS_FILE,
    ReportExistsError,
    write_scan_report,
)

K, SIZE, FLAGGED = 5, 8, 3
LABEL_PNGS = [f"label_{FLAGGED}_{kind}.png" for kind in ("mask", "pattern", "trigger")]
DATA_URI_IMG = re.compile(r'<img[^>]*src="data:image/png;base64,[A-Za-z0-9+/=]+"')


def make_report(channels: int = 1, flagged: tuple[int, ...] = (FLAGGED,), seed: int = 0) -> ScanReport:
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(K, 1, SIZE, SIZE, generator=g)  # (K, 1, H, W)
    patterns = torch.rand(K, channels, SIZE, SIZE, generator=g)  # (K, C, H, W)
    norms = masks.flatten(1).sum(1)
    scores = [3.0 if i in flagged else 0.5 for i in range(K)]
    rows = [LabelResult(i, float(norms[i]), 0.99, scores[i], True, 10, 800, scores[i]) for i in range(K)]
    return ScanReport(
        infected=bool(flagged),
        anomaly_index=3.0 if flagged else 0.5,
        flagged=list(flagged),
        decision=Decision("k-aware", list(flagged), 3.0 if flagged else 0.5, 2.0, scores),
        paper_flagged=list(flagged),
        pairs=[],
        labels=rows,
        median_l1=float(norms.median()),
        mad_l1=1.0,
        seconds=12.5,
        mode="fast",
        seed=seed,
        num_images=50,
        clean_accuracy=0.98,
        outputs_probabilities=False,
        config={"anomaly_threshold": 2.0, "reverse": {}},
        masks=masks,
        patterns=patterns,
    )


def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("channels", [1, 3])
def test_writes_a_complete_report(tmp_path, channels):
    rep = make_report(channels)
    extra = {"model": "models/<bad>", "data": "mnist", "true_triggers": [{"spec": "square", "target": FLAGGED}]}
    out = write_scan_report(rep, tmp_path / "scan", extra=extra)

    names = set(p.name for p in out.iterdir())
    assert names == {REPORT_FILE, HTML_FILE, TRIGGERS_FILE, NORMS_PLOT, *LABEL_PNGS}

    saved = json.loads((out / REPORT_FILE).read_text())
    for key in ("infected", "anomaly_index", "flagged", "labels", "seconds", "mode", "seed"):
        assert key in saved
    assert saved["infected"] is True and saved["flagged"] == [FLAGGED] and saved["extra"] == extra
    assert all({"label", "mask_l1", "attack_success", "anomaly_index"} <= set(r) for r in saved["labels"])

    with np.load(out / TRIGGERS_FILE, allow_pickle=False) as arrays:
        assert np.array_equal(arrays["masks"], rep.masks.numpy()) and arrays["masks"].dtype == np.float32
        assert np.array_equal(arrays["patterns"], rep.patterns.numpy())
        assert arrays["patterns"].shape == (K, channels, SIZE, SIZE)
        assert arrays["labels"].dtype == np.int64 and arrays["labels"].tolist() == list(range(K))
        assert np.allclose(arrays["mask_l1"], [r.mask_l1 for r in rep.labels])

    for name in LABEL_PNGS:
        with Image.open(out / name) as img:
            assert img.size == (160, 160)  # 8 px upscaled by 20
            assert img.mode == ("RGB" if channels == 3 and "mask" not in name else "L")
    with Image.open(out / NORMS_PLOT) as img:
        assert img.width >= 600 and img.height >= 250
    with Image.open(out / f"label_{FLAGGED}_mask.png") as img:  # nearest neighbour: one block per pixel
        block = np.asarray(img)[:20, :20]
        assert (block == round(float(rep.masks[FLAGGED, 0, 0, 0]) * 255)).all()

    page = (out / HTML_FILE).read_text()
    assert "INFECTED" in page and "CLEAN" not in page
    assert len(DATA_URI_IMG.findall(page)) == 1 + len(LABEL_PNGS) + K  # plot, flagged label, gallery
    assert len(re.findall(r"<img", page)) == len(DATA_URI_IMG.findall(page))
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:|//)", page)
    assert "<script" not in page
    assert "models/&lt;bad&gt;" in page and "<bad>" not in page


def test_clean_report_has_no_label_images(tmp_path):
    out = write_scan_report(make_report(flagged=()), tmp_path)
    assert not list(out.glob("label_*"))
    page = (out / HTML_FILE).read_text()
    assert "CLEAN" in page and "INFECTED" not in page
    assert len(DATA_URI_IMG.findall(page)) == 1 + K
    assert "extra" not in json.loads((out / REPORT_FILE).read_text())


def test_refuses_to_overwrite_unless_asked(tmp_path):
    write_scan_report(make_report(), tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ReportExistsError, match=r"report\.json already exists; pass --overwrite to replace"):
        write_scan_report(make_report(seed=1), tmp_path)
    assert snapshot(tmp_path) == before

    write_scan_report(make_report(seed=1, flagged=(1,)), tmp_path, overwrite=True)
    after = snapshot(tmp_path)
    assert after[TRIGGERS_FILE] != before[TRIGGERS_FILE]
    assert json.loads(after[REPORT_FILE])["flagged"] == [1]
    assert not any(name.startswith(f"label_{FLAGGED}_") for name in after)  # stale label images removed
    assert "label_1_trigger.png" in after


@pytest.mark.parametrize("overwrite", [False, True])
def test_failure_half_way_leaves_no_report_json_and_no_temp_files(tmp_path, monkeypatch, overwrite):
    if overwrite:
        write_scan_report(make_report(), tmp_path)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(scan_dir, "norms_plot_png", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_scan_report(make_report(seed=1), tmp_path, overwrite=overwrite)
    monkeypatch.undo()
    monkeypatch.setattr(np, "savez", boom)  # fails inside an atomic write
    with pytest.raises(RuntimeError, match="disk full"):
        write_scan_report(make_report(seed=1), tmp_path, overwrite=True)
    names = [p.name for p in tmp_path.iterdir()]
    assert REPORT_FILE not in names
    assert not [n for n in names if n.endswith(".tmp")]


def test_bad_input_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="extra must hold plain JSON values"):
        write_scan_report(make_report(), tmp_path / "a", extra={"model": object()})
    rep = make_report()
    bad = ScanReport(**{**rep.__dict__, "masks": rep.masks[:, :, :4]})
    with pytest.raises(ValueError, match=r"report\.patterns must be \(K, C, H, W\)"):
        write_scan_report(bad, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_html_helpers_escape_and_embed(tmp_path):
    uri = png_data_uri(torch.zeros(3, 2, 2), min_size=4)
    assert uri.startswith("data:image/png;base64,")
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="PNG signature"):
        png_data_uri(tmp_path / "x.png")
    page = render_page("<Mitigation>", [("a & b", "<p>body</p>"), ("", "<p>plain</p>")])
    assert "<title>&lt;Mitigation&gt;</title>" in page and "<h2>a &amp; b</h2>" in page
    assert page.count("<section>") == 2 and "<p>body</p>" in page


def test_the_page_says_the_precision_why_large_indices_are_not_flagged_and_what_to_do_next(tmp_path):
    rep = make_report()
    rows = list(rep.labels)
    big = max((r for r in rows if r.label != FLAGGED), key=lambda r: r.mask_l1)  # above the median
    rows[big.label] = LabelResult(big.label, big.mask_l1, 0.99, 4.0, True, 10, 800, 0.0)
    rep = ScanReport(**{**rep.__dict__, "labels": rows, "config": {**rep.config, "compute_dtype": "bfloat16"}})
    extra = {"model": "/cache/models/mnist-badnets-seed0-v1/", "data": "mnist"}
    write_scan_report(rep, tmp_path / "scan", extra=extra)
    page = (tmp_path / "scan" / HTML_FILE).read_text()
    assert "<title>Neural Cleanse scan report — mnist-badnets-seed0-v1</title>" in page
    assert "<th>precision of the search</th><td>bfloat16</td>" in page
    assert page.count("no: norm above the median") == 1
    command = f"neuralcleanse mitigate /cache/models/mnist-badnets-seed0-v1/ --report {tmp_path / 'scan'} --data mnist"
    assert command in page and f"--out {tmp_path / 'scan'}-patched" in page


def test_the_suggested_mitigation_feeds_the_model_as_the_scan_did(tmp_path):
    pre = {"value_range": [0, 255], "mean": None, "std": None, "channel_order": "BGR", "layout": "NHWC"}
    write_scan_report(make_report(), tmp_path, extra={"model": "m.h5", "data": "d.npz", "preprocessing": pre})
    page = (tmp_path / HTML_FILE).read_text()
    assert "--method unlearn --value-range 0-255 --channel-order BGR --layout NHWC --out" in page
    assert "<th>preprocessing</th><td>--value-range 0-255 --channel-order BGR --layout NHWC</td>" in page


def test_a_clean_page_has_nothing_to_repair(tmp_path):
    write_scan_report(make_report(flagged=()), tmp_path)
    page = (tmp_path / HTML_FILE).read_text()
    assert "no reversed backdoor to remove" in page and "neuralcleanse mitigate" not in page


def test_the_page_gives_each_symmetric_check_with_the_universal_triggers_it_compared(tmp_path):
    report = make_report()
    checks = [
        PairCheck(FLAGGED, 1, 0.028, 6.8, 34.7, 7.7, 103.9, False),
        PairCheck(2, 4, 0.2, 5.0, 5.1, 6.0, 7.0, True, source_suspect=True),
    ]
    write_scan_report(replace(report, pairs=checks), tmp_path)
    page = re.sub(r"\s+", " ", (tmp_path / HTML_FILE).read_text())
    assert (
        f"Label {FLAGGED} against its closest label 1: trigger there 6.8, back 34.7, confusion 0.028, universal "
        "triggers 7.7 and 103.9 (not natural neighbours: flagged)."
    ) in page
    assert (
        "confusion 0.028, universal" in page
        and "confusion 0.200 (both flagged: neighbours only when the checks of both say so), universal" in page
    )
    assert "universal triggers 6.0 and 7.0 (natural neighbours: not flagged). See docs/detection.md." in page
    assert json.loads((tmp_path / REPORT_FILE).read_text())["pairs"][0]["source_norm"] == 103.9


def test_reprs_are_short():
    rep = make_report()
    text = repr(rep)
    assert text.startswith("ScanReport(infected, flagged=[3], anomaly_index=3.00, labels=5, masks=(5, 1, 8, 8)")
    assert len(text) < 200 and "tensor" not in text
    trigger = rep.trigger(FLAGGED)
    assert repr(trigger) == (
        f"Trigger(mask=(1, 8, 8), pattern=(1, 8, 8), l1={trigger.l1:.1f}, spec='reversed trigger of label 3')"
    )


def test_the_page_says_how_steady_the_verdict_is_and_warns_when_it_is_borderline(tmp_path):
    borderline = "the verdict is borderline: 35% of redraws of the labels' norms within the search's own noise"
    write_scan_report(replace(make_report(), steadiness=0.65, warnings=[borderline]), tmp_path / "a")
    page = html.unescape(re.sub(r"\s+", " ", (tmp_path / "a" / HTML_FILE).read_text()))
    assert "The same verdict in 65% of redraws of the labels' norms within the search's own noise" in page
    assert f"<strong>Warning:</strong> {borderline}" in page
    write_scan_report(make_report(), tmp_path / "b")  # a report made before steadiness: nothing said
    assert "redraws" not in (tmp_path / "b" / HTML_FILE).read_text()
