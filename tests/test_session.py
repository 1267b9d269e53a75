"""The run's session: with ``--until-decided``, undecided cells get more pairs, in a fixed order,
up to the budget; decided, invalid and t-rule cells keep the run's pairs."""

from __future__ import annotations

import json

import pytest
from tiny import SMALL

from harness.prompts import default_pairs, spread
from harness.report import load_run

pytest_plugins = ["pytester"]

FINDING = '''
from pathlib import Path

from harness.finding import Finding
from harness.metrics import Metric


def champion_word_share(text, champion_prompt):
    words = text.lower().split()
    vocabulary = set(champion_prompt.lower().split())
    return sum(w in vocabulary for w in words) / len(words) if words else 0.0


FINDING = Finding(name="seq", folder=Path(__file__).parent, source_file="notes.md",
                  metrics=(Metric("word_share", 0.02, "champion words", champion_word_share, (0.0, 1.0)),),
                  protocol_metrics={"original": "word_share", "corrected": "word_share"}, bank=None)
'''

CLAIMS = '''
import pytest
from harness.claims import Claim, Efficiency, GeometryShift, Source
from harness.records import Intervention

KV = Intervention("kv-only", kv_layers="all")
SRC = Source("notes.md", "quote")
# At most 6 pairs and a family of 3, no bounded test can decide "above 0.5": the cell grows.
GROWS = Claim(id="grows", statement="s", source=SRC, measure=Efficiency(KV), threshold=0.5, direction="above")
# A t interval (no guarantee): looking again would inflate its error, so it is judged once.
T_RULE = Claim(id="t-rule", statement="s", source=SRC, measure=GeometryShift(KV), threshold=0.0,
               direction="above")
# Under the original protocol the V patch never writes: invalid at once, no more pairs.
INVALID = Claim(id="invalid", statement="s", source=SRC,
                measure=Efficiency(Intervention("kv+v", kv_layers="all", patches=("v_proj@27",))),
                threshold=0.5, direction="above")


def test_grows(verify):
    verify(GROWS, "corrected")


def test_t_rule(verify):
    verify(T_RULE, "corrected")


def test_invalid(verify):
    verify(INVALID, "original")
'''


def _project(pytester: pytest.Pytester) -> None:
    folder = pytester.path / "seq"
    folder.mkdir()
    (folder / "conftest.py").write_text(FINDING)
    (folder / "test_seq.py").write_text(CLAIMS)


def test_until_decided_grows_only_undecided_bounded_cells_in_a_fixed_order_up_to_the_budget(pytester, tmp_path):
    _project(pytester)
    report = tmp_path / "r"
    result = pytester.runpytest_subprocess("seq", *SMALL, "--until-decided", "6", "--report-dir", str(report))
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()[-3000:]
    run = load_run(report)
    rows = {r.claim: r for r in run.claims}
    assert rows["grows"].verdict == "inconclusive" and rows["grows"].n_pairs == 6
    assert "sequential" in rows["grows"].interval_method and "sequential betting" in rows["grows"].reason
    assert rows["t-rule"].verdict == "inconclusive" and rows["t-rule"].n_pairs == 2
    assert "t" in rows["t-rule"].interval_method.split()
    assert rows["invalid"].verdict == "invalid" and rows["invalid"].n_pairs == 2
    assert all("until_decided=6" in r.settings for r in rows.values())

    # The pairs came as the run's two, then two batches of two spread over the pairs left.
    bank = default_pairs()
    first = spread(bank, 2)
    second = spread([p for p in bank if p not in first], 2)
    third = spread([p for p in bank if p not in first + second], 2)
    expected = {p.id for p in first + second + third}
    grown = {json.loads(line)["pair"] for line in (report / "results.jsonl").read_text().splitlines()
             if json.loads(line)["arm"] == "kv-only" and json.loads(line)["protocol"] == "corrected"}
    assert grown == expected and len(expected) == 6


@pytest.mark.parametrize("budget", ["1", "100000"])
def test_an_until_decided_budget_outside_the_run_and_the_bank_is_refused_in_one_line(pytester, budget):
    _project(pytester)
    result = pytester.runpytest_subprocess("seq", *SMALL, "--until-decided", budget)
    assert result.ret != 0
    out = (result.stdout.str() + result.stderr.str()).strip().splitlines()
    assert len(out) <= 2 and any(f"--until-decided {budget}: expected a budget in pairs from the run's 2" in x
                                 for x in out)
