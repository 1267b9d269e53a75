"""Metrics against hand-computed values (counts written out next to each case)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.errors import HarnessValueError
from harness.metrics import (
    distinct_2,
    echo_rate,
    efficiency,
    efficiency_array,
    efficiency_original,
    participation_ratio,
    r_v,
)


# ------------------------------------------------------------------ echo_rate / distinct_2


def test_echo_rate_hand_counted():
    prompt = "I am a loop that observes itself"
    # Text 4-grams (lowercased): "i am a loop" (in prompt), "am a loop that" (in),
    # "a loop that sings" (not) -> 2 / 3.
    assert echo_rate("I AM a loop that sings", prompt) == pytest.approx(2 / 3)
    # Repeated 4-grams each count: "a b c d a b c d" has 5 grams, those in prompt
    # "a b c d" -> "a b c d" occurs twice -> 2 / 5.
    assert echo_rate("a b c d a b c d", "a b c d") == pytest.approx(2 / 5)
    assert echo_rate("one two three four", "nothing alike here at all") == 0.0


def test_echo_rate_nan_below_four_words():
    assert math.isnan(echo_rate("one two three", "one two three"))
    assert math.isnan(echo_rate("", "x"))
    # A prompt shorter than 4 words has no 4-gram: nothing can echo.
    assert echo_rate("one two three four", "one two") == 0.0


def test_distinct_2_hand_counted():
    # "a b a b": bigrams (a,b), (b,a), (a,b) -> 2 distinct / 3.
    assert distinct_2("a b a b") == pytest.approx(2 / 3)
    # Lowercased: "The cat the cat" -> (the,cat), (cat,the), (the,cat) -> 2 / 3.
    assert distinct_2("The cat the cat") == pytest.approx(2 / 3)
    assert distinct_2("x y") == 1.0
    assert math.isnan(distinct_2("x"))
    assert math.isnan(distinct_2(""))


# ------------------------------------------------------------------ participation ratio / R_V


@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_pr_of_equal_spectrum_is_rank(k):
    m = np.zeros((16, 32))
    m[np.arange(k), np.arange(k)] = 3.0
    assert participation_ratio(m) == pytest.approx(k)


def test_pr_hand_computed_spectrum():
    # Singular values 2 and 1: s^2 = 4, 1 -> (5)^2 / (16 + 1) = 25/17.
    m = np.diag([2.0, 1.0])
    assert participation_ratio(m) == pytest.approx(25 / 17)
    # Rotating rows does not change singular values.
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(2, 2)))
    assert participation_ratio(q @ m) == pytest.approx(25 / 17)


def test_pr_accepts_bf16_tensor():
    t = torch.zeros(4, 8, dtype=torch.bfloat16)
    t[0, 0] = 1.0
    t[1, 1] = 1.0
    assert participation_ratio(t) == pytest.approx(2.0)


def test_pr_zero_or_nonfinite_matrix_is_nan():
    assert math.isnan(participation_ratio(np.zeros((16, 8))))
    m = np.eye(4)
    m[0, 0] = np.nan
    assert math.isnan(participation_ratio(m))


def test_pr_rejects_non_matrix():
    with pytest.raises(HarnessValueError, match="2-D"):
        participation_ratio(np.zeros((1, 16, 8)))


def _diag_rows(T: int, d: int, spectrum: list[float]) -> np.ndarray:
    """A (T, d) matrix whose last len(spectrum) rows carry the given singular values."""
    m = np.zeros((T, d))
    k = len(spectrum)
    m[T - k + np.arange(k), np.arange(k)] = spectrum
    return m


def test_r_v_ratio_of_known_spectra():
    # Late: rank 2 equal spectrum (PR 2); early: rank 8 equal (PR 8) -> R_V = 0.25.
    late = _diag_rows(20, 32, [1.0] * 2)
    early = _diag_rows(20, 32, [1.0] * 8)
    assert r_v(late, early) == pytest.approx(0.25)
    assert r_v(torch.tensor(late), torch.tensor(early)) == pytest.approx(0.25)


def test_r_v_uses_only_the_last_window_positions():
    # The first 4 rows hold extra directions; with window 16 of 20 rows they are dropped.
    late = _diag_rows(20, 32, [1.0] * 4)
    late[0, 10] = late[1, 11] = late[2, 12] = late[3, 13] = 1.0
    early = _diag_rows(20, 32, [1.0] * 4)
    assert r_v(late, early, window=16) == pytest.approx(1.0)
    assert r_v(late, early, window=20) == pytest.approx(2.0)


def test_r_v_refuses_short_prompt():
    short = np.eye(10, 32)
    ok = np.eye(16, 32)
    with pytest.raises(HarnessValueError, match=r"10 positions.*window is 16.*at least 16 tokens"):
        r_v(short, ok)
    with pytest.raises(HarnessValueError, match="v_early has 10 positions"):
        r_v(ok, short)
    # Shrinking the window is the documented way out.
    assert r_v(short, short, window=10) == pytest.approx(1.0)


@pytest.mark.parametrize("window", [0, -1, 2.5, True])
def test_r_v_rejects_bad_window(window):
    with pytest.raises(HarnessValueError, match="window"):
        r_v(np.eye(16), np.eye(16), window=window)


def test_r_v_nan_when_a_layer_is_all_zero():
    assert math.isnan(r_v(np.zeros((16, 8)), np.eye(16, 8)))
    assert math.isnan(r_v(np.eye(16, 8), np.zeros((16, 8))))


# ------------------------------------------------------------------ efficiency


def test_efficiency_hand_computed():
    # (3 - 1) / (5 - 1) = 0.5; arm below baseline goes negative: (0 - 1) / 4.
    assert efficiency(3.0, 1.0, 5.0, floor=0.5) == 0.5
    assert efficiency(0.0, 1.0, 5.0, floor=0.5) == -0.25
    # Gap exactly at the floor is allowed: (2 - 1) / 1.
    assert efficiency(2.0, 1.0, 2.0, floor=1.0) == 1.0


@pytest.mark.parametrize(
    ("baseline", "champion"), [(1.0, 1.4), (1.0, 1.0), (2.0, 1.0), (math.nan, 1.0)]
)
def test_efficiency_nan_below_floor(baseline, champion):
    assert math.isnan(efficiency(1.2, baseline, champion, floor=0.5))


@pytest.mark.parametrize("floor", [0.0, -1.0, math.nan])
def test_efficiency_rejects_non_positive_floor(floor):
    with pytest.raises(HarnessValueError, match="floor"):
        efficiency(1.0, 0.0, 1.0, floor=floor)
    with pytest.raises(HarnessValueError, match="floor"):
        efficiency_array([1.0], [0.0], [1.0], floor=floor)


def test_efficiency_array_matches_scalar():
    arm = np.array([3.0, 0.0, 1.2, 2.0])
    base = np.array([1.0, 1.0, 1.0, 2.0])
    champ = np.array([5.0, 5.0, 1.4, 1.0])
    out = efficiency_array(arm, base, champ, floor=0.5)
    expected = [efficiency(a, b, c, 0.5) for a, b, c in zip(arm, base, champ)]
    np.testing.assert_array_equal(out, expected)  # NaN == NaN in assert_array_equal
    # Broadcasting a scalar baseline and champion.
    np.testing.assert_allclose(efficiency_array([1.0, 3.0], 1.0, 5.0, 0.5), [0.0, 0.5])


def test_efficiency_original_zero_on_non_positive_gap():
    assert efficiency_original(3.0, 1.0, 5.0) == 0.5
    assert efficiency_original(3.0, 1.0, 1.0) == 0.0
    assert efficiency_original(3.0, 2.0, 1.0) == 0.0
    # A tiny positive gap divides: the original's weakness that the floor exists for.
    assert efficiency_original(2.0, 1.0, 1.001) == pytest.approx(1000.0)


@pytest.mark.parametrize("floor, bounds, words", [
    (0.0, None, "floor must be > 0, got 0.0"),
    (-1.0, (0.0, 1.0), "floor must be > 0, got -1.0"),
    (0.05, (1.0, 1.0), "bounds (1.0, 1.0); expected (low, high) with low < high"),
    (0.05, (1.0, 0.0), "bounds (1.0, 0.0); expected (low, high) with low < high"),
])
def test_a_metric_with_a_non_positive_floor_or_empty_bounds_is_refused_where_it_is_declared(floor, bounds, words):
    from harness.metrics import Metric

    with pytest.raises(HarnessValueError, match="metric 'rate': ") as info:
        Metric("rate", floor, "a rate", lambda text, champion: 0.0, bounds)
    assert words in str(info.value)
    assert Metric("rate", 0.05, "a rate", None, (0.0, 1.0)).bounds == (0.0, 1.0)
