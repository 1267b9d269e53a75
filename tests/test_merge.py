"""Merging shard run folders: equal to a single run, refusals, completeness, the command line.

Run folders are built by hand with the real RunWriter (no model is loaded).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessLookupError, HarnessValueError
from harness.report import merge, normalize
from harness.report.__main__ import main
from test_render import PNG_MAGIC, PROVENANCE, all_cells, cell, write_run


def _shards(tmp_path: Path, cells: list, n: int = 2, complete: bool = True) -> list[Path]:
    """Deal the cells round-robin to n shards, each with its own run id (as separate runs have)."""
    return [write_run(tmp_path / f"shard-{i}", cells[i::n], complete=complete,
                      provenance=dict(PROVENANCE, run_id=f"run-{i}", device=f"cuda:{i}", shard=f"{i + 1}/{n}"))
            for i in range(n)]


def _summary(path: Path) -> dict[str, Any]:
    return json.loads((path / "summary.json").read_text(encoding="utf-8"))


def test_merged_shards_equal_a_single_run(tmp_path: Path) -> None:
    cells = all_cells()
    single = write_run(tmp_path / "single", list(reversed(cells)))  # another order of arrival
    normalize(single)
    shards = _shards(tmp_path, cells, n=3)
    shard_rows = sum(len((s / "results.jsonl").read_text().splitlines()) for s in shards)
    out = merge(shards, tmp_path / "merged")
    assert out == tmp_path / "merged"
    for name in ("results.jsonl", "claims.csv"):
        assert (out / name).read_bytes() == (single / name).read_bytes(), name
    merged_rows = len((out / "results.jsonl").read_text().splitlines())
    assert merged_rows < shard_rows  # baseline and champion rows were in every shard, once now
    merged, one = _summary(out), _summary(single)
    assert merged["claims"] == one["claims"] and merged["complete"] is True
    assert merged["shards"] == ["shard-0", "shard-1", "shard-2"] and "missing_shards" not in merged
    assert merged["provenance"]["model"] == "toy" and merged["provenance"]["seeds"] == [0, 1]
    assert merged["provenance"]["run_id"] == ["run-0", "run-1", "run-2"]  # differs: kept per shard
    assert "result_conflicts" not in merged
    assert (out / "summary.md").read_text().startswith("# Claims report")
    assert (out / "efficiency.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "layer_sweep.png").read_bytes()[:8] == PNG_MAGIC


def test_a_missing_shard_is_visible(tmp_path: Path) -> None:
    """The equality above can fail: leaving out a shard changes both files."""
    cells = all_cells(sweep=False)
    single = write_run(tmp_path / "single", cells)
    normalize(single)
    shards = _shards(tmp_path, cells, n=2)
    out = merge(shards[:1], tmp_path / "merged")
    assert (out / "claims.csv").read_bytes() != (single / "claims.csv").read_bytes()
    assert (out / "results.jsonl").read_bytes() != (single / "results.jsonl").read_bytes()


def test_normalize_sorts_dedupes_and_is_idempotent(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", list(reversed(all_cells(sweep=False))))
    path = run / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*reversed(lines), lines[0]]) + "\n")  # out of order, one duplicate
    normalize(run)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    keys = [(r["protocol"], r["pair"], r["arm"], r["seed"]) for r in rows]
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    assert rows[0]["echo_rate"] is None  # NaN stays null
    before = path.read_bytes()
    normalize(run)
    assert path.read_bytes() == before
    assert not list(run.glob("*.tmp"))
    normalize(tmp_path / "nothing-here")  # no results.jsonl: nothing to do


def test_merged_run_is_complete_only_if_every_shard_is(tmp_path: Path) -> None:
    cells = all_cells(sweep=False)
    done = write_run(tmp_path / "a", cells[:2])
    stopped = write_run(tmp_path / "b", cells[2:], complete=False)
    out = merge([done, stopped], tmp_path / "merged")
    assert _summary(out)["complete"] is False
    assert "INCOMPLETE" in (out / "summary.md").read_text()


def test_a_shard_without_a_folder_makes_the_merge_incomplete(tmp_path: Path) -> None:
    shards = _shards(tmp_path, all_cells(sweep=False), n=3)
    out = merge([shards[0], shards[2]], tmp_path / "merged")
    summary = _summary(out)
    assert summary["complete"] is False and summary["missing_shards"] == ["2/3"]
    assert "Shards with no report folder: 2/3" in (out / "summary.md").read_text()
    rerun = write_run(tmp_path / "again", all_cells(sweep=False)[:1], provenance=dict(PROVENANCE, shard="1/3"))
    with pytest.raises(HarnessValueError, match="shard 1/3 given twice"):
        merge([shards[0], rerun], tmp_path / "merged2")
    other = write_run(tmp_path / "other", all_cells(sweep=False)[1:2], provenance=dict(PROVENANCE, shard="2/4"))
    with pytest.raises(HarnessValueError, match="different splits"):
        merge([shards[0], other], tmp_path / "merged3")


def test_tests_without_a_row_are_collected_from_every_shard(tmp_path: Path) -> None:
    cells = all_cells(sweep=False)
    a = write_run(tmp_path / "a", cells[:2], complete=False, provenance=dict(PROVENANCE, missing=["claims/x.py::t[1]"]))
    b = write_run(tmp_path / "b", cells[2:3], complete=False, provenance=dict(PROVENANCE, missing=["claims/a.py::t"]))
    c = write_run(tmp_path / "c", cells[3:])
    out = merge([a, b, c], tmp_path / "merged")
    assert _summary(out)["provenance"]["missing"] == ["claims/a.py::t", "claims/x.py::t[1]"]
    assert "Claim tests that failed without a result (2)" in (out / "summary.md").read_text()


@pytest.mark.parametrize("field, value", [
    ("model", "other/model"), ("seeds", [0, 1, 2]), ("gen_tokens", 200), ("pairs", 6),
    ("dtype", "bfloat16"), ("weights_sha256", "beef"), ("protocols", {"original": {"temperature": 1.0}}),
])
def test_shards_that_measured_different_things_are_refused(tmp_path: Path, field: str, value: Any) -> None:
    cells = all_cells(sweep=False)
    base = dict(PROVENANCE, weights_sha256="cafe", protocols={"original": {"temperature": 0.8}})
    a = write_run(tmp_path / "a", cells[:2], provenance=base)
    b = write_run(tmp_path / "b", cells[2:], provenance={**base, field: value})
    with pytest.raises(HarnessValueError) as info:
        merge([a, b], tmp_path / "merged")
    message = str(info.value)
    assert repr(field) in message
    assert repr(base[field]) in message and repr(value) in message
    assert not (tmp_path / "merged").exists()


def test_overlapping_identical_cells_merge_once(tmp_path: Path) -> None:
    cells = all_cells(sweep=False)
    a = write_run(tmp_path / "a", cells[:3])
    b = write_run(tmp_path / "b", cells[2:])  # cells[2] in both, identical
    out = merge([a, b], tmp_path / "merged")
    assert len(_summary(out)["claims"]) == len(cells)


def test_overlapping_conflicting_cells_are_refused(tmp_path: Path) -> None:
    row, rows = cell("kv-only-fails", "original", verdict="refuted")
    other = dataclasses.replace(row, estimate=0.9, verdict="supported")
    a = write_run(tmp_path / "a", [(row, rows)])
    b = write_run(tmp_path / "b", [(other, rows)])
    with pytest.raises(HarnessValueError, match=r"kv-only-fails \[original\].*verdict.*estimate"):
        merge([a, b], tmp_path / "merged")


def test_nan_cells_in_two_shards_are_identical(tmp_path: Path) -> None:
    nan = cell("l27-v-full-kv", "original", efficiency=math.nan, low=math.nan, high=math.nan)
    a, b = write_run(tmp_path / "a", [nan]), write_run(tmp_path / "b", [nan])
    out = merge([a, b], tmp_path / "merged")
    assert _summary(out)["claims"][0]["estimate"] is None


def test_differing_sample_rows_keep_the_first_and_are_recorded(tmp_path: Path) -> None:
    row, rows = cell("kv-only-fails", "original")
    row2, rows2 = cell("kv-only-fails", "corrected")
    changed = [dataclasses.replace(r, text="different") if r.arm == "baseline" and r.seed == 0 else r for r in rows]
    a = write_run(tmp_path / "a", [(row, rows)])
    b = write_run(tmp_path / "b", [(row2, rows2), (dataclasses.replace(row, claim="kv-only-fails-2"), changed)])
    out = merge([a, b], tmp_path / "merged")
    summary = _summary(out)
    assert summary["result_conflicts"] == [["", "original", "p1", "baseline", 0], ["", "original", "p2", "baseline", 0]]
    texts = [json.loads(line)["text"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert "different" not in texts
    assert "differ between shards" in (out / "summary.md").read_text()


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", all_cells(sweep=False)[:1])
    with pytest.raises(HarnessLookupError, match="no such run folder"):
        merge([a, tmp_path / "missing"], tmp_path / "merged")
    with pytest.raises(HarnessValueError, match="also a shard"):
        merge([a], a)
    with pytest.raises(HarnessValueError, match="given twice"):
        merge([a, a], tmp_path / "merged")
    with pytest.raises(HarnessValueError, match="no shard"):
        merge([], tmp_path / "merged")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessLookupError, match="not a run folder"):
        merge([a, tmp_path / "empty"], tmp_path / "merged")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = _shards(tmp_path, all_cells(sweep=False), n=2)
    out = tmp_path / "merged"
    assert main(["merge", *map(str, shards), "--out", str(out)]) == 0
    assert "merged 2 shards, 6 claim cells (complete)" in capsys.readouterr().out
    assert (out / "summary.md").exists()
    assert main(["merge", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no such run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["merge", str(shards[0])])  # --out is required


def test_merge_render_and_matrix_work_with_torch_and_transformers_unimportable(tmp_path: Path) -> None:
    """The report package never imports torch or transformers: a CI merge job or a laptop reading
    a GPU run's folder needs neither. Every command and every module of the package is run."""
    import subprocess
    import sys

    shards = _shards(tmp_path, all_cells(sweep=False), n=2)
    m, matrix_out = str(tmp_path / "m"), str(tmp_path / "matrix")
    code = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['transformers'] = None  # any import of them fails\n"
        "import pkgutil, importlib, harness.report\n"
        "for mod in pkgutil.iter_modules(harness.report.__path__):\n"
        "    importlib.import_module('harness.report.' + mod.name)\n"
        "from harness.report.__main__ import main\n"
        f"assert main(['merge', {str(shards[0])!r}, {str(shards[1])!r}, '--out', {m!r}]) == 0\n"
        f"assert main(['render', {m!r}]) == 0\n"
        f"raise SystemExit(main(['matrix', {m!r}, '--out', {matrix_out!r}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in ("summary.md", "efficiency.png", "report.html"):
        assert (tmp_path / "m" / name).exists(), name
    assert (tmp_path / "matrix" / "matrix.md").exists() and (tmp_path / "matrix" / "matrix.png").exists()
    # The generic metric descriptions come from harness.metrics, which stays torch-free too.
    assert "`distinct_2` (floor" in (tmp_path / "m" / "summary.md").read_text()
