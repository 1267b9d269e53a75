"""The controller's half of the plugin: collect claim rows, write the run folder, print verdicts.

Registered by :func:`harness.plugin.pytest_configure` on the controlling process
only; under xdist the workers' rows arrive here with their test reports (as the
``harness`` user property, which is replaced by a few small properties that CI
dashboards read from JUnit XML: verdict, efficiency, interval, expected, model).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

__all__ = ["Collector", "JUNIT_PROPERTIES"]

#: Per claim test, in JUnit XML: the row's field under each property name.
JUNIT_PROPERTIES = {"verdict": "verdict", "efficiency": "estimate", "ci_low": "ci_low", "ci_high": "ci_high",
                    "expected": "expected", "model": "model"}


class Collector:
    """Writes one run's report on the controlling process."""

    def __init__(self, config: pytest.Config, options: Any) -> None:
        self.config = config
        self.options = options
        self.directory = Path(options.report_dir)
        self.missing: list[str] = []
        self.writer: Any = None
        self.ledger_covers: bool | None = None

    def _provenance(self) -> dict[str, Any]:
        return {"run_id": self.directory.name, "harness_commit": _git_commit(self.config.rootpath),
                "command": " ".join(["pytest", *self.config.invocation_params.args]),
                "shard": self.options.shard}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Take a claim's rows off its report (before junitxml reads the properties).

        A claim test that failed without a row (an error, a crashed worker) is
        remembered, and the report is marked incomplete.
        """
        payloads = [json.loads(v) for k, v in report.user_properties if k == "harness"]
        if payloads:
            report.user_properties = [(k, v) for k, v in report.user_properties if k != "harness"]
        if report.when != "call":  # setup and teardown reports repeat the call's properties
            payloads = []
        if not payloads:
            if report.failed and "claims/" in report.nodeid.replace("\\", "/"):
                self.missing.append(report.nodeid)
            return
        from harness.report import ClaimRow, RunWriter, SampleRow

        if self.writer is None:
            self.writer = RunWriter(self.directory, self._provenance(),
                                    latest=self.config.rootpath / "reports" / "latest")
        for payload in payloads:
            row = ClaimRow.from_dict(payload["claim"])
            self.writer.provenance.update(payload["provenance"])
            self.ledger_covers = payload.get("ledger_covers")
            self.writer.add(row, [SampleRow.from_dict(s) for s in payload["samples"]])
            report.user_properties += [(name, str(getattr(row, field))) for name, field in JUNIT_PROPERTIES.items()]

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.writer is None:
            return
        interrupted = exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
        if interrupted or session.shouldstop:
            self.writer.provenance["stopped"] = "interrupted" if interrupted else str(session.shouldstop)
        if self.missing:
            self.writer.provenance["missing"] = sorted(self.missing)
        self.writer.close(complete=not (interrupted or session.shouldstop or self.missing))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.writer is None or not self.writer.claims:
            return
        from tabulate import tabulate

        rows = sorted(self.writer.claims.values(), key=lambda r: r.key)
        table = [[r.claim, r.protocol, r.estimate, r.ci_low, r.ci_high, r.n_pairs, r.n_seeds or "-",
                  _mapped(r), r.verdict, r.expected, r.outcome] for r in rows]
        headers = ("claim", "protocol", "estimate", "low", "high", "pairs", "seeds", "mapped", "verdict",
                   "expected", "outcome")
        terminalreporter.section("claims")
        terminalreporter.write_line(tabulate(table, headers=headers, floatfmt=".3f", missingval="nan"))
        level = rows[0].level
        terminalreporter.write_line(
            f"intervals: {rows[0].interval_method} at {level:.4g} per cell (family of {rows[0].family_size} "
            "cells, 5% family-wise)")
        if self.ledger_covers is False:
            terminalreporter.write_line(
                f"ledger: no entries for these settings ({rows[0].settings}); judged on the verdicts alone")
        terminalreporter.write_line(f"report: {self.writer.directory}")


def _mapped(row: Any) -> str:
    parts = [f"kv {row.kv_layers}"] if row.kv_layers else []
    if row.sites:
        parts.append(row.sites)
    return "; ".join(parts) or "-"


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None

