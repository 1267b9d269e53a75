"""The ledger: lookup, the pass / xfail / fail rule, and updating from a run's claims.csv."""

from __future__ import annotations

import csv

import pytest

from harness.errors import HarnessLookupError, HarnessValueError
from harness.ledger import Entry, Ledger, judge, main

ENTRY = Entry("toy@abc", "l27-v-full-kv", "original", "invalid", "patch changed nothing", "r/summary.md")


@pytest.mark.parametrize(
    ("verdict", "entry", "kind"),
    [
        ("supported", None, "pass"),
        ("refuted", None, "fail"),
        ("invalid", None, "fail"),
        ("inconclusive", None, "fail"),
        ("invalid", ENTRY, "xfail"),
        ("supported", ENTRY, "fail"),
        ("refuted", ENTRY, "fail"),
        ("supported", Entry("m", "c", "p", "supported", "", "r"), "pass"),
        ("refuted", Entry("m", "c", "p", "supported", "", "r"), "fail"),
    ],
)
def test_judge_follows_the_ledger_rule(verdict, entry, kind):
    assert judge(verdict, entry).kind == kind


def test_xfail_message_carries_the_recorded_reason_and_report():
    message = judge("invalid", ENTRY).message
    assert "patch changed nothing" in message and "r/summary.md" in message


def write_csv(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_update_copies_measured_verdicts_and_round_trips(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.md").write_text("# report")
    rows = [
        {"claim": "kv-only-fails", "protocol": "original", "verdict": "refuted", "reason": 'a "quoted" why',
         "model": "toy@abc"},
        {"claim": "kv-only-fails", "protocol": "corrected", "verdict": "supported", "reason": "ok",
         "model": "toy@abc"},
    ]
    write_csv(run / "claims.csv", rows)
    ledger_path = tmp_path / "ledger.toml"
    assert main(["update", str(run), "--ledger", str(ledger_path)]) == 0
    ledger = Ledger.load(ledger_path)
    entry = ledger.lookup("toy@abc", "kv-only-fails", "original")
    assert entry.verdict == "refuted" and entry.reason == 'a "quoted" why'
    assert entry.report == str(run / "summary.md")
    assert ledger.lookup("toy@abc", "kv-only-fails", "corrected").verdict == "supported"
    assert ledger.lookup("other@1", "kv-only-fails", "original") is None


def test_update_refuses_a_folder_without_claims(tmp_path):
    with pytest.raises(HarnessLookupError, match="no claims.csv"):
        main(["update", str(tmp_path), "--ledger", str(tmp_path / "l.toml")])


def test_malformed_ledger_is_refused(tmp_path):
    path = tmp_path / "ledger.toml"
    path.write_text('[[verdict]]\nmodel = "m"\nclaim = "c"\n')
    with pytest.raises(HarnessValueError, match="lacks protocol"):
        Ledger.load(path)


def test_missing_ledger_is_empty(tmp_path):
    assert Ledger.load(tmp_path / "none.toml").entries == {}
