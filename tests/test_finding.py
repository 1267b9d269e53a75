"""Findings as folders: the Finding record's refusals, its metric table, and the engine free
of the claims suite's finding (no marker word of it in harness/, the toy exempt)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from tiny import KV_ONLY, claims_finding

from harness.errors import HarnessValueError
from harness.finding import GENERIC, Finding
from harness.metrics import METRICS, Metric, known_metrics

HARNESS = Path(__file__).resolve().parents[1] / "harness"
#: Marker words that are also ordinary words of code and prose ("return", "self", "the process",
#: "the decoding loop", "writing a file", "the runner itself"): they may appear in harness/ as
#: words, never as a string of their own (a word list).
ORDINARY = {"itself", "self", "loop", "process", "return", "writing"}


def _engine_files() -> list[Path]:
    return [p for p in HARNESS.rglob("*.py") if "toy" not in p.relative_to(HARNESS).parts]


def _offences(files: list[Path], markers: tuple[str, ...]) -> list[str]:
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for m in markers:
            if m not in ORDINARY and re.search(r"\b" + re.escape(m) + r"\b", text, re.IGNORECASE):
                found.append(f"{path.name}: word {m!r}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in markers:
                found.append(f"{path.name}:{node.lineno}: string {node.value!r}")
        if re.search(r"\bmarker_(score|rate)\b|\bMARKERS\b", text):
            found.append(f"{path.name}: the finding's metric names")
    return found


def test_no_marker_word_of_the_claims_finding_is_in_the_engine():
    markers = claims_finding().MARKERS
    assert _offences(_engine_files(), markers) == []


def test_the_marker_check_finds_a_word_list_and_a_distinctive_word(tmp_path):
    """The check can fail: a file with a marker as a string, and one with a distinctive marker
    word in a comment, are both caught; ordinary prose with 'itself' is not."""
    markers = claims_finding().MARKERS
    listed, commented, prose = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    listed.write_text('WORDS = ("self",)\n')
    commented.write_text("x = 1  # counts eigen values\n")
    prose.write_text('"""The runner returns the batch itself."""\n')
    assert len(_offences([listed], markers)) == 1
    assert len(_offences([commented], markers)) == 1
    assert _offences([prose], markers) == []


def test_the_toy_corpus_is_exempt_and_does_hold_the_markers():
    """harness/toy/ trains a subject on both registers: it must be skipped by the check, not
    pass it by accident."""
    toy = [p for p in HARNESS.rglob("*.py") if "toy" in p.relative_to(HARNESS).parts]
    assert _offences(toy, claims_finding().MARKERS)


def test_a_findings_table_is_the_generic_metrics_and_its_own():
    table = claims_finding().FINDING.metric_table()
    assert set(METRICS) < set(table) and {"marker_score", "marker_rate"} <= set(table)
    assert "marker_rate" in known_metrics()
    assert GENERIC.metric_table() == METRICS and GENERIC.metric_for("corrected") == "champion_logprob"


def test_a_finding_refuses_a_protocol_metric_it_does_not_have():
    with pytest.raises(HarnessValueError, match="protocol 'corrected' is judged on 'nope'"):
        Finding("f", Path("."), protocol_metrics={"corrected": "nope"})


def test_a_finding_metric_may_not_shadow_a_generic_one_or_another_findings():
    with pytest.raises(HarnessValueError, match="shadows the generic metric"):
        Finding("f", Path("."), metrics=(Metric("distinct_2", 0.1, "mine", lambda t, c: 0.0),))
    Finding("f1", Path("."), metrics=(Metric("test_only_rate", 0.1, "one", lambda t, c: 0.0),))
    with pytest.raises(HarnessValueError, match="declared twice, differently"):
        Finding("f2", Path("."), metrics=(Metric("test_only_rate", 0.1, "another", lambda t, c: 1.0),))


@pytest.mark.parametrize("name", ["", "a/b", 3])
def test_a_finding_needs_a_plain_name(name):
    with pytest.raises(HarnessValueError, match="finding name"):
        Finding(name, Path("."))


def test_a_finding_refuses_arms_that_are_not_interventions_and_a_missing_bank(tmp_path):
    with pytest.raises(HarnessValueError, match="expected a harness.records.Intervention"):
        Finding("f", tmp_path, arms=(KV_ONLY, "kv-only"))
    finding = Finding("f", tmp_path, bank="bank.jsonl")
    assert finding.bank_path == tmp_path / "bank.jsonl" and finding.ledger_path == tmp_path / "ledger.toml"
    with pytest.raises(HarnessValueError, match="bank.jsonl' is not a file"):
        finding.check_bank()


def test_the_steering_findings_family_is_its_number_of_claim_cells():
    """findings/steering declares its own family size; a claim added there without updating it
    would make its intervals too narrow."""
    import subprocess
    import sys

    root = HARNESS.parent
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "findings/steering"], capture_output=True, text=True, cwd=root)
    cells = [line for line in out.stdout.splitlines() if "::" in line]
    sys.path.insert(0, str(root / "findings" / "steering"))
    try:
        import steering
    finally:
        sys.path.pop(0)
    assert cells and len(cells) == steering.FINDING.family_size, out.stdout[-500:]
