"""Intervals, family-wise levels, detectable effects and verdicts.

The unit of replication is the *pair* (baseline prompt, champion prompt): its seeds share a
prompt and are not independent, so seeds are averaged within a pair first and the per-pair
means are the sample. The default interval, Student t on those means, was chosen by
simulation (docs/statistics.md). Pure numpy: the t quantile is computed here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from harness.errors import HarnessValueError
from harness.guards import GuardResult
from harness.tdist import t_quantile, t_sf

__all__ = [
    "Interval", "Verdict", "Decision",
    "MIN_PAIRS", "FAMILY_ALPHA", "T_METHOD", "FLAG_ZERO_WIDTH", "FLAG_FEW_PAIRS",
    "t_sf", "t_quantile", "t_bounds",
    "pair_means", "pair_differences", "mean_interval", "paired_interval",
    "cluster_bootstrap", "paired_contrast",
    "family_level", "min_detectable_effect", "decide",
]

#: Fewest usable pairs from which the t interval's 95% coverage was measured within 2 points
#: of nominal in every non-stress scenario of docs/statistics.md (gamma(2): 92.6% at 12).
#: The harness should refuse or flag fewer; decide() adds the "few_pairs" flag.
MIN_PAIRS = 24
#: Family-wise error rate the harness aims at over all claim cells of one run.
FAMILY_ALPHA = 0.05
T_METHOD = "t on pair means"
# Every usable pair gave the same value: a zero-width interval. Not "degenerate": that word is the
# repetitive-text guard's (guards.guard_degeneration).
FLAG_ZERO_WIDTH = "zero_width"
FLAG_DEGENERATE = FLAG_ZERO_WIDTH  # the constant's former name, for code written against it
FLAG_FEW_PAIRS = "few_pairs"  # fewer than MIN_PAIRS usable pairs: coverage not as measured


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval at ``level`` over ``n_pairs`` pair means.

    ``low``/``high`` are NaN under 2 usable pairs, ``estimate`` too with none. ``degenerate``:
    2+ pairs all gave the same value, so the width is 0, which is no evidence of precision.
    """

    estimate: float
    low: float
    high: float
    n_pairs: int
    level: float
    method: str = "unspecified"
    degenerate: bool = False

    @property
    def is_nan(self) -> bool:
        return any(math.isnan(x) for x in (self.estimate, self.low, self.high))


class Verdict(str, Enum):
    """Outcome of a claim. A ``str`` subclass so it compares and serialises as its value."""

    SUPPORTED = "supported"
    REFUTED = "refuted"
    INCONCLUSIVE = "inconclusive"
    INVALID = "invalid"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Decision:
    """A verdict, its one-line reason, and flags a report should show next to it."""

    verdict: Verdict
    reason: str
    flags: tuple[str, ...] = ()

    @property
    def degenerate(self) -> bool:
        return FLAG_ZERO_WIDTH in self.flags


def _check_level(level: float, name: str = "level") -> float:
    try:
        value = float(level)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 < value < 1.0:
        raise HarnessValueError(f"{name} must lie strictly between 0 and 1, got {level!r}.")
    return value


def t_bounds(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised t interval: ``values`` (..., n) finite, n >= 2 -> (estimate, low, high), each (...).

    The core of :func:`mean_interval`; the coverage simulations call it on many data sets at once.
    """
    level = _check_level(level)
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[-1]
    if n < 2:
        raise HarnessValueError(f"t_bounds needs at least 2 values per row, got {n}.")
    est = x.mean(axis=-1)
    half = t_quantile(1.0 - (1.0 - level) / 2.0, n - 1) * x.std(axis=-1, ddof=1) / math.sqrt(n)
    return est, est - half, est + half


# --------------------------------------------------------------------------- intervals


def pair_means(values_by_pair: Mapping[str, Any]) -> dict[str, float]:
    """Mean over seeds per pair (values shape (n_seeds,), or one number), NaNs dropped.

    Pairs with no finite value are left out. Keys come back sorted, so results do not depend
    on the order they were collected in.
    """
    out: dict[str, float] = {}
    for pair in sorted(values_by_pair):
        try:
            vals = np.atleast_1d(np.asarray(values_by_pair[pair], dtype=np.float64)).ravel()
        except (TypeError, ValueError) as exc:
            raise HarnessValueError(f"pair {pair!r}: values must be numbers ({exc}).") from None
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[pair] = float(vals.mean())
    return out


def pair_differences(a_by_pair: Mapping[str, Any], b_by_pair: Mapping[str, Any]) -> dict[str, float]:
    """Per-pair mean(a) - mean(b) over pairs usable in both arms: pair effects common to both cancel."""
    a, b = pair_means(a_by_pair), pair_means(b_by_pair)
    return {p: a[p] - b[p] for p in a if p in b}


def _all_same(values: np.ndarray) -> bool:
    """True when the values (shape (n,)) are identical up to rounding of a seed average."""
    return bool(np.ptp(values) <= 1e-12 * max(1.0, float(np.max(np.abs(values)))))


def _interval(values: np.ndarray, level: Any, method: str,
              bounds: Callable[[np.ndarray, float], tuple[float, float]]) -> Interval:
    """Interval of the mean of ``values`` (shape (n_pairs,)); ``bounds`` gives (low, high)."""
    level = _check_level(level)
    n = int(values.size)
    est = float(values.mean()) if n else math.nan
    if n < 2:
        return Interval(est, math.nan, math.nan, n, level, method)
    if _all_same(values):  # width 0, pinned to the estimate so rounding cannot give 1e-17
        return Interval(est, est, est, n, level, method, degenerate=True)
    low, high = bounds(values, level)
    return Interval(est, float(low), float(high), n, level, method)


def _t_lohi(values: np.ndarray, level: float) -> tuple[float, float]:
    return t_bounds(values, level)[1:]


def _as_array(means: Mapping[str, float]) -> np.ndarray:
    return np.fromiter(means.values(), dtype=np.float64, count=len(means))


def mean_interval(values_by_pair: Mapping[str, Any], level: float = 0.95) -> Interval:
    """The harness's interval: Student t on the per-pair seed means (see :func:`pair_means`).

    ``values_by_pair`` maps pair id -> per-seed values (or one number). ``level`` is the
    two-sided coverage; for a run's family of cells use :func:`family_level`.
    """
    return _interval(_as_array(pair_means(values_by_pair)), level, T_METHOD, _t_lohi)


def paired_interval(a_by_pair: Mapping[str, Any], b_by_pair: Mapping[str, Any], level: float = 0.95) -> Interval:
    """Student t interval of mean(a - b) over the per-pair differences of seed means."""
    diffs = _as_array(pair_differences(a_by_pair, b_by_pair))
    return _interval(diffs, level, "t on paired pair-mean differences", _t_lohi)


def _percentile(n_boot: int, seed: int) -> Callable[[np.ndarray, float], tuple[float, float]]:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise HarnessValueError(f"n_boot must be a positive integer, got {n_boot!r}.")

    def bounds(values: np.ndarray, level: float) -> tuple[float, float]:
        idx = np.random.default_rng(seed).integers(0, values.size, size=(n_boot, values.size))
        low, high = np.quantile(values[idx].mean(axis=1), [(1 - level) / 2, (1 + level) / 2])
        return low, high

    return bounds


def cluster_bootstrap(
    values_by_pair: Mapping[str, Any], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Alternative, not the default: percentile bootstrap over pairs of the pair means.

    Measured to under-cover at small n (86% at 6 normal pairs for 95% nominal;
    docs/statistics.md); kept for comparison. Deterministic for a given ``seed``.
    """
    means = _as_array(pair_means(values_by_pair))
    return _interval(means, level, "percentile bootstrap over pairs", _percentile(n_boot, seed))


def paired_contrast(
    a_by_pair: Mapping[str, Any], b_by_pair: Mapping[str, Any],
    n_boot: int = 2000, seed: int = 0, level: float = 0.95,
) -> Interval:
    """Alternative, not the default: percentile bootstrap of the per-pair differences."""
    diffs = _as_array(pair_differences(a_by_pair, b_by_pair))
    return _interval(diffs, level, "percentile bootstrap of paired differences", _percentile(n_boot, seed))


# --------------------------------------------------------------------------- family, power


def family_level(family_size: int, alpha: float = FAMILY_ALPHA) -> float:
    """Bonferroni per-cell interval level 1 - alpha/m for a family of m cells.

    If every cell's interval covers at this level, the chance that any of the m cells gets
    a false decisive verdict is at most alpha, whatever the dependence between cells; each
    cell needs only m, so shards and workers need not see each other's results.
    """
    if isinstance(family_size, bool) or not isinstance(family_size, (int, np.integer)) or family_size < 1:
        raise HarnessValueError(f"family_size must be a positive integer, got {family_size!r}.")
    alpha = _check_level(alpha, "alpha")
    return 1.0 - alpha / int(family_size)


def min_detectable_effect(values_by_pair: Mapping[str, Any], level: float = 0.95, power: float = 0.8) -> float:
    """Smallest true shift from the threshold that the interval would exclude with ``power``.

    (t_{1-(1-level)/2, n-1} + t_{power, n-1}) * sd / sqrt(n), with sd the spread of the
    per-pair means (shape (n,)). NaN when fewer than 2 pairs are usable, and NaN when all
    pairs agree exactly: zero observed spread says nothing about the true spread.
    """
    level, power = _check_level(level), _check_level(power, "power")
    means = _as_array(pair_means(values_by_pair))
    n = int(means.size)
    if n < 2 or _all_same(means):
        return math.nan
    df = n - 1
    factor = t_quantile(1.0 - (1.0 - level) / 2.0, df) + t_quantile(power, df)
    return float(factor * means.std(ddof=1) / math.sqrt(n))


# --------------------------------------------------------------------------- verdicts


def _finite_threshold(threshold: Any) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = math.nan
    if not math.isfinite(t):
        raise HarnessValueError(f"threshold must be a finite number, got {threshold!r}.")
    return t


def _judge_above(lo: float, hi: float, t: float) -> tuple[Verdict, str]:
    if lo > t:
        return Verdict.SUPPORTED, f"wholly above {t:.4g}"
    if hi < t:
        return Verdict.REFUTED, f"wholly below {t:.4g}"
    return Verdict.INCONCLUSIVE, f"straddles {t:.4g}"


def _judge_below(lo: float, hi: float, t: float) -> tuple[Verdict, str]:
    verdict, text = _judge_above(lo, hi, t)
    flipped = {Verdict.SUPPORTED: Verdict.REFUTED, Verdict.REFUTED: Verdict.SUPPORTED}
    return flipped.get(verdict, verdict), text


def _bounds(threshold: Any) -> tuple[float, float]:
    try:
        low, high = (_finite_threshold(t) for t in threshold)
    except (TypeError, ValueError):
        raise HarnessValueError(f"a 'within' threshold must be (low, high), got {threshold!r}.") from None
    if not low < high:
        raise HarnessValueError(f"a 'within' threshold needs low < high, got {threshold!r}.")
    return low, high


def _judge_within(lo: float, hi: float, bounds: tuple[float, float]) -> tuple[Verdict, str]:
    a, b = bounds
    if a < lo and hi < b:
        return Verdict.SUPPORTED, f"wholly within [{a:.4g}, {b:.4g}]"
    if hi < a or lo > b:
        return Verdict.REFUTED, f"wholly outside [{a:.4g}, {b:.4g}]"
    return Verdict.INCONCLUSIVE, f"crosses a bound of [{a:.4g}, {b:.4g}]"


# direction -> (threshold parser, judge(low, high, parsed threshold)): a new direction is one
# more entry; decide() itself does not change.
_RULES: dict[str, tuple[Callable[[Any], Any], Callable[[float, float, Any], tuple[Verdict, str]]]] = {
    "above": (_finite_threshold, _judge_above),
    "below": (_finite_threshold, _judge_below),
    "within": (_bounds, _judge_within),
}
DIRECTIONS = tuple(_RULES)


def _pct(level: float) -> str:
    text = f"{level * 100:.4g}"  # 95, 99.81; a Bonferroni level must never print as 100
    return (text if text != "100" else f"{level * 100:.10g}") + "%"


def decide(
    interval: Interval,
    threshold: Any,
    direction: str,
    guards: Sequence[GuardResult] = (),
    min_pairs: int = MIN_PAIRS,
) -> Decision:
    """Turn an interval into a verdict on the claim "value is ``direction`` ``threshold``".

    For ``within``, ``threshold`` is (low, high): supported when the whole interval lies
    strictly inside, refuted when wholly outside, inconclusive when it crosses a bound.

    Any failed guard -> invalid (reason: the failed guards' messages). Fewer than 2 usable
    pairs (a NaN interval) -> invalid. Otherwise supported when the whole interval is
    strictly on the claim's side, refuted when strictly on the other side, inconclusive
    when it straddles (an endpoint on the threshold straddles). A degenerate interval
    (every pair gave the same value) is inconclusive, says what the point alone would give
    and carries the "zero_width" flag; fewer than ``min_pairs`` pairs adds "few_pairs".
    """
    if direction not in _RULES:
        raise HarnessValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}.")
    parse, judge = _RULES[direction]
    threshold = parse(threshold)
    failed = [g for g in guards if not g.ok]
    if failed:
        return Decision(Verdict.INVALID, "; ".join(f"{g.name}: {g.message}" for g in failed))
    n = interval.n_pairs
    if interval.is_nan or n < 2:
        return Decision(Verdict.INVALID,
                        f"no interval: {n} usable pair(s), at least 2 with a finite value are needed")
    flags = (FLAG_FEW_PAIRS,) if n < min_pairs else ()
    if interval.degenerate:
        # Zero observed spread is no evidence of zero true spread: a t interval of no width
        # justifies no decisive verdict (the bounded rule, harness/bounded.py, can, from bounds).
        est = interval.estimate
        _, text = judge(est, est, threshold)
        reason = (f"every one of the {n} pairs gave exactly {est:.4g}: no spread, the interval "
                  f"has no width, which justifies no verdict (the point alone: {text})")
        return Decision(Verdict.INCONCLUSIVE, reason, (FLAG_ZERO_WIDTH, *flags))
    verdict, text = judge(interval.low, interval.high, threshold)
    span = (f"estimate {interval.estimate:.4g}, {_pct(interval.level)} interval "
            f"[{interval.low:.4g}, {interval.high:.4g}] over {n} pairs")
    return Decision(verdict, f"{span}: {text}", flags)


if __name__ == "__main__":  # python -m harness.stats study ...: the study lives in its own module
    from harness.study import main

    raise SystemExit(main())
