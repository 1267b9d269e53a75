"""Guards on the experiment: gap floor, idle patches, identical arms, degenerate and echoing text."""

from __future__ import annotations

import math

import numpy as np

from harness.guards import (
    DEGENERATION_RATIO,
    ECHO_MARGIN,
    GuardResult,
    MIN_DIFFERING_SHARE,
    guard_arms_differ,
    guard_kv_changed,
    guard_degeneration,
    guard_echo,
    guard_gap_floor,
    guard_patch_changed,
    mean,
)


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
    assert not g.ok and "kv" in g.message and "0/3 rows" in g.message
    # A different length is a difference; numpy ints compare as ints.
    assert guard_arms_differ({"p": [[1, 2]]}, {"p": [[1, 2, 3]]}).ok
    assert not guard_arms_differ({"p": [np.array([1, 2])]}, {"p": [[1, 2]]}).ok
    # No common pair: nothing to compare, fails.
    assert not guard_arms_differ({"p": [[1]]}, {"q": [[2]]}).ok


def test_arms_differ_needs_the_share_of_differing_rows_not_one_token_of_one_seed():
    """The old rule passed when one token of one seed differed; now a share of the rows must."""
    a = {f"p{i}": [[i, 0], [i, 1]] for i in range(5)}  # 10 rows
    def flipped(k):  # the first k rows differ
        rows = [(p, j) for p in sorted(a) for j in range(2)][:k]
        return {p: [[t + 100 if (p, j) in rows and n == 1 else t for n, t in enumerate(seq)]
                    for j, seq in enumerate(v)] for p, v in a.items()}
    assert MIN_DIFFERING_SHARE == 0.5
    assert not guard_arms_differ(a, flipped(1)).ok  # one seed of one pair: no longer enough
    assert not guard_arms_differ(a, flipped(4)).ok
    g = guard_arms_differ(a, flipped(5))  # exactly half: passes
    assert g.ok and "5/10 rows" in g.message
    assert guard_arms_differ(a, flipped(10), min_share=1.0).ok
    assert not guard_arms_differ(a, flipped(9), min_share=1.0).ok


def test_a_kv_splice_that_changed_nothing_anywhere_fails():
    assert not guard_kv_changed("kv-only", {"p1": 0, "p2": 0}).ok
    g = guard_kv_changed("kv-only", {"p1": 0, "p2": 12})
    assert g.ok and "12" in g.message and "1/2 pairs unchanged" in g.message


def test_degeneration_is_far_below_both_reference_arms():
    # The numbers: distinct-2 0.46 against a champion at 0.93 and a baseline at 0.95.
    assert not guard_degeneration("resid", 0.46, 0.95, 0.93).ok
    limit = DEGENERATION_RATIO * 0.9
    assert guard_degeneration("a", limit, 0.95, 0.9).ok
    assert not guard_degeneration("a", limit - 1e-9, 0.95, 0.9).ok
    assert guard_degeneration("a", math.nan, 0.9, 0.9).ok  # undefined: not judged, says so
    assert "not judged" in guard_degeneration("a", math.nan, 0.9, 0.9).message


def test_echo_is_copying_beyond_the_champion_arms_own_rate():
    assert guard_echo("a", 0.2 + ECHO_MARGIN, 0.2).ok
    assert not guard_echo("a", 0.2 + ECHO_MARGIN + 1e-9, 0.2).ok
    assert "copies the prompt" in guard_echo("a", 0.9, 0.1).message
    assert guard_echo("a", 0.05, math.nan).ok


def test_mean_skips_undefined_values():
    assert mean([1.0, None, math.nan, 3.0]) == 2.0
    assert math.isnan(mean([None, math.nan]))


def test_guard_results_compare_by_value():
    assert GuardResult("g", True, "m") == GuardResult("g", True, "m")
    assert len({GuardResult("g", True, "m"), GuardResult("g", True, "m")}) == 1
