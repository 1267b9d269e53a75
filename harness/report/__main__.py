"""python -m harness.report: merge shard run folders, render a run folder, compare runs of models
(matrix), or check two runs on different data for contradicting verdicts (compare)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from harness.cli import one_line_errors


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness.report",
                                     description="Work with run folders written by the claims harness.")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser(
        "merge", help="merge shard run folders into one and render it",
        description="Merge the run folders of shards (pytest claims/ --shard I/N --report-dir DIR) into "
                    "one folder, as a single run would have written it, and render it. Shards must agree "
                    "on the model, settings and weights; a missing slice marks the merged run incomplete.")
    cmd.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="shard run folders")
    cmd.add_argument("--out", required=True, type=Path, metavar="DIR", help="the merged folder (created)")
    ren = commands.add_parser(
        "render", help="write summary.md, report.html and the plots of a run folder",
        description="Write summary.md, report.html and the plots of a run folder from its data files "
                    "(results.jsonl, claims.csv, summary.json).")
    ren.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder, e.g. reports/latest")
    mat = commands.add_parser(
        "matrix", help="put runs of different models side by side",
        description="Write matrix.md and matrix.png: one row per claim cell, one column per run (model, "
                    "dtype), each cell the verdict, estimate and interval. Runs whose verdicts were decided "
                    "by different claim rules (rule version or family size) are refused.")
    mat.add_argument("dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders, one per model")
    mat.add_argument("--out", required=True, type=Path, metavar="DIR", help="where the matrix goes (created)")
    cmp = commands.add_parser(
        "compare", help="check two runs of the same claims for supported-vs-refuted contradictions",
        description="Set the cells of two run folders (e.g. two disjoint halves of a prompt bank, or two "
                    "seed sets) side by side and list every cell whose verdicts differ. Exit code 1 when "
                    "a cell is supported in one run and refuted in the other, 0 otherwise.")
    cmp.add_argument("run_a", type=Path, metavar="RUN_A", help="a run folder")
    cmp.add_argument("run_b", type=Path, metavar="RUN_B", help="another run folder of the same claims")
    cmp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    return parser


@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from harness.report import load_run, merge, render

    if args.command == "compare":
        from harness.report.compare import compare, comparison_json, comparison_text

        result = compare(args.run_a, args.run_b)
        print(comparison_json(result) if args.json else comparison_text(result))
        return 1 if result.contradictions else 0
    if args.command == "merge":
        out = merge(args.dirs, args.out)
        run = load_run(out)
        state = "complete" if run.complete else "INCOMPLETE"
        print(f"merged {len(args.dirs)} shards, {len(run.claims)} claim cells ({state}): {out / 'summary.md'}")
    elif args.command == "matrix":
        from harness.report.matrix import matrix

        out = matrix(args.dirs, args.out)
        print(f"matrix of {len(args.dirs)} runs: {out / 'matrix.md'}, {out / 'matrix.png'}")
    else:
        render(args.run_dir)
        run = load_run(args.run_dir)
        missing = run.extra.get("missing_samples")
        state = (f" (INCOMPLETE: results.jsonl has {len(run.results)} of {len(run.results) + missing} samples, "
                 f"{missing} missing)" if missing else "" if run.complete else " (INCOMPLETE)")
        print(f"{args.run_dir / 'summary.md'}{state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
