"""Merge the run folders of shards into one, as a single run would have written it.

A sharded run (``pytest claims/ --shard i/n --report-dir reports/shard-i``) leaves
one folder per shard, each with a disjoint slice of the claim cells. :func:`merge`
joins them:

- ``results.jsonl``: rows deduplicated on (protocol, pair, arm, seed), sorted by
  that key (shards share the baseline and champion arms, so duplicates are normal);
- ``claims.csv`` / ``summary.json``: claim rows sorted by (claim, protocol); a cell
  found in two shards must be identical there;
- ``summary.json``: ``complete`` only if every shard completed, the shards'
  provenance (they must agree on what determines the numbers), and ``shards``.

:func:`normalize` gives a single run's ``results.jsonl`` the same order, so a
merged folder and a single run can be compared byte for byte.

Command line (meant to be reached as ``python -m harness.report merge``)::

    python -m harness.merge merge reports/shard-* --out reports/merged
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, HarnessLookupError, HarnessValueError
from harness.render import Run, load_run, read_results, render

__all__ = ["MUST_MATCH", "result_key", "normalize", "merge", "main"]

#: Provenance fields that determine the numbers: shards that differ here measured
#: different things and cannot be one run. Fields naming a hash (weights_sha256,
#: tokenizer_sha256, ...) are checked too.
MUST_MATCH = ("model", "dtype", "seeds", "gen_tokens", "pairs", "prompts", "profile", "n_layers", "protocols")
#: Lists of what went wrong per shard: the merged run has them all.
_UNION = ("missing",)
_HASH_FIELD = re.compile(r"hash|sha\d+|_sha\b")
_RESULT_KEY = ("protocol", "pair", "arm", "seed")


def result_key(row: Mapping[str, Any]) -> tuple[str, str, str, int]:
    """The identity of a sample row: (protocol, pair, arm, seed)."""
    missing = [k for k in _RESULT_KEY if k not in row]
    if missing:
        raise HarnessValueError(f"results row without {', '.join(missing)}: {json.dumps(row)[:120]}")
    return (str(row["protocol"]), str(row["pair"]), str(row["arm"]), int(row["seed"]))


def _dump_row(row: Mapping[str, Any]) -> str:
    # Exactly as RunWriter writes a row, so a re-written file stays byte-comparable.
    return json.dumps(row, ensure_ascii=False) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _dedupe_sorted(rows: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[tuple]]:
    """First row per key, sorted by key; and the keys whose later rows differed from the first."""
    kept: dict[tuple, Mapping[str, Any]] = {}
    conflicts: list[tuple] = []
    for row in rows:
        key = result_key(row)
        if key not in kept:
            kept[key] = row
        elif kept[key] != row and key not in conflicts:
            conflicts.append(key)
    return [kept[k] for k in sorted(kept)], sorted(conflicts)


def normalize(run_dir: Path) -> None:
    """Rewrite ``run_dir/results.jsonl`` deduplicated and sorted by (protocol, pair, arm, seed).

    The rewrite is atomic (a temporary file replaced in one step), so a reader never
    sees half a file. A folder without ``results.jsonl`` is left alone.
    """
    path = Path(run_dir) / "results.jsonl"
    if not path.exists():
        return
    rows, _ = _dedupe_sorted(read_results(path))
    _write_atomic(path, "".join(_dump_row(r) for r in rows))


def _must_match(provenances: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = dict.fromkeys(k for p in provenances for k in p)
    hashes = [k for k in keys if _HASH_FIELD.search(k.lower())]
    return list(MUST_MATCH) + [k for k in hashes if k not in MUST_MATCH]


def _check_provenance(runs: Sequence[Run]) -> None:
    first = runs[0]
    for field in _must_match([r.provenance for r in runs]):
        for other in runs[1:]:
            a, b = first.provenance.get(field), other.provenance.get(field)
            if a != b:
                raise HarnessValueError(
                    f"shards disagree on provenance field {field!r}: {first.directory.name} has {a!r}, "
                    f"{other.directory.name} has {b!r}; shards of one run must share "
                    f"{', '.join(MUST_MATCH)} and the weights")


def _merged_provenance(runs: Sequence[Run]) -> dict[str, Any]:
    """Fields the shards agree on keep their value; the others (run id, command, device,
    shard) become the list of the shards' values, in shard order; ``missing`` (tests that
    produced no row) is the union of the shards' lists."""
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


def _merged_claims(runs: Sequence[Run]) -> list[dict[str, Any]]:
    cells: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
    for run in runs:
        for row in run.claims:
            key = (str(row.get("claim")), str(row.get("protocol")))
            if key not in cells:
                cells[key] = (row, run.directory.name)
                continue
            seen, where = cells[key]
            # Compare the fields both rows have: a row read back from claims.csv lacks
            # the summary-only fields (statement, guards, ...), which is not a conflict.
            differ = [k for k in seen if k in row and seen[k] != row[k]]
            if differ:
                field = differ[0]
                raise HarnessValueError(
                    f"claim {key[0]} [{key[1]}] is in shards {where} and {run.directory.name} with different "
                    f"values ({', '.join(differ)}; {field}: {seen[field]!r} vs {row[field]!r}); "
                    "the shards overlap and disagree")
            if len(row) > len(seen):
                cells[key] = (row, where)
    return [cells[k][0] for k in sorted(cells)]


def merge(dirs: Sequence[Path], out: Path) -> Path:
    """Merge shard run folders ``dirs`` into ``out`` (created), render it, and return ``out``.

    Refuses (:class:`HarnessValueError`) shards whose provenance differs in a field of
    :data:`MUST_MATCH` or a weights hash, and a claim x protocol cell present in two
    shards with different values. Sample rows of the same (protocol, pair, arm, seed)
    that differ between shards (non-deterministic kernels on different devices) keep the
    first shard's row; their keys are listed under ``result_conflicts`` in summary.json.
    When the folders record their ``--shard I/N``, a slice with no folder makes the merged
    run incomplete (``missing_shards``).
    """
    from harness.report import RunWriter

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
    results, conflicts = _dedupe_sorted(r for run in runs for r in run.results)
    out.mkdir(parents=True, exist_ok=True)
    provenance = _merged_provenance(runs)
    _write_atomic(out / "results.jsonl", "".join(_dump_row(r) for r in results))
    writer = RunWriter(out, provenance)  # its CSV writer, so the merged claims.csv is byte-identical
    writer.claims = claims
    writer.write_claims()
    complete = all(r.complete for r in runs) and not missing_shards
    summary: dict[str, Any] = {"complete": complete, "provenance": provenance,
                               "claims": claims, "shards": [d.name for d in dirs]}
    if missing_shards:
        summary["missing_shards"] = missing_shards
    if conflicts:
        summary["result_conflicts"] = [list(k) for k in conflicts]
    _write_atomic(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    render(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``merge DIR... --out DIR``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.report",
                                     description="Work with run folders written by the claims harness.")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("merge", help="merge shard run folders into one and render it",
                              description=merge.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="shard run folders")
    cmd.add_argument("--out", required=True, type=Path, metavar="DIR", help="the merged folder (created)")
    args = parser.parse_args(argv)
    try:
        out = merge(args.dirs, args.out)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    state = "complete" if summary["complete"] else "INCOMPLETE"
    print(f"merged {len(args.dirs)} shards, {len(summary['claims'])} claim cells ({state}): {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
