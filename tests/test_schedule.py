import pytest
import torch

from neuralcleanse.schedule import CostSchedule, EarlyStop, RecentSuccess


def run(schedule, successes):
    for s in successes:
        schedule = schedule.update(torch.tensor([s]))
    return schedule


def test_cost_is_set_after_patience_epochs_at_the_threshold():
    s = CostSchedule.start(1)
    s = run(s, [1.0] * 4)
    assert float(s.cost) == 0.0
    s = run(s, [1.0])
    assert float(s.cost) == pytest.approx(1e-3)
    assert not s.moved_up and not s.moved_down


def test_a_miss_resets_the_set_counter():
    s = run(CostSchedule.start(1), [1.0] * 4 + [0.5] + [1.0] * 4)
    assert float(s.cost) == 0.0


def test_cost_moves_up_by_2_and_down_by_2_pow_1_5():
    s = run(CostSchedule.start(1), [1.0] * 5)  # set to 1e-3
    s = run(s, [1.0] * 5)
    assert float(s.cost) == pytest.approx(2e-3) and bool(s.moved_up)
    s = run(s, [0.0] * 5)
    assert float(s.cost) == pytest.approx(2e-3 / 2**1.5) and bool(s.moved_down)


def test_labels_are_independent():
    s = CostSchedule.start(2)
    for _ in range(5):
        s = s.update(torch.tensor([1.0, 0.0]))
    assert s.cost.tolist() == pytest.approx([1e-3, 0.0])


def test_early_stop_needs_both_moves_and_a_stall():
    stop = EarlyStop.start(1, patience=3)
    s = run(CostSchedule.start(1), [1.0] * 10 + [0.0] * 5)  # moved up and down
    for norm in [10.0, 9.0, 9.0, 9.0, 9.0]:  # 9 is an improvement, then three stalls
        stop = stop.update(torch.tensor([norm]))
    assert int(stop.counter) == 3 and bool(stop.should_stop(s))
    assert not bool(stop.should_stop(run(CostSchedule.start(1), [1.0] * 10)))  # only moved up


def test_early_stop_counter_waits_for_a_valid_trigger():
    stop = EarlyStop.start(1)
    for _ in range(5):
        stop = stop.update(torch.tensor([float("inf")]))
    assert int(stop.counter) == 0
    stop = stop.update(torch.tensor([5.0]))
    assert int(stop.counter) == 0  # the first valid norm is an improvement
    stop = stop.update(torch.tensor([5.0]))
    assert int(stop.counter) == 1


def test_recent_success_with_a_window_of_one_is_the_epochs_own():
    recent = RecentSuccess.start(2)
    for epoch in ([0.5, 1.0], [1.0, 0.975]):
        recent = recent.update(torch.tensor(epoch))
        assert torch.equal(recent.mean(), torch.tensor(epoch))


def test_one_short_epoch_keeps_the_window_below_the_threshold_for_the_window():
    recent = RecentSuccess.start(1, window=3)
    means = []
    for s in [1.0, 1.0, 0.9, 1.0, 1.0, 1.0]:
        recent = recent.update(torch.tensor([s]))
        means.append(round(float(recent.mean()), 4))
    # Until three epochs have run, the mean is over those run so far.
    assert means == [1.0, 1.0, 0.9667, 0.9667, 0.9667, 1.0]
    assert [m >= 0.99 for m in means] == [True, True, False, False, False, True]


def test_recent_success_skips_inactive_labels_and_keeps_labels_apart():
    recent = RecentSuccess.start(2, window=2)
    recent = recent.update(torch.tensor([1.0, 0.5]))
    recent = recent.update(torch.tensor([0.0, 0.7]), active=torch.tensor([False, True]))
    assert torch.allclose(recent.mean(), torch.tensor([1.0, 0.6]))
    assert recent.count.tolist() == [1, 2]
    with pytest.raises(ValueError, match="window must be >= 1 epoch, got 0"):
        RecentSuccess.start(2, window=0)
