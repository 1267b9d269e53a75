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
