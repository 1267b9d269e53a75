"""A report folder belongs to one run: refused when it holds another, locked while a run writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tiny import SMALL

from harness.report.folder import LOCK_NAME, FolderTakenError, claim_folder, holds_run

pytest_plugins = ["pytester"]


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_held_by_a_live_process_refuses_a_second_run_in_one_line(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        with pytest.raises(FolderTakenError) as info:
            claim_folder(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"--report-dir {tmp_path}: another run")
    assert f"pid {sleeper.pid}" in message and "pass another --report-dir" in message
    assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(sleeper.pid)  # not taken over


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(f"{_dead_pid()} {socket.gethostname()}\n")
    lock = claim_folder(tmp_path)
    assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_not_judged_stale(tmp_path):
    (tmp_path / LOCK_NAME).write_text(f"{_dead_pid()} some-other-host\n")
    with pytest.raises(FolderTakenError, match="on some-other-host"):
        claim_folder(tmp_path)


def test_a_folder_with_a_run_is_refused_and_fresh_removes_only_the_runs_files(tmp_path):
    for name in ("results.jsonl", "summary.json", "summary.md", "efficiency.png", "claims.csv.tmp"):
        (tmp_path / name).write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FolderTakenError) as info:
        claim_folder(tmp_path)
    assert "holds another run's report (results.jsonl, summary.json)" in str(info.value)
    assert "--report-fresh" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / LOCK_NAME).exists() and holds_run(tmp_path)  # refused: nothing touched

    lock = claim_folder(tmp_path, fresh=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "notes.txt"]
    lock.release()


def test_a_taken_default_folder_gets_the_next_free_suffix(tmp_path):
    taken = tmp_path / "reports" / "20260101-000000"
    taken.mkdir(parents=True)
    (taken / "summary.json").write_text("{}")
    lock = claim_folder(taken, default=True)
    assert lock.directory == taken.with_name("20260101-000000-2")
    second = claim_folder(taken, default=True)  # -2 is locked by the first: -3
    assert second.directory == taken.with_name("20260101-000000-3")
    lock.release()
    second.release()


def test_release_removes_the_folders_it_made_only_while_empty(tmp_path):
    lock = claim_folder(tmp_path / "a" / "b")
    lock.release()
    assert not (tmp_path / "a").exists()
    lock = claim_folder(tmp_path / "a" / "b")
    (tmp_path / "a" / "b" / "summary.json").write_text("{}")
    lock.release()
    assert (tmp_path / "a" / "b" / "summary.json").exists() and not (tmp_path / "a" / "b" / LOCK_NAME).exists()


def test_two_processes_claiming_one_folder_at_once_one_wins(tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        from harness.report.folder import claim_folder, FolderTakenError
        while time.time() < {time.time() + 2.0}:  # start together
            pass
        try:
            claim_folder(sys.argv[1]); print("won"); time.sleep(2)
        except FolderTakenError:
            print("refused")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "r")], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outcomes == ["refused", "refused", "won"]


# --------------------------------------------------------------------------- whole runs

CLAIMS = """
import pathlib, time
from harness.claims import Claim, Efficiency, Source
from harness.records import Intervention

CLAIM = Claim(id="kv-only-transfers", statement="KV alone transfers.", source=Source("test", "quote"),
              measure=Efficiency(Intervention("kv-only", kv_layers="all")), threshold=-100.0, direction="above")

def test_claim(verify):
    verify(CLAIM, "corrected")
    if pathlib.Path("hold").exists():  # the concurrent case: wait here until told to go
        pathlib.Path("started").write_text("x")
        deadline = time.time() + 200
        while not pathlib.Path("go").exists() and time.time() < deadline:
            time.sleep(0.1)
"""


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *SMALL, "--seeds", "1", *args], cwd=folder,
                          capture_output=True, text=True, timeout=600)


def _refused_in_one_line(out: subprocess.CompletedProcess, words: str) -> None:
    lines = [x for x in (out.stdout + out.stderr).splitlines() if x.strip()]
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, lines
    assert len(lines) == 1 and lines[0].startswith("ERROR: --report-dir ") and words in lines[0], lines


@pytest.mark.slow
def test_a_second_run_into_a_folder_is_refused_and_report_fresh_replaces_the_first(pytester, tmp_path):
    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "test_claims.py").write_text(CLAIMS)
    report = tmp_path / "r"

    # Two at once: the second is refused while the first writes.
    (pytester.path / "hold").write_text("")
    log = (pytester.path / "first.log").open("w")
    first = subprocess.Popen([sys.executable, "-m", "pytest", *SMALL, "--seeds", "1", "--report-dir", str(report)],
                             cwd=pytester.path, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not (pytester.path / "started").exists():
        assert first.poll() is None and time.monotonic() < deadline, (pytester.path / "first.log").read_text()
        time.sleep(0.1)
    _refused_in_one_line(_pytest(pytester.path, "--report-dir", str(report)), f"another run (pid {first.pid}")
    (pytester.path / "go").write_text("")
    assert first.wait(timeout=300) == 0, (pytester.path / "first.log").read_text()
    (pytester.path / "hold").unlink()
    assert not (report / LOCK_NAME).exists()
    rows = [json.loads(x) for x in (report / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 and max(r["n_tokens"] for r in rows) <= 5  # 2 pairs x 3 arms x 1 seed

    # One after the other: refused, unless --report-fresh; then the folder is the new run's alone.
    _refused_in_one_line(_pytest(pytester.path, "--report-dir", str(report), "--gen-tokens", "8"),
                         "holds another run's report")
    out = _pytest(pytester.path, "--report-dir", str(report), "--gen-tokens", "8", "--report-fresh")
    assert out.returncode == 0, out.stdout[-3000:]
    rows = [json.loads(x) for x in (report / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and max(r["n_tokens"] for r in rows) == 8
    summary = json.loads((report / "summary.json").read_text())
    assert summary["complete"] is True and summary["provenance"]["gen_tokens"] == 8
