"""Run folders: the row schema, the writer, the reader, shard merging, rendering, the matrix of runs.

Nothing in this package imports torch or transformers, so a machine without them
(a CI merge job, a laptop reading a GPU run's folder) can merge and render runs.
"""

from __future__ import annotations

from harness.report.matrix import matrix
from harness.report.merge import merge
from harness.report.render import render
from harness.report.schema import CLAIM_COLUMNS, ClaimRow, SampleRow
from harness.report.writer import Run, RunWriter, load_run, normalize, read_results

__all__ = ["CLAIM_COLUMNS", "ClaimRow", "SampleRow", "Run", "RunWriter", "load_run", "normalize",
           "read_results", "merge", "render", "matrix"]
