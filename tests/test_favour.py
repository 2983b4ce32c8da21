"""The clean gap (how far each label lies below the model's choice on clean images) and the favour criterion."""

from __future__ import annotations

import math

import pytest
import torch

from neuralcleanse.decision import FAVOUR_RATIO, decide
from neuralcleanse.favour import clean_gaps, gap_residual_p
from neuralcleanse.metrics import outputs_of


class Linear(torch.nn.Module):
    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.eye(4, 16))
        self.bias = torch.nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T * 8 + self.bias


def test_a_label_the_model_leans_towards_has_the_smallest_gap_and_a_softmax_gives_the_same_gaps():
    images = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    model = Linear(torch.tensor([0.0, 0.0, 3.0, 0.0]))
    gaps = clean_gaps(outputs_of(model, images))
    assert gaps.shape == (4,) and gaps.dtype == torch.float64 and bool((gaps >= 0).all())
    assert int(gaps.argmin()) == 2 and gaps[2] < 0.7 * gaps[[0, 1, 3]].min()
    softmax = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    assert torch.allclose(clean_gaps(outputs_of(softmax, images), outputs_probabilities=True), gaps, atol=1e-4)


def test_a_gap_is_judged_against_the_line_of_the_other_labels_not_against_their_gaps():
    """The reference labels' log gaps follow their log norms exactly (slope 0.5): a small label whose gap is what
    its norm predicts is ordinary although its gap is the smallest; one at half that gap is not."""
    log_norms = torch.linspace(math.log(20), math.log(80), 40, dtype=torch.float64)
    log_norms[:2] = math.log(5)
    log_gaps = 0.5 * log_norms + 0.02 * torch.sin(torch.arange(40, dtype=torch.float64))
    log_gaps[1] -= math.log(2)
    p = gap_residual_p(log_norms, log_gaps, [0, 1], torch.arange(3, 40))
    assert p[0] > 0.05 and p[1] < 1e-6
    assert int(log_gaps[:2].argmax()) == 0 and float(log_gaps[0]) < float(log_gaps[3:].min())


def _gtsrb_like(target_gap: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """43 labels: natural norms log-normal about 30 (log spread 0.3), their log gaps loosely following their log
    norms; label 0 a backdoor far below (0.15 of the median), label 1 a second target at 0.3 of it whose gap is
    ``target_gap`` times the median gap (its norm predicts 0.7: the natural gaps follow the norms to the power 0.3).
    No natural norm lies under half of 30, so that none is a companion of the targets (decision.COMPANION_RATIO)
    and the favour criterion is tested alone."""
    g = torch.Generator().manual_seed(seed)
    log_norms = (math.log(30) + 0.3 * torch.randn(43, generator=g, dtype=torch.float64)).clamp_min(math.log(15))
    log_gaps = (
        math.log(22) + 0.3 * (log_norms - math.log(30)) + 0.05 * torch.randn(43, generator=g, dtype=torch.float64)
    )
    norms, gaps = log_norms.exp(), log_gaps.exp()
    median = float(norms.median())
    norms[0], norms[1] = 0.15 * median, 0.3 * median
    gaps[0], gaps[1] = 0.7 * float(gaps.median()), target_gap * float(gaps.median())
    return norms, gaps


def test_a_second_target_the_model_favours_on_clean_images_is_flagged():
    norms, gaps = _gtsrb_like(target_gap=0.5)
    assert FAVOUR_RATIO > 0.3 > 0.25  # over a quarter of the median: size alone leaves it
    assert decide(norms).flagged == [0]
    d = decide(norms, gaps=gaps)
    assert sorted(d.flagged) == [0, 1] and d.per_label[1] > d.threshold


def test_a_small_label_whose_gap_its_norm_explains_is_not_flagged():
    """The same second label with the gap its norm predicts (natural labels easy to reach are close on clean
    images too), and with an ordinary gap: not flagged."""
    norms, gaps = _gtsrb_like(target_gap=1.0)
    predicted = 22 * (float(norms[1]) / 30) ** 0.3
    for gap in (predicted, float(gaps[2:].median())):
        gaps[1] = gap
        assert decide(norms, gaps=gaps).flagged == [0]


def test_a_favoured_label_above_a_smaller_natural_one_is_not_flagged():
    """The favoured second label of the GTSRB-like model with the label below it natural (at 0.3 of the median,
    ordinary by norm, its gap what its norm predicts): a backdoor's target would be the easier label to reach,
    so the favoured one is the model's taste and nothing is flagged."""
    norms, gaps = _gtsrb_like(target_gap=0.5)
    median = float(norms.median())
    norms[0], norms[1] = 0.3 * median, 0.35 * median
    gaps[0] = 22 * (float(norms[0]) / 30) ** 0.3
    d = decide(norms, gaps=gaps)
    assert d.flagged == [] and d.per_label[1] == d.threshold and d.score <= d.threshold
    norms[0] = 0.5 * median  # the favoured label is now the smallest: flagged as before
    assert decide(norms, gaps=gaps).flagged == [1]


def test_favour_keeps_clean_models_clean_when_gaps_follow_norms():
    """Clean models whose natural gaps follow their norms closely (correlation 0.8): the favour criterion adds
    few false positives at 10, 43 and 1000 labels."""
    added = 0
    for k in (10, 43, 1000):
        for seed in range(30):
            g = torch.Generator().manual_seed(seed)
            z = torch.randn(k, generator=g, dtype=torch.float64)
            norms = (math.log(50) + 0.5 * z).exp()
            gaps = (0.3 * (0.8 * z + 0.6 * torch.randn(k, generator=g, dtype=torch.float64))).exp()
            added += bool(set(decide(norms, gaps=gaps).flagged) - set(decide(norms).flagged))
    assert added <= 5  # a line-free test of the raw gaps adds most of the 1000-label ones (docs/detection.md)


def test_gaps_must_match_the_norms():
    with pytest.raises(ValueError, match="gaps must be 3 values >= 0 \\(NaN: unknown\\), one per norm"):
        decide(torch.tensor([1.0, 2.0, 3.0]), gaps=torch.tensor([1.0, 2.0]))


def test_a_softmax_that_rounds_far_labels_to_zero_leaves_their_gaps_unknown_and_untested():
    """Logits 1000 apart: the softmax gives the far labels a probability of exactly 0, so their gaps are unknown
    (NaN), not the gap of a clamped log; the decision tests no label whose gap is unknown."""
    images = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    softmax = torch.nn.Sequential(Linear(torch.zeros(4)), torch.nn.Softmax(dim=1))
    softmax[0].weight.data *= 1000
    gaps = clean_gaps(outputs_of(softmax, images), outputs_probabilities=True)
    assert bool(gaps.isnan().all())
    norms, known = _gtsrb_like(target_gap=0.5)
    known[1] = math.nan
    assert decide(norms, gaps=known).flagged == [0]
    assert decide(norms, gaps=torch.full_like(norms, math.nan)).flagged == [0]
