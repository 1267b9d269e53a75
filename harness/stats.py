"""Cluster-bootstrap intervals, paired contrasts, guards and verdicts.

The unit of replication is the *pair* (baseline prompt, champion prompt): seeds of one
pair share a prompt and are not independent, so every interval first averages the seeds
within a pair and then resamples pairs. Pure numpy; nothing here knows about torch or
pytest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from harness.errors import HarnessValueError

__all__ = [
    "Interval",
    "Verdict",
    "GuardResult",
    "Decision",
    "pair_means",
    "cluster_bootstrap",
    "paired_contrast",
    "decide",
    "guard_gap_floor",
    "guard_patch_changed",
    "guard_arms_differ",
]

DIRECTIONS = ("above", "below")


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval.

    ``low``/``high`` are NaN when fewer than 2 pairs are usable (one cluster says nothing
    about spread); ``estimate`` is NaN too when no pair is usable.
    """

    estimate: float
    low: float
    high: float
    n_pairs: int
    level: float

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
class GuardResult:
    """One sanity check on the experiment itself; a failed guard makes the verdict invalid."""

    name: str
    ok: bool
    message: str


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str


# --------------------------------------------------------------------------- intervals


def pair_means(values_by_pair: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Mean over seeds per pair, NaNs dropped; pairs with no finite value are left out.

    A bare number for a pair is taken as a single seed. Keys come back sorted, so later
    resampling does not depend on the order results were collected in (e.g. across
    parallel workers).
    """
    out: dict[str, float] = {}
    for pair in sorted(values_by_pair):
        vals = np.atleast_1d(np.asarray(values_by_pair[pair], dtype=np.float64)).ravel()
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[pair] = float(vals.mean())
    return out


def _check_bootstrap_args(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise HarnessValueError(f"n_boot must be a positive integer, got {n_boot!r}.")
    if not 0 < level < 1:
        raise HarnessValueError(f"level must lie strictly between 0 and 1, got {level!r}.")


def _bootstrap_mean(values: np.ndarray, n_boot: int, seed: int, level: float) -> Interval:
    """Percentile interval of the mean of ``values`` (shape (n_pairs,)), resampling pairs."""
    n = int(values.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    estimate = float(values.mean())
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n, level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # (n_boot, n_pairs) resampled pair indices
    boot = values[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return Interval(estimate, float(low), float(high), n, level)


def cluster_bootstrap(
    values_by_pair: Mapping[str, Sequence[float]],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Bootstrap interval of the mean over pairs of the per-pair seed means.

    ``values_by_pair`` maps a pair id to its per-seed values. Seeds are averaged within a
    pair first (NaNs dropped, see :func:`pair_means`); pairs are then resampled with
    replacement ``n_boot`` times and the percentile interval at ``level`` is returned.
    Deterministic for a given ``seed``.
    """
    _check_bootstrap_args(n_boot, level)
    means = np.array(list(pair_means(values_by_pair).values()), dtype=np.float64)
    return _bootstrap_mean(means, n_boot, seed, level)


def paired_contrast(
    a_by_pair: Mapping[str, Sequence[float]],
    b_by_pair: Mapping[str, Sequence[float]],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Bootstrap interval of mean(a - b) over the pairs usable in both ``a`` and ``b``.

    Each side is first reduced to per-pair seed means; the difference is taken per pair,
    so pair-to-pair variation common to both arms cancels. Pairs missing (or all-NaN) on
    either side are left out.
    """
    _check_bootstrap_args(n_boot, level)
    a, b = pair_means(a_by_pair), pair_means(b_by_pair)
    diffs = np.array([a[p] - b[p] for p in a if p in b], dtype=np.float64)
    return _bootstrap_mean(diffs, n_boot, seed, level)


# --------------------------------------------------------------------------- verdicts


def decide(
    interval: Interval,
    threshold: float,
    direction: str,
    guards: Sequence[GuardResult] = (),
) -> Decision:
    """Turn an interval into a verdict on the claim "value is ``direction`` ``threshold``".

    Any failed guard -> invalid (reason: the failed guards' messages). A NaN interval (no
    usable pair, or one pair only) -> invalid. Otherwise supported when the whole interval
    is strictly on the claim's side of the threshold, refuted when it is strictly on the
    other side, inconclusive when it straddles; an endpoint equal to the threshold
    straddles.
    """
    if direction not in DIRECTIONS:
        raise HarnessValueError(f"direction must be 'above' or 'below', got {direction!r}.")
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = math.nan
    if not math.isfinite(t):
        raise HarnessValueError(f"threshold must be a finite number, got {threshold!r}.")
    threshold = t
    failed = [g for g in guards if not g.ok]
    if failed:
        return Decision(Verdict.INVALID, "; ".join(f"{g.name}: {g.message}" for g in failed))
    if interval.is_nan:
        return Decision(
            Verdict.INVALID,
            f"no interval: {interval.n_pairs} usable pair(s), at least 2 with a finite value "
            "are needed",
        )
    lo, hi = interval.low, interval.high
    span = (
        f"estimate {interval.estimate:.4g}, {interval.level:.0%} interval "
        f"[{lo:.4g}, {hi:.4g}] over {interval.n_pairs} pairs"
    )
    claim_side, other_side = (lo > threshold, hi < threshold)
    if direction == "below":
        claim_side, other_side = other_side, claim_side
    if claim_side:
        return Decision(Verdict.SUPPORTED, f"{span}: wholly {direction} {threshold:.4g}")
    if other_side:
        opposite = "below" if direction == "above" else "above"
        return Decision(Verdict.REFUTED, f"{span}: wholly {opposite} {threshold:.4g}")
    return Decision(Verdict.INCONCLUSIVE, f"{span}: straddles {threshold:.4g}")


# --------------------------------------------------------------------------- guards


def guard_gap_floor(
    gaps_by_pair: Mapping[str, float], floor: float, max_fraction: float = 0.5
) -> GuardResult:
    """Fail when more than ``max_fraction`` of pairs have a champion-baseline gap < ``floor``.

    ``gaps_by_pair`` maps pair id -> champion minus baseline (per-pair means). A NaN gap
    counts as below the floor. Efficiency is undefined for those pairs; if most pairs lack
    a gap, the claim measures nothing. No pair at all fails too.
    """
    name = "gap_floor"
    if not gaps_by_pair:
        return GuardResult(name, False, "no pairs to measure a champion-baseline gap on")
    below = sorted(p for p, g in gaps_by_pair.items() if not float(g) >= floor)
    n = len(gaps_by_pair)
    frac = len(below) / n
    msg = f"{len(below)}/{n} pairs have a champion-baseline gap below the floor {floor:g}"
    if frac > max_fraction:
        shown = ", ".join(below[:5]) + (", ..." if len(below) > 5 else "")
        return GuardResult(name, False, f"{msg} (more than {max_fraction:.0%}): {shown}")
    return GuardResult(name, True, msg)


def guard_patch_changed(
    counts: Mapping[str, int], declared_phases: Sequence[str], site: str = "patch"
) -> GuardResult:
    """Fail when a declared phase of a patch changed zero values.

    ``counts`` maps phase ("prefill", "decode", ...) -> number of values the patch actually
    changed; a declared phase missing from ``counts`` counts as zero. The original
    protocol's decode-time hooks never fired; this is the guard that catches it.
    """
    name = f"patch_changed[{site}]"
    idle = [ph for ph in declared_phases if int(counts.get(ph, 0)) == 0]
    if idle:
        return GuardResult(
            name, False, f"patch at {site} changed no values in phase(s): {', '.join(idle)}"
        )
    done = ", ".join(f"{ph}={int(counts[ph])}" for ph in declared_phases)
    return GuardResult(name, True, f"patch at {site} changed values: {done}")


def _as_token_tuple(seq: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(t) for t in seq)


def guard_arms_differ(
    tokens_a: Mapping[str, Sequence[Sequence[int]]],
    tokens_b: Mapping[str, Sequence[Sequence[int]]],
    names: tuple[str, str] = ("a", "b"),
) -> GuardResult:
    """Fail when two arms produced identical token sequences for every seed of every pair.

    Inputs map pair id -> one token-id sequence per seed (same seed order in both). Under
    shared seeds, arms that should differ but are token-identical everywhere mean the
    intervention did nothing. Only pairs present in both are compared; none fails.
    """
    name = f"arms_differ[{names[0]} vs {names[1]}]"
    common = sorted(set(tokens_a) & set(tokens_b))
    if not common:
        return GuardResult(name, False, f"no pair generated under both {names[0]} and {names[1]}")
    differing = [
        p
        for p in common
        if [_as_token_tuple(s) for s in tokens_a[p]] != [_as_token_tuple(s) for s in tokens_b[p]]
    ]
    if not differing:
        return GuardResult(
            name,
            False,
            f"{names[0]} and {names[1]} produced identical tokens for every seed of all "
            f"{len(common)} pairs",
        )
    return GuardResult(name, True, f"{len(differing)}/{len(common)} pairs differ")
