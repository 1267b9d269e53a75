"""The shipped decision rule: a ratio of means of bounded metrics, tested by betting.

Estimand. A claim's value is a ratio of population means over pairs, E[N] / E[D], where N and D
are linear in the per-pair metric means of the arms (each within the metric's bounds):

- efficiency of an arm: N = arm - baseline, D = champion - baseline;
- contrast of two arms: N = arm1 - arm2, D = champion - baseline;
- a plain mean (a prompt-pass difference): N = value, D = 1.

Test. "value > theta" holds iff E[N - theta D] > 0 and E[D] > 0. Both are means of bounded
per-pair quantities, d_i(theta) = N_i - theta D_i and D_i, whose bounds follow from the metric's
(:func:`linear_bounds`); each is tested by betting (:mod:`harness.betting`). "value > theta" is
decided when BOTH nulls are rejected at alpha (an intersection-union test: no extra
multiplicity). "value < theta" likewise with -d_i(theta). A cell's two sides share its
Bonferroni level: alpha_side = (1 - level) / 2, so at most alpha_cell = 1 - level of false
decisive verdicts per cell, at most FAMILY_ALPHA over the family.

Interval. The values of theta neither side rejects, found by bisection; it is reported, but
the verdict comes from the tests at the threshold itself (so a test that is not monotone in
theta can never make a verdict the tests do not back).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.betting import reject_positive_mean
from harness.errors import HarnessValueError
from harness.guards import GuardResult
from harness.report.schema import BETTING_METHOD, SEQUENTIAL_METHOD
from harness.stats import Decision, Interval, Verdict, _bounds, _finite_threshold, _pct

__all__ = ["BETTING_METHOD", "SEQUENTIAL_METHOD", "RatioData", "linear_bounds", "reject_above", "reject_below",
           "ratio_interval", "decide_ratio", "efficiency_data", "contrast_data", "interaction_data", "kv_set_data", "mean_data"]

_BISECT_STEPS = 40


@dataclass(frozen=True)
class RatioData:
    """Per-pair values ``x`` (n_pairs, k) of k columns, column j within [low[j], high[j]];
    the estimand is mean(x @ num) / mean(x @ den)."""

    x: np.ndarray
    num: tuple[float, ...]
    den: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    #: The rows are in the order the pairs arrived, and the tests hold at every n (see
    #: :mod:`harness.betting`): a run may add pairs until the cell is decided.
    sequential: bool = False

    def __post_init__(self) -> None:
        k = self.x.shape[-1]
        if not len(self.num) == len(self.den) == len(self.low) == len(self.high) == k:
            raise HarnessValueError(f"ratio data with {k} columns needs {k} coefficients and bounds each")

    @property
    def n(self) -> int:
        return int(self.x.shape[-2])

    def estimate(self) -> float:
        """mean(N) / mean(D); NaN when mean(D) <= 0 (the ratio is then not defined)."""
        if self.n == 0:
            return math.nan
        num, den = float(np.mean(self.x @ np.array(self.num))), float(np.mean(self.x @ np.array(self.den)))
        return num / den if den > 0 else math.nan


def linear_bounds(w: Sequence[float] | np.ndarray, low: Sequence[float],
                  high: Sequence[float]) -> tuple[float, float]:
    """Exact range of sum_j w_j x_j over the box x_j in [low_j, high_j]."""
    w = np.asarray(w, dtype=np.float64)
    a, b = w * np.asarray(low, dtype=np.float64), w * np.asarray(high, dtype=np.float64)
    return float(np.minimum(a, b).sum()), float(np.maximum(a, b).sum())


def _side(data: RatioData, theta: float, sign: float, alpha: float) -> bool:
    """Reject H0: sign * (E[N] - theta E[D]) <= 0, and H0: E[D] <= 0, both at ``alpha``."""
    den = np.asarray(data.den, dtype=np.float64)
    w = sign * (np.asarray(data.num, dtype=np.float64) - theta * den)
    lo, hi = linear_bounds(w, data.low, data.high)
    dlo, dhi = linear_bounds(den, data.low, data.high)
    return bool(reject_positive_mean(data.x @ w, lo, hi, alpha, data.sequential)
                and reject_positive_mean(data.x @ den, dlo, dhi, alpha, data.sequential))


def reject_above(data: RatioData, theta: float, alpha: float) -> bool:
    """Is "value > theta" shown at level ``alpha`` (H0: value <= theta, or E[D] <= 0, rejected)?"""
    return _side(data, theta, 1.0, alpha)


def reject_below(data: RatioData, theta: float, alpha: float) -> bool:
    """Is "value < theta" shown at level ``alpha``?"""
    return _side(data, theta, -1.0, alpha)


def _edge(data: RatioData, start: float, step: float, shown: Any) -> float:
    """The theta where ``shown(theta)`` turns from False (at ``start``) to True, moving by
    ``step``'s sign: doubling steps to bracket it, then bisection. +-inf when never shown."""
    inside, far = start, start + step
    for _ in range(60):
        if shown(far):
            break
        inside, far, step = far, far + 2 * step, 2 * step
    else:
        return math.copysign(math.inf, step)
    for _ in range(_BISECT_STEPS):
        mid = (inside + far) / 2.0
        inside, far = (inside, mid) if shown(mid) else (mid, far)
    return (inside + far) / 2.0


def ratio_interval(data: RatioData, level: float) -> Interval:
    """The thetas neither one-sided test rejects at (1 - level) / 2: (-inf, inf) when the
    denominator is not shown positive, NaN with fewer than 2 pairs."""
    alpha = (1.0 - level) / 2.0
    est, n = data.estimate(), data.n
    method = SEQUENTIAL_METHOD if data.sequential else BETTING_METHOD
    if n < 2:
        return Interval(est, math.nan, math.nan, n, level, method)
    den = np.asarray(data.den, dtype=np.float64)
    if not reject_positive_mean(data.x @ den, *linear_bounds(den, data.low, data.high), alpha, data.sequential):
        return Interval(est, -math.inf, math.inf, n, level, method)
    start = est if math.isfinite(est) else 0.0
    scale = max(1.0, abs(start)) * 0.01
    low = _edge(data, start, -scale, lambda t: reject_above(data, t, alpha))
    high = _edge(data, start, scale, lambda t: reject_below(data, t, alpha))
    return Interval(est, low, high, n, level, method)


def decide_ratio(data: RatioData, threshold: Any, direction: str, level: float,
                 guards: Sequence[GuardResult] = ()) -> tuple[Interval, Decision]:
    """The interval and the verdict on "value is ``direction`` ``threshold``" (see module doc).

    above: supported when "> t" is shown, refuted when "< t" is. below: the reverse. within
    (a, b): supported when "> a" and "< b" are both shown, refuted when "< a" or "> b" is.
    Any failed guard: invalid. Fewer than 2 pairs: invalid.
    """
    alpha = (1.0 - level) / 2.0
    interval = ratio_interval(data, level)
    failed = [g for g in guards if not g.ok]
    if failed:
        return interval, Decision(Verdict.INVALID, "; ".join(f"{g.name}: {g.message}" for g in failed))
    if data.n < 2:
        return interval, Decision(Verdict.INVALID, f"no interval: {data.n} usable pair(s), at least 2 "
                                                   "with a finite value are needed")
    up = lambda t: reject_above(data, t, alpha)  # noqa: E731
    down = lambda t: reject_below(data, t, alpha)  # noqa: E731
    if direction == "within":
        a, b = _bounds(threshold)
        shown_in, shown_out = up(a) and down(b), down(a) or up(b)
        where = f"[{a:.4g}, {b:.4g}]"
        verdict, text = ((Verdict.SUPPORTED, f"shown within {where}") if shown_in else
                         (Verdict.REFUTED, f"shown outside {where}") if shown_out else
                         (Verdict.INCONCLUSIVE, f"not shown within or outside {where}"))
    elif direction in ("above", "below"):
        t = _finite_threshold(threshold)
        hi_shown, lo_shown = up(t), down(t)
        claim_shown, other_shown = (hi_shown, lo_shown) if direction == "above" else (lo_shown, hi_shown)
        verdict, text = ((Verdict.SUPPORTED, f"shown {direction} {t:.4g}") if claim_shown else
                         (Verdict.REFUTED, f"shown {'below' if direction == 'above' else 'above'} {t:.4g}")
                         if other_shown else (Verdict.INCONCLUSIVE, f"not shown above or below {t:.4g}"))
    else:
        raise HarnessValueError(f"direction must be one of above, below, within, got {direction!r}.")
    span = (f"estimate {interval.estimate:.4g}, {_pct(level)} interval [{interval.low:.4g}, "
            f"{interval.high:.4g}] over {data.n} pairs ({'sequential ' if data.sequential else ''}betting test, "
            "bounded metric)")
    return interval, Decision(verdict, f"{span}: {text}")


# --------------------------------------------------------------------------- per measure


def _rows(columns: Sequence[dict[str, float]], order: Sequence[str] | None = None) -> np.ndarray:
    """(n_pairs, k) over the pairs with a finite value in every column: in ``order`` (the
    order the pairs arrived, for a sequential test), else in sorted id order."""
    common = set.intersection(*(set(c) for c in columns))
    ids = [p for p in dict.fromkeys(order) if p in common] if order is not None else sorted(common)
    x = np.array([[c[p] for c in columns] for p in ids], dtype=np.float64).reshape(len(ids), len(columns))
    return x[np.all(np.isfinite(x), axis=1)]


def efficiency_data(arm: dict[str, float], baseline: dict[str, float], champion: dict[str, float],
                    bounds: tuple[float, float], order: Sequence[str] | None = None) -> RatioData:
    """E[arm - baseline] / E[champion - baseline]; each dict maps pair id -> the metric's pair mean.

    ``order``: the pair ids in the order they arrived, for the sequential test (every builder)."""
    lo, hi = bounds
    return RatioData(_rows([arm, baseline, champion], order), (1.0, -1.0, 0.0), (0.0, -1.0, 1.0),
                     (lo,) * 3, (hi,) * 3, order is not None)


def contrast_data(arm: dict[str, float], versus: dict[str, float], baseline: dict[str, float],
                  champion: dict[str, float], bounds: tuple[float, float],
                  order: Sequence[str] | None = None) -> RatioData:
    """E[arm - versus] / E[champion - baseline]: the difference of the two arms' efficiencies."""
    lo, hi = bounds
    return RatioData(_rows([arm, versus, baseline, champion], order), (1.0, -1.0, 0.0, 0.0),
                     (0.0, 0.0, -1.0, 1.0), (lo,) * 4, (hi,) * 4, order is not None)


def interaction_data(both: dict[str, float], first: dict[str, float], second: dict[str, float],
                     neither: dict[str, float], baseline: dict[str, float], champion: dict[str, float],
                     bounds: tuple[float, float], order: Sequence[str] | None = None) -> RatioData:
    """E[(both - first) - (second - neither)] / E[champion - baseline]: a 2x2 factorial's
    interaction on efficiencies, as a ratio of means."""
    lo, hi = bounds
    return RatioData(_rows([both, first, second, neither, baseline, champion], order),
                     (1.0, -1.0, -1.0, 1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0, -1.0, 1.0), (lo,) * 6, (hi,) * 6,
                     order is not None)


def kv_set_data(kv_set: dict[str, float], full: dict[str, float], baseline: dict[str, float],
                champion: dict[str, float], share: float, bounds: tuple[float, float]) -> RatioData:
    """(E[set - baseline] - share E[full - baseline]) / E[champion - baseline]: the minimal KV
    set's efficiency minus ``share`` times full KV's, as a ratio of means."""
    lo, hi = bounds
    return RatioData(_rows([kv_set, full, baseline, champion]), (1.0, -share, share - 1.0, 0.0),
                     (0.0, 0.0, -1.0, 1.0), (lo,) * 4, (hi,) * 4)


def mean_data(values: dict[str, float], bounds: tuple[float, float],
              order: Sequence[str] | None = None) -> RatioData:
    """E[value]: a constant column 1 (bounds [1, 1]) is the denominator."""
    x = _rows([values], order)
    return RatioData(np.hstack([x, np.ones_like(x)]), (1.0, 0.0), (0.0, 1.0),
                     (bounds[0], 1.0), (bounds[1], 1.0), order is not None)
