"""The cross-model matrix: runs of two models side by side, refused when their claim rules differ."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.errors import HarnessValueError
from harness.report.__main__ import main
from harness.report.matrix import matrix, parse_settings
from test_render import PNG_MAGIC, PROVENANCE, cell, write_run

SETTINGS = "dtype={dtype} family=35 pairs=24 prompts=56a06198f59d rule={rule} seeds=6 tokens=24"


def _run(path: Path, model: str, identity: str, dtype: str = "float32", rule: int = 2, family: int = 35,
         shift: float = 0.0, only: tuple[str, ...] = ()) -> Path:
    """A run folder of one model, written by the real RunWriter."""
    cells = []
    for claim, protocol, eff, verdict in (("kv-only-fails", "corrected", 1.01, "refuted"),
                                          ("kv-only-fails", "original", 1.07, "refuted"),
                                          ("l27-v-full-kv", "corrected", 0.88, "supported"),
                                          ("rv-contraction", "any", 0.14, "refuted")):
        if only and claim not in only:
            continue
        row, samples = cell(claim, protocol, efficiency=eff + shift, low=eff + shift - 0.1,
                            high=eff + shift + 0.1, verdict=verdict if not shift else "inconclusive",
                            kind_rv=claim.startswith("rv"))
        row = dataclasses.replace(row, model=identity, family_size=family,
                                  settings=SETTINGS.format(dtype=dtype, rule=rule))
        cells.append((row, samples))
    return write_run(path, cells, provenance=dict(PROVENANCE, model=model, dtype=dtype))


def _table(md: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]


def test_two_models_side_by_side_as_markdown_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toy = _run(tmp_path / "toy", "toy", "toy@3a50b707650b")
    llama = _run(tmp_path / "llama", "tiny-llama", "tiny-llama@0123456789ab", shift=-0.5,
                 only=("kv-only-fails", "rv-contraction"))
    assert main(["matrix", str(toy), str(llama), "--out", str(tmp_path / "m")]) == 0
    assert "matrix of 2 runs" in capsys.readouterr().out
    md = (tmp_path / "m" / "matrix.md").read_text()
    table = _table(md)
    assert table[0] == ["claim", "protocol", "toy", "tiny-llama", "agree"]
    rows = {(r[0], r[1]): r[2:] for r in table[1:]}  # (the separator row starts with |-)
    assert len(rows) == 4
    assert rows[("kv-only-fails", "corrected")] == ["refuted 1.01 [0.91, 1.11]", "inconclusive 0.51 [0.41, 0.61]",
                                                    "no"]
    assert rows[("l27-v-full-kv", "corrected")] == ["supported 0.88 [0.78, 0.98]", "not run", "-"]
    assert "`toy@3a50b707650b`" in md and "`tiny-llama@0123456789ab`" in md
    assert "family-wise level of 35 cells under claim rule 2" in md
    png = (tmp_path / "m" / "matrix.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 10_000


def test_one_model_in_two_dtypes_gets_two_labelled_columns(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", "toy", "toy@3a50", dtype="float32")
    b = _run(tmp_path / "b", "toy", "toy@3a50", dtype="bfloat16")
    md = (matrix([a, b], tmp_path / "m") / "matrix.md").read_text()
    assert _table(md)[0][2:4] == ["toy (float32)", "toy (bfloat16)"]
    assert "Settings that differ" not in md  # dtype is the column's label, not a warning


@pytest.mark.parametrize("other, what", [(dict(rule=1), "claim rule 2"), (dict(family=27), "family size 35")])
def test_runs_made_with_different_claim_rules_are_refused_naming_them(tmp_path: Path, other, what) -> None:
    a = _run(tmp_path / "toy", "toy", "toy@3a50")
    b = _run(tmp_path / "old", "tiny-llama", "tiny-llama@0123", **other)
    with pytest.raises(HarnessValueError, match="different claim rules") as refused:
        matrix([a, b], tmp_path / "m")
    message = str(refused.value)
    assert what in message and str(a) in message and str(b) in message and "\n" not in message
    assert not (tmp_path / "m").exists()


def test_settings_parse_and_a_folder_without_claims_is_refused(tmp_path: Path) -> None:
    assert parse_settings(SETTINGS.format(dtype="float32", rule=2))["rule"] == "2"
    empty = tmp_path / "empty"
    from harness.report import RunWriter

    RunWriter(empty, {}).close(complete=False, render=False)
    with pytest.raises(HarnessValueError, match="no claim rows"):
        matrix([empty], tmp_path / "m")
