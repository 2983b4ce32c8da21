"""Detection on hand-built models whose backdoor is known by construction (see _tiny.py)."""

import re
from dataclasses import replace

import pytest
import torch
from _tiny import CORNER, NUM_LABELS, TARGET, ConfidentSoftmax, TemplateNet, clean_images

from neuralcleanse.config import FAST, ScanConfig
from neuralcleanse.reverse import ReverseConfig, reverse_engineer
from neuralcleanse.scan import FewImagesError, NeuralCleanse, SanityCheckError, trigger_success
from neuralcleanse.steadiness import STEADY


@pytest.fixture(scope="module")
def data():
    return clean_images(per_label=20)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_scan_flags_exactly_the_backdoor_label(data, seed):
    images, labels = data
    report = NeuralCleanse(TemplateNet(backdoor=True)).scan(images, labels, seed=seed)
    assert report.infected and report.flagged == [TARGET]
    assert report.anomaly_index > 3
    mask = report.masks[TARGET, 0]
    top4 = torch.zeros(12 * 12, dtype=torch.bool)
    top4[mask.flatten().topk(4).indices] = True
    assert top4.view(12, 12)[CORNER].all(), "the reversed mask sits on the 2x2 corner"
    assert report.labels[TARGET].mask_l1 < 6
    assert report.labels[TARGET].attack_success >= 0.99
    assert report.steadiness == 1.0 and report.warnings == []


def test_clean_model_is_not_flagged(data):
    images, labels = data
    report = NeuralCleanse(TemplateNet(backdoor=False)).scan(images, labels, seed=0)
    assert not report.infected and report.flagged == [] and report.anomaly_index < 2
    assert report.steadiness is not None and report.steadiness >= STEADY


def test_two_labels_give_no_verdict_and_say_so(data):
    """Scanned alone with one other label, the backdoor's target cannot be judged against anything: the report
    says the verdict means nothing rather than calling the model clean in silence."""
    images, labels = data
    report = NeuralCleanse(TemplateNet(backdoor=True)).scan(images, labels, targets=[0, TARGET], seed=0)
    assert report.flagged == [] and len(report.warnings) == 1
    assert report.warnings[0].startswith("only 2 labels were scanned: no label can be judged against the others")
    full = NeuralCleanse(TemplateNet(backdoor=True)).scan(images, labels, targets=[0, 1, TARGET], seed=0)
    assert full.warnings == []


def test_a_verdict_near_its_threshold_is_reported_as_borderline(data):
    """The same scan judged at a threshold just under its own score: still infected, but redraws of the norms
    within the search's noise mostly fall below it, and the report says so; judged at the default, far below the
    score, the verdict is steady and nothing is said."""
    images, labels = data
    first = NeuralCleanse(TemplateNet(backdoor=True)).scan(images, labels, seed=0)
    assert first.flagged == [TARGET] and first.steadiness == 1.0 and first.warnings == []
    near = ScanConfig(score_threshold=0.9 * first.decision.score)
    report = NeuralCleanse(TemplateNet(backdoor=True), near).scan(images, labels, seed=0)
    assert [r.mask_l1 for r in report.labels] == [r.mask_l1 for r in first.labels]
    assert report.flagged == [TARGET]
    assert report.steadiness is not None and report.steadiness < STEADY
    assert report.to_dict()["verdict_steadiness"] == report.steadiness
    assert [w for w in report.warnings if w.startswith("the verdict is borderline")]


def test_reference_mode_gives_the_same_verdict(data):
    images, labels = data
    # The original settings, with shorter epochs to keep the test fast.
    config = ReverseConfig(steps_per_epoch=4)
    infected = NeuralCleanse(TemplateNet(True), ScanConfig(mode="reference", search=config)).scan(images, labels)
    clean = NeuralCleanse(TemplateNet(False), ScanConfig(mode="reference", search=config)).scan(images, labels)
    assert infected.flagged == [TARGET] and infected.anomaly_index > 3
    assert clean.flagged == [] and clean.anomaly_index < 2


def test_batched_labels_get_the_updates_they_would_get_alone(data):
    """Optimising labels together changes nothing for each label: the same result as one at a time.

    Full batches (every image at every step) make the batches independent of the label count, and each
    label's initial mask is drawn label by label, so the only difference left is float summation order.
    """
    images, _ = data
    model = TemplateNet(True)
    full = ReverseConfig(
        batch_size=images.shape[0], steps_per_epoch=1, max_epochs=12, patience=2, early_stop_patience=2
    )
    both = reverse_engineer(model, images, [1, TARGET], full, torch.Generator().manual_seed(0))
    first_alone = reverse_engineer(model, images, [1], full, torch.Generator().manual_seed(0))
    assert torch.allclose(both.masks[0], first_alone.masks[0], atol=1e-4)
    assert torch.allclose(both.patterns[0], first_alone.patterns[0], atol=1e-4)
    assert int(both.epochs[0]) == int(first_alone.epochs[0])


def test_best_mask_is_the_smallest_valid_one(data):
    """The kept mask is the smallest-norm mask among epochs reaching the threshold, not the first one."""
    images, _ = data
    config = ReverseConfig(batch_size=20, steps_per_epoch=3, max_epochs=40, patience=2, early_stop_patience=5)
    r = reverse_engineer(TemplateNet(True), images, [TARGET], config, torch.Generator().manual_seed(0))
    assert bool(r.found[0]) and float(r.norms[0]) < 6
    start_norm = 0.5 * 12 * 12  # random init: about half of every pixel
    assert float(r.norms[0]) < start_norm / 10


def test_model_mode_and_grad_flags_are_restored(data):
    images, labels = data
    model = TemplateNet(True).train()
    NeuralCleanse(model, ScanConfig(search=ReverseConfig(max_epochs=2, steps_per_epoch=1))).scan(images, labels)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_probability_outputs_are_detected_and_scanned(data):
    images, labels = data
    model = torch.nn.Sequential(TemplateNet(True), torch.nn.Softmax(dim=1))
    report = NeuralCleanse(model).scan(images, labels, seed=0)
    assert report.outputs_probabilities and report.flagged == [TARGET]


@pytest.mark.parametrize(("scale", "in_float64"), [(8.0, False), (20.0, True)])
def test_a_confident_softmax_model_is_searched_from_far_below_the_top(data, scale, in_float64):
    # On the noisy images a search starts from, the model gives its target a probability far below 1e-12 (times 8:
    # 1e-13 to 1e-30, which float32 holds) or of 0 in float32 (times 20, which only a float64 scan holds): the
    # search must still reach it
    images, labels = data
    report = NeuralCleanse(ConfidentSoftmax(TemplateNet(True), scale)).scan(images, labels, seed=0)
    assert report.outputs_probabilities and report.flagged == [TARGET]
    assert all(row.found for row in report.labels)
    assert (report.config["compute_dtype"] == "float64") == in_float64
    assert any("float64" in w for w in report.warnings) == in_float64


def test_same_seed_same_report(data):
    images, labels = data
    cfg = ReverseConfig(max_epochs=5, steps_per_epoch=2, batch_size=8)
    a = NeuralCleanse(TemplateNet(True), ScanConfig(search=cfg)).scan(images, labels, seed=4)
    b = NeuralCleanse(TemplateNet(True), ScanConfig(search=cfg)).scan(images, labels, seed=4)
    assert torch.equal(a.masks, b.masks) and a.to_dict()["labels"] == b.to_dict()["labels"]


def test_report_dict_has_the_documented_keys(data):
    images, labels = data
    d = NeuralCleanse(TemplateNet(True), ScanConfig(search=ReverseConfig(max_epochs=2))).scan(images, labels).to_dict()
    keys = ("infected", "anomaly_index", "flagged", "labels", "seconds", "mode", "seed", "config", "versions")
    for key in (*keys, "verdict_steadiness"):
        assert key in d
    assert len(d["labels"]) == NUM_LABELS
    assert set(d["labels"][0]) >= {"label", "mask_l1", "attack_success", "anomaly_index", "clean_gap", "compactness"}


def test_sanity_check_refuses_a_mismatched_model(data):
    images, labels = data
    with pytest.raises(SanityCheckError, match="classifies only 0.0% of the clean images"):
        NeuralCleanse(TemplateNet(True)).scan(images, (labels + 1) % NUM_LABELS)
    # Skipped on request.
    NeuralCleanse(TemplateNet(True), ScanConfig(search=ReverseConfig(max_epochs=1), min_clean_accuracy=None)).scan(
        images, (labels + 1) % NUM_LABELS
    )


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(4, 12, 12), "must be a non-empty \\(N, C, H, W\\) tensor"),
        (torch.full((4, 1, 12, 12), 255.0), "divide 8-bit images by 255"),
        (torch.full((4, 1, 12, 12), float("nan")), "NaN"),
    ],
)
def test_bad_images_are_refused(images, message):
    with pytest.raises(ValueError, match=message):
        NeuralCleanse(TemplateNet(True)).scan(images)


def test_labels_beyond_the_model_outputs_are_refused(data):
    images, labels = data
    with pytest.raises(ValueError, match="the labels go up to 9 but the model has 6 outputs"):
        NeuralCleanse(TemplateNet(True)).scan(images, labels.clamp(max=0) + 9)


@pytest.mark.parametrize("targets", [[0], [0, NUM_LABELS], [-1, 2]])
def test_targets_outside_the_model_or_fewer_than_two_are_refused(data, targets):
    images, labels = data
    message = f"targets must be at least 2 labels in 0..{NUM_LABELS - 1}, got {targets}"
    with pytest.raises(ValueError, match=re.escape(message)):
        NeuralCleanse(TemplateNet(True)).scan(images, labels, targets=targets)


def test_fast_mode_is_documented_against_the_reference():
    assert FAST.lr == 0.1 and FAST.betas == (0.5, 0.9) and FAST.threshold == 0.99


def test_trigger_success_is_measured_on_every_image(data):
    """The report's attack success: the share of all images each kept trigger sends to its label."""
    from neuralcleanse.reverse import ReverseResult

    images, labels = data
    masks = torch.zeros(2, 1, 12, 12)
    masks[0, 0][CORNER] = 1.0  # label TARGET: the true trigger, white
    masks[1, 0, :6] = 1.0  # label 0: a black top half changes no prediction (only 0's own images count)
    result = ReverseResult(
        labels=torch.tensor([TARGET, 0]),
        masks=masks,
        patterns=torch.stack([torch.ones(1, 12, 12), torch.zeros(1, 12, 12)]),
        norms=masks.flatten(1).sum(1),
        attack_success=torch.ones(2),  # the search's figure; not what is measured
        found=torch.ones(2, dtype=torch.bool),
        epochs=torch.ones(2, dtype=torch.int64),
        image_passes=torch.ones(2, dtype=torch.int64),
    )
    model = TemplateNet(True)
    black_top = images.clone()
    black_top[:, :, :6] = 0.0
    expected_0 = float((model(black_top).argmax(1) == 0).float().mean())
    assert trigger_success(model, images, result).tolist() == pytest.approx([1.0, expected_0])
    assert expected_0 == pytest.approx(1 / NUM_LABELS)


def test_restarts_keep_the_smallest_valid_mask_per_label():
    from neuralcleanse.reverse import ReverseResult

    masks = torch.zeros(4, 1, 2, 2)
    r = ReverseResult(
        labels=torch.tensor([0, 1, 0, 1]),
        masks=masks,
        patterns=torch.zeros(4, 1, 2, 2),
        norms=torch.tensor([5.0, 1.0, 3.0, 2.0]),
        attack_success=torch.tensor([1.0, 0.5, 1.0, 1.0]),
        found=torch.tensor([True, False, True, True]),
        epochs=torch.tensor([1, 2, 3, 4]),
        image_passes=torch.tensor([10, 20, 30, 40]),
    ).best_of_restarts(2)
    assert r.labels.tolist() == [0, 1]
    assert r.norms.tolist() == [3.0, 2.0], "label 1's smaller mask never reached the threshold"
    assert r.image_passes.tolist() == [40, 60] and r.epochs.tolist() == [4, 6]


def test_rows_can_be_replaced_by_a_better_search_of_the_same_labels():
    from neuralcleanse.reverse import ReverseResult

    r = ReverseResult(
        labels=torch.tensor([3, 4, 5, 6, 7]),
        masks=torch.arange(5.0).view(5, 1, 1, 1),
        patterns=torch.zeros(5, 1, 1, 1),
        norms=torch.tensor([9.0, 2.0, 5.0, 8.0, 1.0]),
        attack_success=torch.ones(5),
        found=torch.tensor([True, True, True, False, True]),
        epochs=torch.ones(5, dtype=torch.int64),
        image_passes=torch.full((5,), 10),
    )
    again = torch.tensor([1, 2, 3, 4])
    better = r.rows(again[:1])  # label 4 found a smaller mask the second time
    better = ReverseResult(**{**better.__dict__, "norms": torch.tensor([0.5]), "masks": torch.full((1, 1, 1, 1), 7.0)})
    merged = r.with_rows(again[:1], ReverseResult.concat([r.rows(again[:1]), better]).best_of_restarts(2))
    assert merged.norms.tolist() == [9.0, 0.5, 5.0, 8.0, 1.0] and merged.masks[1].item() == 7.0
    assert merged.image_passes.tolist() == [10, 20, 10, 10, 10]


def test_every_label_is_searched_again_and_keeps_the_smaller_norm(data):
    images, labels = data
    model = TemplateNet(True)
    phases: list[tuple[str, int]] = []
    once = NeuralCleanse(model, ScanConfig(searches=1)).scan(images, labels, seed=0)
    thrice = NeuralCleanse(model, ScanConfig(searches=3), progress=lambda e: phases.append((e.phase, e.total)))
    report = thrice.scan(images, labels, seed=0)
    assert {total for phase, total in phases if phase == "restart"} == {2 * NUM_LABELS}
    # The first search is the same one (same seed, same labels), so the best of three is never larger.
    for a, b in zip(once.labels, report.labels, strict=True):
        assert b.mask_l1 <= a.mask_l1 + 1e-4 and b.image_passes > a.image_passes
    assert report.flagged == [TARGET] and report.config["restarts"] == 3


def test_the_smallest_labels_are_searched_more_and_keep_the_smaller_norm(data):
    """The labels under MORE_SEARCHES_RATIO of the median (at most MORE_SEARCHED_LABELS, the smallest first) get
    ``more_searches`` more searches; the others keep the default's."""
    from neuralcleanse.config import MORE_SEARCHED_LABELS, MORE_SEARCHES_RATIO

    images, labels = data
    model = TemplateNet(True)
    phases: list[tuple[str, int]] = []
    default = NeuralCleanse(model).scan(images, labels, seed=0)
    config = ScanConfig(more_searches=3)
    report = NeuralCleanse(model, config, progress=lambda e: phases.append((e.phase, e.total))).scan(
        images, labels, seed=0
    )
    norms = torch.tensor([r.mask_l1 for r in default.labels])
    smallest = norms.argsort()[:MORE_SEARCHED_LABELS]
    more = [int(i) for i in smallest if norms[i] < MORE_SEARCHES_RATIO * norms.median()]
    assert TARGET in more  # the planted trigger's label is the smallest, far under the median
    assert {total for phase, total in phases if phase == "more"} == {3 * len(more)}
    for i, (a, b) in enumerate(zip(default.labels, report.labels, strict=True)):
        if i in more:
            assert b.mask_l1 <= a.mask_l1 + 1e-4 and b.image_passes > a.image_passes
        else:
            assert (b.mask_l1, b.image_passes) == (a.mask_l1, a.image_passes)
    assert report.flagged == [TARGET] and report.config["more_searches"] == 3
    with pytest.raises(ValueError, match="more_searches must be at least 0, got -1"):
        ScanConfig(more_searches=-1)


def test_reference_mode_restarts_every_label(data):
    images, labels = data
    config = ReverseConfig(steps_per_epoch=2, max_epochs=30)
    once = NeuralCleanse(TemplateNet(True), ScanConfig(mode="reference", search=config)).scan(
        images, labels, targets=[0, 1]
    )
    twice = NeuralCleanse(TemplateNet(True), ScanConfig(mode="reference", search=config, searches=2)).scan(
        images, labels, targets=[0, 1]
    )
    for a, b in zip(once.labels, twice.labels, strict=True):
        assert b.image_passes > a.image_passes


class _ViewAfterConv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(x.shape[0], -1))  # view() fails on channels-last activations


def test_channels_last_inputs_only_for_models_that_take_them():
    from neuralcleanse._torch import input_memory_format
    from neuralcleanse.models import build_model

    probe = torch.rand(4, 3, 8, 8)
    assert input_memory_format(_ViewAfterConv(), probe) == torch.contiguous_format
    assert input_memory_format(build_model("gtsrb"), torch.rand(4, 3, 32, 32)) == torch.channels_last


class _FailsUnderAutocast(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError("this model has no bfloat16 kernels")
        return self.fc(x.flatten(1))


def test_compute_dtype_follows_the_precision_setting(monkeypatch):
    from neuralcleanse._torch import compute_dtype
    from neuralcleanse.models import build_model

    model, probe = build_model("gtsrb"), torch.rand(2, 3, 32, 32)
    assert compute_dtype(model, probe, "float32") == torch.float32
    assert compute_dtype(model, probe, "bfloat16") == torch.bfloat16
    for amx, avx512_bf16 in [(False, False), (True, False), (False, True)]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        # bfloat16 where the CPU computes it natively; emulated it is slower than float32
        assert compute_dtype(model, probe, "auto") == (torch.bfloat16 if amx or avx512_bf16 else torch.float32)
    assert compute_dtype(_FailsUnderAutocast(), torch.rand(2, 3, 8, 8), "auto") == torch.float32
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, auto, got 'half'"):
        compute_dtype(model, probe, "half")  # type: ignore[arg-type]


def test_bfloat16_search_flags_the_backdoor_and_says_so(data):
    images, labels = data
    report = NeuralCleanse(TemplateNet(True), ScanConfig(search=replace(FAST, precision="bfloat16"))).scan(
        images, labels, seed=0
    )
    assert report.flagged == [TARGET] and report.anomaly_index > 3
    assert report.config["compute_dtype"] == "bfloat16"
    reference = NeuralCleanse(TemplateNet(True), ScanConfig(mode="reference", search=ReverseConfig(max_epochs=2)))
    assert reference.scan(images, labels, targets=[0, 1]).config["compute_dtype"] == "float32"


def test_initial_masks_and_patterns_come_from_init_range(data):
    images, _ = data
    # One step with a vanishing learning rate: the masks and patterns returned are the initial ones.
    config = ReverseConfig(max_epochs=1, steps_per_epoch=1, lr=1e-9, init_range=(0.4, 0.6))
    r = reverse_engineer(TemplateNet(True), images, [0, 1, 2], config, torch.Generator().manual_seed(0))
    for values in (r.masks, r.patterns):
        assert 0.4 - 1e-5 <= float(values.min()) and float(values.max()) <= 0.6 + 1e-5
        assert float(values.std()) > 0.03  # random, not constant
    assert FAST.init_range == (0.4, 0.6) and ReverseConfig().init_range == (0.0, 1.0)  # the original: [0, 1]


def test_a_search_can_start_from_given_masks_and_patterns(data):
    images, _ = data
    mask = torch.full((1, 1, 12, 12), 0.02)
    mask[0, 0][CORNER] = 0.98
    pattern = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    # One step with a vanishing learning rate: the mask and pattern returned are the ones given.
    config = ReverseConfig(max_epochs=1, steps_per_epoch=1, lr=1e-9)
    r = reverse_engineer(TemplateNet(True), images, [TARGET], config, starts=(mask, pattern))
    assert torch.allclose(r.masks, mask, atol=1e-4) and torch.allclose(r.patterns, pattern, atol=1e-4)
    with pytest.raises(ValueError, match=r"starts must be masks \(1, 1, 12, 12\)"):
        reverse_engineer(TemplateNet(True), images, [TARGET], config, starts=(mask[0], pattern))
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        reverse_engineer(TemplateNet(True), images, [TARGET], config, starts=(mask * 2, pattern))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"init_range": (0.7, 0.2)}, "init_range must be"),
        ({"init_range": (-0.1, 0.5)}, "init_range must be"),
        ({"precision": "half"}, "precision must be one of"),
    ],
)
def test_bad_reverse_settings_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        ReverseConfig(**change)


def test_too_few_images_of_many_labels_are_named_in_one_short_line():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1000))
    images, labels = torch.rand(40, 1, 4, 4), torch.arange(40) % 1000  # one image for each of 40 labels
    with pytest.raises(FewImagesError) as caught:
        NeuralCleanse(model, ScanConfig(min_clean_accuracy=None)).scan(images, labels)
    message = str(caught.value)
    assert "label 0 has 1" in message and "label 4 has 1 and 995 more" in message and "label 5 has" not in message
    assert len(caught.value.short) == 1000 and "\n" not in message and len(message) < 400
