"""The ledger: lookup by model and settings, the pass / xfail / fail rule, updating from a run."""

from __future__ import annotations

import pytest
from test_render import all_cells

from harness.errors import HarnessValueError
from harness.ledger import Entry, Ledger, judge, main
from harness.report import RunWriter

ENTRY = Entry("toy@abc", "pairs=12", "l27-v-full-kv", "original", "invalid", "patch changed nothing", "r/summary.md")


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
        ("supported", Entry("m", "s", "c", "p", "supported", "", "r"), "pass"),
        ("refuted", Entry("m", "s", "c", "p", "supported", "", "r"), "fail"),
    ],
)
def test_judge_follows_the_ledger_rule(verdict, entry, kind):
    assert judge(verdict, entry).kind == kind


@pytest.mark.parametrize("verdict", ["supported", "refuted", "inconclusive", "invalid"])
def test_settings_without_any_entry_are_reported_not_judged_unless_strict(verdict):
    assert judge(verdict, None, covered=False).kind == "unjudged"
    assert f"measured {verdict}" in judge(verdict, None, covered=False).message
    assert judge(verdict, None, covered=False, strict=True).kind == ("pass" if verdict == "supported" else "fail")
    # A new claim where the settings are covered: it must be supported, strict or not.
    assert judge(verdict, None, covered=True).kind == ("pass" if verdict == "supported" else "fail")
    # An entry is judged whatever the coverage flag says.
    assert judge(verdict, ENTRY, covered=False).kind == ("xfail" if verdict == "invalid" else "fail")


def test_the_ledgers_verdict_names_are_the_verdict_rules():
    from harness.ledger import _VERDICTS
    from harness.stats import Verdict

    assert set(_VERDICTS) == {v.value for v in Verdict}


def test_xfail_message_carries_the_recorded_reason_and_report():
    message = judge("invalid", ENTRY).message
    assert "patch changed nothing" in message and "r/summary.md" in message


def write_run(path, settings, verdicts, complete=True):
    import dataclasses

    writer = RunWriter(path, {"model": "toy"})
    for (row, samples), verdict in zip(all_cells(sweep=False)[:2], verdicts):
        writer.add(dataclasses.replace(row, model="toy@abc", settings=settings, verdict=verdict,
                                       reason=f'a "quoted" why {verdict}'), samples)
    writer.close(complete=complete, render=False)
    return path


def test_update_records_verdicts_with_their_settings_and_round_trips(tmp_path):
    run = write_run(tmp_path / "run", "pairs=12 seeds=6", ["refuted", "supported"])
    ledger_path = tmp_path / "ledger.toml"
    assert main(["update", str(run), "--ledger", str(ledger_path)]) == 0
    ledger = Ledger.load(ledger_path)
    entry = ledger.lookup("toy@abc", "pairs=12 seeds=6", "kv-only-fails", "original")
    assert entry.verdict == "refuted" and entry.reason == 'a "quoted" why refuted'
    assert entry.report.endswith("run/claims.csv")
    assert ledger.lookup("toy@abc", "pairs=4 seeds=2", "kv-only-fails", "original") is None
    assert ledger.covers("toy@abc", "pairs=12 seeds=6") and not ledger.covers("toy@abc", "pairs=4 seeds=2")


def test_a_scaled_down_run_leaves_the_default_settings_entries_untouched(tmp_path):
    ledger_path = tmp_path / "ledger.toml"
    main(["update", str(write_run(tmp_path / "full", "pairs=12", ["refuted", "supported"])), "--ledger", str(ledger_path)])
    before = Ledger.load(ledger_path).entries
    main(["update", str(write_run(tmp_path / "small", "pairs=4", ["supported", "invalid"])), "--ledger", str(ledger_path)])
    after = Ledger.load(ledger_path).entries
    assert {k: v for k, v in after.items() if k[1] == "pairs=12"} == before
    assert len(after) == 2 * len(before)


def test_update_follows_a_latest_link_to_the_real_folder(tmp_path):
    run = write_run(tmp_path / "20260101-000000", "pairs=12", ["refuted", "supported"])
    (tmp_path / "latest").symlink_to(run.name)
    ledger_path = tmp_path / "ledger.toml"
    assert main(["update", str(tmp_path / "latest"), "--ledger", str(ledger_path)]) == 0
    assert all(e.report == str(run / "claims.csv") for e in Ledger.load(ledger_path).entries.values())


@pytest.mark.parametrize("make", ["missing", "no_claims", "incomplete"])
def test_update_refuses_in_one_line(tmp_path, capsys, make):
    target = tmp_path / "run"
    if make == "no_claims":
        target.mkdir()
    if make == "incomplete":
        write_run(target, "pairs=12", ["refuted", "supported"], complete=False)
    assert main(["update", str(target), "--ledger", str(tmp_path / "l.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "l.toml").exists()


def test_malformed_ledger_is_refused(tmp_path):
    path = tmp_path / "ledger.toml"
    path.write_text('[[verdict]]\nmodel = "m"\nclaim = "c"\n')
    with pytest.raises(HarnessValueError, match="lacks settings, protocol"):
        Ledger.load(path)


def test_missing_ledger_is_empty(tmp_path):
    assert Ledger.load(tmp_path / "none.toml").entries == {}



def test_entries_whose_report_was_overwritten_by_another_measurement_are_dropped(tmp_path):
    ledger_path = tmp_path / "ledger.toml"
    main(["update", str(write_run(tmp_path / "ref", "pairs=12", ["refuted", "supported"])), "--ledger", str(ledger_path)])
    import shutil

    shutil.rmtree(tmp_path / "ref")
    main(["update", str(write_run(tmp_path / "ref", "pairs=24", ["refuted", "supported"])), "--ledger", str(ledger_path)])
    assert {k[1] for k in Ledger.load(ledger_path).entries} == {"pairs=24"}
