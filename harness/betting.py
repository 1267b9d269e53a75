"""Distribution-free tests for the mean of bounded values, by betting.

The test of Waudby-Smith and Ramdas (2023, "Estimating means of bounded random variables by
betting", JRSS-B): to test H0: E[X] <= 0 for X in [lo, hi], bet on X with a stake chosen from
the values seen before it. The capital K_n = prod_t (1 + lambda_t X_t), lambda_t in
[0, CAP / -lo], stays positive, and under H0 its expectation is at most 1 whatever the
distribution of X in [lo, hi] (skewed, zero-inflated, two-point). So P(K_n >= 1/alpha) <= alpha
(Markov). The only assumptions: the values are independent draws of one distribution (pairs
exchangeable) and lie within [lo, hi].

At a fixed number of pairs the order of the pairs is arbitrary, so the capital is averaged over
``N_ORDERS`` fixed orders (an average of e-values is an e-value): the verdict does not hang on
one order, and the same data always give the same answer.

Sequentially (``sequential=True``: pairs arrive in batches and the run stops once a cell is
decided), the capital is taken in the order the pairs arrived, and H0 is rejected as soon as
it reaches 1/alpha at any step: under H0 the capital is a nonnegative supermartingale, so by
Ville's inequality P(sup_n K_n >= 1/alpha) <= alpha, however the run chooses when to stop
(Waudby-Smith and Ramdas's anytime-valid form). The averaged form is not a supermartingale in
one order, so it is used only at a fixed n. Pure numpy; every function takes a batch of data sets.
"""

from __future__ import annotations

import math

import numpy as np

from harness.errors import HarnessValueError

__all__ = ["CAP", "N_ORDERS", "log_capital", "reject_positive_mean"]

#: Largest stake as a share of the most that can be lost (lambda <= CAP / -lo): the capital
#: never drops below (1 - CAP) of itself in one step, however bad the value.
CAP = 0.9
#: Orders of the pairs the capital is averaged over (fixed, seeded: deterministic verdicts).
N_ORDERS = 32
_ORDER_SEED = 20230901
_orders_cache: dict[int, np.ndarray] = {}


def _orders(n: int) -> np.ndarray:
    """(N_ORDERS, n) fixed permutations of range(n); the first is the identity."""
    if n not in _orders_cache:
        rng = np.random.default_rng(_ORDER_SEED + n)
        perms = [np.arange(n)] + [rng.permutation(n) for _ in range(N_ORDERS - 1)]
        _orders_cache[n] = np.stack(perms)
    return _orders_cache[n]


def log_capital(x: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray,
                sequential: bool = False) -> np.ndarray:
    """log of the capital averaged over the fixed orders, betting that E[X] > 0; with
    ``sequential``, the largest log capital reached in the given order (its running maximum).

    ``x`` (..., n) values in [lo, hi] with lo < 0 < hi (``lo``/``hi`` scalars or shape (...)).
    Returns shape (...). The stake is the growth-optimal one for the running mean and variance
    (lambda = m / (v + m^2), Kelly's approximation), shrunk toward 0 by one pseudo-value at 0
    with the variance of the widest distribution on [lo, hi], and clipped to [0, CAP / -lo].
    """
    x = np.asarray(x, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)[..., None, None]
    hi = np.asarray(hi, dtype=np.float64)[..., None, None]
    n = x.shape[-1]
    xs = x[..., None, :] if sequential else x[..., _orders(n)]  # (..., orders, n)
    t = np.arange(1, n + 1, dtype=np.float64)
    prior_var = ((hi - lo) / 2.0) ** 2
    mean_t = np.cumsum(xs, axis=-1) / (t + 1.0)  # running mean, shrunk by a pseudo-value 0
    var_t = (prior_var + np.cumsum((xs - mean_t) ** 2, axis=-1)) / (t + 1.0)
    # the stake for step t uses only the values before it (predictable): shift by one
    m_prev = np.concatenate([np.zeros_like(mean_t[..., :1]), mean_t[..., :-1]], axis=-1)
    v_prev = np.concatenate([np.broadcast_to(prior_var, mean_t[..., :1].shape), var_t[..., :-1]], axis=-1)
    stake = np.clip(m_prev / (v_prev + m_prev**2), 0.0, CAP / -lo)
    if sequential:  # one order: the arrival order; the capital's highest point so far
        path = np.cumsum(np.log1p(stake * xs), axis=-1)[..., 0, :]
        return np.maximum(path.max(axis=-1), 0.0) if n else np.zeros(path.shape[:-1])
    logk = np.sum(np.log1p(stake * xs), axis=-1)  # (..., orders)
    top = logk.max(axis=-1)
    return top + np.log(np.mean(np.exp(logk - top[..., None]), axis=-1))


def reject_positive_mean(x: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray,
                         alpha: float, sequential: bool = False) -> np.ndarray:
    """Reject H0: E[X] <= 0 at level ``alpha``? ``x`` (..., n) in [lo, hi] -> bool (...).

    ``sequential``: ``x`` is in arrival order and the test holds at every n at once (a run may
    stop when it is decided); otherwise it holds at this n.

    Edge cases follow from the bounds alone: lo > 0 makes H0 impossible (reject); lo = 0 makes
    H0 mean X = 0 always, so any positive value rejects; hi <= 0 makes E[X] > 0 impossible.
    Values outside [lo, hi] are refused: the guarantee rests on the bounds.
    """
    if not 0.0 < alpha < 1.0:
        raise HarnessValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}.")
    x = np.asarray(x, dtype=np.float64)
    lo_a, hi_a = np.broadcast_arrays(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64))
    slack = 1e-9 * np.maximum(1.0, np.abs(hi_a - lo_a))[..., None]
    if np.any(x < lo_a[..., None] - slack) or np.any(x > hi_a[..., None] + slack):
        raise HarnessValueError(f"values outside their bounds [{np.min(lo_a):.4g}, {np.max(hi_a):.4g}]: "
                                "the bounded-mean test does not apply; declare the metric's true bounds.")
    x = np.clip(x, lo_a[..., None], hi_a[..., None])
    out = np.zeros(x.shape[:-1], dtype=bool)
    out |= lo_a > 0
    out |= (lo_a == 0) & (hi_a > 0) & np.any(x > 0, axis=-1)
    inner = (lo_a < 0) & (hi_a > 0)
    if np.any(inner):
        safe_lo = np.where(inner, lo_a, -1.0)
        safe_hi = np.where(inner, hi_a, 1.0)
        logk = log_capital(np.where(inner[..., None], x, 0.0), safe_lo, safe_hi, sequential)
        out |= inner & (logk >= math.log(1.0 / alpha))
    return out
