"""The ledger of known verdicts per (model identity, claim, protocol).

Entries are measured, never written in by hand: ``python -m harness.ledger
update REPORT_DIR`` copies the verdicts of a finished run into the ledger, each
pointing at that run's report. At test time :func:`judge` compares a measured
verdict with the ledger:

- a verdict equal to a known entry that is not ``supported`` is an expected
  failure (xfail, with the recorded reason);
- a verdict equal to a known ``supported`` entry passes;
- any other verdict with an entry fails (the finding's status changed);
- with no entry, the claim must be ``supported`` to pass.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessLookupError, HarnessValueError

__all__ = ["Entry", "Ledger", "Outcome", "judge", "DEFAULT_LEDGER"]

DEFAULT_LEDGER = Path("claims") / "ledger.toml"
_FIELDS = ("model", "claim", "protocol", "verdict", "reason", "report")


@dataclass(frozen=True)
class Entry:
    """A verdict measured by a run, and where its report is."""

    model: str
    claim: str
    protocol: str
    verdict: str
    reason: str
    report: str


@dataclass(frozen=True)
class Outcome:
    """What the test should do: ``pass``, ``xfail`` or ``fail``, and why."""

    kind: str
    message: str


class Ledger:
    """Known verdicts, keyed by (model identity, claim id, protocol)."""

    def __init__(self, entries: Iterable[Entry] = (), path: Path | None = None) -> None:
        self.path = path
        self.entries = {(e.model, e.claim, e.protocol): e for e in entries}

    @classmethod
    def load(cls, path: str | Path) -> Ledger:
        path = Path(path)
        if not path.is_file():
            return cls(path=path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise HarnessValueError(f"{path}: unreadable ledger ({exc})") from exc
        entries = []
        for i, raw in enumerate(data.get("verdict", []), start=1):
            missing = [f for f in _FIELDS if f not in raw]
            if missing:
                raise HarnessValueError(f"{path}: verdict entry {i} lacks {', '.join(missing)}")
            entries.append(Entry(**{f: str(raw[f]) for f in _FIELDS}))
        return cls(entries, path)

    def lookup(self, model: str, claim: str, protocol: str) -> Entry | None:
        return self.entries.get((model, claim, protocol))

    def merged(self, rows: Iterable[Mapping[str, str]], model: str, report: str) -> Ledger:
        """A new ledger with the measured verdicts of ``rows`` for ``model`` replacing old ones."""
        entries = dict(self.entries)
        for row in rows:
            entry = Entry(model, row["claim"], row["protocol"], row["verdict"], row["reason"], report)
            entries[(entry.model, entry.claim, entry.protocol)] = entry
        return Ledger(entries.values(), self.path)

    def dumps(self) -> str:
        lines = ["# Known verdicts, measured by the runs whose reports they name.",
                 "# Regenerate with: python -m harness.ledger update REPORT_DIR", ""]
        for key in sorted(self.entries):
            e = self.entries[key]
            lines.append("[[verdict]]")
            lines += [f"{f} = {json.dumps(getattr(e, f), ensure_ascii=False)}" for f in _FIELDS]
            lines.append("")
        return "\n".join(lines)


def judge(verdict: str, entry: Entry | None) -> Outcome:
    """Turn a measured verdict and the ledger's entry (if any) into a test outcome."""
    if entry is None:
        if verdict == "supported":
            return Outcome("pass", "supported")
        return Outcome("fail", f"measured {verdict}; a claim with no ledger entry must be supported")
    if verdict == entry.verdict:
        if verdict == "supported":
            return Outcome("pass", f"supported, as recorded in {entry.report}")
        return Outcome("xfail", f"known {verdict} (see {entry.report}): {entry.reason}")
    return Outcome("fail", f"measured {verdict}, but the ledger records {entry.verdict} "
                           f"(from {entry.report}); re-check the claim or update the ledger")


def _update(report_dir: Path, ledger_path: Path) -> int:
    csv_path = report_dir / "claims.csv"
    if not csv_path.is_file():
        raise HarnessLookupError(f"{csv_path}: no claims.csv; run `pytest claims/ --report-dir {report_dir}` first")
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise HarnessValueError(f"{csv_path}: no claim rows")
    models = {r["model"] for r in rows}
    if len(models) != 1:
        raise HarnessValueError(f"{csv_path}: rows from several models ({', '.join(sorted(models))})")
    summary = report_dir / "summary.md"
    report = str(summary if summary.exists() else csv_path)
    ledger = Ledger.load(ledger_path).merged(rows, models.pop(), report)
    ledger_path.write_text(ledger.dumps())
    print(f"{ledger_path}: {len(rows)} verdicts from {report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.ledger", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("update", help="copy a run's measured verdicts into the ledger")
    up.add_argument("report_dir", type=Path)
    up.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER)
    args = parser.parse_args(argv)
    return _update(args.report_dir, args.ledger)


if __name__ == "__main__":
    sys.exit(main())
