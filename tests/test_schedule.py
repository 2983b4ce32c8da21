import pytest
import torch

from neuralcleanse.schedule import CostSchedule, EarlyStop


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
