"""End to end on the families beyond the toy's: ``pytest claims/... --model DIR`` gives verdicts.

Each family's tiny random model is saved with ``save_pretrained`` beside the toy's tokenizer,
then a claims file runs on it in a subprocess, as a user would run it. Random weights give
no champion-baseline gap, so most verdicts are ``invalid`` (gap floor): what is checked is
that every cell has a verdict row (no refusal, no error), that the corrected protocol's
``v_proj`` and ``resid_pre`` patches changed values in the fused model, and that the report
states the alignment the corrected protocol uses on absolute positions.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import family_builder, save_tiny, tiny_gpt2, tiny_neox, tiny_phi3

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"gpt2": tiny_gpt2, "gpt_neox": tiny_neox, "phi3": tiny_phi3}
# Three more kinds, end to end (the others' identities run in process, in tests/test_layouts_*.py):
# per-layer-type rope with a sliding window that binds (Gemma 3, window 8), mixture of experts
# (Mixtral), learned positions with an offset and an inner decoder stack (OPT).
FAMILIES.update({name: family_builder(name) for name in ("gemma3_text", "mixtral", "opt")})
OVERRIDES = {"gemma3_text": {"sliding_window": 8}}
VERDICTS = {"supported", "refuted", "inconclusive", "invalid"}
# Full KV splices, a fused v_proj patch and a resid_pre patch: the machinery every claim uses.
CLAIMS_FILE = "claims/test_transfer.py"


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_claims_run_on_a_saved_model_of_each_family_gives_verdicts(family: str, tmp_path: Path) -> None:
    folder = save_tiny(FAMILIES[family], tmp_path / family, **OVERRIDES.get(family, {}))
    assert json.loads((folder / "config.json").read_text())["model_type"] == family
    report = tmp_path / "report"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", CLAIMS_FILE, "-p", "no:cacheprovider", "-q", "--model", str(folder),
         "--pairs", "2", "--seeds", "2", "--gen-tokens", "6", "--report-dir", str(report)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )
    tail = (out.stdout + out.stderr)[-3000:]
    # 0: every verdict as the ledger expects, 1: some differ (both are verdicts); 4 would be
    # a pre-flight refusal, 2/3 an interrupted or broken run.
    assert out.returncode in (0, 1), tail
    assert " error" not in out.stdout.splitlines()[-1], tail
    summary = json.loads((report / "summary.json").read_text())
    assert summary["complete"] is True, tail  # every collected cell finished with a row
    with (report / "claims.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {r["verdict"] for r in rows} <= VERDICTS, tail
    patched = [r for r in rows if r["protocol"] == "corrected" and "v_proj@27" in r["sites"]]
    assert patched and all(int(r["changed_prefill"]) > 0 and int(r["changed_decode"]) > 0 for r in patched)
    protocols = summary["provenance"]["protocols"]
    assert protocols["corrected"]["align_absolute_positions"] == "left"
    assert protocols["corrected"]["align"] == "right-rerotated"
