"""The Student t distribution in pure Python: survival function and quantile.

The harness's intervals need t quantiles at Bonferroni levels (e.g. 1 - 0.05/45) for
small degrees of freedom; scipy is not a dependency, so they are computed here from
the regularised incomplete beta function and tested against closed forms and tables.
"""

from __future__ import annotations

import functools
import math

from harness.errors import HarnessValueError

__all__ = ["t_sf", "t_quantile"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b) (modified Lentz); converges fast for x < (a+1)/(a+b+2)."""
    tiny = 1e-300  # keeps Lentz's divisions finite

    def nz(v: float) -> float:
        return v if abs(v) > tiny else tiny

    c, d = 1.0, 1.0 / nz(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, 100_000):
        for aa in (m * (b - m) * x / ((a - 1 + 2 * m) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1 + 2 * m))):
            d, c = 1.0 / nz(1.0 + aa * d), nz(1.0 + aa / c)
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b), 0 <= x <= 1."""
    if not 0.0 < x < 1.0:
        return 0.0 if x <= 0.0 else 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """Upper tail P(T > t) of Student's t with ``df`` > 0 degrees of freedom."""
    if t < 0:
        return 1.0 - t_sf(-t, df)
    # For t >= 0 the tail is I_x(df/2, 1/2) / 2 with x = df / (df + t^2); computing the
    # tail directly (not 1 - cdf) keeps full relative precision far out in it.
    return 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))


@functools.lru_cache(maxsize=1024)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (df >= 1, 0 < p < 1).

    Bisection on :func:`t_sf` to about 1e-14 relative: slow-ish (a few ms) but cached, and
    robust for df >= 1 far into the tail (tested to p = 1 - 1e-7), where series lose digits.
    """
    try:
        p, df = float(p), float(df)
    except (TypeError, ValueError):
        p = math.nan
    if not (0.0 < p < 1.0) or not 1.0 <= df < math.inf:  # NaN fails both comparisons
        raise HarnessValueError(f"t_quantile needs 0 < p < 1 and finite df >= 1, got p={p!r}, df={df!r}.")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):  # each step halves the bracket; 1e-14 relative takes about 50
        if hi - lo <= 1e-14 * hi:
            break
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_sf(mid, df) > tail else (lo, mid)
    return 0.5 * (lo + hi)
