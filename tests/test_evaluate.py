"""Evaluating claims on the toy: guards that catch broken experiments, rows, samples, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tiny import KV_ONLY, L27_V, WRONG_LAYER_V, claims_finding

from harness.bounded import BETTING_METHOD
from harness.claims import Claim, Contrast, Efficiency, RvDifference, Source
from harness.evaluate import Evaluator
from harness.generate import Runner
from harness.model import load_subject
from harness.prompts import default_pairs, spread
from harness.records import CORRECTED, ORIGINAL, Intervention

SOURCE = Source("test", "quote")
RESID = Intervention("resid_pre@18", patches=("resid_pre@18",))


@pytest.fixture(scope="module")
def evaluator():
    return Evaluator(Runner(load_subject()), finding=claims_finding().FINDING)


@pytest.fixture(scope="module")
def pairs():
    return spread(default_pairs(), 4)


def run(evaluator, claim, pairs, protocol, tokens=10, seeds=2, family=1):
    return evaluator.evaluate(claim, pairs, protocol.with_(gen_tokens=tokens), n_seeds=seeds, family_size=family)


def test_original_l27_claim_is_invalid_because_its_patch_never_wrote(evaluator, pairs):
    claim = Claim("l27", "s", SOURCE, Efficiency(L27_V), threshold=0.8, direction="above", must_differ_from=KV_ONLY)
    row = run(evaluator, claim, pairs, ORIGINAL).row
    assert row.verdict == "invalid"
    assert "changed no values in phase(s): decode" in row.reason
    assert "0/8 rows (pair x seed) of 4 pairs differ" in row.reason
    assert row.calls_decode > 0 and row.changed_decode == 0
    assert row.kv_layers == "all(32)" and "v_proj@27->L27" in row.sites


def test_corrected_l27_patch_acts_in_both_phases_and_the_interval_holds_the_estimate(evaluator, pairs):
    claim = Claim("l27", "s", SOURCE, Efficiency(L27_V), threshold=0.8, direction="above", must_differ_from=KV_ONLY)
    row = run(evaluator, claim, pairs, CORRECTED).row
    assert row.changed_prefill > 0 and row.changed_decode > 0
    assert not any(g.startswith("FAILED patch_changed") for g in row.guards)
    assert row.metric == "marker_rate" and row.alt_metric == "champion_logprob"
    assert row.ci_low <= row.estimate <= row.ci_high
    assert math.isfinite(row.alt_estimate) and row.alt_verdict


def test_contrast_is_invalid_when_the_comparison_arms_patch_never_wrote(evaluator, pairs):
    claim = Claim("c", "s", SOURCE, Contrast(KV_ONLY, versus=WRONG_LAYER_V), threshold=0.0, direction="above")
    row = run(evaluator, claim, pairs, ORIGINAL).row
    assert row.verdict == "invalid" and "v_proj@5(L5)" in row.reason


def test_rv_claim_runs_once_whatever_the_protocol(evaluator, pairs):
    claim = Claim("rv", "s", SOURCE, RvDifference(), threshold=0.0, direction="below")
    a, b = run(evaluator, claim, pairs, ORIGINAL).row, run(evaluator, claim, pairs, CORRECTED).row
    assert a == b and a.protocol == "any" and a.metric == "r_v" and a.n_seeds == 0
    assert a.n_pairs == len(pairs) and math.isfinite(a.estimate)
    assert a.sites == "v_proj@27->L27;v_proj@5->L5" and a.arms == ()


def test_an_arm_that_degenerates_is_invalid_not_a_transfer(evaluator, pairs):
    """The resid_pre@18 patch alone makes the toy repeat itself: under the original score's
    repetition bonus that read as transfer; the degeneration guard makes it invalid."""
    claim = Claim("r", "s", SOURCE, Efficiency(RESID, metric="marker_score"), threshold=0.2, direction="below")
    row = run(evaluator, claim, pairs, CORRECTED, tokens=24).row
    assert row.verdict == "invalid"
    assert "FAILED degeneration[resid_pre@18]" in " ".join(row.guards)


def test_samples_use_each_pairs_own_seeds_and_carry_their_metrics(evaluator, pairs):
    claim = Claim("k", "s", SOURCE, Efficiency(KV_ONLY), threshold=0.2, direction="below")
    evaluation = run(evaluator, claim, pairs, CORRECTED, seeds=3)
    samples = evaluation.samples
    assert len(samples) == len(pairs) * 3 * 3  # baseline, champion, kv-only
    for pair in pairs:
        assert sorted({s.seed for s in samples if s.pair == pair.id}) == list(pair.seeds(3))
    assert len({s.seed for s in samples}) == len(pairs) * 3  # no seed shared between pairs
    assert all({"marker_rate", "marker_score", "distinct_2"} <= set(s.metrics) for s in samples)
    assert evaluation.row.arms == ("baseline", "champion", "kv-only")


def test_the_family_widens_the_interval(evaluator, pairs):
    claim = Claim("k", "s", SOURCE, Efficiency(L27_V), threshold=0.2, direction="below")
    one, many = run(evaluator, claim, pairs, CORRECTED).row, run(evaluator, claim, pairs, CORRECTED, family=30).row
    assert one.estimate == many.estimate
    # a few pairs leave the bounded rule's interval unbounded; the strict widening on data
    # that bound it is tests/test_bounded.py's
    assert many.level > one.level and many.ci_low <= one.ci_low and many.ci_high >= one.ci_high
    assert one.interval_method == many.interval_method == BETTING_METHOD


def test_an_efficiency_estimate_is_the_ratio_of_the_arms_pair_means(evaluator, pairs):
    """Hand-computed from the samples: mean(arm - baseline) / mean(champion - baseline) over pairs
    of seed means; any permutation of the three arms gives another number on these data."""
    claim = Claim("k", "s", SOURCE, Efficiency(L27_V), threshold=0.2, direction="below")
    evaluation = run(evaluator, claim, pairs, CORRECTED)
    by = {}
    for s in evaluation.samples:
        by.setdefault((s.arm, s.pair), []).append(s.metrics["marker_rate"])
    ids = sorted({p for _, p in by})
    m = {arm: np.array([np.mean(by[(arm, p)]) for p in ids]) for arm in ("baseline", "champion", L27_V.name)}
    expected = np.mean(m[L27_V.name] - m["baseline"]) / np.mean(m["champion"] - m["baseline"])
    assert evaluation.row.estimate == pytest.approx(expected, rel=1e-12)


def test_geometry_shift_of_an_arm_that_is_the_baseline_is_exactly_zero(evaluator, pairs):
    from tiny import NOTHING

    from harness.claims import GeometryShift

    claim = Claim("g", "s", SOURCE, GeometryShift(NOTHING), threshold=0.0, direction="above")
    row = run(evaluator, claim, pairs, CORRECTED, tokens=16).row
    # every pair's shift is exactly 0, but the arm is the baseline's own computation: the cell
    # compares the baseline with itself, which the evaluator refuses
    assert row.estimate == 0.0 and row.degenerate and row.verdict == "invalid"
    assert "self_comparison[no intervention]" in row.reason
    assert row.shared == ("no intervention = baseline (the same computation, run once)",)


def test_pr_difference_rows_carry_the_profile_for_the_plot(evaluator, pairs):
    import json

    from harness.claims import PrDifference

    row = run(evaluator, Claim("p", "s", SOURCE, PrDifference(18), threshold=0.0, direction="above"),
              pairs, CORRECTED).row
    profile = json.loads(row.series)
    assert row.protocol == "any" and row.metric == "pr" and len(profile["layers"]) == 32
    diff = profile["champion"]["mean"][18] - profile["baseline"]["mean"][18]
    assert math.isclose(diff, row.estimate, rel_tol=1e-9)


def test_minimal_kv_set_searches_on_half_and_confirms_on_the_other(evaluator):
    from harness.claims import MinimalKvSet

    pairs = spread(default_pairs(), 6)
    claim = Claim("m", "s", SOURCE, MinimalKvSet(share=0.5, block=16), threshold=0.0, direction="above")
    evaluation = run(evaluator, claim, pairs, CORRECTED, tokens=8, seeds=3)
    row = evaluation.row
    assert row.n_pairs <= 3  # the held-out half only
    assert "set found" in row.notes[-1]
    assert row.kv_layers in ("0..15", "16..31", "all(32)")
    held_out = {p.id for p in pairs[1::2]}
    found = [s for s in evaluation.samples if s.arm.startswith("kv@") and s.arm != "kv-only"]
    assert {s.pair for s in found} <= held_out
    # The search chose with 2 seeds a pair (the default search_seeds); the held-out half, which
    # the verdict rests on, has every seed of the run.
    assert row.notes[0].startswith("search on 3 pairs x 2 seeds")
    assert all(len({s.seed for s in evaluation.samples if s.pair == p and s.arm == a}) == row.n_seeds == 3
               for p in held_out for a in {s.arm for s in evaluation.samples})


def test_the_interaction_is_the_four_efficiencies_combined(evaluator, pairs):
    """(both - kv) - (v - neither), per pair: its mean equals the same combination of the four
    arms' mean efficiencies, each evaluated as a claim of its own (the pairs are the same: a
    pair's efficiency is undefined for every arm at once, by its champion-baseline gap)."""
    from tiny import NOTHING

    from harness.claims import Interaction

    v_alone = Intervention("v_proj@27", patches=("v_proj@27",))
    design = Interaction(L27_V, KV_ONLY, v_alone, NOTHING)
    row = run(evaluator, Claim("i", "s", SOURCE, design, threshold=0.0, direction="above"), pairs, CORRECTED).row
    single = [run(evaluator, Claim(f"e{i}", "s", SOURCE, Efficiency(arm), threshold=0.0, direction="above"),
                  pairs, CORRECTED).row for i, arm in enumerate(design.arms)]
    assert len({r.n_pairs for r in single} | {row.n_pairs}) == 1
    both, kv, v, neither = (r.estimate for r in single)
    assert row.estimate == pytest.approx((both - kv) - (v - neither), abs=1e-12)
    assert row.metric == "marker_rate" and row.alt_metric == "champion_logprob"
    assert row.arms == ("baseline", "champion", *(a.name for a in design.arms))
    # its "neither" cell is the baseline's own computation by design: that is no self-comparison
    assert not [g for g in row.guards if g.startswith("FAILED self_comparison")], row.guards


def test_an_arm_that_is_the_baselines_own_computation_makes_the_cell_invalid(evaluator, pairs):
    from tiny import NOTHING

    claim = Claim("k", "s", SOURCE, Efficiency(NOTHING), threshold=0.2, direction="below")
    row = run(evaluator, claim, pairs, CORRECTED).row
    assert row.verdict == "invalid" and "self_comparison" in row.reason


def test_a_kv_arm_reports_the_values_its_splice_changed(evaluator, pairs):
    claim = Claim("k", "s", SOURCE, Efficiency(KV_ONLY), threshold=0.2, direction="below")
    row = run(evaluator, claim, pairs, CORRECTED).row
    kv = [g for g in row.guards if "kv_changed[kv-only]" in g]
    assert len(kv) == 1 and kv[0].startswith("ok ")


def test_an_rv_difference_is_late_over_early_pr_of_the_champion_minus_the_baseline(evaluator, pairs):
    claim = Claim("k", "s", SOURCE, RvDifference(late=27, early=5), threshold=0.0, direction="above")
    row = run(evaluator, claim, pairs, CORRECTED).row

    def rv(text):  # independently: the PR profile of V per layer (harness/geometry.py)
        profile = evaluator.geometry.pr_profile(text)
        return profile[27] / profile[5]

    expected = np.mean([rv(p.champion) - rv(p.baseline) for p in pairs])
    # float32 activations from two differently padded passes: equal to float32's rounding, which
    # the CPU's kernels may spend differently (late and early swapped, or the prompts, move it by far more)
    assert row.estimate == pytest.approx(expected, rel=1e-5)
    swapped = np.mean([evaluator.geometry.pr_profile(p.champion)[5] / evaluator.geometry.pr_profile(p.champion)[27]
                       - evaluator.geometry.pr_profile(p.baseline)[5] / evaluator.geometry.pr_profile(p.baseline)[27]
                       for p in pairs])
    assert row.estimate != pytest.approx(swapped, rel=1e-3)


def test_the_geometry_floor_applies_to_the_size_of_the_gap_not_its_sign():
    from harness.evaluate import GEOMETRY_FLOOR, _Cell

    class Fixed(_Cell):
        def __init__(self, rv):
            self.rv, self.rv_gaps = rv, {}

        def sequence_rv(self, arm, late, early):
            return self.rv[arm if isinstance(arm, str) else "arm"]

    cell = Fixed({"baseline": {"p": 2.0, "q": 1.0, "r": 1.0}, "champion": {"p": 1.0, "q": 1.0 + GEOMETRY_FLOOR / 2,
                                                                            "r": 1.5},
                  "arm": {"p": 1.5, "q": 1.0, "r": 1.25}})
    out = cell.geometry_shift(Intervention("x", kv_layers="all"), 27, 5)
    assert out["p"] == pytest.approx(0.5)  # a negative gap, larger than the floor: defined
    assert math.isnan(out["q"])  # a gap under the floor: undefined
    assert out["r"] == pytest.approx(0.5)
