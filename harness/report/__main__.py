"""python -m harness.report: merge shard run folders, or render a run folder."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError


def main(argv: Sequence[str] | None = None) -> int:
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
    ren = commands.add_parser("render", help="write summary.md and the plots of a run folder",
                              description="Write summary.md and the plots of a run folder from its data files.")
    ren.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder, e.g. reports/latest")
    args = parser.parse_args(argv)
    from harness.report import load_run, merge, render

    try:
        if args.command == "merge":
            out = merge(args.dirs, args.out)
            run = load_run(out)
            state = "complete" if run.complete else "INCOMPLETE"
            print(f"merged {len(args.dirs)} shards, {len(run.claims)} claim cells ({state}): {out / 'summary.md'}")
        else:
            render(args.run_dir)
            print(args.run_dir / "summary.md")
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
