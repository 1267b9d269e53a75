"""Write a run folder as results arrive, and read one back as typed rows.

A run folder holds:

- ``results.jsonl``: one :class:`SampleRow` per (protocol, pair, arm, seed),
  appended and flushed as each claim finishes, sorted by that key at close;
- ``claims.csv``: one :class:`ClaimRow` per claim cell, rewritten after each claim;
- ``summary.json``: provenance and the claim rows, with ``complete`` false until
  the run ends normally.

Every file is replaced atomically (written beside, then renamed), so a reader never
sees half a file and an interrupted run keeps what finished.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessLookupError, HarnessValueError
from harness.report.schema import CLAIM_COLUMNS, ClaimRow, SampleRow

__all__ = ["Run", "RunWriter", "load_run", "read_results", "normalize", "claims_csv", "write_atomic",
           "dump_sample"]


@dataclass(frozen=True)
class Run:
    """One run folder as read from disk, typed."""

    directory: Path
    complete: bool
    provenance: Mapping[str, Any]
    claims: tuple[ClaimRow, ...]
    results: tuple[SampleRow, ...]
    extra: Mapping[str, Any]  # summary.json keys beyond complete/provenance/claims (e.g. shards)


def write_atomic(path: Path, text: str) -> None:
    """Write beside, then rename: the old file stays whole if the write fails (a full disk),
    and no ``.tmp`` is left behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def dump_sample(row: SampleRow) -> str:
    return json.dumps(row.to_json(), ensure_ascii=False) + "\n"


def claims_csv(rows: Iterable[ClaimRow]) -> str:
    """The text of ``claims.csv``: every field of the schema, rows sorted by (claim, protocol)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CLAIM_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r.key):
        writer.writerow(row.to_csv())
    return buffer.getvalue()


def summary_json(complete: bool, provenance: Mapping[str, Any], claims: Iterable[ClaimRow],
                 **extra: Any) -> str:
    data = {"complete": complete, "provenance": dict(provenance),
            "claims": [r.to_json() for r in sorted(claims, key=lambda r: r.key)], **extra}
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def read_results(path: Path) -> list[SampleRow]:
    """Rows of a ``results.jsonl``; a truncated last line (a run killed mid-write) is dropped.

    A malformed line anywhere else means the file is corrupt, and is refused.
    """
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # only the last write can be cut short
                break
            raise HarnessValueError(f"{path}:{number}: not a JSON row ({exc.msg})") from exc
        if not isinstance(data, dict):
            raise HarnessValueError(f"{path}:{number}: expected a JSON object, got {type(data).__name__}")
        try:
            rows.append(SampleRow.from_dict(data))
        except (ValueError, TypeError) as exc:  # includes HarnessValueError: name the line
            raise HarnessValueError(f"{path}:{number}: not a sample row ({exc})") from None
    return rows


def _read_claims_csv(path: Path) -> list[ClaimRow]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [ClaimRow.from_dict(r) for r in csv.DictReader(handle)]


def load_run(run_dir: Path) -> Run:
    """Read a run folder. ``summary.json`` is the main source of claim rows; a cell found
    only in ``claims.csv`` (a run stopped between the two writes) is kept too."""
    run_dir = Path(run_dir)
    summary_path, csv_path = run_dir / "summary.json", run_dir / "claims.csv"
    if not summary_path.exists() and not csv_path.exists():
        raise HarnessLookupError(f"{run_dir}: not a run folder (no summary.json or claims.csv)")
    summary: dict[str, Any] = {}
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise HarnessValueError(f"{summary_path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
        _check_summary_shape(summary_path, summary)
    try:
        claims = {row.key: row for row in (ClaimRow.from_dict(r) for r in summary.get("claims", []))}
    except (ValueError, TypeError) as exc:
        raise HarnessValueError(f"{summary_path}: a claim row is not of this harness's schema ({exc})") from None
    if csv_path.exists():
        try:
            for row in _read_claims_csv(csv_path):
                claims.setdefault(row.key, row)
        except (ValueError, TypeError) as exc:
            raise HarnessValueError(f"{csv_path}: a row is not of this harness's schema ({exc})") from None
    results = tuple(read_results(run_dir / "results.jsonl"))
    extra = {k: v for k, v in summary.items() if k not in ("complete", "provenance", "claims")}
    # The writer records how many samples it wrote: fewer on disk means a cut or damaged file.
    written = summary.get("samples")
    missing = written - len(results) if isinstance(written, int) and written > len(results) else 0
    if missing:
        extra["missing_samples"] = missing
    return Run(directory=run_dir, complete=bool(summary.get("complete", False)) and not missing,
               provenance=dict(summary.get("provenance", {})),
               claims=tuple(claims[k] for k in sorted(claims)), results=results, extra=extra)


def _check_summary_shape(path: Path, summary: Any) -> None:
    """summary.json must be an object whose provenance is an object and whose claims are a list
    of objects; anything else is refused in one line rather than failing deep in a renderer."""
    expected = ("expected an object with 'complete', 'provenance' (an object) and 'claims' (a list of "
                "objects), as a run writes it")
    if not isinstance(summary, dict):
        raise HarnessValueError(f"{path}: a JSON {type(summary).__name__}; {expected}")
    if not isinstance(summary.get("provenance", {}), dict):
        raise HarnessValueError(f"{path}: 'provenance' is a {type(summary['provenance']).__name__}; {expected}")
    claims = summary.get("claims", [])
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        raise HarnessValueError(f"{path}: 'claims' is not a list of objects; {expected}")
    if "samples" in summary and not (isinstance(summary["samples"], int) and summary["samples"] >= 0):
        raise HarnessValueError(f"{path}: 'samples' = {summary['samples']!r}; expected a count, 0 or more")


def dedupe_sorted(rows: Iterable[SampleRow]) -> tuple[list[SampleRow], list[tuple]]:
    """First row per key, sorted by key; and the keys whose later rows differed from the first."""
    kept: dict[tuple, SampleRow] = {}
    conflicts: list[tuple] = []
    for row in rows:
        if row.key not in kept:
            kept[row.key] = row
        elif kept[row.key] != row and row.key not in conflicts:
            conflicts.append(row.key)
    return [kept[k] for k in sorted(kept)], sorted(conflicts)


def normalize(run_dir: Path) -> None:
    """Rewrite ``run_dir/results.jsonl`` deduplicated and sorted by (protocol, pair, arm, seed)."""
    path = Path(run_dir) / "results.jsonl"
    if path.exists():
        rows, _ = dedupe_sorted(read_results(path))
        write_atomic(path, "".join(dump_sample(r) for r in rows))


class RunWriter:
    """Appends a run's rows to its folder; only the controlling process writes.

    ``latest`` (e.g. ``reports/latest``) is pointed at the folder only when the folder
    lies in the same parent (a run written elsewhere does not move it).
    """

    def __init__(self, directory: Path, provenance: Mapping[str, Any], latest: Path | None = None) -> None:
        self.directory = Path(directory)
        self.latest = latest
        self.provenance = dict(provenance)
        self.claims: dict[tuple[str, str], ClaimRow] = {}
        self._seen: dict[tuple, SampleRow] = {}
        self._results: Any = None
        #: None while the run is open; then whether it was closed as complete.
        self.completed: bool | None = None

    def _open(self) -> None:
        if self._results is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._results = (self.directory / "results.jsonl").open("a", encoding="utf-8")
            self._link_latest()
            self.write_summary(complete=False)

    def _link_latest(self) -> None:
        latest = self.latest
        if latest is None or latest.resolve() == self.directory.resolve():
            return
        if self.directory.resolve().parent != latest.parent.resolve():
            return  # a run outside reports/ is not "the latest run" of this checkout
        try:
            if latest.is_symlink():
                latest.unlink()
            elif latest.exists():
                return  # a real folder named latest: not ours to replace
            latest.symlink_to(self.directory.name)
        except OSError:  # e.g. a file system without symlinks: the folder itself is enough
            pass

    def add(self, claim: ClaimRow, samples: Iterable[SampleRow]) -> None:
        """Record one finished claim cell and its samples, flushed to disk at once.

        A sample whose key was written before with other content means two different
        arms share a name: refused, since one of them would be lost.
        """
        self._open()
        for row in samples:
            seen = self._seen.get(row.key)
            if seen is not None:
                if seen != row:
                    raise HarnessValueError(
                        f"two different samples for {row.key}: arm names must be unique per "
                        f"intervention (arm {row.arm!r} of claim {claim.claim})")
                continue
            self._seen[row.key] = row
            self._results.write(dump_sample(row))
        self._results.flush()
        os.fsync(self._results.fileno())
        self.claims[claim.key] = claim
        write_atomic(self.directory / "claims.csv", claims_csv(self.claims.values()))
        self.write_summary(complete=False)

    def write_summary(self, complete: bool, **extra: Any) -> None:
        write_atomic(self.directory / "summary.json",
                     summary_json(complete, self.provenance, self.claims.values(), samples=len(self._seen),
                                  **extra))

    def close(self, complete: bool, render: bool = True) -> None:
        """Close the run: summary marked complete or not, rows sorted, markdown and plots.

        A run closed before any claim finished (interrupted early) still gets its folder,
        with no claims, so a reader sees that it started and where it stopped.
        """
        self._open()
        self._results.close()
        self.completed = complete
        write_atomic(self.directory / "claims.csv", claims_csv(self.claims.values()))
        self.write_summary(complete=complete)
        normalize(self.directory)
        if not render:
            return
        from harness.report.render import render as render_run

        try:
            render_run(self.directory)
        except Exception as exc:  # the data files are written; a failed plot must not hide them
            warnings.warn(f"could not render {self.directory}: {exc!r}; rerun "
                          f"`python -m harness.report render {self.directory}`", stacklevel=2)
