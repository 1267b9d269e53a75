"""The controller's report writer under a full disk: the run stops in one line, nothing written is lost."""

from __future__ import annotations

import json

import pytest
from tiny import CLAIM_FILE, SMALL

from harness.report import load_run

pytest_plugins = ["pytester"]

#: A rootdir conftest that fills the disk: once summary.json has been written twice (the folder's
#: start and the first claim), every write into the report folder writes half its text and raises
#: ENOSPC, as a full disk does.
FULL_DISK = '''
import errno, os, pathlib

pytest_plugins = ["harness.plugin"]
REPORT = os.environ["FULL_DISK_REPORT"]
_open = pathlib.Path.open
summaries = []


class Full:
    def __init__(self, handle):
        self._handle = handle

    def write(self, text):
        if len(summaries) >= 2:
            self._handle.write(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(self._handle.name))
        return self._handle.write(text)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()
        if self._handle.name.endswith("summary.json.tmp"):
            summaries.append(1)


def full_open(self, mode="r", *args, **kwargs):
    handle = _open(self, mode, *args, **kwargs)
    if not str(self).startswith(REPORT) or not any(c in mode for c in "wa"):
        return handle
    return Full(handle)


pathlib.Path.open = full_open
'''


def test_a_full_disk_stops_the_run_in_one_line_and_keeps_what_was_written(pytester, tmp_path, monkeypatch):
    report = tmp_path / "r"
    monkeypatch.setenv("FULL_DISK_REPORT", str(report))
    monkeypatch.delenv("PYTEST_ADDOPTS")  # the conftest below opts in (and patches) itself
    (pytester.path / "conftest.py").write_text(FULL_DISK)
    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "test_claims.py").write_text(CLAIM_FILE)
    result = pytester.runpytest_subprocess(*SMALL, "--seeds", "1", "--report-dir", str(report))
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert "INTERNALERROR" not in out and "Traceback" not in out
    said = [x for x in out.splitlines() if "No space left on device" in x]
    assert len(said) == 2, said  # the report line and pytest's stop line
    assert said[0].startswith(f"report: {report} (INCOMPLETE: cannot write there: No space left on device")
    assert "the files written before are kept whole" in said[0]
    assert said[1].startswith("! Interrupted: cannot write the report: No space left on device")
    assert result.stdout.str().rstrip().splitlines()[-1].endswith("run INCOMPLETE")

    # What was written before the disk filled is whole: the first claim's rows, valid files, no .tmp.
    assert not list(report.glob("*.tmp"))
    json.loads((report / "summary.json").read_text())
    run = load_run(report)
    assert [r.protocol for r in run.claims] == ["original"] and not run.complete
    assert len(run.results) == 2 * 3 and {r.protocol for r in run.results} == {"original"}  # 2 pairs x 3 arms



def test_the_terminal_table_of_the_reference_run_fits_120_columns_and_keeps_every_cell():
    from pathlib import Path

    from harness.collector import TABLE_WIDTH, _table

    rows = load_run(Path(__file__).parents[1] / "reports" / "reference" / "toy").claims
    assert max(len(r.claim) for r in rows) > 50  # the ids that made the old table 237 columns wide
    lines = _table(rows).splitlines()
    assert max(len(line) for line in lines) <= TABLE_WIDTH == 120
    numbers, details = lines[2::2], lines[3::2]
    assert len(numbers) == len(details) == len(rows)
    for line, detail, row in zip(numbers, details, rows):
        assert line.split()[:2] == [row.claim, row.protocol] and row.verdict in line.split()
        sizes = f"{row.n_pairs} pairs x {row.n_seeds} seeds" if row.n_seeds else f"{row.n_pairs} pairs"
        assert detail.startswith(f"    {sizes} | mapped: ")
    # A longer id than any shipped one gives way, marked by an ellipsis; the report keeps it whole.
    import dataclasses

    long = dataclasses.replace(rows[0], claim="a-claim-id-" + "x" * 120)
    lines = _table([long, *rows[1:3]]).splitlines()
    assert max(len(line) for line in lines) <= TABLE_WIDTH and lines[2].startswith("a-claim-id-xxx")
    assert "…" in lines[2].split()[0]
