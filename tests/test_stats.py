"""Bootstrap intervals, paired contrasts, verdict boundaries and guards."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.errors import HarnessValueError
from harness.stats import (
    Decision,
    GuardResult,
    Interval,
    Verdict,
    cluster_bootstrap,
    decide,
    guard_arms_differ,
    guard_gap_floor,
    guard_patch_changed,
    pair_means,
    paired_contrast,
)


def _synthetic(rng: np.random.Generator, mu: float, n_pairs: int = 20, n_seeds: int = 4):
    """Per-pair random effect (sd 1) plus per-seed noise (sd 1) around ``mu``."""
    pair_effect = rng.normal(0.0, 1.0, size=n_pairs)
    return {
        f"p{i:02d}": list(mu + pair_effect[i] + rng.normal(0.0, 1.0, size=n_seeds))
        for i in range(n_pairs)
    }


# ------------------------------------------------------------------ pair means / bootstrap


def test_pair_means_average_seeds_first_and_drop_nans():
    means = pair_means({"b": [1.0, 3.0, math.nan], "a": [4.0], "c": [math.nan], "d": []})
    assert means == {"a": 4.0, "b": 2.0}
    assert list(means) == ["a", "b"]  # sorted keys


def test_estimate_weights_pairs_not_seeds():
    # Pair p1 has 10 seeds at 0, pair p2 one seed at 10: the mean over pairs is 5,
    # not the seed-pooled 10/11.
    iv = cluster_bootstrap({"p1": [0.0] * 10, "p2": [10.0]}, n_boot=200)
    assert iv.estimate == 5.0
    assert iv.n_pairs == 2
    assert iv.low <= iv.estimate <= iv.high


def test_bootstrap_of_two_pairs_spans_their_means():
    # Resampled means of {0, 1} are 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4: the
    # 2.5% and 97.5% quantiles of many draws are 0 and 1.
    iv = cluster_bootstrap({"a": [0.0], "b": [1.0]}, n_boot=4000, seed=3)
    assert (iv.low, iv.high) == (0.0, 1.0)


def test_bootstrap_is_deterministic_under_a_seed():
    data = _synthetic(np.random.default_rng(1), mu=0.0)
    assert cluster_bootstrap(data, seed=7) == cluster_bootstrap(data, seed=7)
    assert cluster_bootstrap(data, seed=7) != cluster_bootstrap(data, seed=8)
    # The order the pairs were collected in does not matter.
    reordered = dict(reversed(list(data.items())))
    assert cluster_bootstrap(reordered, seed=7) == cluster_bootstrap(data, seed=7)


def test_bootstrap_coverage_near_nominal():
    rng = np.random.default_rng(2024)
    mu, reps = 1.5, 300
    hits = naive_hits = 0
    for rep in range(reps):
        data = _synthetic(rng, mu)
        iv = cluster_bootstrap(data, n_boot=400, seed=rep, level=0.95)
        hits += iv.low <= mu <= iv.high
        # Control: treating every seed as its own pair ignores the shared pair effect.
        pooled = {f"{p}/{i}": [v] for p, vals in data.items() for i, v in enumerate(vals)}
        iv = cluster_bootstrap(pooled, n_boot=400, seed=rep, level=0.95)
        naive_hits += iv.low <= mu <= iv.high
    coverage, naive = hits / reps, naive_hits / reps
    # The percentile bootstrap with 20 clusters under-covers slightly (about 0.93 in
    # theory: it uses a normal quantile and a 19/20 variance); the Monte Carlo standard
    # error at 300 repetitions is about 1.5 points.
    assert 0.895 <= coverage <= 0.985, coverage
    # The test has power: the seed-pooled bootstrap misses badly (about 0.77 here).
    assert naive < 0.85, naive


def test_bootstrap_level_widens_interval():
    data = _synthetic(np.random.default_rng(5), mu=0.0)
    narrow = cluster_bootstrap(data, level=0.5)
    wide = cluster_bootstrap(data, level=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high
    assert narrow.level == 0.5


def test_bootstrap_nan_handling():
    empty = cluster_bootstrap({})
    assert empty.n_pairs == 0 and empty.is_nan and math.isnan(empty.estimate)
    all_nan = cluster_bootstrap({"a": [math.nan], "b": [math.nan, math.nan]})
    assert all_nan.n_pairs == 0 and all_nan.is_nan
    # One usable pair: an estimate but no interval.
    one = cluster_bootstrap({"a": [2.0, math.nan], "b": [math.nan]})
    assert (one.estimate, one.n_pairs) == (2.0, 1)
    assert math.isnan(one.low) and math.isnan(one.high)
    # NaN seeds do not poison the other pairs.
    iv = cluster_bootstrap({"a": [1.0, math.nan], "b": [3.0], "c": [math.nan]})
    assert (iv.estimate, iv.n_pairs) == (2.0, 2)


@pytest.mark.parametrize(("n_boot", "level"), [(0, 0.95), (1.5, 0.95), (10, 0.0), (10, 1.0)])
def test_bootstrap_rejects_bad_arguments(n_boot, level):
    with pytest.raises(HarnessValueError):
        cluster_bootstrap({"a": [1.0]}, n_boot=n_boot, level=level)


# ------------------------------------------------------------------ paired contrast


def test_paired_contrast_recovers_known_difference():
    rng = np.random.default_rng(11)
    b = _synthetic(rng, mu=0.0)
    # a = b + 2 exactly on every seed: the per-pair differences are all 2.
    a = {p: [v + 2.0 for v in vals] for p, vals in b.items()}
    iv = paired_contrast(a, b, n_boot=500)
    assert iv.estimate == pytest.approx(2.0)
    assert iv.low == pytest.approx(2.0) and iv.high == pytest.approx(2.0)
    assert iv.n_pairs == 20


def test_paired_contrast_is_narrower_than_unpaired():
    rng = np.random.default_rng(12)
    b = _synthetic(rng, mu=0.0)
    a = {p: [v + 0.5 + rng.normal(0, 0.2) for v in vals] for p, vals in b.items()}
    paired = paired_contrast(a, b, n_boot=1000)
    ia, ib = cluster_bootstrap(a, n_boot=1000), cluster_bootstrap(b, n_boot=1000)
    assert paired.low > 0.0  # the pair effects cancel, so the difference is resolved
    assert paired.high - paired.low < (ia.high - ia.low)
    assert paired.estimate == pytest.approx(ia.estimate - ib.estimate)


def test_paired_contrast_uses_common_usable_pairs_only():
    a = {"x": [3.0], "y": [5.0], "only_a": [100.0], "nan_b": [1.0]}
    b = {"x": [1.0], "y": [2.0], "only_b": [-100.0], "nan_b": [math.nan]}
    iv = paired_contrast(a, b, n_boot=200)
    # Differences x: 2, y: 3 -> mean 2.5 over 2 pairs.
    assert (iv.estimate, iv.n_pairs) == (2.5, 2)
    assert paired_contrast({"a": [1.0]}, {"b": [1.0]}).n_pairs == 0


# ------------------------------------------------------------------ verdicts


def _iv(low: float, high: float) -> Interval:
    return Interval(estimate=(low + high) / 2, low=low, high=high, n_pairs=10, level=0.95)


@pytest.mark.parametrize(
    ("low", "high", "direction", "expected"),
    [
        # Claim: value > 0.5.
        (0.6, 0.9, "above", Verdict.SUPPORTED),
        (0.5, 0.9, "above", Verdict.INCONCLUSIVE),  # low endpoint on the threshold
        (0.3, 0.7, "above", Verdict.INCONCLUSIVE),
        (0.1, 0.5, "above", Verdict.INCONCLUSIVE),  # high endpoint on the threshold
        (0.1, 0.4, "above", Verdict.REFUTED),
        # Claim: value < 0.5.
        (0.1, 0.4, "below", Verdict.SUPPORTED),
        (0.1, 0.5, "below", Verdict.INCONCLUSIVE),
        (0.3, 0.7, "below", Verdict.INCONCLUSIVE),
        (0.5, 0.9, "below", Verdict.INCONCLUSIVE),
        (0.6, 0.9, "below", Verdict.REFUTED),
        # A zero-width interval exactly on the threshold straddles it.
        (0.5, 0.5, "above", Verdict.INCONCLUSIVE),
        (0.5, 0.5, "below", Verdict.INCONCLUSIVE),
    ],
)
def test_decide_boundaries(low, high, direction, expected):
    d = decide(_iv(low, high), threshold=0.5, direction=direction, guards=())
    assert isinstance(d, Decision)
    assert d.verdict is expected
    assert "0.5" in d.reason


def test_failed_guard_makes_invalid_even_when_supported():
    guards = [
        GuardResult("ok_one", True, "fine"),
        GuardResult("patch_changed[v_proj@27]", False, "changed no values in phase(s): decode"),
    ]
    d = decide(_iv(0.8, 0.9), 0.5, "above", guards)
    assert d.verdict is Verdict.INVALID
    assert "changed no values in phase(s): decode" in d.reason
    assert "fine" not in d.reason
    assert decide(_iv(0.8, 0.9), 0.5, "above", guards[:1]).verdict is Verdict.SUPPORTED


def test_nan_interval_is_invalid():
    d = decide(cluster_bootstrap({"a": [math.nan]}), 0.5, "above", [])
    assert d.verdict is Verdict.INVALID and "0 usable pair" in d.reason
    d = decide(cluster_bootstrap({"a": [1.0]}), 0.5, "above", [])
    assert d.verdict is Verdict.INVALID and "1 usable pair" in d.reason


@pytest.mark.parametrize("direction", ["greater", "ABOVE", ""])
def test_decide_rejects_bad_direction(direction):
    with pytest.raises(HarnessValueError, match="direction"):
        decide(_iv(0.1, 0.2), 0.5, direction, [])


@pytest.mark.parametrize("threshold", [math.nan, math.inf, "0.5x", None])
def test_decide_rejects_bad_threshold(threshold):
    with pytest.raises(HarnessValueError, match="threshold"):
        decide(_iv(0.1, 0.2), threshold, "above", [])


def test_verdict_values_are_strings():
    assert [v.value for v in Verdict] == ["supported", "refuted", "inconclusive", "invalid"]
    assert Verdict.SUPPORTED == "supported" and str(Verdict.INVALID) == "invalid"


def test_records_are_frozen():
    with pytest.raises(AttributeError):
        _iv(0.1, 0.2).low = 0.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        GuardResult("g", True, "m").ok = False  # type: ignore[misc]


# ------------------------------------------------------------------ guards


def test_gap_floor_guard_fraction_boundary():
    # 2 of 4 below the floor = exactly half: passes (fails only when more than half).
    g = guard_gap_floor({"a": 0.1, "b": 0.2, "c": 2.0, "d": 3.0}, floor=1.0)
    assert g.ok and "2/4" in g.message
    # 3 of 4 below: fails, and names the pairs.
    g = guard_gap_floor({"a": 0.1, "b": 0.2, "c": -5.0, "d": 3.0}, floor=1.0)
    assert not g.ok and "3/4" in g.message and "a, b, c" in g.message
    assert g.name == "gap_floor"


def test_gap_floor_guard_edges():
    # A gap exactly at the floor is not below it.
    assert guard_gap_floor({"a": 1.0}, floor=1.0).ok
    # NaN gaps count as below.
    assert not guard_gap_floor({"a": math.nan, "b": math.nan, "c": 2.0}, floor=1.0).ok
    assert not guard_gap_floor({}, floor=1.0).ok
    # A stricter max_fraction.
    assert not guard_gap_floor({"a": 0.0, "b": 2.0, "c": 2.0}, floor=1.0, max_fraction=0.2).ok


def test_patch_changed_guard():
    g = guard_patch_changed({"prefill": 4096, "decode": 0}, ["prefill", "decode"], site="v_proj@27")
    assert not g.ok
    assert "v_proj@27" in g.message and "decode" in g.message and "prefill" not in g.message
    # A declared phase missing from the counts is a zero.
    assert not guard_patch_changed({"prefill": 5}, ["prefill", "decode"]).ok
    # An undeclared phase with zero changes is fine.
    assert guard_patch_changed({"prefill": 5, "decode": 0}, ["prefill"]).ok
    assert guard_patch_changed({"prefill": 5, "decode": 7}, ["prefill", "decode"]).ok


def test_arms_differ_guard():
    same = {"p1": [[1, 2, 3], [4, 5]], "p2": [[6]]}
    g = guard_arms_differ(same, {k: [list(s) for s in v] for k, v in same.items()}, ("kv", "kv+v"))
    assert not g.ok and "kv" in g.message and "2 pairs" in g.message
    # One seed of one pair differs: the arms differ.
    other = {"p1": [[1, 2, 3], [4, 9]], "p2": [[6]]}
    assert guard_arms_differ(same, other).ok
    # A different length is a difference; numpy ints compare as ints.
    assert guard_arms_differ({"p": [[1, 2]]}, {"p": [[1, 2, 3]]}).ok
    assert not guard_arms_differ({"p": [np.array([1, 2])]}, {"p": [[1, 2]]}).ok
    # No common pair: nothing to compare, fails.
    assert not guard_arms_differ({"p": [[1]]}, {"q": [[2]]}).ok
