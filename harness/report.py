"""Write a run's results as files, as they arrive, so an interrupted run keeps what finished.

A run folder holds:

- ``results.jsonl``: one row per pair x arm x seed (metrics and generated text),
  appended and flushed as each claim finishes;
- ``claims.csv``: one row per claim x protocol, rewritten after each claim;
- ``summary.json``: provenance and the claims table, with ``complete`` false
  until the session ends normally.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["CLAIM_COLUMNS", "RunWriter", "sample_rows"]

CLAIM_COLUMNS = (
    "claim", "protocol", "metric", "efficiency", "ci_low", "ci_high", "n_pairs", "n_seeds",
    "verdict", "expected", "outcome", "threshold", "direction", "kv_layers", "sites",
    "calls_prefill", "changed_prefill", "calls_decode", "changed_decode", "model", "reason",
)


def sample_rows(arm_results: Iterable[Any], pairs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per pair x arm x seed with every per-sample metric and the text."""
    from harness.claims import METRICS

    rows = []
    for res in arm_results:
        pair = pairs[res.pair_id]
        for seed, tokens, text in zip(res.seeds, res.tokens, res.texts):
            row = {"protocol": res.protocol, "pair": res.pair_id, "arm": res.arm, "seed": seed,
                   "n_tokens": len(tokens), "text": text}
            for name, fn in METRICS.items():
                value = fn(text, pair)
                row[name] = None if isinstance(value, float) and math.isnan(value) else value
            rows.append(row)
    return rows


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class RunWriter:
    """Appends a run's rows to its folder; only the controlling process writes."""

    def __init__(self, directory: Path, provenance: Mapping[str, Any], latest: Path | None = None) -> None:
        self.directory = Path(directory)
        self.latest = latest
        self.provenance = dict(provenance)
        self.claims: list[dict[str, Any]] = []
        self._seen: set[tuple] = set()
        self._results: Any = None

    def _open(self) -> None:
        if self._results is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._results = (self.directory / "results.jsonl").open("a", encoding="utf-8")
            self._link_latest()
            self.write_summary(complete=False)

    def _link_latest(self) -> None:
        """Point ``latest`` (e.g. ``reports/latest``) at this run's folder."""
        latest = self.latest
        if latest is None or latest.resolve() == self.directory.resolve():
            return
        target = self.directory.resolve()
        try:
            relative = target.relative_to(latest.parent.resolve())
        except ValueError:
            relative = target
        try:
            latest.parent.mkdir(parents=True, exist_ok=True)
            if latest.is_symlink():
                latest.unlink()
            elif latest.exists():
                return  # a real folder named latest: not ours to replace
            latest.symlink_to(relative)
        except OSError:  # e.g. a file system without symlinks: the folder itself is enough
            pass

    def add(self, claim_row: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> None:
        """Record one finished claim and its sample rows, flushed to disk at once."""
        self._open()
        for row in rows:
            key = (row["protocol"], row["pair"], row["arm"], row["seed"])
            if key in self._seen:
                continue
            self._seen.add(key)
            self._results.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._results.flush()
        os.fsync(self._results.fileno())
        self.claims.append({k: _clean(v) for k, v in claim_row.items()})
        self.write_claims()
        self.write_summary(complete=False)

    def write_claims(self) -> None:
        path = self.directory / "claims.csv"
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CLAIM_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in sorted(self.claims, key=lambda r: (r["claim"], r["protocol"])):
                writer.writerow(row)
        tmp.replace(path)

    def write_summary(self, complete: bool) -> None:
        path = self.directory / "summary.json"
        data = {"complete": complete, "provenance": self.provenance,
                "claims": sorted(self.claims, key=lambda r: (r["claim"], r["protocol"]))}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        tmp.replace(path)

    def close(self, complete: bool) -> None:
        """Close the run: summary marked complete or not, rows sorted, markdown and plots."""
        if self._results is None:
            return
        self._results.close()
        self.write_summary(complete=complete)
        from harness.merge import normalize
        from harness.render import render

        normalize(self.directory)
        try:
            render(self.directory)
        except Exception as exc:  # the data files are written; a failed plot must not hide them
            warnings.warn(f"could not render {self.directory}: {exc!r}; rerun "
                          f"`python -m harness.render {self.directory}`", stacklevel=2)


if __name__ == "__main__":
    from harness.merge import main

    raise SystemExit(main())
