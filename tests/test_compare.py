"""python -m harness.report compare: two runs on different data, contradictions between them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.report.__main__ import main
from harness.report.compare import compare, compare_rows, comparison_text
from test_render import cell, claim_row, write_run


def _rows(verdicts: dict[tuple[str, str], str]):
    return [claim_row(claim, protocol, verdict=v) for (claim, protocol), v in verdicts.items()]


A = {("kv-only-fails", "original"): "supported", ("kv-only-fails", "corrected"): "refuted",
     ("l27-v-full-kv", "corrected"): "supported", ("rv-contraction", "any"): "inconclusive",
     ("relay-chain", "corrected"): "invalid", ("only-a", "original"): "supported"}
B = {("kv-only-fails", "original"): "refuted", ("kv-only-fails", "corrected"): "refuted",
     ("l27-v-full-kv", "corrected"): "inconclusive", ("rv-contraction", "any"): "refuted",
     ("relay-chain", "corrected"): "invalid", ("only-b", "corrected"): "refuted"}


def test_supported_against_refuted_is_a_contradiction_and_decisive_against_undecided_is_not() -> None:
    c = compare_rows(_rows(A), _rows(B))
    assert [(x.claim, x.protocol, x.verdict_a, x.verdict_b) for x in c.contradictions] == \
        [("kv-only-fails", "original", "supported", "refuted")]
    assert [(x.claim, x.protocol) for x in c.disagreements] == \
        [("l27-v-full-kv", "corrected"), ("rv-contraction", "any")]
    assert c.same == 2 and c.shared == 5  # refuted/refuted and invalid/invalid
    assert c.only_a == (("only-a", "original"),) and c.only_b == (("only-b", "corrected"),)
    assert c.counts_a == {"supported": 3, "refuted": 1, "inconclusive": 1, "invalid": 1}
    # Symmetric: swapping the runs swaps the sides, not the findings.
    swapped = compare_rows(_rows(B), _rows(A))
    assert [(x.verdict_a, x.verdict_b) for x in swapped.contradictions] == [("refuted", "supported")]
    assert swapped.same == c.same and len(swapped.disagreements) == len(c.disagreements)


def test_cells_are_matched_by_claim_and_protocol_not_by_position() -> None:
    a = _rows({("x", "original"): "supported", ("x", "corrected"): "refuted"})
    b = list(reversed(_rows({("x", "original"): "supported", ("x", "corrected"): "refuted"})))
    c = compare_rows(a, b)
    assert c.same == 2 and not c.contradictions and not c.disagreements


def test_the_text_names_each_differing_cell_and_the_counts() -> None:
    text = comparison_text(compare_rows(_rows(A), _rows(B), "half-a", "half-b"))
    assert "A: half-a: 4 decided of 6 (3 supported, 1 refuted, 1 inconclusive, 1 invalid)" in text
    assert "5 cells in both: 2 same verdict, 2 decisive in one run only, 1 supported-vs-refuted" in text
    assert "contradiction: kv-only-fails[original]: A supported, B refuted" in text
    assert "disagreement: rv-contraction[any]: A inconclusive, B refuted" in text
    assert "only in B: only-b[corrected]" in text


def test_the_command_reads_two_run_folders_and_exits_1_on_a_contradiction(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def folder(name: str, verdicts: dict[tuple[str, str], str]) -> Path:
        return write_run(tmp_path / name, [cell(k[0], k[1], verdict=v) for k, v in verdicts.items()])

    a, b = folder("a", A), folder("b", B)
    assert compare(a, b).contradictions[0].claim == "kv-only-fails"
    assert main(["compare", str(a), str(b)]) == 1
    assert "1 supported-vs-refuted contradictions" in capsys.readouterr().out
    agreeing = folder("c", {k: v for k, v in B.items() if k != ("kv-only-fails", "original")})
    assert main(["compare", str(a), str(agreeing), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["contradictions"] == [] and data["shared"] == 4


def test_a_folder_that_is_not_a_run_is_refused_in_one_line(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    a = write_run(tmp_path / "a", [cell("x", "original", verdict="supported")])
    assert main(["compare", str(a), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run folder" in err
