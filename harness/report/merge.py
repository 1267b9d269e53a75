"""Merge the run folders of shards into one, as a single run would have written it.

A sharded run (``pytest claims/ --shard i/n --report-dir reports/shard-i``) leaves
one folder per shard, each with a disjoint slice of the claim cells. :func:`merge`
joins them: sample rows deduplicated on (protocol, pair, arm, seed) and sorted
(shards share the reference arms, so duplicates are normal); claim rows sorted by
(claim, protocol), a cell found in two shards must be identical there;
``complete`` only if every shard completed; the shards' provenance must agree on
what determines the numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessLookupError, HarnessValueError
from harness.report.schema import ClaimRow
from harness.report.writer import (
    Run,
    claims_csv,
    dedupe_sorted,
    dump_sample,
    load_run,
    summary_json,
    write_atomic,
)

__all__ = ["MUST_MATCH", "merge"]

#: Provenance fields that determine the numbers: shards that differ here measured
#: different things and cannot be one run. Fields naming a hash are checked too.
MUST_MATCH = ("model", "dtype", "seeds", "gen_tokens", "pairs", "prompts", "profile", "n_layers", "protocols",
              "settings", "family_size", "seed_offset")
#: Lists of what went wrong per shard: the merged run has them all.
_UNION = ("missing",)
_HASH_FIELD = re.compile(r"hash|sha\d+|_sha\b")


def _must_match(provenances: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = dict.fromkeys(k for p in provenances for k in p)
    hashes = [k for k in keys if _HASH_FIELD.search(k.lower())]
    return list(MUST_MATCH) + [k for k in hashes if k not in MUST_MATCH]


def _check_provenance(runs: Sequence[Run]) -> None:
    first = runs[0]
    for name in _must_match([r.provenance for r in runs]):
        for other in runs[1:]:
            a, b = first.provenance.get(name), other.provenance.get(name)
            if a != b:
                raise HarnessValueError(
                    f"shards disagree on provenance field {name!r}: {first.directory.name} has {a!r}, "
                    f"{other.directory.name} has {b!r}; shards of one run must share "
                    f"{', '.join(MUST_MATCH)} and the weights")


def _merged_provenance(runs: Sequence[Run]) -> dict[str, Any]:
    """Fields the shards agree on keep their value; the others (run id, command, device,
    shard) become the list of the shards' values, in shard order; ``missing`` is the union."""
    keys = dict.fromkeys(k for r in runs for k in r.provenance)
    out: dict[str, Any] = {}
    for key in keys:
        values = [r.provenance.get(key) for r in runs]
        if key in _UNION:
            out[key] = sorted({str(x) for v in values if isinstance(v, list) for x in v})
        else:
            out[key] = values[0] if all(v == values[0] for v in values) else values
    return out


def _missing_shards(runs: Sequence[Run]) -> list[str]:
    """Slices I/N of the split that no folder covers (a shard that crashed before writing).

    Checked only when every folder records its ``--shard``; two folders of the same
    slice, or of splits into different N, are refused.
    """
    slices = [r.provenance.get("shard") for r in runs]
    if not slices or not all(isinstance(s, str) and "/" in s for s in slices):
        return []
    counts = {s.split("/")[1] for s in slices}
    if len(counts) > 1:
        raise HarnessValueError(f"merge: shards of different splits ({', '.join(sorted(set(slices)))})")
    seen: dict[str, str] = {}
    for run, s in zip(runs, slices):
        if s in seen:
            raise HarnessValueError(f"merge: shard {s} given twice ({seen[s]} and {run.directory.name})")
        seen[s] = run.directory.name
    n = counts.pop()
    return [f"{i}/{n}" for i in range(1, int(n) + 1) if f"{i}/{n}" not in seen]


def _merged_claims(runs: Sequence[Run]) -> list[ClaimRow]:
    cells: dict[tuple[str, str], tuple[ClaimRow, str]] = {}
    for run in runs:
        for row in run.claims:
            if row.key not in cells:
                cells[row.key] = (row, run.directory.name)
                continue
            seen, where = cells[row.key]
            if seen != row:
                differ = [k for k, v in seen.to_json().items() if row.to_json()[k] != v]
                raise HarnessValueError(
                    f"claim {row.claim} [{row.protocol}] is in shards {where} and {run.directory.name} with "
                    f"different values ({', '.join(differ)}); the shards overlap and disagree")
    return [cells[k][0] for k in sorted(cells)]


def merge(dirs: Sequence[Path], out: Path) -> Path:
    """Merge shard run folders DIRS into OUT (created), render it, and return OUT.

    Refuses shards whose provenance differs in a field that determines the numbers or
    in a weights hash, and a claim cell present in two shards with different values.
    Sample rows of the same (protocol, pair, arm, seed) that differ between shards
    (non-deterministic kernels on different devices) keep the first shard's row and
    are listed under result_conflicts in summary.json. When the folders record their
    --shard I/N, a slice with no folder makes the merged run incomplete.
    """
    from harness.report.render import render

    dirs, out = [Path(d) for d in dirs], Path(out)
    if not dirs:
        raise HarnessValueError("merge: no shard folders given")
    for d in dirs:
        if not d.is_dir():
            raise HarnessLookupError(f"merge: {d}: no such run folder")
        if d.resolve() == out.resolve():
            raise HarnessValueError(f"merge: the output folder {out} is also a shard; choose another --out")
    if len({d.resolve() for d in dirs}) < len(dirs):
        raise HarnessValueError("merge: the same shard folder is given twice")
    runs = [load_run(d) for d in dirs]
    _check_provenance(runs)
    missing_shards = _missing_shards(runs)
    claims = _merged_claims(runs)
    results, conflicts = dedupe_sorted(r for run in runs for r in run.results)
    out.mkdir(parents=True, exist_ok=True)
    provenance = _merged_provenance(runs)
    write_atomic(out / "results.jsonl", "".join(dump_sample(r) for r in results))
    write_atomic(out / "claims.csv", claims_csv(claims))
    extra: dict[str, Any] = {"shards": [d.name for d in dirs], "samples": len(results)}
    if missing_shards:
        extra["missing_shards"] = missing_shards
    if conflicts:
        extra["result_conflicts"] = [list(k) for k in conflicts]
    complete = all(r.complete for r in runs) and not missing_shards
    write_atomic(out / "summary.json", summary_json(complete, provenance, claims, **extra))
    render(out)
    return out
