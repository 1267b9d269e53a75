"""Intervals, their measured coverage, family-wise error and verdicts.

The coverage table in docs/statistics.md is printed by
``python -m pytest tests/test_stats.py -k coverage_table -s -q -p no:cacheprovider``
(see :func:`coverage_table`); a test checks the document still matches it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessValueError
from harness.guards import GuardResult
from harness.stats import (
    FLAG_ZERO_WIDTH,
    FLAG_FEW_PAIRS,
    MIN_PAIRS,
    T_METHOD,
    Decision,
    Interval,
    Verdict,
    cluster_bootstrap,
    decide,
    family_level,
    mean_interval,
    min_detectable_effect,
    pair_differences,
    pair_means,
    paired_contrast,
    paired_interval,
    t_bounds,
    t_quantile,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "statistics.md"
FAMILY = 27  # claim cells that get a verdict in one run
FAMILY_LEVEL = 1.0 - 0.05 / FAMILY
SIZES = (6, 12, 24, 48)
REPS = 10_000  # data sets per (scenario, n); Monte Carlo s.e. 0.22 points at 95%
FAMILIES = 10_000  # simulated runs of 27 cells for the family-wise error; s.e. 0.22 points at 5%

# Per-pair transfer efficiencies of four cells of the toy reference report (6 pairs each:
# kv@27 original, kv@0..16, kv@0..8 and kv@16..31 corrected): exact zeros, clusters, skew.
REAL_VALUES = np.array([
    0.426, 0.0, 0.0, 0.0, 0.425, 0.258, 0.723, 0.233, 0.025, 0.0, 0.0, 0.71,
    -0.106, 0.0, 0.125, 0.0, -0.125, -0.161, 0.553, 0.605, 1.025, 0.818, 0.95, 0.871,
])


def _two_source(rng: np.random.Generator, shape: tuple[int, ...], n_seeds: int = 4) -> np.ndarray:
    """Pair effect N(0, 1) plus seed noise N(0, 1), averaged over seeds: shape (..., n)."""
    pair = rng.normal(0.0, 1.0, size=shape)
    return pair + rng.normal(0.0, 1.0, size=(*shape, n_seeds)).mean(axis=-1)


def _zero_inflated(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Half the pairs exactly 0 (nothing transferred), the rest uniform on (0, 1)."""
    x = rng.uniform(0.0, 1.0, size=shape)
    x[rng.random(shape) < 0.5] = 0.0
    return x


def _ratio(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Efficiency-like ratio: true 0.5, noise divided by a gap in (0.2, 1): heavy symmetric tails."""
    return 0.5 + rng.normal(0.0, 0.15, size=shape) / rng.uniform(0.2, 1.0, size=shape)


# name -> (generator of per-pair values with the given shape, true mean, asserted sizes)
SCENARIOS = {
    "normal": (lambda r, s: r.normal(0.0, 1.0, size=s), 0.0, SIZES),
    "pair + seed noise": (_two_source, 0.0, SIZES),
    "efficiency ratio": (_ratio, 0.5, SIZES),
    "real values": (lambda r, s: r.choice(REAL_VALUES, size=s), float(REAL_VALUES.mean()), (24, 48)),
    "gamma(2)": (lambda r, s: r.gamma(2.0, 1.0, size=s), 2.0, (24, 48)),
    "50% zeros": (_zero_inflated, 0.25, (24, 48)),
    "lognormal(0,1)": (lambda r, s: r.lognormal(0.0, 1.0, size=s), math.exp(0.5), ()),
}


def _simulate(scenario: str, n: int, reps: int, seed: int = 0) -> tuple[np.ndarray, float]:
    gen, mu, _ = SCENARIOS[scenario]
    return gen(np.random.default_rng([seed, n, list(SCENARIOS).index(scenario)]), (reps, n)), mu


def coverage(scenario: str, n: int, level: float) -> float:
    """Fraction of REPS simulated data sets whose t interval at ``level`` covers the truth."""
    x, mu = _simulate(scenario, n, REPS)
    _, lo, hi = t_bounds(x, level)
    return float(np.mean((lo <= mu) & (mu <= hi)))


def family_error(scenario: str, n: int, level: float) -> float:
    """Chance that some of FAMILY cells, each at its threshold, gets a decisive verdict.

    Every cell's true value equals its threshold (the worst case), so a decisive verdict
    is exactly an interval that misses the truth: low > truth or high < truth.
    """
    hits = 0
    for chunk in range(4):  # 4 chunks keep the (families, 27, n) array under 30 MB
        x, mu = _simulate(scenario, n, FAMILIES // 4 * FAMILY, seed=1 + chunk)
        _, lo, hi = t_bounds(x.reshape(FAMILIES // 4, FAMILY, n), level)  # (families, 27)
        hits += int(((lo > mu) | (hi < mu)).any(axis=1).sum())
    return hits / FAMILIES


@pytest.fixture(scope="module")
def table() -> dict[tuple[str, int], tuple[float, float, float]]:
    """(scenario, n) -> (95% coverage, family-level coverage, family-wise error), percent."""
    return {
        (s, n): (100 * coverage(s, n, 0.95), 100 * coverage(s, n, FAMILY_LEVEL),
                 100 * family_error(s, n, FAMILY_LEVEL))
        for s in SCENARIOS for n in SIZES
    }


def coverage_table(table: dict[tuple[str, int], tuple[float, float, float]]) -> str:
    """The markdown table of docs/statistics.md: per cell "95% cover / 99.81% cover / FWER"."""
    fmt = ("{:.1f}", "{:.2f}", "{:.1f}")
    head = "| scenario | " + " | ".join(f"n = {n}" for n in SIZES) + " |"
    lines = [head, "|---" * (len(SIZES) + 1) + "|"]
    for s in SCENARIOS:
        cells = (" / ".join(f.format(v) for f, v in zip(fmt, table[s, n])) for n in SIZES)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------ coverage (the method's evidence)


@pytest.mark.parametrize("scenario", [s for s, (_, _, sizes) in SCENARIOS.items() if sizes])
def test_coverage_within_two_points_where_asserted(scenario, table):
    # Each non-stress scenario holds at least from MIN_PAIRS on (lognormal: see below).
    asserted = SCENARIOS[scenario][2]
    assert min(asserted) <= MIN_PAIRS and max(asserted) == max(SIZES)
    for n in asserted:
        cov95, cov_family, _ = table[scenario, n]
        assert abs(cov95 - 95.0) <= 2.0, (scenario, n, cov95)
        assert abs(cov_family - 100 * FAMILY_LEVEL) <= 2.0, (scenario, n, cov_family)


def test_min_pairs_is_the_smallest_size_where_every_asserted_scenario_holds(table):
    # MIN_PAIRS is read off the table: the smallest n from which every scenario that is not
    # a declared stress case (lognormal) covers within 2 points at 95%. gamma(2) sets it:
    # 92.6% at 12 pairs.
    usable = [s for s, (_, _, asserted) in SCENARIOS.items() if asserted]
    ok = [n for n in SIZES if all(abs(table[s, m][0] - 95.0) <= 2.0 for s in usable for m in SIZES if m >= n)]
    assert min(ok) == MIN_PAIRS == 24


def test_strongly_skewed_data_under_covers_at_every_size(table):
    # The documented limitation: lognormal(0, 1) (skewness 6.2) is not covered at 48 pairs
    # by the t interval (nor, measured, by bootstrap-t, BCa or the percentile bootstrap).
    assert all(table["lognormal(0,1)", n][0] < 91.0 for n in SIZES)


def test_family_wise_error_at_most_five_percent_for_symmetric_data(table):
    # 27 cells all exactly at their thresholds; Bonferroni per-cell level 1 - 0.05/27
    # (theory for normal data: 4.88%). Simulation tolerance: 1 point, about 4.5 standard
    # errors at 10000 families; the seeds are fixed, so the check is deterministic.
    for scenario in ("normal", "pair + seed noise", "efficiency ratio"):
        for n in SIZES:
            assert table[scenario, n][2] <= 6.0, (scenario, n, table[scenario, n][2])


def test_skew_inflates_the_family_wise_error(table):
    # The documented limitation: a skewed per-pair distribution puts the t interval's
    # misses in one far tail, which is where a Bonferroni level looks. Even at MIN_PAIRS
    # the 27-cell error is about 2 to 4 times the target, falling slowly with n.
    for scenario in ("real values", "gamma(2)", "50% zeros"):
        assert table[scenario, MIN_PAIRS][2] > 8.0
        assert table[scenario, 48][2] < table[scenario, 12][2]


def test_family_wise_error_without_correction_is_large():
    # Control: 27 cells at 95% each give a false decisive verdict in most runs (1 - 0.95^27).
    assert family_error("normal", 12, 0.95) == pytest.approx(1 - 0.95**27, abs=0.03)


def test_vectorised_bounds_are_what_decide_sees():
    # The simulations use t_bounds on arrays; the harness goes through mean_interval and
    # decide. On a subsample of simulated cells at their threshold they agree exactly.
    x, mu = _simulate("real values", 12, 300, seed=5)
    _, lo, hi = t_bounds(x, FAMILY_LEVEL)
    for row, a, b in zip(x, lo, hi):
        iv = mean_interval({f"p{i}": [v] for i, v in enumerate(row)}, FAMILY_LEVEL)
        assert (iv.low, iv.high) == pytest.approx((a, b), abs=1e-12)
        decisive = decide(iv, mu, "above").verdict is not Verdict.INCONCLUSIVE
        assert decisive == bool(a > mu or b < mu)


def test_two_sources_of_variation_through_the_api():
    # Per-seed values per pair (pair effect sd 1 + seed noise sd 1, 4 seeds, some NaN seeds):
    # the interval on pair means covers; pooling seeds as if they were pairs does not.
    rng = np.random.default_rng(7)
    mu, reps, n_pairs = 1.5, 2000, 12
    hits = pooled_hits = 0
    for _ in range(reps):
        pair = rng.normal(mu, 1.0, size=n_pairs)
        seeds = pair[:, None] + rng.normal(0.0, 1.0, size=(n_pairs, 4))
        seeds[rng.random(seeds.shape) < 0.05] = math.nan
        iv = mean_interval({f"p{i}": list(s) for i, s in enumerate(seeds)}, 0.95)
        hits += iv.low <= mu <= iv.high
        flat = seeds[np.isfinite(seeds)]
        iv = mean_interval({f"s{i}": v for i, v in enumerate(flat)}, 0.95)
        pooled_hits += iv.low <= mu <= iv.high
    assert abs(hits / reps - 0.95) <= 0.02, hits / reps
    assert pooled_hits / reps < 0.85, pooled_hits / reps


def test_t_beats_the_percentile_bootstrap_at_small_n():
    # The measurement that replaced the bootstrap: 6 normal pairs, 95% nominal.
    x, mu = _simulate("normal", 6, 1000, seed=3)
    _, lo, hi = t_bounds(x, 0.95)
    t_cov = np.mean((lo <= mu) & (mu <= hi))
    boot = [cluster_bootstrap({f"p{i}": [v] for i, v in enumerate(r)}, n_boot=1000, seed=k)
            for k, r in enumerate(x)]
    boot_cov = np.mean([iv.low <= mu <= iv.high for iv in boot])
    assert abs(t_cov - 0.95) <= 0.02, t_cov
    assert boot_cov < 0.90, boot_cov


def test_coverage_table_matches_the_document(table):
    text = coverage_table(table)
    print("\n" + text)
    doc = DOC.read_text(encoding="utf-8")
    block = doc.split("<!-- coverage-table -->")[1].split("<!-- /coverage-table -->")[0]
    numbers = lambda s: [float(v) for v in re.findall(r"\d+\.\d+", s)]  # noqa: E731
    got, want = numbers(text), numbers(block)
    assert len(got) == len(want) == len(SCENARIOS) * len(SIZES) * 3
    # Small slack only for a numpy whose samplers draw differently; same numpy: identical.
    assert max(abs(g - w) for g, w in zip(got, want)) <= 0.5


# ------------------------------------------------------------------ mean and paired intervals


def test_mean_interval_is_the_t_interval_on_pair_means():
    iv = mean_interval({"a": [1.0, 3.0], "b": [3.0], "c": [2.0, 4.0, math.nan], "d": [4.0]})
    # Pair means 2, 3, 3, 4: mean 3, sd sqrt(2/3), t_{0.975,3} = 3.182446.
    half = 3.182446 * math.sqrt(2 / 3) / 2
    assert (iv.estimate, iv.n_pairs, iv.level) == (3.0, 4, 0.95)
    assert (iv.low, iv.high) == pytest.approx((3 - half, 3 + half), abs=1e-6)
    assert iv.method == T_METHOD and not iv.degenerate


def test_pair_means_average_seeds_first_and_drop_nans():
    means = pair_means({"b": [1.0, 3.0, math.nan], "a": [4.0], "c": [math.nan], "d": [], "e": 2})
    assert means == {"a": 4.0, "b": 2.0, "e": 2.0}
    assert list(means) == ["a", "b", "e"]  # sorted keys
    with pytest.raises(HarnessValueError, match="'x'"):
        pair_means({"x": ["one"]})


def test_estimate_weights_pairs_not_seeds():
    # Pair p1 has 10 seeds at 0, pair p2 one seed at 10: the mean over pairs is 5.
    iv = mean_interval({"p1": [0.0] * 10, "p2": [10.0]})
    assert (iv.estimate, iv.n_pairs) == (5.0, 2)
    assert iv.low < 0.0 < 10.0 < iv.high


def test_interval_does_not_depend_on_pair_order_and_widens_with_level():
    rng = np.random.default_rng(1)
    data = {f"p{i:02d}": list(rng.normal(size=3)) for i in range(20)}
    assert mean_interval(dict(reversed(list(data.items())))) == mean_interval(data)
    narrow, wide = mean_interval(data, 0.5), mean_interval(data, FAMILY_LEVEL)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_interval_nan_handling():
    for f in (mean_interval, cluster_bootstrap):
        empty = f({})
        assert empty.n_pairs == 0 and empty.is_nan and math.isnan(empty.estimate)
        assert f({"a": [math.nan], "b": [math.nan, math.nan]}).n_pairs == 0
        one = f({"a": [2.0, math.nan], "b": [math.nan]})
        assert (one.estimate, one.n_pairs) == (2.0, 1)
        assert math.isnan(one.low) and math.isnan(one.high)
        two = f({"a": [1.0, math.nan], "b": [3.0], "c": [math.nan]})
        assert (two.estimate, two.n_pairs) == (2.0, 2) and not two.is_nan


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, math.nan, "0.9x", None])
def test_intervals_reject_bad_levels(level):
    for call in (lambda: mean_interval({"a": 1.0, "b": 2.0}, level),
                 lambda: paired_interval({"a": 1.0}, {"a": 2.0}, level),
                 lambda: cluster_bootstrap({"a": 1.0}, level=level),
                 lambda: min_detectable_effect({"a": 1.0, "b": 2.0}, level),
                 lambda: t_bounds(np.zeros((2, 3)), level)):
        with pytest.raises(HarnessValueError, match="level"):
            call()


@pytest.mark.parametrize("n_boot", [0, 1.5, True])
def test_bootstrap_rejects_bad_n_boot(n_boot):
    with pytest.raises(HarnessValueError, match="n_boot"):
        cluster_bootstrap({"a": [1.0]}, n_boot=n_boot)


def test_bootstrap_is_deterministic_and_records_its_method():
    rng = np.random.default_rng(1)
    data = {f"p{i:02d}": [v] for i, v in enumerate(rng.normal(size=20))}
    assert cluster_bootstrap(data, seed=7) == cluster_bootstrap(data, seed=7)
    assert cluster_bootstrap(data, seed=7) != cluster_bootstrap(data, seed=8)
    assert "bootstrap" in cluster_bootstrap(data).method
    # Resampled means of {0, 1}: the 2.5% and 97.5% quantiles are 0 and 1.
    iv = cluster_bootstrap({"a": [0.0], "b": [1.0]}, n_boot=4000, seed=3)
    assert (iv.low, iv.high) == (0.0, 1.0)


def test_paired_interval_is_the_t_interval_of_differences():
    rng = np.random.default_rng(12)
    b = {f"p{i:02d}": list(v + rng.normal(size=4)) for i, v in enumerate(rng.normal(size=20))}
    a = {p: [v + 0.5 + rng.normal(0, 0.2) for v in vals] for p, vals in b.items()}
    paired = paired_interval(a, b)
    assert paired == Interval(**{**mean_interval(pair_differences(a, b)).__dict__,
                                 "method": paired.method})
    assert paired.low > 0.0  # the pair effects cancel, so the difference is resolved
    ia, ib = mean_interval(a), mean_interval(b)
    assert ib.low < ia.low < ib.high  # unpaired, the two arms' intervals overlap
    assert paired.estimate == pytest.approx(ia.estimate - ib.estimate)
    assert paired.high - paired.low < (ia.high - ia.low) / 2


def test_paired_intervals_use_common_usable_pairs_only():
    a = {"x": [3.0], "y": [5.0], "only_a": [100.0], "nan_b": [1.0]}
    b = {"x": [1.0], "y": [2.0], "only_b": [-100.0], "nan_b": [math.nan]}
    assert pair_differences(a, b) == {"x": 2.0, "y": 3.0}
    for f in (paired_interval, paired_contrast):
        iv = f(a, b)
        assert (iv.estimate, iv.n_pairs) == (2.5, 2)
        assert f({"a": [1.0]}, {"b": [1.0]}).n_pairs == 0


# ------------------------------------------------------------------ degenerate intervals


def test_all_identical_pairs_give_a_degenerate_interval():
    zeros = {f"p{i:02d}": [0.0, 0.0, math.nan] for i in range(12)}
    for iv in (mean_interval(zeros), cluster_bootstrap(zeros), mean_interval(zeros, FAMILY_LEVEL)):
        assert iv.degenerate and (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0)
    # Seed averages equal up to rounding count as identical (0.1 + 0.2 != 0.3 in floats).
    assert mean_interval({"a": [0.1, 0.2], "b": [0.3, 0.0], "c": [0.15]}).degenerate
    # Differences: a = b + 2 exactly on every seed.
    b = {f"p{i}": [float(i), i + 1.0] for i in range(8)}
    a = {p: [v + 2.0 for v in vals] for p, vals in b.items()}
    for iv in (paired_interval(a, b), paired_contrast(a, b)):
        assert iv.degenerate and iv.low == iv.high == pytest.approx(2.0)
    # One differing pair is spread, however small the interval.
    assert not mean_interval({**zeros, "p99": [1e-6]}).degenerate
    assert not mean_interval({"a": [0.0]}).degenerate  # one pair: invalid, not degenerate


@pytest.mark.parametrize(
    ("threshold", "direction", "point"),
    [(0.2, "below", "wholly below 0.2"), (0.2, "above", "wholly below 0.2"),
     (-0.1, "above", "wholly above -0.1"), (0.0, "above", "straddles 0"), (0.0, "below", "straddles 0")],
)
def test_a_degenerate_t_interval_decides_nothing_but_says_what_the_point_gives(threshold, direction, point):
    iv = mean_interval({f"p{i:02d}": [0.0] * 4 for i in range(12)})
    d = decide(iv, threshold, direction)
    assert d.verdict is Verdict.INCONCLUSIVE
    assert d.degenerate and FLAG_ZERO_WIDTH in d.flags and "degenerate" not in d.flags
    assert "every one of the 12 pairs gave exactly 0: no spread, the interval has no width" in d.reason
    assert f"justifies no verdict (the point alone: {point})" in d.reason
    # A failed guard still wins, and fewer than 2 pairs is still invalid.
    assert decide(iv, threshold, direction, [GuardResult("g", False, "bad")]).verdict is Verdict.INVALID
    assert decide(mean_interval({"a": [0.0]}), threshold, direction).verdict is Verdict.INVALID


# ------------------------------------------------------------------ family level, MDE


def test_family_level_is_bonferroni():
    assert family_level(27) == pytest.approx(1 - 0.05 / 27)
    assert family_level(1) == pytest.approx(0.95)
    assert family_level(10, alpha=0.1) == pytest.approx(0.99)
    assert family_level(np.int64(4)) == pytest.approx(0.9875)


@pytest.mark.parametrize(("size", "alpha"), [(0, 0.05), (2.5, 0.05), (True, 0.05), (27, 0.0), (27, 1.5)])
def test_family_level_rejects_bad_arguments(size, alpha):
    with pytest.raises(HarnessValueError):
        family_level(size, alpha)


def test_min_detectable_effect_formula_and_edges():
    data = {"a": [1.0], "b": [2.0], "c": [3.0], "d": [4.0]}  # sd sqrt(5/3), n 4
    expected = (t_quantile(0.975, 3) + t_quantile(0.8, 3)) * math.sqrt(5 / 3) / 2
    assert min_detectable_effect(data) == pytest.approx(expected)
    assert min_detectable_effect(data, FAMILY_LEVEL) > min_detectable_effect(data)
    assert min_detectable_effect(data, power=0.9) > min_detectable_effect(data)
    assert math.isnan(min_detectable_effect({"a": [1.0]}))
    assert math.isnan(min_detectable_effect({"a": [1.0, math.nan], "b": [math.nan]}))
    assert math.isnan(min_detectable_effect({"a": [0.0], "b": [0.0]}))  # no spread seen
    with pytest.raises(HarnessValueError, match="power"):
        min_detectable_effect(data, power=1.0)


@pytest.mark.parametrize(("n", "level"), [(12, 0.95), (24, 0.95), (24, FAMILY_LEVEL), (48, FAMILY_LEVEL)])
def test_min_detectable_effect_has_its_power(n, level):
    # Shift the truth by the MDE (known sd 1) from the threshold 0: the interval excludes 0
    # in about 80% of data sets. The formula is the usual t approximation, slightly
    # optimistic at small n and extreme levels (77% at 12 pairs and 99.81%, documented).
    mde = (t_quantile(1 - (1 - level) / 2, n - 1) + t_quantile(0.8, n - 1)) / math.sqrt(n)
    x = np.random.default_rng(n).normal(mde, 1.0, size=(REPS, n))
    _, lo, _ = t_bounds(x, level)
    assert 0.77 <= float(np.mean(lo > 0.0)) <= 0.83
    # And the function estimates that same MDE from one data set's spread.
    assert min_detectable_effect({f"p{i}": v for i, v in enumerate(x[0])}, level) == pytest.approx(
        mde * x[0].std(ddof=1))


# ------------------------------------------------------------------ verdicts


def _iv(low: float, high: float, n: int = 30) -> Interval:
    return Interval(estimate=(low + high) / 2, low=low, high=high, n_pairs=n, level=0.95)


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
    assert "0.5" in d.reason and d.flags == ()


def test_decide_reason_shows_family_level_and_few_pairs_flag():
    iv = Interval(0.8, 0.7, 0.9, 12, FAMILY_LEVEL, T_METHOD)
    d = decide(iv, 0.5, "above")
    assert d.reason == "estimate 0.8, 99.81% interval [0.7, 0.9] over 12 pairs: wholly above 0.5"
    assert d.flags == (FLAG_FEW_PAIRS,) and not d.degenerate
    assert decide(iv, 0.5, "above", min_pairs=12).flags == ()
    assert decide(_iv(0.6, 0.9, n=MIN_PAIRS), 0.5, "above").flags == ()
    assert decide(_iv(0.6, 0.9, n=MIN_PAIRS - 1), 0.5, "above").flags == (FLAG_FEW_PAIRS,)  # the boundary


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
    d = decide(mean_interval({"a": [math.nan]}), 0.5, "above", [])
    assert d.verdict is Verdict.INVALID and "0 usable pair" in d.reason
    d = decide(mean_interval({"a": [1.0]}), 0.5, "above", [])
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
    with pytest.raises(AttributeError):
        Decision(Verdict.SUPPORTED, "r").flags = ()  # type: ignore[misc]


# ------------------------------------------------------------------ within (equivalence claims)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(-0.1, 0.1, "supported"), (-0.3, 0.1, "inconclusive"), (0.1, 0.3, "inconclusive"),
     (0.25, 0.4, "refuted"), (-0.5, -0.21, "refuted"), (-0.2, 0.1, "inconclusive")],
)
def test_within_is_supported_inside_refuted_outside(low, high, expected):
    iv = Interval((low + high) / 2, low, high, 24, 0.95, T_METHOD)
    assert decide(iv, (-0.2, 0.2), "within").verdict == expected


@pytest.mark.parametrize("threshold", [0.2, (0.2,), (0.3, 0.1), (0.1, math.nan)])
def test_within_needs_two_ordered_bounds(threshold):
    iv = Interval(0.0, -0.1, 0.1, 24, 0.95, T_METHOD)
    with pytest.raises(HarnessValueError, match="within"):
        decide(iv, threshold, "within")
