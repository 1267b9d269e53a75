"""The shipped rule: ratio-of-means estimand, bounds of the tested quantities, verdicts at the
threshold, the interval, and its error rate where the old t rule failed."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from harness.bounded import (
    contrast_data,
    decide_ratio,
    efficiency_data,
    interaction_data,
    kv_set_data,
    linear_bounds,
    mean_data,
    ratio_interval,
    reject_above,
    reject_below,
)
from harness.guards import GuardResult
from tiny import claims_finding


def _pairs(arm, base, champ):
    ids = [f"p{i:03d}" for i in range(len(arm))]
    return [dict(zip(ids, map(float, v))) for v in (arm, base, champ)]


def test_linear_bounds_are_the_extremes_over_the_corners_of_the_box():
    rng = np.random.default_rng(1)
    for _ in range(20):
        w = rng.normal(size=4)
        low, high = rng.uniform(-2, 0, 4), rng.uniform(0, 3, 4)
        corners = [float(np.dot(w, np.where(c, high, low))) for c in itertools.product([0, 1], repeat=4)]
        assert linear_bounds(w, low, high) == pytest.approx((min(corners), max(corners)), abs=1e-12)


def test_the_estimate_is_a_ratio_of_means_not_a_mean_of_ratios():
    arm, base, champ = [0.5, 0.1], [0.0, 0.0], [1.0, 0.2]  # per-pair ratios 0.5, 0.5; means 0.3/0.6
    assert efficiency_data(*_pairs(arm, base, champ), (0, 1)).estimate() == pytest.approx(0.5)
    arm = [0.9, 0.1]  # ratios 0.9 and 0.5 (mean 0.7); ratio of means 1.0 / 1.2
    assert efficiency_data(*_pairs(arm, base, champ), (0, 1)).estimate() == pytest.approx(1.0 / 1.2)
    a1, a2, b, c = [0.6, 0.2], [0.1, 0.1], [0.1, 0.0], [0.9, 0.5]
    data = contrast_data(*_pairs(a1, a2, b)[:2], *_pairs(b, c, c)[:2], (0, 1))
    assert data.estimate() == pytest.approx((0.5 + 0.1) / (0.8 + 0.5))


def test_pairs_missing_in_any_arm_or_not_finite_are_left_out():
    a, b, c = _pairs([0.5, 0.4, math.nan], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    del b["p001"]
    assert efficiency_data(a, b, c, (0, 1)).n == 1


def _strong(n=300, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 0.1, n)
    champ = base + rng.uniform(0.5, 0.8, n)
    arm = base + 0.6 * (champ - base) + rng.normal(0, 0.05, n)
    return efficiency_data(*_pairs(np.clip(arm, 0, 1), base, champ), (0, 1))


def test_a_well_measured_efficiency_is_decided_on_the_side_of_its_true_value():
    data = _strong()
    assert reject_above(data, 0.3, 0.001) and not reject_below(data, 0.3, 0.001)
    assert reject_below(data, 0.9, 0.001) and not reject_above(data, 0.9, 0.001)
    assert decide_ratio(data, 0.3, "above", 0.999)[1].verdict == "supported"
    assert decide_ratio(data, 0.3, "below", 0.999)[1].verdict == "refuted"
    assert decide_ratio(data, (0.4, 0.8), "within", 0.999)[1].verdict == "supported"
    assert decide_ratio(data, (0.8, 1.2), "within", 0.999)[1].verdict == "refuted"
    assert decide_ratio(data, (-0.2, 0.2), "within", 0.999)[1].verdict == "refuted"


def test_the_interval_holds_the_estimate_and_widens_with_the_level():
    data = _strong()
    narrow, wide = ratio_interval(data, 0.9), ratio_interval(data, 0.999)
    assert narrow.low < data.estimate() < narrow.high
    assert wide.low < narrow.low and wide.high > narrow.high
    # its ends are where the one-sided tests at that level change their answer
    alpha = (1 - 0.999) / 2
    assert reject_above(data, wide.low - 1e-3, alpha) and not reject_above(data, wide.low + 1e-3, alpha)
    assert reject_below(data, wide.high + 1e-3, alpha) and not reject_below(data, wide.high - 1e-3, alpha)


def test_a_gap_not_shown_positive_leaves_the_interval_unbounded_and_the_cell_undecided():
    n = 24
    base, champ = np.full(n, 0.0), np.full(n, 0.05)  # a real gap, far too small for 24 pairs
    data = efficiency_data(*_pairs(champ, base, champ), (0, 1))
    interval, decision = decide_ratio(data, 0.5, "above", 0.95)
    assert (interval.low, interval.high) == (-math.inf, math.inf)
    assert decision.verdict == "inconclusive"


def test_all_zero_efficiencies_justify_a_bound_only_with_enough_pairs():
    """Every pair's arm equals its baseline. d_i = -theta * gap_i is then a sure positive for
    "below theta", and the capital grows like (1 + CAP theta gap / |lo|)^n: decisive from the
    bounds, at some n, not from a zero-width interval."""
    def cell(n):
        gap = np.full(n, 0.5)
        return efficiency_data(*_pairs(np.zeros(n), np.zeros(n), gap), (0, 1))
    level = 1 - 0.05 / 45
    assert decide_ratio(cell(6), 0.2, "below", level)[1].verdict == "inconclusive"
    assert decide_ratio(cell(200), 0.2, "below", level)[1].verdict == "supported"


def test_a_failed_guard_makes_the_cell_invalid_before_any_test():
    decision = decide_ratio(_strong(), 0.3, "above", 0.99, [GuardResult("g", False, "broken")])[1]
    assert decision.verdict == "invalid" and "broken" in decision.reason


def test_a_plain_mean_is_tested_against_the_threshold():
    rng = np.random.default_rng(2)
    values = dict(zip(map(str, range(200)), rng.uniform(0.2, 0.6, 200)))
    data = mean_data(values, (-1.0, 1.0))
    assert data.estimate() == pytest.approx(np.mean(list(values.values())))
    assert decide_ratio(data, 0.0, "above", 0.999)[1].verdict == "supported"
    assert decide_ratio(data, 0.9, "above", 0.999)[1].verdict == "refuted"


def test_false_decisions_at_the_true_value_stay_under_alpha_on_zero_inflated_data():
    """The case that broke the t rule: 80% of pairs with arm = baseline = 0, skewed rest."""
    rng = np.random.default_rng(7)
    pop_n, n, runs, alpha = 5000, 24, 400, 0.1
    champ = rng.uniform(0.25, 0.45, pop_n)
    arm = np.where(rng.random(pop_n) < 0.8, 0.0, np.minimum(rng.lognormal(-2, 1, pop_n), 1.0))
    truth = arm.mean() / champ.mean()
    wrong = 0
    for _ in range(runs):
        idx = rng.integers(0, pop_n, n)
        data = efficiency_data(*_pairs(arm[idx], np.zeros(n), champ[idx]), (0, 1))
        wrong += reject_above(data, truth, alpha / 2) or reject_below(data, truth, alpha / 2)
    assert wrong / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_no_efficiency_is_shown_without_a_gap_shown_positive():
    """The arm moves the metric, but the champion does not: the ratio is undefined, so nothing
    may be decided about it, however clear the numerator is (the intersection-union part)."""
    n = 300
    data = efficiency_data(*_pairs(np.full(n, 0.9), np.zeros(n), np.zeros(n)), (0, 1))
    assert not reject_above(data, 0.5, 0.01) and not reject_below(data, 0.5, 0.01)
    assert decide_ratio(data, 0.5, "above", 0.99)[1].verdict == "inconclusive"


def test_a_minimal_kv_set_is_its_efficiency_minus_share_times_full_kv_as_a_ratio_of_means():
    kv_set, full, base, champ = [0.5, 0.2], [0.8, 0.4], [0.1, 0.0], [0.9, 0.5]
    data = kv_set_data(*_pairs(kv_set, full, base), _pairs(champ, champ, champ)[0], 0.8, (0, 1))
    gain_set, gain_full, gap = (0.4 + 0.2) / 2, (0.7 + 0.4) / 2, (0.8 + 0.5) / 2
    assert data.estimate() == pytest.approx((gain_set - 0.8 * gain_full) / gap)


def test_an_interaction_is_both_minus_first_minus_second_plus_neither_over_the_mean_gap():
    pairs = {"p": (0.9, 0.6, 0.2, 0.1, 0.0, 0.8), "q": (0.5, 0.4, 0.1, 0.0, 0.1, 0.6)}
    cols = [{pid: v[j] for pid, v in pairs.items()} for j in range(6)]
    data = interaction_data(*cols, (0, 1))
    num = np.mean([(b - f) - (s - n) for b, f, s, n, _, _ in pairs.values()])
    gap = np.mean([c - base for *_, base, c in pairs.values()])
    assert data.estimate() == pytest.approx(num / gap, abs=1e-12)
    assert num / gap == pytest.approx(((0.3 - 0.1) + (0.1 - 0.1)) / 2 / ((0.8 + 0.5) / 2))  # by hand
    # the order of the arms matters: first and second swapped is the same; both and first swapped is not
    swapped = interaction_data(cols[1], cols[0], *cols[2:], (0, 1))
    assert swapped.estimate() == pytest.approx(np.mean([(f - b) - (s - n) for b, f, s, n, _, _ in pairs.values()]) / gap)
    assert swapped.estimate() != pytest.approx(data.estimate())


def test_the_verdict_module_routes_each_measure_to_its_rule():
    claims_finding()  # registers the claims finding's metrics (marker_rate) by name
    from types import SimpleNamespace

    from harness.claims import Claim, Efficiency, GeometryShift, MinimalKvSet, Source
    from harness.records import Intervention
    from harness.verdict import ratio_data

    arm = Intervention("kv-only", kv_layers="all")
    values = {"kv-only": {"a": 0.3, "b": 0.5}, "baseline": {"a": 0.0, "b": 0.1}, "champion": {"a": 0.4, "b": 0.6},
              "set": {"a": 0.2, "b": 0.3}}
    name = lambda a: a if isinstance(a, str) else ("set" if a.name == "set" else a.name)  # noqa: E731
    confirm = SimpleNamespace(metric_by_pair=lambda a, m: values[name(a)])
    cell = SimpleNamespace(metric_by_pair=confirm.metric_by_pair, protocol=SimpleNamespace(window=16),
                           kv_set_parts=(confirm, Intervention("set", kv_layers=(1,)), arm))

    def claim(measure):
        return Claim("c", "s", Source("f", "q"), measure, threshold=0.0, direction="above")

    eff = ratio_data(claim(Efficiency(arm)), cell, "marker_rate")
    assert eff.estimate() == pytest.approx((0.3 + 0.4) / (0.4 + 0.5))
    kv = ratio_data(claim(MinimalKvSet(share=0.8, block=4)), cell, "marker_rate")
    assert kv.estimate() == pytest.approx(((0.2 + 0.2) - 0.8 * (0.3 + 0.4)) / (0.4 + 0.5))
    assert ratio_data(claim(GeometryShift(arm)), cell, "marker_rate") is None  # t, no guarantee
    assert ratio_data(claim(Efficiency(arm, metric="champion_logprob")), cell, "champion_logprob") is None


def test_a_pair_mean_outside_the_metrics_bounds_makes_the_cell_invalid():
    claims_finding()
    from types import SimpleNamespace

    from harness.claims import Claim, Efficiency, Source
    from harness.records import Intervention
    from harness.verdict import judge

    arm = Intervention("kv-only", kv_layers="all")
    values = {"kv-only": {"a": 0.3, "b": 1.4}, "baseline": {"a": 0.0, "b": 0.1}, "champion": {"a": 0.4, "b": 0.6}}
    cell = SimpleNamespace(metric_by_pair=lambda a, m: values[a if isinstance(a, str) else a.name],
                           protocol=SimpleNamespace(window=16))
    claim = Claim("c", "s", Source("f", "q"), Efficiency(arm), threshold=0.0, direction="above")
    _, decision, _ = judge(claim, cell, "marker_rate", {}, 0.0, 0.95, [])
    assert decision.verdict == "invalid" and decision.reason.startswith("bounds: values outside")


def test_a_sequential_cell_tests_its_pairs_in_arrival_order_not_id_order():
    from harness.betting import reject_positive_mean
    from harness.bounded import SEQUENTIAL_METHOD, efficiency_data, reject_above

    rng = np.random.default_rng(12)
    ids = [f"p{i:02d}" for i in range(30)]
    arrival = list(reversed(ids))  # arrival order is not the sorted order
    base = {p: float(rng.uniform(0, 0.3)) for p in ids}
    champ = {p: float(rng.uniform(0.6, 1.0)) for p in ids}
    arm = {p: float(rng.uniform(0.2, 0.9)) for p in ids}
    data = efficiency_data(arm, base, champ, (0.0, 1.0), order=arrival)
    assert data.sequential and data.x[0].tolist() == [arm["p29"], base["p29"], champ["p29"]]
    # "> theta" by hand: d = arm - (1 - theta) base - theta champ in [-1, 1] (theta in [0, 1]),
    # and the gap champ - base in [-1, 1], both in arrival order, sequentially
    theta, alpha = 0.3, 0.01
    d = np.array([arm[p] - base[p] - theta * (champ[p] - base[p]) for p in arrival])
    gap = np.array([champ[p] - base[p] for p in arrival])
    by_hand = bool(reject_positive_mean(d, -1.0, 1.0, alpha, sequential=True)
                   and reject_positive_mean(gap, -1.0, 1.0, alpha, sequential=True))
    assert reject_above(data, theta, alpha) == by_hand
    # the order changes the sequential answer on these values (so the test above can tell them apart)
    assert by_hand != bool(reject_positive_mean(d[::-1], -1.0, 1.0, alpha, sequential=True))
    from harness.bounded import ratio_interval

    assert ratio_interval(data, 0.98).method == SEQUENTIAL_METHOD
    fixed = efficiency_data(arm, base, champ, (0.0, 1.0))
    assert not fixed.sequential and fixed.x[0].tolist() == [arm["p00"], base["p00"], champ["p00"]]
