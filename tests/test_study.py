"""The study command: its truth, its error rates where the old rule failed, its input checks,
and the table of docs/statistics.md regenerated at the suite's family size."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.study import STUDY_DIR, TABLE_END, TABLE_START, load_pairs_file, main, render_table, study

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "statistics.md"


def _family_size() -> int:
    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    return int(ini["pytest"]["harness_family_size"])


def test_the_truth_is_the_populations_ratio_of_mean_gains():
    pop = np.array([[0.5, 0.0, 1.0], [0.1, 0.0, 0.2], [0.4, 0.2, 0.6]])
    res = study(pop, n=3, family=2, runs=3)
    assert res.truth == pytest.approx((0.5 + 0.1 + 0.2) / (1.0 + 0.2 + 0.4))


def test_on_the_reference_zero_inflated_cell_the_old_rule_errs_and_the_betting_rule_does_not():
    pop = load_pairs_file(STUDY_DIR / "partial-kv-prefix-8.corrected.jsonl")
    assert np.mean(pop[:, 0] == pop[:, 1]) > 0.75  # 79% of pairs: arm = baseline
    res = study(pop, n=24, family=45, runs=20)
    assert res.fwer_t > 50  # the issue measured 99%
    assert res.fwer == 0 and res.coverage95 >= 94


def test_a_clear_effect_at_many_pairs_is_found():
    pop = load_pairs_file(STUDY_DIR / "l27-v-full-kv.corrected.jsonl")
    assert study(pop, n=200, family=45, runs=2, shift=0.25).power > 90


def test_bad_pairs_files_are_refused_with_the_line(tmp_path):
    bad = tmp_path / "f.jsonl"
    bad.write_text('{"arm": 0.1, "baseline": 0, "champion": 0.3}\n{"arm": 0.1, "champion": 0.3}\n')
    with pytest.raises(HarnessError, match="line 2"):
        load_pairs_file(bad)
    with pytest.raises(HarnessError, match="cannot be read"):
        load_pairs_file(tmp_path / "missing.jsonl")
    flat = tmp_path / "flat.jsonl"
    flat.write_text('{"arm": 0.1, "baseline": 0.3, "champion": 0.3}\n' * 3)
    with pytest.raises(HarnessError, match="gap is not positive"):
        study(load_pairs_file(flat), runs=1)


def test_the_command_prints_json_and_refuses_in_one_line(capsys):
    assert main(["study", "--scenario", "zeros", "--runs", "2", "--n", "6", "--family", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["family"] == 3 and out["n"] == 6 and 0 < out["truth"] < 1
    assert main(["study", "--pairs-file", "/nonexistent.jsonl"]) == 2
    assert capsys.readouterr().err.startswith("error: --pairs-file")
    scores = str(STUDY_DIR / "dec7-kv-about-80.original.jsonl")  # marker_score values, up to 26
    assert main(["study", "--pairs-file", scores, "--runs", "1", "--bounds", "0", "1"]) == 2
    assert "outside the bounds [0, 1] of --bounds 0 1" in capsys.readouterr().err
    assert main(["study", "--pairs-file", scores, "--runs", "1", "--metric", "distinct_2"]) == 2
    assert "outside the bounds [0, 1] of --metric distinct_2" in capsys.readouterr().err
    assert main(["study", "--pairs-file", scores, "--runs", "1", "--metric", "champion_logprob"]) == 2
    assert "not a known metric with bounds" in capsys.readouterr().err


def test_python_dash_m_harness_stats_runs_the_study():
    proc = subprocess.run([sys.executable, "-m", "harness.stats", "study", "--scenario", "normal", "--runs", "1",
                           "--n", "4", "--family", "2"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "betting rule: family-wise error" in proc.stdout


def _rows(table: str) -> dict[tuple[str, str], list[float]]:
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and re.fullmatch(r"\d+", cells[2]):
            numbers = [float(x) for x in re.findall(r"-?\d+\.?\d*", " ".join(cells[3:]))]
            out[(cells[0], cells[2])] = numbers
    return out


def test_the_docs_study_table_is_the_study_at_the_suites_family_size():
    """Regenerated here with few runs; the doc's (more runs: the command is in the doc) must
    have the same rows at the ini's family size, and agree within simulation error."""
    text = DOC.read_text()
    doc_table = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    family = _family_size()
    assert doc_table.strip().startswith(f"Family {family},")
    fresh = _rows(render_table(family=family, runs=8, runs_large=1))
    documented = _rows(doc_table)
    assert list(documented) == list(fresh)
    for key, doc in documented.items():
        # betting: fwer (above / below), coverage, power; t: fwer, coverage, power
        assert doc[0] <= 5.0 + 1.0 and doc[3] >= 94.0, key  # the rule's promise, as documented
        new = fresh[key]
        assert abs(doc[3] - new[3]) <= 6.0 and abs(doc[6] - new[6]) <= 6.0, key  # coverages
