"""The README's "Adding a finding" example, copied from the README and run: a newcomer's
finding with its own metric and ledger, beside a claim folder that declares no finding."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from tiny import CLAIM_FILE, SMALL

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_files() -> dict[str, str]:
    """The python blocks of the README's "Adding a finding" section, by the path in their first line."""
    section = README.read_text(encoding="utf-8").split("## Adding a finding")[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    files = {}
    for block in blocks:
        first = block.splitlines()[0]
        files[first.removeprefix("# ").split(":")[0]] = block
    return files


def _plugin_args() -> tuple[str, ...]:
    # Where the plugin is no longer loaded by its entry point, a folder opts in with -p.
    loaded = any(ep.value == "harness.plugin" for ep in entry_points(group="pytest11"))
    return () if loaded else ("-p", "harness.plugin")


def _rows(report: Path) -> list[dict[str, str]]:
    with (report / "claims.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_the_readme_finding_runs_with_its_own_metric_and_ledger(pytester, tmp_path):
    files = readme_files()
    assert set(files) == {"my_finding/conftest.py", "my_finding/test_my_claims.py"}
    for name, text in files.items():
        (pytester.path / name).parent.mkdir(exist_ok=True)
        (pytester.path / name).write_text(text)
    (pytester.path / "plain").mkdir()
    (pytester.path / "plain" / "test_plain.py").write_text(CLAIM_FILE)
    report = tmp_path / "r1"
    result = pytester.runpytest_subprocess(*_plugin_args(), *SMALL, "--report-dir", str(report),
                                           "my_finding", "plain")
    rows = {(r["finding"], r["claim"], r["protocol"]): r for r in _rows(report)}
    assert set(rows) == {("my-finding", "l20-mlp-full-kv", "corrected")} | {
        ("generic", "kv-only-transfers", p) for p in ("original", "corrected")}, result.stdout.str()[-2000:]
    # The closing lines state each finding's family and level.
    result.stdout.fnmatch_lines(["generic: intervals: * (family of 2 cells, 5% family-wise)",
                                 "my-finding: intervals: * (family of 1 cells, 5% family-wise)"])
    for (finding, _, _), row in rows.items():
        # Each folder's claims are judged on its finding's metric; the family is per finding.
        assert row["metric"] == ("champion_word_share" if finding == "my-finding" else "r_v")  # plain: a geometry claim
        assert row["family_size"] == ("1" if finding == "my-finding" else "2")
    # The finding's verdicts go to its own ledger; the next run expects them.
    ledger = pytester.path / "my_finding" / "ledger.toml"
    done = subprocess.run([sys.executable, "-m", "harness.ledger", "update", str(report), "--ledger", str(ledger),
                           "--finding", "my-finding"], capture_output=True, text=True, cwd=pytester.path)
    assert done.returncode == 0, done.stderr
    assert ledger.read_text().count("[[verdict]]") == 1 and "kv-only-transfers" not in ledger.read_text()
    again = pytester.runpytest_subprocess(*_plugin_args(), *SMALL, "--report-dir", str(tmp_path / "r2"), "my_finding")
    assert again.stdout.lines[-1].endswith("ledger: all as expected"), again.stdout.str()[-2000:]
    assert again.ret == 0 or "xfail" in again.stdout.str()


def test_a_ledger_update_of_a_run_with_two_findings_needs_one_named(tmp_path):
    from harness.errors import HarnessValueError
    from harness.ledger import update
    from harness.report.schema import ClaimRow

    folder = tmp_path / "run"
    folder.mkdir()
    rows = [ClaimRow(claim=c, protocol="corrected", verdict="supported", reason="r", model="m", settings="s",
                     finding=f) for c, f in (("a", "one"), ("b", "two"))]
    columns = list(rows[0].to_csv())
    with (folder / "claims.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(r.to_csv() for r in rows)
    (folder / "summary.json").write_text('{"complete": true}')
    try:
        update(folder, tmp_path / "ledger.toml")
    except HarnessValueError as exc:
        assert "rows of several findings (one, two)" in str(exc)
    else:
        pytest.fail("a run of two findings was recorded into one ledger")
    assert update(folder, tmp_path / "ledger.toml", "two") == (1, 0)
    assert '"b"' in (tmp_path / "ledger.toml").read_text() and '"a"' not in (tmp_path / "ledger.toml").read_text()
