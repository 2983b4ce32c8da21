"""The model-level decision: the paper's MAD index, the log-scale, K-aware and size tests, and the symmetric check."""

from __future__ import annotations

import math

import pytest
import torch
from _tiny import SIZE, ReaderNet, backdoored_reader, pair_reader, reader_images

from neuralcleanse.config import ScanConfig
from neuralcleanse.decision import (
    COMPANION_GAP,
    COMPANION_RATIO,
    DECISIONS,
    SMALL_RATIO,
    STEP_DOWN_RATIO,
    TINY_SHARE,
    decide,
)
from neuralcleanse.outliers import anomaly_index
from neuralcleanse.pairs import MUTUAL_RATIO, SUSPECT_CONFUSION, PairCheck, is_natural, mutual_verdicts
from neuralcleanse.scan import NeuralCleanse


def test_paper_decision_is_the_anomaly_index_exactly():
    norms = torch.tensor([3.0, 40.0, 42.0, 45.0, 50.0, 51.0, 60.0, 39.0, 47.0, 44.0])
    paper, reference = decide(norms, "paper"), anomaly_index(norms, 2.0)
    assert paper.flagged == reference.flagged == [0]
    assert paper.score == pytest.approx(reference.model_index) and paper.threshold == 2.0


@pytest.mark.parametrize("method", DECISIONS)
def test_one_small_norm_is_flagged_and_a_spread_is_not(method):
    assert decide(torch.tensor([4.0, 40, 42, 45, 50, 51, 60, 39, 47, 44]), method).flagged == [0]
    assert decide(torch.tensor([36.0, 40, 42, 45, 50, 51, 60, 39, 47, 44]), method).flagged == []


def test_k_aware_steps_down_through_several_infected_labels():
    norms = torch.tensor([5.0, 6.0, 7.0, 40, 42, 45, 50, 51, 60, 39])
    d = decide(norms, "k-aware")
    assert sorted(d.flagged) == [0, 1, 2] and d.flagged[0] == 0
    assert d.score > d.threshold and all(d.per_label[i] > d.threshold for i in (0, 1, 2))
    assert decide(norms, "paper").flagged == [0, 1, 2] or len(decide(norms, "paper").flagged) < 3


def test_k_aware_threshold_holds_from_10_to_1000_labels():
    """Log-normal norms without any outlier: the paper's index flags more labels the more there are; the
    order-statistic test keeps its false-positive rate."""
    flagged = {"paper": 0, "k-aware": 0, "k-aware-ratio": 0}
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        norms = (math.log(50) + 0.25 * torch.randn(1000, generator=g)).exp()
        for method in flagged:
            flagged[method] += bool(decide(norms, method).flagged)  # type: ignore[arg-type]
    assert flagged["k-aware"] <= 2 and flagged["k-aware-ratio"] <= 2 and flagged["paper"] >= 15


def test_a_small_trigger_among_widely_spread_natural_norms_is_flagged_by_size():
    """Ten labels whose natural norms span a factor of ten (12 to 112): the null's spread hides a target at a
    fortieth of the median from the k-aware test, not from the size criterion."""
    norms = torch.tensor([95.0, 112, 12, 20, 86, 30, 1.3, 57, 33, 92])
    assert decide(norms, "k-aware").flagged == []
    d = decide(norms, "k-aware-ratio")
    assert d.flagged == [6] and d.score > d.threshold == 1.0
    assert d.per_label[6] == max(d.per_label) and d.per_label[2] < 1.0  # 12 is over a quarter of the median


def test_size_flags_a_block_of_targets_that_the_step_down_misses():
    """Three targets close to each other: the smallest is not far from the next, so the step-down stops at once;
    together they lie under a quarter of the median and are improbable as a block."""
    norms = torch.tensor([49.7, 167.5, 38.5, 31.1, 65.9, 60.0, 6.7, 7.3, 35.3, 8.6])
    assert decide(norms, "k-aware").flagged == []
    assert sorted(decide(norms, "k-aware-ratio").flagged) == [6, 7, 9]


def test_size_flags_two_targets_of_the_same_norm_among_widely_spread_labels():
    """Two targets at 6.4 and 6.7 among natural norms of 22 to 334: each alone is ordinary beside the other (the
    block of the smallest label is not unusual), the two together are."""
    norms = torch.tensor([43.6, 21.6, 97.1, 21.8, 333.9, 6.4, 32.9, 40.3, 46.8, 6.7])
    assert decide(norms, "k-aware").flagged == []
    d = decide(norms, "k-aware-ratio")
    assert sorted(d.flagged) == [5, 9] and d.score > d.threshold


def test_size_alone_does_not_flag_a_natural_tail():
    """A label under a quarter of the median is not flagged when it is not unusual among the others: ten widely
    spread natural norms (log-normal, spread 1) where the smallest is below the ratio."""
    norms = torch.tensor([5.0, 8.0, 14.0, 20.0, 30.0, 45.0, 60.0, 90.0, 150.0, 300.0])
    assert norms.min() / norms.median() < SMALL_RATIO
    d = decide(norms, "k-aware-ratio")
    assert d.flagged == [] and d.score < d.threshold


def test_a_third_target_between_the_flagged_and_the_natural_labels_joins_them():
    """Two targets at 0.17-0.19 of the median are flagged by size; a third at 0.29 is not under a quarter of it,
    but lies nearer (in log norm) to the second target than to the smallest natural label, at 0.9. Moved over
    COMPANION_RATIO of the median, it stays out."""
    norms = torch.tensor([40.0, 7.5, 45.0, 50.0, 8.5, 62.0, 13.0, 80.0, 95.0, 120.0])
    assert SMALL_RATIO < norms[6] / norms.median() < COMPANION_RATIO
    d = decide(norms, "k-aware-ratio")
    assert sorted(d.flagged) == [1, 4, 6] and d.flagged[-1] == 6
    assert 1.0 < d.per_label[6] <= d.score  # a companion is never more suspicious than the labels it joins
    norms[6] = 23.0
    assert sorted(decide(norms, "k-aware-ratio").flagged) == [1, 4]


def test_a_second_target_far_above_a_pixel_sized_first_joins_it_when_a_halving_below_the_rest():
    """A first target at 0.02 of the median (a pixel) and a second at 0.30: the second is nearer, in log norm, to the
    natural labels (from 0.76) than to the first, but more than a halving (COMPANION_GAP) below them, and joins.
    With the natural labels starting at 0.46, within a halving, it stays out."""
    norms = torch.tensor([1.0, 16.0, 40.0, 45.0, 50.0, 55.0, 62.0, 80.0, 95.0, 120.0])
    assert math.log(norms[2] / norms[1]) < math.log(norms[1] / norms[0])
    assert norms[2] / norms[1] > COMPANION_GAP and norms[1] / norms.median() < COMPANION_RATIO
    assert sorted(decide(norms, "k-aware-ratio").flagged) == [0, 1]
    norms[2] = 24.0
    assert decide(norms, "k-aware-ratio").flagged == [0]


def test_a_small_label_nearer_the_natural_ones_than_the_target_does_not_join_it():
    """A target at a tenth of the median and a label at 0.36 of it, nearer to the label above (0.44) than to the
    target: the target alone is flagged."""
    norms = torch.tensor([5.0, 18.0, 22.0, 45.0, 50.0, 62.0, 80.0, 95.0, 120.0, 60.0])
    assert norms[1] / norms.median() < COMPANION_RATIO
    assert decide(norms, "k-aware-ratio").flagged == [0]


def test_a_target_under_the_ratio_is_judged_with_a_second_one_just_over_it():
    """Natural norms spread over a factor of six, a target at 0.18 of the median and a second at 0.30: the first
    alone is within the spread that the two of them widen, but the pair is unusual; the first is flagged by
    size and the second joins it. With the second target natural (at the median), the first is flagged alone."""
    norms = torch.tensor([9.0, 15.0, 40.5, 41.0, 43.5, 56.5, 64.0, 101.0, 111.0, 242.0])
    assert norms[0] / norms.median() < SMALL_RATIO < norms[1] / norms.median() < COMPANION_RATIO
    d = decide(norms, "k-aware-ratio")
    assert sorted(d.flagged) == [0, 1] and d.per_label[0] > 1
    norms[1] = 50.0
    assert decide(norms, "k-aware-ratio").flagged == [0]


def test_a_natural_label_well_above_the_targets_is_not_flagged_however_alike_the_rest():
    """A target at a sixteenth of the median beside natural norms within 10% of each other but one at 0.65 of the
    median: the step-down's null, fitted to the tight natural labels, finds that one significant, but no label
    over STEP_DOWN_RATIO of the median is flagged; its score stays at the threshold."""
    norms = torch.tensor([3.0, 30.0, 42.0, 45.0, 46.0, 47.0, 48.0, 49.0, 50.0, 52.0])
    assert norms[1] / norms.median() > STEP_DOWN_RATIO
    assert sorted(decide(norms, "k-aware").flagged) == [0, 1]
    d = decide(norms, "k-aware-ratio")
    assert d.flagged == [0] and d.per_label[1] == pytest.approx(d.threshold)


def test_companions_cannot_flag_a_model_nothing_else_flags():
    """Two labels at a third of the median, far below the rest: not flagged by size, order statistic or favour,
    so they have nothing to join."""
    norms = torch.tensor([17.0, 18.0, 30.0, 45.0, 50.0, 62.0, 80.0, 95.0, 120.0, 60.0])
    d = decide(norms, "k-aware-ratio")
    assert d.flagged == [] and d.score < d.threshold


def test_a_trigger_of_two_pixels_is_flagged_though_every_label_is_small():
    """The norms of a CIFAR-10 model poisoned with nine scattered pixels (the zoo's cifar10-pixels-03, seed 1): the
    backdoor left every label reachable with a few pixels, so its target (1.6 pixels' worth) is no outlier among
    them; under TINY_SHARE of a 32x32 image's pixels it is flagged all the same. Ten times larger (a clean model's
    scale), nothing is."""
    norms = torch.tensor([5.3, 6.4, 3.7, 9.1, 36.2, 26.8, 1.6, 9.3, 20.2, 15.0])
    assert decide(norms, "k-aware-ratio").flagged == []
    tiny = decide(norms, "k-aware-ratio", pixels=32 * 32)
    assert tiny.flagged == [6] and tiny.per_label[6] == pytest.approx(TINY_SHARE * 1024 / 1.6)
    assert tiny.score == max(tiny.per_label) and max(tiny.per_label[:6] + tiny.per_label[7:]) < 1
    assert decide(norms * 10, "k-aware-ratio", pixels=32 * 32).flagged == []
    assert decide(norms, "k-aware-ratio", threshold=2.0, pixels=32 * 32).flagged == []  # 2.05 pixels / 1.6 < 2
    assert decide(norms, "k-aware", pixels=32 * 32).flagged == []  # a criterion of the default alone
    with pytest.raises(ValueError, match="pixels must be the images' H \\* W, at least 1, got 0"):
        decide(norms, pixels=0)


def test_two_labels_are_too_few_for_a_null():
    for method in ("k-aware", "k-aware-ratio"):
        d = decide(torch.tensor([1.0, 100.0]), method)  # type: ignore[arg-type]
        assert d.flagged == [] and d.score == 0.0


def test_decide_refuses_bad_norms_and_methods():
    with pytest.raises(ValueError, match="method must be one of paper, log-mad, k-aware, k-aware-ratio, got 'mad'"):
        decide(torch.ones(5), "mad")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="norms must be at least 2 finite values >= 0"):
        decide(torch.tensor([1.0, float("nan"), 2.0]))


def test_two_infected_labels_are_both_flagged():
    model, prototypes = backdoored_reader({4: (0, 0), 5: (SIZE - 2, SIZE - 2)})
    images, labels = reader_images(prototypes)
    report = NeuralCleanse(model).scan(images, labels, seed=0)
    assert sorted(report.flagged) == [4, 5] and report.decision.method == "k-aware-ratio"
    assert all(not p.natural for p in report.pairs)


def test_a_naturally_close_pair_is_not_flagged():
    """Labels 4 and 5 read two 2x2 patches and their images differ only there: a small trigger reaches either
    from everywhere, and the paper's index flags both; but each is as close to the other as the other to it, and
    the model confuses them."""
    model, prototypes = pair_reader({4: (5, 4), 5: (5, 6)})
    images, labels = reader_images(prototypes)
    report = NeuralCleanse(model).scan(images, labels, seed=0)
    assert sorted(report.paper_flagged) == [4, 5]
    assert report.flagged == [] and not report.infected
    assert {(p.label, p.source) for p in report.pairs} == {(4, 5), (5, 4)} and all(p.natural for p in report.pairs)
    assert all(p.source_suspect and p.confusion >= SUSPECT_CONFUSION for p in report.pairs)
    paper = NeuralCleanse(model, ScanConfig(decision="paper")).scan(images, labels, seed=0)
    assert sorted(paper.flagged) == [4, 5] and paper.pairs == []


def test_a_pair_scanned_in_part_is_checked_with_the_source_searched_there():
    """Only labels 0-4 are scanned: 4 is flagged, its most confused label 5 was not searched, so the check
    searches 5's universal trigger itself, finds it as small as 4's, and clears the pair."""
    model, prototypes = pair_reader({4: (5, 4), 5: (5, 6)})
    images, labels = reader_images(prototypes)
    report = NeuralCleanse(model).scan(images, labels, targets=[0, 1, 2, 3, 4], seed=0)
    assert report.flagged == [] and [(p.label, p.source, p.natural) for p in report.pairs] == [(4, 5, True)]
    check = report.pairs[0]
    assert check.source_norm <= MUTUAL_RATIO * check.label_norm < MUTUAL_RATIO * 5  # a 2x2 patch, not a template


def test_a_neighbour_no_easier_to_reach_than_any_label_does_not_clear_a_suspect():
    """The GTSRB two-target model of the benchmark zoo: target 24 (universal trigger 5.3) and the sign it is most
    confused with, 21 (35.1, at the median), are as close one way as the other (3.8 and 3.9). Their likeness
    explains a trigger from 21, not one from every label: 24 stays flagged. A mutual pair is cleared."""
    towards, back, confusion = 3.81, 3.86, 0.106
    assert not is_natural(towards, back, confusion, label_norm=5.31, source_norm=35.1)
    assert is_natural(towards, back, confusion, label_norm=5.31, source_norm=2 * 5.31)
    assert not is_natural(towards, 1.2 * towards, confusion, label_norm=5.31, source_norm=5.31)


def test_two_suspects_close_both_ways_are_neighbours_only_if_the_model_confuses_them():
    """An MNIST model of the benchmark zoo with two targets, 1 and 8, each the other's most confused label: the
    way from 1 to 8 (1.8) is short because 8's trigger works from every label, not because the digits look alike,
    and the model confuses them on 2% of clean images. As suspects both, they are kept; a pair as close but
    confused as often as the tests' hand-built neighbours is cleared, and so is one whose source was not flagged."""
    towards, back, norms = 4.9, 1.8, {"label_norm": 5.9, "source_norm": 2.3}
    assert not is_natural(towards, back, 0.020, **norms, source_suspect=True)
    assert is_natural(towards, back, 0.27, **norms, source_suspect=True)
    assert is_natural(towards, back, 0.020, **norms, source_suspect=False)


def test_two_targets_alike_by_nature_are_cleared_only_by_checks_from_both_sides():
    """A CIFAR-10 model of the benchmark zoo with two targets, cat (3, universal trigger 2.0) and frog (6, 4.4),
    confused on 24% of clean images: the way from frog back to cat (3.5) is short because cat's trigger works
    from every label, so frog's check alone calls them neighbours; cat's own check runs from its most confused
    label, dog (5), and finds no neighbour (the way back from cat to dog is six times the way there). Frog stays
    flagged; the hand-built neighbours, each the other's source and each natural, are cleared."""
    frog = PairCheck(
        6, 3, 0.24, towards=4.39, back=3.54, label_norm=4.39, source_norm=2.0, natural=True, source_suspect=True
    )
    cat = PairCheck(3, 5, 0.47, towards=1.47, back=9.49, label_norm=2.0, source_norm=23.4, natural=False)
    assert is_natural(frog.towards, frog.back, frog.confusion, frog.label_norm, frog.source_norm, source_suspect=True)
    assert [c.natural for c in mutual_verdicts([frog, cat])] == [False, False]
    assert mutual_verdicts([frog])[0].natural is False  # the source's check missing: no evidence from its side
    first = PairCheck(4, 5, 0.27, 2.0, 2.1, 4.0, 4.0, natural=True, source_suspect=True)
    second = PairCheck(5, 4, 0.27, 2.1, 2.0, 4.0, 4.0, natural=True, source_suspect=True)
    assert [c.natural for c in mutual_verdicts([first, second])] == [True, True]
    unflagged_source = PairCheck(4, 5, 0.27, 2.0, 2.1, 4.0, 4.0, natural=True, source_suspect=False)
    assert mutual_verdicts([unflagged_source])[0].natural is True


@pytest.mark.slow
def test_clean_model_with_500_labels_flags_nothing():
    """500 labels read random templates of 15-30 pixels (overlapping): nothing is planted, and the smallest
    of 500 natural triggers must not look like a backdoor."""
    g = torch.Generator().manual_seed(0)
    k = 500
    reads = torch.zeros(k, SIZE * SIZE)
    for i in range(k):
        size = int(torch.randint(15, 31, (1,), generator=g))
        reads[i, torch.randperm(SIZE * SIZE, generator=g)[:size]] = 1.0
    model = ReaderNet(reads.view(k, SIZE, SIZE), torch.zeros(k))
    images, labels = reader_images(0.1 + 0.7 * reads.view(k, SIZE, SIZE), per_label=2)
    report = NeuralCleanse(model, ScanConfig(searches=1, allow_few_images=True)).scan(images, labels, seed=0)
    assert report.flagged == [] and report.decision.score < report.decision.threshold
