"""Runs that are parallel, sharded or interrupted leave the same, readable reports."""

from __future__ import annotations

import csv
import json

import pytest
from tiny import SMALL

pytest_plugins = ["pytester"]

CLAIMS = """
import os, signal
import pytest
from harness.claims import Claim, Efficiency, Source
from harness.records import Intervention

KV_ONLY = Intervention("kv-only", kv_layers="all")
L27_V = Intervention("kv+v_proj@27", kv_layers="all", patches=("v_proj@27",))
SRC = Source("test", "quote")
CLAIMS = [
    Claim(id="kv-only", statement="s", source=SRC, measure=Efficiency(KV_ONLY), threshold=0.2, direction="below"),
    Claim(id="l27", statement="s", source=SRC, measure=Efficiency(L27_V), threshold=0.8, direction="above"),
]

@pytest.mark.parametrize("protocol", ["original", "corrected"])
@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_claim(verify, claim, protocol):
    verify(claim, protocol)
"""


def run(pytester, report, *args):
    return pytester.runpytest_subprocess(*SMALL, "--report-dir", str(report), *args)


def claims_rows(report):
    with (report / "claims.csv").open() as handle:
        return list(csv.DictReader(handle))


def result_rows(report):
    rows = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda r: (r["protocol"], r["pair"], r["arm"], r["seed"]))


def summary(report):
    return json.loads((report / "summary.json").read_text())


@pytest.fixture
def claims_dir(pytester):
    pytester.makepyfile(test_claims=CLAIMS)
    (pytester.path / "claims").mkdir()
    (pytester.path / "test_claims.py").rename(pytester.path / "claims" / "test_claims.py")
    return pytester


def test_two_workers_give_the_same_rows_and_verdicts_as_one_process(claims_dir, tmp_path):
    run(claims_dir, tmp_path / "serial", "-n", "0")
    run(claims_dir, tmp_path / "xdist", "-n", "2")
    assert claims_rows(tmp_path / "serial") == claims_rows(tmp_path / "xdist")
    assert result_rows(tmp_path / "serial") == result_rows(tmp_path / "xdist")
    assert len(claims_rows(tmp_path / "serial")) == 4
    assert summary(tmp_path / "xdist")["complete"] is True
    assert summary(tmp_path / "xdist")["provenance"]["weights_sha256"]


def test_a_keyboard_interrupt_leaves_an_incomplete_report_with_the_finished_rows(claims_dir, tmp_path):
    path = claims_dir.path / "claims" / "test_claims.py"
    path.write_text(path.read_text() + "\n\ndef test_zz_interrupt(verify):\n    raise KeyboardInterrupt\n")
    report = tmp_path / "r"
    run(claims_dir, report, "-n", "0")
    data = summary(report)
    assert data["complete"] is False
    assert len(data["claims"]) == 4 and len(claims_rows(report)) == 4
    assert len(result_rows(report)) == 2 * 2 * 2 * 4  # protocols x pairs x seeds x arms


def test_a_killed_worker_loses_only_its_unfinished_test(claims_dir, tmp_path):
    path = claims_dir.path / "claims" / "test_claims.py"
    path.write_text(path.read_text() + "\n\ndef test_zz_killed(verify):\n"
                    "    os.kill(os.getpid(), signal.SIGKILL)\n")
    report = tmp_path / "r"
    result = run(claims_dir, report, "-n", "2")
    result.stdout.fnmatch_lines(["*crashed*"])
    data = summary(report)
    assert data["complete"] is False
    assert any("test_zz_killed" in nodeid for nodeid in data["provenance"]["missing"])
    assert len(claims_rows(report)) == 4


def test_merged_shards_equal_a_single_run(claims_dir, tmp_path):
    from harness.report import merge

    run(claims_dir, tmp_path / "single")
    for i in (1, 2):
        run(claims_dir, tmp_path / f"shard-{i}", "--shard", f"{i}/2")
    cells = [{(r["claim"], r["protocol"]) for r in claims_rows(tmp_path / f"shard-{i}")} for i in (1, 2)]
    assert cells[0] and cells[1] and not cells[0] & cells[1]
    merged = merge([tmp_path / "shard-1", tmp_path / "shard-2"], tmp_path / "merged")
    assert claims_rows(merged) == claims_rows(tmp_path / "single")
    assert result_rows(merged) == result_rows(tmp_path / "single")
    assert summary(merged)["complete"] is True
    assert (merged / "summary.md").read_text().count("| kv-only") >= 2


def test_bad_shard_is_a_usage_error(pytester):
    result = pytester.runpytest("--shard", "3/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--shard '3/2'*1 <= I <= N*"])
