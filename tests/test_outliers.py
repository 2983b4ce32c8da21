import pytest
import torch

from neuralcleanse.outliers import CONSISTENCY, anomaly_index


def test_mad_index_by_hand():
    norms = torch.tensor([10.0, 11.0, 12.0, 13.0, 2.0])
    r = anomaly_index(norms)
    # median 11, deviations [1, 0, 1, 2, 9] -> MAD 1
    assert r.median == 11 and r.mad == 1
    assert r.model_index == pytest.approx(9 / CONSISTENCY)
    assert r.flagged == [4]


def test_large_norms_are_never_flagged():
    r = anomaly_index(torch.tensor([10.0, 11.0, 12.0, 13.0, 60.0]))
    assert r.flagged == [] and r.indices[4] > 2


def test_equal_norms_give_zero_indices():
    r = anomaly_index(torch.full((5,), 3.0))
    assert r.model_index == 0 and r.flagged == []


def test_needs_two_finite_norms():
    with pytest.raises(ValueError, match="at least 2 norms"):
        anomaly_index(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="finite"):
        anomaly_index(torch.tensor([1.0, float("nan")]))
