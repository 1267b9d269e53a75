"""The report schema and writer: typed rows both ways, the latest link, lost rows refused."""

from __future__ import annotations

import dataclasses
import math

import pytest
from test_render import all_cells, claim_row, sample_rows

from harness.errors import HarnessValueError
from harness.report import CLAIM_COLUMNS, ClaimRow, RunWriter, SampleRow, load_run


def test_claim_rows_round_trip_through_json_and_csv(tmp_path):
    writer = RunWriter(tmp_path / "run", {"model": "toy"})
    rows = []
    for row, samples in all_cells():
        row = dataclasses.replace(row, flags=("few_pairs",), degenerate=True, threshold_high=math.nan)
        rows.append(row)
        writer.add(row, samples)
    writer.close(complete=True, render=False)
    run = load_run(tmp_path / "run")
    by_key = {r.key: r for r in rows}
    assert len(run.claims) == len(rows)
    for read in run.claims:  # from summary.json
        assert read.to_json() == by_key[read.key].to_json()
    (tmp_path / "run" / "summary.json").unlink()
    for read in load_run(tmp_path / "run").claims:  # from claims.csv alone
        assert read.to_json() == by_key[read.key].to_json()
    header = (tmp_path / "run" / "claims.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == CLAIM_COLUMNS


def test_sample_rows_round_trip_with_undefined_metrics():
    row = sample_rows("original", ["kv"])[0]
    assert SampleRow.from_dict(row.to_json()) == row
    assert row.to_json()["echo_rate"] is None


def test_a_row_of_another_schema_is_refused():
    data = claim_row("x", "original").to_json()
    with pytest.raises(HarnessValueError, match="unknown fields efficiency"):
        ClaimRow.from_dict({**data, "efficiency": 0.1})
    with pytest.raises(HarnessValueError, match="without 'verdict'"):
        ClaimRow.from_dict({k: v for k, v in data.items() if k != "verdict"})


def test_two_arms_with_one_name_are_refused_not_merged(tmp_path):
    writer = RunWriter(tmp_path / "run", {})
    row, samples = all_cells(sweep=False)[0]
    writer.add(row, samples)
    changed = [dataclasses.replace(s, text="another intervention's text") for s in samples]
    with pytest.raises(HarnessValueError, match="arm names must be unique"):
        writer.add(dataclasses.replace(row, claim="other"), changed)


def test_latest_follows_runs_in_its_folder_only(tmp_path):
    reports = tmp_path / "reports"
    latest = reports / "latest"
    row, samples = all_cells(sweep=False)[0]
    inside = RunWriter(reports / "run-1", {}, latest=latest)
    inside.add(row, samples)
    assert latest.resolve() == (reports / "run-1").resolve()
    outside = RunWriter(tmp_path / "elsewhere", {}, latest=latest)
    outside.add(row, samples)
    assert latest.resolve() == (reports / "run-1").resolve()
