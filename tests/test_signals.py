"""SIGTERM (a CI or Slurm time limit) and SIGINT leave a complete, readable, incomplete-marked report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_render import PNG_MAGIC
from tiny import SMALL

pytest_plugins = ["pytester"]

FINISHED_CLAIM = """
import pathlib, time
import pytest
from harness.claims import Claim, Efficiency, Source
from harness.records import Intervention

CLAIM = Claim(id="kv-only-transfers", statement="KV alone transfers.", source=Source("test", "quote"),
              measure=Efficiency(Intervention("kv-only", kv_layers="all")), threshold=-100.0, direction="above")

def test_a_claim(verify):
    verify(CLAIM, "corrected")
"""
WAITING_CLAIM = """
def test_z_waits(verify):
    pathlib.Path("started").write_text("x")
    time.sleep(300)
"""
#: A stopped run must be written within this many seconds (rendering takes about 1.5 s here).
WITHIN_S = 20.0


def _start(pytester: pytest.Pytester, source: str, report: Path, *args: str) -> subprocess.Popen:
    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "test_claims.py").write_text(source)
    log = (pytester.path / "out.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "pytest", *SMALL, "--report-dir", str(report), *args],
                            cwd=pytester.path, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))


def _stop_when_started(pytester: pytest.Pytester, proc: subprocess.Popen, sig: int,
                       also: Path | None = None) -> float:
    """Wait until the waiting claim runs (and ``also`` exists), send ``sig``, return the seconds
    until the process exited."""
    marker = pytester.path / "started"
    deadline = time.monotonic() + 240
    while not (marker.exists() and (also is None or also.exists())):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never reached the waiting claim:\n{(pytester.path / 'out.log').read_text()}")
        time.sleep(0.1)
    sent = time.monotonic()
    pytester.sent_at = time.time()  # type: ignore[attr-defined]  # wall clock, to compare with mtimes
    proc.send_signal(sig)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run did not stop on the signal")
    return time.monotonic() - sent


def test_sigterm_mid_run_leaves_summary_plots_and_an_incomplete_mark(pytester, tmp_path):
    report = tmp_path / "report"
    proc = _start(pytester, FINISHED_CLAIM + WAITING_CLAIM, report)
    seconds = _stop_when_started(pytester, proc, signal.SIGTERM)
    out = (pytester.path / "out.log").read_text()
    print(f"SIGTERM to exit: {seconds:.2f} s")
    assert seconds < WITHIN_S, out
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    summary = json.loads((report / "summary.json").read_text())
    assert summary["complete"] is False and summary["provenance"]["stopped"] == "SIGTERM"
    assert [c["claim"] for c in summary["claims"]] == ["kv-only-transfers"]
    md = (report / "summary.md").read_text()
    assert "INCOMPLETE RUN" in md and "stopped: SIGTERM" in md and "| kv-only-transfers" in md
    assert (report / "efficiency.png").read_bytes()[:8] == PNG_MAGIC
    assert "INCOMPLETE" in (report / "report.html").read_text()
    assert "SIGTERM received" in out  # pytest's interrupt notice says why
    assert out.rstrip().splitlines()[-1].startswith("claims (1 of 2 cells): 1 supported")
    assert out.rstrip().endswith("run INCOMPLETE")


def test_sigterm_under_xdist_writes_the_report_before_waiting_for_the_workers(pytester, tmp_path):
    report = tmp_path / "report"
    proc = _start(pytester, FINISHED_CLAIM + WAITING_CLAIM, report, "-n", "2")
    _stop_when_started(pytester, proc, signal.SIGTERM, also=report / "claims.csv")
    written = (report / "summary.md").stat().st_mtime - pytester.sent_at  # type: ignore[attr-defined]
    print(f"SIGTERM to summary.md under xdist: {written:.2f} s")
    assert written < WITHIN_S
    summary = json.loads((report / "summary.json").read_text())
    assert summary["complete"] is False and summary["provenance"]["stopped"] == "SIGTERM"
    assert len(summary["claims"]) == 1 and (report / "efficiency.png").exists()


def test_sigint_before_the_first_claim_finishes_still_leaves_a_folder(pytester, tmp_path):
    report = tmp_path / "report"
    proc = _start(pytester, FINISHED_CLAIM.split("def test_a_claim")[0] + WAITING_CLAIM, report)
    _stop_when_started(pytester, proc, signal.SIGINT)
    out = (pytester.path / "out.log").read_text()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    summary = json.loads((report / "summary.json").read_text())
    assert summary["complete"] is False and summary["claims"] == []
    assert summary["provenance"]["stopped"] == "SIGINT" and summary["provenance"]["model"] == "toy"
    md = (report / "summary.md").read_text()
    assert "INCOMPLETE RUN" in md and "No claim finished." in md
    assert (report / "claims.csv").read_text().startswith("claim,")
    assert f"report: {report} (INCOMPLETE)" in out


def test_a_run_with_no_claim_cells_writes_no_folder_when_interrupted(pytester, tmp_path):
    pytester.makepyfile(test_plain="import pathlib, time\n\ndef test_waits():\n"
                                   "    pathlib.Path('started').write_text('x')\n    time.sleep(300)\n")
    log = (pytester.path / "out.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--report-dir",
                             str(tmp_path / "report")], cwd=pytester.path, stdout=log, stderr=subprocess.STDOUT)
    _stop_when_started(pytester, proc, signal.SIGTERM)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED
    assert not (tmp_path / "report").exists()  # `pytest tests/` stopped early is not a claims run
