"""Learning-rate schedules against their formulas."""

import math

import pytest

from deepnet.schedules import Schedule


@pytest.mark.parametrize("steps_per_epoch, warmup", [(3, 0.5), (10, 0.25), (7, 1.5), (600, 1.0)])
def test_warmup_never_exceeds_the_schedules_rate(steps_per_epoch, warmup):
    schedule = Schedule("constant", 1.0, steps_per_epoch, 10, warmup=warmup)
    rates = [schedule(t) for t in range(int(3 * steps_per_epoch))]
    assert max(rates) <= 1.0
    assert rates == sorted(rates)  # rises, then stays


def test_step_schedule_boundaries_are_exact_for_fractional_epochs():
    schedule = Schedule("step", 1.0, 10, 10, every=0.1, gamma=0.5)
    assert [schedule(t) for t in range(6)] == [0.5**t for t in range(6)]


def test_cosine_and_one_cycle_follow_their_formulas():
    T = 40  # 10 steps a epoch, 4 epochs
    cosine = Schedule("cosine", 1.0, 10, 4, min_lr=0.1)
    for t in range(T):
        assert cosine(t) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / T)))
    one_cycle = Schedule("one-cycle", 1.0, 10, 4, pct=0.25, div=25, final_div=1e4)
    rates = [one_cycle(t) for t in range(T)]
    assert rates[0] == pytest.approx(1 / 25) and max(rates) == rates[10] == pytest.approx(1.0)
    assert rates[:11] == sorted(rates[:11]) and rates[10:] == sorted(rates[10:], reverse=True)
    assert rates[-1] > 1e-4 and one_cycle(T) == pytest.approx(1e-4)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="final_div"):
        Schedule("one-cycle", 1.0, 10, 4, final_div=0.5)
    with pytest.raises(ValueError, match="min_lr"):
        Schedule("cosine", 1.0, 10, 4, min_lr=2.0)  # a "decay" that rises
