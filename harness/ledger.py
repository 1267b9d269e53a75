"""The ledger of known verdicts per (model, settings, claim, protocol).

Entries are measured, never written in by hand: ``python -m harness.ledger update
REPORT_DIR`` copies the verdicts of a finished run into the ledger, each pointing
at that run's report and recording the *settings* that produced it (pairs, seeds,
tokens, prompts file hash, dtype, the verdict rule's version). A verdict measured
with other settings is a different measurement: it neither matches nor replaces
an entry. At test time :func:`judge` compares a measured verdict with the entry
for the run's own model and settings:

- a verdict equal to a known entry that is not ``supported`` is an expected
  failure (xfail, with the recorded reason);
- a verdict equal to a known ``supported`` entry passes;
- any other verdict with an entry fails (the finding's status changed);
- with no entry while the ledger has entries for these settings (a new claim), the claim
  must be ``supported`` to pass;
- with no entries at all for this model and settings (a scaled-down run, another model),
  there is nothing to compare: the verdict is reported, ``unjudged``, and fails nothing,
  unless the run is strict (``--ledger-strict``), when it must be ``supported``.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.cli import one_line_errors
from harness.errors import HarnessLookupError, HarnessValueError

__all__ = ["Entry", "Ledger", "Outcome", "judge", "DEFAULT_LEDGER", "main"]

DEFAULT_LEDGER = Path("claims") / "ledger.toml"
_FIELDS = ("model", "settings", "claim", "protocol", "verdict", "reason", "report")
#: The verdicts a ledger can record (``harness.stats.Verdict``'s values; not imported: stats needs numpy).
_VERDICTS = ("supported", "refuted", "inconclusive", "invalid")


@dataclass(frozen=True)
class Entry:
    """A verdict measured by a run with the given settings, and where its report is."""

    model: str
    settings: str
    claim: str
    protocol: str
    verdict: str
    reason: str
    report: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.model, self.settings, self.claim, self.protocol)


@dataclass(frozen=True)
class Outcome:
    """What the test should do: ``pass``, ``xfail`` or ``fail``, and why."""

    kind: str
    message: str


class Ledger:
    """Known verdicts, keyed by (model identity, settings, claim id, protocol)."""

    def __init__(self, entries: Iterable[Entry] = (), path: Path | None = None) -> None:
        self.path = path
        self.entries = {e.key: e for e in entries}

    @classmethod
    def load(cls, path: str | Path) -> Ledger:
        path = Path(path)
        if not path.is_file():
            return cls(path=path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise HarnessValueError(f"{path}: unreadable ledger ({exc})") from exc
        entries = []
        for i, raw in enumerate(data.get("verdict", []), start=1):
            missing = [f for f in _FIELDS if f not in raw]
            if missing:
                raise HarnessValueError(f"{path}: verdict entry {i} lacks {', '.join(missing)}; "
                                        "regenerate it with `python -m harness.ledger update REPORT_DIR`")
            wrong = [f for f in _FIELDS if not isinstance(raw[f], str)]
            if wrong:
                raise HarnessValueError(f"{path}: verdict entry {i}: {wrong[0]} = {raw[wrong[0]]!r}; expected a "
                                        "quoted string; regenerate it with `python -m harness.ledger update REPORT_DIR`")
            if raw["verdict"] not in _VERDICTS:
                raise HarnessValueError(f"{path}: verdict entry {i}: verdict = {raw['verdict']!r}; expected one of "
                                        f"{', '.join(_VERDICTS)}; fix the entry or regenerate the ledger")
            entries.append(Entry(**{f: raw[f] for f in _FIELDS}))
        return cls(entries, path)

    def lookup(self, model: str, settings: str, claim: str, protocol: str) -> Entry | None:
        return self.entries.get((model, settings, claim, protocol))

    def covers(self, model: str, settings: str) -> bool:
        """Whether any entry was measured on this model with these settings."""
        return any(k[:2] == (model, settings) for k in self.entries)

    def merged(self, entries: Iterable[Entry]) -> Ledger:
        """A new ledger where ``entries`` replace those of the same model, settings, claim and protocol."""
        out = dict(self.entries)
        out.update({e.key: e for e in entries})
        return Ledger(out.values(), self.path)

    def dumps(self) -> str:
        lines = ["# Known verdicts, measured by the runs whose reports they name, with the settings",
                 "# that produced them. Regenerate with: python -m harness.ledger update REPORT_DIR", ""]
        for key in sorted(self.entries):
            e = self.entries[key]
            lines.append("[[verdict]]")
            lines += [f"{f} = {json.dumps(getattr(e, f), ensure_ascii=False)}" for f in _FIELDS]
            lines.append("")
        return "\n".join(lines)


def judge(verdict: str, entry: Entry | None, covered: bool = True, strict: bool = False) -> Outcome:
    """Turn a measured verdict and the ledger's entry (if any) into a test outcome.

    ``covered``: whether the ledger has any entry for this model and settings; ``strict``:
    judge a cell of uncovered settings as if it had a ``supported`` entry.
    """
    if entry is None and not covered and not strict:
        return Outcome("unjudged", f"measured {verdict}; the ledger has no entries for these settings, so "
                                   "the verdict is reported, not judged (--ledger-strict requires supported)")
    if entry is None:
        if verdict == "supported":
            return Outcome("pass", "supported")
        return Outcome("fail", f"measured {verdict}; a claim with no ledger entry for these settings must "
                               "be supported")
    if verdict == entry.verdict:
        if verdict == "supported":
            return Outcome("pass", f"supported, as recorded in {entry.report}")
        return Outcome("xfail", f"known {verdict} (see {entry.report}): {entry.reason}")
    return Outcome("fail", f"measured {verdict}, but the ledger records {entry.verdict} "
                           f"(from {entry.report}); re-check the claim or update the ledger")


def _report_path(report_dir: Path) -> str:
    """The run folder's real path (a ``latest`` link is followed), relative to here when inside."""
    real = report_dir.resolve()
    summary = real / "summary.md"
    target = summary if summary.exists() else real / "claims.csv"
    try:
        return str(target.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(target)


def update(report_dir: Path, ledger_path: Path, finding: str | None = None) -> tuple[int, int]:
    """Record a run's verdicts; return (entries written, entries of other settings left alone).

    A ledger belongs to one finding: a run of several findings records one at a time
    (``finding``: its name, as the rows' ``finding`` column gives it).

    Entries of other settings that point at this run's report are dropped: the folder
    now holds another measurement, so they have no evidence left.
    """
    from harness.report import load_run

    if not report_dir.is_dir():
        raise HarnessLookupError(f"{report_dir}: no such run folder; pass the folder a run wrote, "
                                 "e.g. reports/reference/toy")
    if not (report_dir / "claims.csv").is_file():
        raise HarnessLookupError(f"{report_dir}: no claims.csv; run `pytest claims/ --report-dir {report_dir}` first")
    run = load_run(report_dir)
    if not run.claims:
        raise HarnessValueError(f"{report_dir}: no claim rows")
    if not run.complete:
        raise HarnessValueError(f"{report_dir}: the run is incomplete; record verdicts from a finished run")
    claims = [r for r in run.claims if finding is None or r.finding == finding]
    names = sorted({r.finding for r in run.claims})
    if not claims:
        raise HarnessValueError(f"{report_dir}: --finding {finding!r}: no rows of it; the run has "
                                f"{', '.join(map(repr, names))}")
    if len({r.finding for r in claims}) > 1:
        raise HarnessValueError(f"{report_dir}: rows of several findings ({', '.join(names)}); a ledger is one "
                                "finding's: pass --finding NAME and that finding's --ledger")
    keys = {(r.model, r.settings) for r in claims}
    if len(keys) != 1 or not all(keys.pop()):
        raise HarnessValueError(f"{report_dir}: rows from several models or settings, or without them")
    report = _report_path(report_dir)
    entries = [Entry(r.model, r.settings, r.claim, r.protocol, r.verdict, r.reason, report) for r in claims]
    ledger = Ledger.load(ledger_path)
    model, settings = entries[0].model, entries[0].settings
    # An entry of other settings whose report this run has just replaced lost its evidence.
    kept = [e for e in ledger.entries.values() if e.report != report or e.key[:2] == (model, settings)]
    ledger = Ledger(kept, ledger.path)
    others = sum(1 for k in ledger.entries if k[:2] != (model, settings))
    tmp = ledger_path.with_name(ledger_path.name + ".tmp")
    tmp.write_text(ledger.merged(entries).dumps(), encoding="utf-8")
    os.replace(tmp, ledger_path)
    return len(entries), others


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.ledger",
        description="Record the verdicts a run measured in the ledger of known verdicts.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("update", help="copy a finished run's measured verdicts into the ledger",
                        description="Copy a finished run's verdicts into the ledger. Entries of the same model "
                                    "and settings are replaced; entries measured with other settings stay.")
    up.add_argument("report_dir", type=Path, metavar="REPORT_DIR")
    up.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER)
    up.add_argument("--finding", default=None, metavar="NAME",
                    help="record only this finding's rows (needed when the run holds several findings)")
    args = parser.parse_args(argv)
    written, others = update(args.report_dir, args.ledger, args.finding)
    print(f"{args.ledger}: {written} verdicts from {_report_path(args.report_dir)}; "
          f"{others} entries of other settings left as they were")
    return 0


if __name__ == "__main__":
    sys.exit(main())
