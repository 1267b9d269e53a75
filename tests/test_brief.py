"""The short texts shared by the terminal, summary.md, report.html and CI: reasons, counts, the last line."""

from __future__ import annotations

import dataclasses

from harness.report.brief import closing_line, counts_text, coverage_text, ledger_text, short_reason
from test_render import claim_row


def _row(claim="c", protocol="corrected", **changes):
    return dataclasses.replace(claim_row(claim, protocol), **changes)


def test_short_reasons_say_why_in_one_line():
    decided = _row(verdict="refuted", reason="estimate 1.013, 99.86% interval [0.96, 1.067] over 24 pairs: "
                                             "wholly outside [-0.2, 0.2]", guards=())
    assert short_reason(decided) == "interval wholly outside [-0.2, 0.2]"
    flat = _row(verdict="inconclusive", flags=("degenerate",), estimate=0.0, n_pairs=24, guards=(),
                reason="every one of the 24 pairs gave exactly 0: no spread, ... (the point alone: wholly below 0.2)")
    assert short_reason(flat) == "all 24 pairs gave 0: no width, no verdict"
    assert short_reason(dataclasses.replace(flat, flags=("zero_width",))) == "all 24 pairs gave 0: no width, no verdict"
    broken = _row(verdict="invalid", reason="long", guards=(
        "ok gap_floor: fine", "FAILED patch_changed[v_proj@27(L27)]: no values", "FAILED arms_differ[a vs b]: same",
        "FAILED patch_changed[v_proj@5(L5)]: no values"))
    assert short_reason(broken) == "a patch changed nothing, arms gave identical tokens"
    few = _row(verdict="supported", flags=("few_pairs",), n_pairs=2, metrics_agree=False, alt_verdict="refuted",
               alt_metric="champion_logprob", guards=(), reason="...: wholly above 0.8")
    assert short_reason(few) == "interval wholly above 0.8; only 2 pairs; champion_logprob says refuted"
    assert len(short_reason(_row(verdict="invalid", guards=(), reason="x" * 500))) == 72


def test_counts_coverage_and_the_closing_line():
    rows = [_row("a", verdict="supported", outcome="pass", family_size=35),
            _row("b", verdict="invalid", outcome="xfail", expected="invalid", family_size=35),
            _row("b", "original", verdict="refuted", outcome="fail", expected="supported", family_size=35)]
    assert counts_text(rows) == "1 supported, 1 refuted, 0 inconclusive, 1 invalid"
    assert coverage_text(rows).startswith("3 of the family's 35 claim x protocol cells (2 claims)")
    assert coverage_text(rows, complete=False) == ("3 of the family's 35 claim x protocol cells (2 claims) "
                                                   "finished; the others did not run or did not finish")
    assert ledger_text(rows[:2]) == "ledger: all as expected"
    assert closing_line(rows, missing=1, complete=False) == (
        "claims (3 of 35 cells): 1 supported, 1 refuted, 0 inconclusive, 1 invalid; ledger: 1 unexpected: "
        "b [original] refuted (expected supported); 1 claim test failed without a result; run INCOMPLETE")
    many = [_row(f"c{i}", verdict="refuted", outcome="fail", expected="supported") for i in range(7)]
    assert ledger_text(many, covered=False).endswith("c4 [corrected] refuted (expected supported) and 2 more")
    assert "no entries for these settings" in ledger_text(many, covered=False)
    unjudged = [_row(f"u{i}", verdict=v, outcome="unjudged", expected="") for i, v in enumerate(("refuted", "invalid"))]
    assert ledger_text(unjudged, covered=False) == (
        "ledger: no entries for these settings, 2 verdicts reported, not judged (--ledger-strict fails those "
        "not supported)")
    assert "1 unexpected" in ledger_text(unjudged + many[:1], covered=False)  # a failure is still named
    whole = [dataclasses.replace(r, family_size=3) for r in rows]
    assert closing_line(whole).startswith("claims: 1 supported")
