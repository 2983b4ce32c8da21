"""The verdict's steadiness under redraws of the norms within the search's noise."""

import pytest
import torch

from neuralcleanse.blends import BLEND_RATIO
from neuralcleanse.decision import decide
from neuralcleanse.steadiness import STEADY, steadiness

NATURAL = [30.0, 38.0, 44.0, 48.0, 50.0, 53.0, 58.0, 66.0, 80.0]


def boundary(method: str) -> float:
    """The norm of an extra label, below natural ones of a usual spread, at which ``method`` turns from clean to
    infected."""
    flagged, clean = 1.0, 40.0
    assert decide(torch.tensor([flagged, *NATURAL]), method).flagged
    assert not decide(torch.tensor([clean, *NATURAL]), method).flagged
    for _ in range(40):
        middle = (flagged * clean) ** 0.5
        if decide(torch.tensor([middle, *NATURAL]), method).flagged:
            flagged = middle
        else:
            clean = middle
    return flagged


def test_a_verdict_far_from_the_threshold_is_steady():
    assert steadiness(torch.tensor([2.0, *NATURAL])) == 1.0
    assert steadiness(torch.tensor([50.0, *NATURAL])) >= STEADY


@pytest.mark.parametrize("method", ["k-aware-ratio", "paper"])
def test_a_verdict_on_the_threshold_is_borderline(method):
    """Where the decision turns, redraws within the search's noise give either verdict; further from it the
    verdict holds more often, and without noise always."""
    at = boundary(method)
    on = steadiness(torch.tensor([at, *NATURAL]), method)
    assert 0.2 < on < STEADY
    assert steadiness(torch.tensor([at * 0.7, *NATURAL]), method) > on
    assert steadiness(torch.tensor([at, *NATURAL]), method, noise=0.0) == 1.0


def test_the_same_arguments_give_the_same_share_whatever_torch_drew_before():
    norms = torch.tensor([boundary("k-aware-ratio"), *NATURAL])
    first = steadiness(norms)
    torch.rand(1000)  # the redraws use their own generator, not torch's global one
    assert steadiness(norms) == first


@pytest.mark.parametrize("noise, draws", [(-0.1, 200), (0.1, 0)])
def test_bad_settings_are_refused(noise, draws):
    with pytest.raises(ValueError, match="noise must be >= 0 and draws >= 1"):
        steadiness(torch.tensor(NATURAL), noise=noise, draws=draws)


def test_a_blend_target_far_below_the_others_keeps_an_infected_verdict_steady():
    mask = torch.tensor([60.0, 62.0, 65.0, 66.0, 70.0, 72.0, 75.0, 64.0, 68.0, 71.0])  # nothing stands out
    blend = mask.clone()
    blend[2] = 6.0
    assert steadiness(mask) == 1.0  # clean, steadily
    assert steadiness(mask, blend_norms=blend) == 1.0  # infected by the blend verdict, steadily
    borderline = mask.clone()
    borderline[2] = 0.95 * BLEND_RATIO * float(mask.median())  # just under the blend verdict's ratio
    assert 0.2 < steadiness(mask, blend_norms=borderline) < 0.9
