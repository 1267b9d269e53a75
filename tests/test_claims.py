"""Claim records: what a claim must state, and refusals of malformed claims."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import KV_ONLY, L27_V, claims_finding

from harness.claims import Claim, Contrast, Efficiency, Interaction, RvDifference, Source, metric_for
from harness.errors import HarnessLookupError, HarnessValueError
from harness.finding import Finding
from harness.records import Intervention
from harness.records import CORRECTED, ORIGINAL

SOURCE = Source("test", "quote")


def test_a_claim_states_its_threshold_and_direction():
    with pytest.raises(TypeError):
        Claim("x", "s", SOURCE, Efficiency(KV_ONLY))  # no silent "below 0.2"


def test_unknown_metric_suggests_the_closest():
    with pytest.raises(HarnessLookupError, match="Did you mean 'echo_rate'"):
        Efficiency(KV_ONLY, metric="echo_rat")


def test_a_findings_metric_is_known_once_its_finding_is_declared():
    claims = claims_finding()  # declares the claims suite's FINDING, which registers its metrics
    assert Efficiency(KV_ONLY, metric="marker_rate").metric == "marker_rate"
    assert claims.FINDING.metric_table()["marker_rate"].per_sample("self self", "") == 1.0


def test_unknown_direction_suggests_the_closest():
    with pytest.raises(HarnessValueError, match="Did you mean 'above'"):
        Claim("x", "s", SOURCE, Efficiency(KV_ONLY), threshold=0.2, direction="abov")


@pytest.mark.parametrize("high", [None, 0.1, float("nan")])
def test_a_within_claim_needs_an_upper_bound_above_the_lower(high):
    with pytest.raises(HarnessValueError, match="threshold_high"):
        Claim("x", "s", SOURCE, Efficiency(KV_ONLY), threshold=0.2, direction="within", threshold_high=high)


def test_an_upper_bound_belongs_to_within_claims_only():
    with pytest.raises(HarnessValueError, match="only for direction 'within'"):
        Claim("x", "s", SOURCE, Efficiency(KV_ONLY), threshold=0.2, direction="below", threshold_high=0.5)


def test_a_measure_must_be_one_of_the_measure_types():
    with pytest.raises(HarnessValueError, match="expected one of Efficiency, Contrast, Interaction, RvDifference"):
        Claim("x", "s", SOURCE, KV_ONLY, threshold=0.2, direction="below")


def test_the_judging_metric_is_the_claims_own_else_the_protocols_else_the_findings():
    finding = Finding("judging", Path("."), protocol_metrics={"original": "echo_rate"}, default_metric="distinct_2")
    plain = Claim("x", "s", SOURCE, Efficiency(KV_ONLY), threshold=0.2, direction="below")
    assert metric_for(plain, ORIGINAL, finding) == "echo_rate"
    assert metric_for(plain, CORRECTED, finding) == "distinct_2"
    assert metric_for(plain, CORRECTED) == "champion_logprob"  # no finding: the generic one
    assert metric_for(plain, CORRECTED.with_(metric="echo_rate"), finding) == "echo_rate"
    pinned = Claim("x", "s", SOURCE, Efficiency(KV_ONLY, metric="distinct_2"), threshold=0.2, direction="below")
    assert metric_for(pinned, ORIGINAL, finding) == metric_for(pinned, CORRECTED, finding) == "distinct_2"


def test_arms_and_protocol_independence_follow_the_measure():
    contrast = Claim("x", "s", SOURCE, Contrast(L27_V, versus=KV_ONLY), threshold=0.0, direction="above",
                     must_differ_from=KV_ONLY)
    assert contrast.arms == (L27_V, KV_ONLY) and not contrast.protocol_independent
    geometry = Claim("g", "s", SOURCE, RvDifference(), threshold=0.0, direction="below")
    assert geometry.arms == () and geometry.protocol_independent


def test_an_interaction_needs_four_different_arms():
    from tiny import NOTHING

    with pytest.raises(HarnessValueError, match="four different arms"):
        Interaction(L27_V, KV_ONLY, KV_ONLY, NOTHING)
    design = Interaction(L27_V, KV_ONLY, Intervention("v", patches=("v_proj@27",)), NOTHING)
    assert design.arms[0] == L27_V and len(design.arms) == 4 and not design.protocol_independent
