"""The controller's half of the plugin: collect claim rows, write the run folder, print verdicts.

Registered by :func:`harness.plugin.pytest_configure` on the controlling process
only; under xdist the workers' rows arrive here with their test reports (as the
``harness`` user property, which is replaced by a few small properties that CI
dashboards read from JUnit XML: verdict, efficiency, interval, expected, model).

What a reader sees at the end of a run: the claims table with a one-line reason per
cell, then pytest's count, then one closing line that counts verdicts and says what
the ledger expected. SIGTERM (a CI or Slurm time limit) and SIGINT stop the run the
way Ctrl-C does, so the folder is closed, rendered and marked incomplete; a run
stopped before its first claim finished still leaves a folder, with no claims. Long
claims show progress (:mod:`harness.progress`) on the terminal, or as periodic lines
in a log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from harness import progress

__all__ = ["Collector", "JUNIT_PROPERTIES", "Terminated", "TerminalLine"]

#: Per claim test, in JUnit XML: the row's field under each property name.
JUNIT_PROPERTIES = {"verdict": "verdict", "efficiency": "estimate", "ci_low": "ci_low", "ci_high": "ci_high",
                    "expected": "expected", "model": "model"}
#: Seconds a claim runs before it shows progress (``harness_progress_after`` overrides); under -q.
PROGRESS_AFTER, PROGRESS_AFTER_QUIET = 10.0, 60.0
#: Seconds between progress lines in a log (not a terminal).
LOG_INTERVAL = 30.0


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into pytest's orderly stop (what Ctrl-C gets), so the report is written."""


class TerminalLine:
    """Our line between pytest's own output: rewritten in place on a terminal, appended in a log.

    pytest captures the output of a running test, so the line is written with capture
    suspended (as pytest's own live logging does). While our line is open, pytest's
    next result letter would land at its end: :meth:`close` restores the test file's
    prefix first (or ends the line, under xdist and -v).
    """

    def __init__(self, reporter: Any, capture: Any = None) -> None:
        self.tr = reporter
        self.capture = capture
        self.live = bool(reporter.isatty())
        self.open = False
        self.saved: Any = None  # pytest's current line prefix when we took the line over

    @contextmanager
    def _uncaptured(self) -> Iterator[None]:
        if self.capture is None:
            yield
        else:
            with self.capture.global_and_fixture_disabled():
                yield

    def show(self, text: str) -> None:
        tr = self.tr
        width = tr._tw.fullwidth
        if self.live:
            text = text[: max(width - 1, 20)]
        with self._uncaptured():
            if self.open:
                tr.write("\r" + text + " " * max(width - len(text) - 1, 0) if self.live else "\n" + text)
            else:
                self.saved = tr.currentfspath
                tr.ensure_newline()
                tr.write(("\n" if tr._tw.width_of_current_line else "") + text)
                self.open = True
            tr.currentfspath = None
            tr.flush()

    def close(self) -> None:
        """Give the line back to pytest: the test file's prefix again, or a fresh line."""
        if not self.open:
            return
        tr = self.tr
        with self._uncaptured():
            if isinstance(self.saved, Path):  # pytest was writing letters after "path/to/test.py "
                tr.write("\n" + os.path.relpath(self.saved, tr.startpath) + " ")
                tr.currentfspath = self.saved
            elif not isinstance(self.saved, str):  # xdist: the next letter or line starts afresh
                tr.write("\n")
                tr.currentfspath = None
            # -v (a str prefix): pytest itself starts a new line and writes the test's name again.
            tr.flush()
        self.open = False


class Collector:
    """Writes one run's report on the controlling process."""

    def __init__(self, config: pytest.Config, options: Any) -> None:
        from harness.report.folder import claim_folder

        self.config = config
        self.options = options
        # The folder is this run's from now to the end (a second run is refused, not mixed in).
        self.lock = claim_folder(Path(options.report_dir), fresh=options.report_fresh,
                                 default=not options.report_dir_named)
        self.directory = self.lock.directory
        self.missing: list[str] = []
        self.writer: Any = None
        self.ledger_covers: bool | None = None
        self.selected = 0  # claim cells this run set out to run (when known here)
        self.stopped: str | None = None
        self.write_error: str | None = None  # the report could not be written (e.g. a full disk)
        self.session: pytest.Session | None = None
        self._junit: dict[str, list[tuple[str, str]]] = {}
        self._handlers: dict[int, Any] = {}
        self._progress: progress.Progress | None = None
        self.line: TerminalLine | None = None
        self.delay = _progress_after(config)

    def _provenance(self) -> dict[str, Any]:
        o = self.options
        # What was asked for; a finished claim replaces these with what the subject measured.
        asked = {"model": o.model or "toy", "device": o.device, "dtype": o.dtype, "profile": o.profile,
                 "seeds_per_pair": o.seeds, "gen_tokens": o.gen_tokens}
        return {"run_id": self.directory.name, "harness_commit": _git_commit(self.config.rootpath),
                "command": " ".join(["pytest", *self.config.invocation_params.args]),
                "shard": o.shard, **asked}

    def _writer(self) -> Any:
        if self.writer is None:
            from harness.report import RunWriter

            self.writer = RunWriter(self.directory, self._provenance(),
                                    latest=self.config.rootpath / "reports" / "latest")
        return self.writer

    # -- start: signals and progress ------------------------------------------------
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session
        self._install_signals()
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            self.line = TerminalLine(tr, self.config.pluginmanager.get_plugin("capturemanager"))
            self._progress = progress.install(progress.Reporter(self.line, delay=self.delay, interval=LOG_INTERVAL))

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (an embedding caller's business)

        def stop(signum: int, frame: Any) -> None:
            self.stopped = signal.Signals(signum).name
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise Terminated(f"{self.stopped} received: stopping and writing the report")

        for sig, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            if signal.getsignal(sig) is default:  # a handler someone else set is theirs
                self._handlers[sig] = signal.signal(sig, stop)

    def _restore_signals(self) -> None:
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        self._handlers.clear()

    @contextmanager
    def _signals_deferred(self) -> Iterator[None]:
        """While the report is written, a second SIGINT or SIGTERM is ignored: it would leave half a
        report, and the run is stopping anyway."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)

    # -- which claim cells this run meant to run -----------------------------------
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.selected = sum(1 for item in session.items if "verify" in getattr(item, "fixturenames", ()))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.selected = max(self.selected, sum(1 for i in ids if _is_claim(i)))

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        if _is_claim(nodeid):
            self.selected = max(self.selected, 1)

    # -- rows ------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Take a claim's rows off its report (before junitxml reads the properties).

        junitxml reads the properties of the teardown report, so the small ones go on it
        too. A claim test that failed without a row (an error, a crashed worker) is
        remembered, and the report is marked incomplete. Runs before the terminal
        reporter's hook, so a progress line is closed before pytest writes the result.
        """
        try:
            self._take_rows(report)
        finally:
            if self.line is not None and report.when == "call":
                self.line.close()

    def _take_rows(self, report: pytest.TestReport) -> None:
        payloads = [json.loads(v) for k, v in report.user_properties if k == "harness"]
        if payloads:
            report.user_properties = [(k, v) for k, v in report.user_properties if k != "harness"]
        if report.when == "teardown" and report.nodeid in self._junit:
            report.user_properties += self._junit.pop(report.nodeid)
        if report.when != "call":  # setup and teardown reports repeat the call's properties
            payloads = []
        if not payloads:  # includes a crashed worker's report, whose phase is not "call"
            if report.failed and _is_claim(report.nodeid):
                self.missing.append(report.nodeid)
            return
        from harness.report import ClaimRow, SampleRow

        writer = self._writer()
        for payload in payloads:
            row = ClaimRow.from_dict(payload["claim"])
            writer.provenance.update(payload["provenance"])
            self.ledger_covers = payload.get("ledger_covers")
            try:
                writer.add(row, [SampleRow.from_dict(s) for s in payload["samples"]])
            except OSError as exc:
                self._cannot_write(exc)
                return
            props = [(name, str(getattr(row, field))) for name, field in JUNIT_PROPERTIES.items()]
            report.user_properties += props
            self._junit[report.nodeid] = props
            self._show_finished(row, payload.get("work"), report)

    def _cannot_write(self, exc: OSError) -> None:
        """The report folder refused a write: stop the run (its further results could not be
        kept); the files written before stay whole (every rewrite is atomic)."""
        self.write_error = f"{exc.strerror or exc} ({exc.filename or self.directory})"
        if self.session is not None:
            self.session.shouldstop = f"cannot write the report: {self.write_error}"

    def _show_finished(self, row: Any, work: dict[str, Any] | None, report: Any) -> None:
        """A claim that ran long gets a line when it finishes (under xdist, the only progress shown)."""
        if not work or self.line is None or float(work.get("seconds", 0)) < self.delay:
            return
        cost = progress.Work(str(work.get("label", "")), float(work["seconds"]), int(work.get("rows", 0)),
                             int(work.get("tokens", 0)), int(work.get("arms", 0)))
        node = getattr(getattr(report, "node", None), "gateway", None)
        where = f"[{node.id}] " if node is not None else ""
        self.line.show(f"{where}{row.claim} [{row.protocol}]: {row.verdict} after {cost.describe()}")

    # -- the end -----------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)  # before xdist waits (up to 10 s) for its workers to stop
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        interrupted = exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
        if self.writer is None and not (interrupted and self.selected):
            return  # no claim ran, and none was cut short: not a claims run
        with self._signals_deferred():
            writer = self._writer()
            if interrupted or session.shouldstop:
                writer.provenance["stopped"] = self.stopped or ("interrupted" if interrupted
                                                                else str(session.shouldstop))
            if self.missing:
                writer.provenance["missing"] = sorted(self.missing)
            try:
                writer.close(complete=not (interrupted or session.shouldstop or self.missing or self.write_error))
            except OSError as exc:
                self._cannot_write(exc)
                return
            self._step_summary()

    def _rows(self) -> list[Any]:
        return sorted(self.writer.claims.values(), key=lambda r: r.key) if self.writer is not None else []

    def _step_summary(self) -> None:
        """Append the claims table to the CI job's summary page (GitHub Actions sets the variable)."""
        path = os.environ.get("GITHUB_STEP_SUMMARY")
        if not path:
            return
        from harness.report import load_run
        from harness.report.render import claims_table_markdown, status_lines

        run = load_run(self.directory)
        model = run.provenance.get("model")
        text = [f"## Claims report{f': {model}' if model else ''}", "", *status_lines(run)]
        text += [claims_table_markdown(run.claims) if run.claims else "No claim finished.", "",
                 f"Report folder: `{self.directory}`", "", ""]
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("\n".join(text))
        except OSError as exc:  # the report itself is written; a CI page is a convenience
            tr = self.config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None:
                tr.write_line(f"GITHUB_STEP_SUMMARY: could not append the claims table: {exc}")

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> Any:
        # Outermost wrapper: the table comes after pytest's own sections and short summary.
        result = yield
        rows = self._rows()
        if rows:
            terminalreporter.section("claims")
            terminalreporter.write_line(_table(rows))
            # One family, level and ledger key per finding: a run of several shows each.
            firsts = {r.finding: r for r in reversed(rows)}
            for name, first in sorted(firsts.items()):
                label = f"{name}: " if len(firsts) > 1 else ""
                terminalreporter.write_line(
                    f"{label}intervals: {first.interval_method} at {100 * first.level:.4g}% per cell (family of "
                    f"{first.family_size} cells, 5% family-wise)")
            if self.ledger_covers is False:
                settings = "; ".join(f"{n + ': ' if len(firsts) > 1 else ''}{f.settings}"
                                     for n, f in sorted(firsts.items()))
                judged = ("judged on the verdicts alone (--ledger-strict)" if self.options.ledger_strict
                          else "verdicts reported, not judged")
                terminalreporter.write_line(f"ledger: no entries for these settings ({settings}); {judged}")
        if self.writer is not None:
            state = "" if self.writer.completed else " (INCOMPLETE)"
            if self.write_error:
                state = (f" (INCOMPLETE: cannot write there: {self.write_error}; the files written before "
                         "are kept whole)")
            terminalreporter.write_line(f"report: {self.writer.directory}{state}")
        return result

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """The run's last line, after pytest's count: the verdicts, and what the ledger expected."""
        self.lock.release()
        self._restore_signals()
        if self._progress is not None:
            progress.install(self._progress)
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is None or self.writer is None:
            return
        from harness.report.brief import closing_line

        tr.write_line(closing_line(self._rows(), self.ledger_covers, len(self.missing),
                                   bool(self.writer.completed) and not self.write_error), bold=True)


#: The terminal table's width: a claim's numbers on one line, its sample sizes, mapping and reason
#: on an indented second line, so that the longest claim id still fits a 120-column terminal.
TABLE_WIDTH = 120


def _table(rows: list[Any]) -> str:
    from tabulate import tabulate

    from harness.report.brief import cut, interval_text, short_reason

    def render(claim_width: int) -> list[str]:
        table = [[cut(r.claim, claim_width), r.protocol, r.estimate, interval_text(r), r.verdict,
                  _ledger_cell(r)] for r in rows]
        headers = ("claim", "protocol", "estimate", "interval", "verdict", "ledger")
        return tabulate(table, headers=headers, floatfmt=".3f", missingval="nan").splitlines()

    longest = max(len(r.claim) for r in rows)
    lines = render(longest)
    excess = max(len(line) for line in lines) - TABLE_WIDTH
    if excess > 0:  # the claim id gives way (the report folder has it whole)
        lines = render(max(longest - excess, 16))
    out = lines[:2]
    for line, r in zip(lines[2:], rows):
        sizes = f"{r.n_pairs} pairs x {r.n_seeds} seeds" if r.n_seeds else f"{r.n_pairs} pairs"
        out += [line, "    " + cut(f"{sizes} | mapped: {_mapped(r)} | {short_reason(r)}", TABLE_WIDTH - 4)]
    return "\n".join(out)


def _ledger_cell(row: Any) -> str:
    if row.outcome == "fail":
        return f"expected {row.expected}"
    return "no entry" if row.outcome == "unjudged" else "as expected"


def _progress_after(config: pytest.Config) -> float:
    text = str(config.getini("harness_progress_after") or "").strip()
    if not text:
        return PROGRESS_AFTER_QUIET if config.get_verbosity() < 0 else PROGRESS_AFTER
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise pytest.UsageError(f"harness_progress_after = {text!r}: expected a number of seconds, 0 or more")
    return value


def _is_claim(nodeid: str) -> bool:
    return "claims/" in nodeid.replace("\\", "/")


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
