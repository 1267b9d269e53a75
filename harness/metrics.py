"""Generic behaviour metrics, transfer efficiency and R_V; the registry findings add to.

Everything here is a pure function of text, numbers or one activation matrix. Text
metrics split words on whitespace (``str.split()``), as the original protocol did.
Torch is imported lazily, only when a tensor is passed to the matrix functions.

The engine knows no finding: a finding's own metrics (a word list, a classifier) are
declared by its :class:`harness.finding.Finding` and registered here by name, so a
claim can name them (:func:`register_metrics`, :func:`lookup_metric`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.errors import HarnessLookupError, HarnessValueError, did_you_mean

__all__ = [
    "Metric",
    "METRICS",
    "sample_metrics",
    "register_metrics",
    "lookup_metric",
    "known_metrics",
    "echo_rate",
    "distinct_2",
    "participation_ratio",
    "r_v",
    "efficiency",
    "efficiency_array",
    "efficiency_original",
]

def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def echo_rate(text: str, champion_prompt: str) -> float:
    """Share of the text's word 4-grams that also occur in the champion prompt.

    Words are ``str.split()`` of the lowercased strings. Every 4-gram of the text counts
    (with repetition) in the denominator; it is an echo when the same 4-gram appears
    anywhere in the prompt. A high rate means the "transferred behaviour" is the model
    copying the champion prompt, not producing it.

    Returns NaN when the text has fewer than 4 words: there is no 4-gram to judge, and 0.0
    would wrongly read as "no echo". Callers drop NaNs before averaging.
    """
    grams = _ngrams(text.lower().split(), 4)
    if not grams:
        return math.nan
    prompt_grams = set(_ngrams(champion_prompt.lower().split(), 4))
    return sum(g in prompt_grams for g in grams) / len(grams)


def distinct_2(text: str) -> float:
    """Distinct word bigrams / all word bigrams of ``text``.

    Words are ``str.split()`` of the lowercased text, so "The cat" and "the cat" are the
    same bigram (this metric measures repetition of content, not of capitalisation).
    Returns NaN with fewer than 2 words (no bigram).
    """
    grams = _ngrams(text.lower().split(), 2)
    if not grams:
        return math.nan
    return len(set(grams)) / len(grams)


# --------------------------------------------------------------------------- R_V


def _as_float64_matrix(matrix: Any, what: str) -> np.ndarray:
    """Return ``matrix`` (numpy array or torch tensor, any dtype) as a 2-D float64 array."""
    if hasattr(matrix, "detach"):  # a torch tensor; bf16 has no numpy dtype, so cast first
        import torch

        matrix = matrix.detach().to(device="cpu", dtype=torch.float64).numpy()
    arr = np.asarray(matrix, dtype=np.float64)
    if arr.ndim != 2:
        raise HarnessValueError(
            f"{what} must be a 2-D (positions x d) matrix, got shape {tuple(arr.shape)}. "
            "For a batch of one, pass output[0]."
        )
    return arr


def participation_ratio(matrix: Any) -> float:
    """Participation ratio of the singular-value spectrum of a (positions x d) matrix.

    PR = (sum s^2)^2 / sum s^4, computed in float64. A rank-k matrix with k equal
    singular values has PR = k; PR lies in [1, min(positions, d)].

    Returns NaN for an all-zero matrix (no spectrum, 0/0) and for a matrix holding a NaN
    or infinite value (an overflowed activation has no meaningful spectrum). NaN rather
    than an error because R_V is one value per pair: the statistics drop it, and a claim
    left with no usable pair is judged invalid, with that reason.
    """
    arr = _as_float64_matrix(matrix, "matrix")
    if arr.size == 0 or not np.isfinite(arr).all():
        return math.nan
    s2 = np.linalg.svd(arr, compute_uv=False) ** 2
    denom = float(np.sum(s2**2))
    if denom == 0.0:
        return math.nan
    return float(np.sum(s2)) ** 2 / denom


def r_v(v_late: Any, v_early: Any, window: int = 16) -> float:
    """R_V = PR(late) / PR(early) over the last ``window`` prompt positions.

    ``v_late`` and ``v_early`` are the v_proj outputs of one prompt pass at the late and
    the early layer, each of shape (T, d). Both keep their last ``window`` rows. The
    original protocol used window 16 (layers 27 and 5 of a 32-layer model).

    Raises HarnessValueError when a prompt has fewer than ``window`` positions: the
    original silently computed nothing useful there, and a shorter window would change
    the metric (PR is bounded by the number of positions). Returns NaN when either PR is
    NaN (see :func:`participation_ratio`).
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise HarnessValueError(f"window must be a positive integer, got {window!r}.")
    mats = []
    for name, v in (("v_late", v_late), ("v_early", v_early)):
        arr = _as_float64_matrix(v, name)
        if arr.shape[0] < window:
            raise HarnessValueError(
                f"{name} has {arr.shape[0]} positions but the R_V window is {window}: "
                f"use a prompt of at least {window} tokens, or pass window<={arr.shape[0]} "
                "(and report it, since PR is bounded by the window)."
            )
        mats.append(arr[-window:])
    late, early = (participation_ratio(m) for m in mats)
    if math.isnan(late) or math.isnan(early):
        return math.nan
    return late / early


# --------------------------------------------------------------------------- efficiency


def _check_floor(floor: float) -> None:
    # A floor of 0 (or less) would let a zero or negative gap through to the division.
    if not floor > 0:
        raise HarnessValueError(
            f"the efficiency floor must be > 0, got {floor!r}; use a small positive gap, "
            "e.g. 1e-6 for 'any positive gap'."
        )


def efficiency(arm: float, baseline: float, champion: float, floor: float) -> float:
    """Transfer efficiency (arm - baseline) / (champion - baseline).

    Returns NaN when the champion-baseline gap is below ``floor`` (or any input is NaN):
    a near-zero or negative gap makes the ratio meaningless, and the original's "0 when
    the denominator <= 0" would read as "no transfer". ``floor`` must be > 0.
    """
    _check_floor(floor)
    gap = champion - baseline
    if not gap >= floor:  # also catches NaN
        return math.nan
    return (arm - baseline) / gap


def efficiency_array(arm: Any, baseline: Any, champion: Any, floor: float) -> np.ndarray:
    """Element-wise :func:`efficiency` over broadcastable arrays; NaN where the gap < floor."""
    _check_floor(floor)
    a, b, c = (np.asarray(x, dtype=np.float64) for x in (arm, baseline, champion))
    gap = c - b
    ok = gap >= floor  # False for NaN gaps
    out = np.full(np.broadcast(a, b, c).shape, np.nan)
    np.divide(a - b, gap, out=out, where=ok)
    return out


def efficiency_original(arm: float, baseline: float, champion: float) -> float:
    """The original protocol's efficiency: the same ratio, but 0.0 when the gap <= 0."""
    gap = champion - baseline
    if gap <= 0:
        return 0.0
    return (arm - baseline) / gap


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Metric:
    """A behaviour metric: how it is computed, and the smallest champion-baseline gap
    (``floor``) for which an efficiency on it is defined.

    ``per_sample`` maps (generated text, champion prompt) to a number; a metric without
    it is computed from the model per pair (teacher-forced), by the runner. ``bounds``:
    (low, high) every per-pair mean lies within, which the verdict's error guarantee rests on
    (harness/bounded.py); None for a metric without known bounds (decided by the t interval,
    outside the guarantee).
    """

    name: str
    floor: float
    description: str
    per_sample: Callable[[str, str], float] | None = None
    bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        # Refused where the finding declares it, not at its first claim's efficiency.
        try:
            _check_floor(float(self.floor))
        except (TypeError, ValueError) as exc:
            raise HarnessValueError(f"metric {self.name!r}: {exc}") from None
        if self.bounds is not None:
            low, high = (float(b) for b in self.bounds)
            if not low < high:
                raise HarnessValueError(f"metric {self.name!r}: bounds {tuple(self.bounds)!r}; expected (low, high) "
                                        "with low < high, or None for a metric without known bounds")


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("distinct_2", 0.05, "distinct word bigrams / all bigrams (1: no repetition)",
           lambda text, champion: distinct_2(text), (0.0, 1.0)),
    Metric("echo_rate", 0.05, "share of the text's word 4-grams copied from the champion prompt",
           lambda text, champion: echo_rate(text, champion), (0.0, 1.0)),
    Metric("champion_logprob", 0.1, "mean log-probability per token, teacher-forced under the arm, of the "
           "champion's own greedy continuation (model-based: no text heuristics)"),
)}

#: Metrics declared by findings (name -> metric), beside the generic :data:`METRICS`.
_REGISTERED: dict[str, Metric] = {}


def register_metrics(metrics: Iterable[Metric]) -> None:
    """Make a finding's metrics known by name (idempotent for the same declaration).

    A name of a generic metric, or one already registered with another floor or
    description (another finding's metric), is refused: a claim names its metric, and a
    name must mean one thing in a run.
    """
    for metric in metrics:
        if not isinstance(metric, Metric):
            raise HarnessValueError(f"finding metric {metric!r}; expected a harness.metrics.Metric")
        if metric.name in METRICS:
            raise HarnessValueError(f"finding metric {metric.name!r} shadows the generic metric of that name; "
                                    "give it a name of its own")
        known = _REGISTERED.get(metric.name)
        if known is not None and (known.floor, known.description) != (metric.floor, metric.description):
            raise HarnessValueError(f"finding metric {metric.name!r} is declared twice, differently "
                                    f"({known.description!r} and {metric.description!r}); rename one")
        _REGISTERED[metric.name] = metric


def known_metrics() -> dict[str, Metric]:
    """Every metric a claim may name: the generic ones and those findings registered."""
    return {**METRICS, **_REGISTERED}


def lookup_metric(name: str) -> Metric:
    """The metric called ``name``; a one-line refusal naming the known ones otherwise."""
    table = known_metrics()
    if name not in table:
        raise HarnessLookupError(f"unknown metric {name!r}; expected one of {', '.join(table)}."
                                 + did_you_mean(name, table))
    return table[name]


def sample_metrics(text: str, champion_prompt: str,
                   metrics: Mapping[str, Metric] | None = None) -> dict[str, float | None]:
    """Every per-sample metric of one generated text, computed once (None where undefined).

    ``metrics``: the table to compute (a finding's, see :meth:`harness.finding.Finding.metric_table`);
    default the generic :data:`METRICS`.
    """
    out: dict[str, float | None] = {}
    for metric in (METRICS if metrics is None else metrics).values():
        if metric.per_sample is not None:
            value = metric.per_sample(text, champion_prompt)
            out[metric.name] = None if math.isnan(value) else value
    return out
