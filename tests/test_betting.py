"""The betting test for bounded means: the capital against a step-by-step recomputation, its
error rate on the distributions that are hardest for it, its edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.betting import CAP, N_ORDERS, _orders, log_capital, reject_positive_mean
from harness.errors import HarnessError


def _loop_log_capital(x, lo, hi):
    """The capital of betting.py written out one step at a time, for one order."""
    prior_var = ((hi - lo) / 2.0) ** 2
    m, v, total, sq, logk = 0.0, prior_var, 0.0, 0.0, 0.0
    for t, value in enumerate(x, start=1):
        stake = min(max(m / (v + m * m), 0.0), CAP / -lo)  # from the values before this one only
        logk += math.log(1.0 + stake * value)
        total += value
        mean_t = total / (t + 1.0)
        sq += (value - mean_t) ** 2
        m, v = mean_t, (prior_var + sq) / (t + 1.0)
    return logk


def test_the_capital_is_the_average_over_orders_of_a_step_by_step_bet():
    rng = np.random.default_rng(3)
    x = rng.uniform(-0.4, 1.0, size=9)
    per_order = [_loop_log_capital(x[order], -0.5, 1.0) for order in _orders(9)]
    expected = math.log(np.mean(np.exp(per_order)))
    assert log_capital(x, -0.5, 1.0) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert len(per_order) == N_ORDERS and list(_orders(9)[0]) == list(range(9))


def test_the_capital_of_a_batch_equals_the_capital_of_each_data_set():
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, size=(3, 5, 12))
    batch = log_capital(x, -1.0, 1.0)
    assert batch.shape == (3, 5)
    assert batch[2, 4] == pytest.approx(float(log_capital(x[2, 4], -1.0, 1.0)), rel=1e-12)


@pytest.mark.parametrize("p_low", [0.05, 0.3, 0.5])
def test_false_rejections_stay_under_alpha_on_two_point_data_with_mean_zero(p_low):
    """Two-point laws at the bounds' edge are where a bounded-mean test is most likely to err."""
    rng = np.random.default_rng(5)
    lo, hi, alpha, n, runs = -1.0, 1.0, 0.05, 24, 4000
    high_value = -lo * p_low / (1.0 - p_low)  # makes the mean exactly 0
    x = np.where(rng.random((runs, n)) < p_low, lo, high_value)
    rate = reject_positive_mean(x, lo, hi, alpha).mean()
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_false_rejections_stay_under_alpha_on_zero_inflated_skewed_data():
    rng = np.random.default_rng(6)
    runs, n, alpha = 4000, 24, 0.05
    raw = np.where(rng.random((runs, n)) < 0.8, 0.0, rng.lognormal(0, 1, (runs, n)) * 0.1)
    raw = np.minimum(raw, 1.0)
    truth = 0.2 * np.mean(np.minimum(rng.lognormal(0, 1, 2_000_000) * 0.1, 1.0))  # E[raw]
    rate = reject_positive_mean(raw - truth, -truth, 1.0 - truth, alpha).mean()
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_a_clear_positive_mean_is_rejected_and_a_weak_one_at_few_pairs_is_not():
    x = np.full(24, 0.5)
    assert reject_positive_mean(x, -1.0, 1.0, 0.05)
    # no valid test on [-1, 1] can reject a constant 0.05 at 24 values and alpha 0.001: a law
    # with mass 0.05/1.05 at -1 and mean 0 gives that sample with probability 0.31 > 0.001
    assert not reject_positive_mean(np.full(24, 0.05), -1.0, 1.0, 0.001)


def test_the_bounds_alone_decide_when_the_null_is_impossible_or_pinned():
    assert reject_positive_mean(np.array([1.0, 1.0]), 1.0, 1.0, 0.01)  # lo > 0: E[X] > 0 surely
    assert reject_positive_mean(np.array([0.0, 0.2]), 0.0, 1.0, 0.01)  # lo = 0: H0 means X = 0
    assert not reject_positive_mean(np.array([0.0, 0.0]), 0.0, 1.0, 0.01)
    assert not reject_positive_mean(np.array([-0.5, 0.0]), -1.0, 0.0, 0.01)  # hi = 0: never


def test_values_outside_the_bounds_are_refused():
    with pytest.raises(HarnessError, match="outside their bounds"):
        reject_positive_mean(np.array([0.2, 1.5]), -1.0, 1.0, 0.05)
    with pytest.raises(ValueError, match="alpha"):
        reject_positive_mean(np.array([0.2, 0.5]), -1.0, 1.0, 1.0)


def _loop_log_capital_path(x, lo, hi):
    """The log capital after each step of one order, written out (see _loop_log_capital)."""
    return [_loop_log_capital(x[:t], lo, hi) for t in range(1, len(x) + 1)]


def test_the_sequential_capital_is_the_highest_point_of_one_step_by_step_bet_in_arrival_order():
    rng = np.random.default_rng(7)
    x = rng.uniform(-0.4, 1.0, size=11)
    path = _loop_log_capital_path(x, -0.5, 1.0)
    assert log_capital(x, -0.5, 1.0, sequential=True) == pytest.approx(max(0.0, max(path)), abs=1e-12)
    # the arrival order matters: reversed values give another path (the averaged form does not)
    back = _loop_log_capital_path(x[::-1], -0.5, 1.0)
    assert log_capital(x[::-1], -0.5, 1.0, sequential=True) == pytest.approx(max(0.0, max(back)), abs=1e-12)
    assert max(path) != pytest.approx(max(back))
    # a batch of data sets gives each set's own value
    batch = rng.uniform(-0.5, 1.0, size=(4, 11))
    one = [float(log_capital(b, -0.5, 1.0, sequential=True)) for b in batch]
    assert log_capital(batch, -0.5, 1.0, sequential=True) == pytest.approx(one, rel=1e-12)


def _stopped_rejections(x, lo, hi, alpha, looks, sequential):
    """Reject when any look (the first n values, n in ``looks``) rejects: a run that adds
    pairs until the cell is decided."""
    out = np.zeros(x.shape[0], dtype=bool)
    for n in looks:
        out |= reject_positive_mean(x[:, :n], lo, hi, alpha, sequential=sequential)
    return out


@pytest.mark.parametrize("law", ["two-point", "zero-inflated"])
def test_the_sequential_test_keeps_its_level_when_the_run_stops_at_its_first_rejection(law):
    """Ten looks, 24 pairs apart, up to 240 pairs: the chance that any look rejects a true
    null stays under alpha. The same looks with the fixed-n test hold no such promise."""
    rng = np.random.default_rng(8)
    runs, n, alpha = 3000, 240, 0.05
    if law == "two-point":  # mass 0.3 at -1, the rest at 3/7: mean exactly 0
        x, lo, hi = np.where(rng.random((runs, n)) < 0.3, -1.0, 0.3 / 0.7), -1.0, 1.0
    else:  # 80% zeros, the rest lognormal, centred on its exact mean
        raw = np.where(rng.random((runs, n)) < 0.8, 0.0, np.minimum(rng.lognormal(0, 1, (runs, n)) * 0.1, 1.0))
        truth = 0.2 * np.mean(np.minimum(rng.lognormal(0, 1, 2_000_000) * 0.1, 1.0))
        x, lo, hi = raw - truth, -truth, 1.0 - truth
    looks = range(24, n + 1, 24)
    rate = _stopped_rejections(x, lo, hi, alpha, looks, sequential=True).mean()
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_the_sequential_test_rejects_a_clear_mean_and_gains_power_as_pairs_come():
    rng = np.random.default_rng(9)
    x = np.clip(rng.normal(0.2, 0.5, size=(400, 240)), -1.0, 1.0)
    early = reject_positive_mean(x[:, :24], -1.0, 1.0, 0.001, sequential=True).mean()
    late = reject_positive_mean(x, -1.0, 1.0, 0.001, sequential=True).mean()
    assert early < 0.2 and late > 0.8
    assert reject_positive_mean(np.full(24, 0.5), -1.0, 1.0, 0.05, sequential=True)
