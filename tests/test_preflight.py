"""Refusals at the start of a run: one line, exit code 4, before any weights load."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

pytest_plugins = ["pytester"]

CLAIM_TEST = """
import pytest
from harness.claims import Claim, Efficiency, Source
from harness.records import Intervention

CLAIM = Claim(id="c", statement="s", source=Source("f", "q"),
              measure=Efficiency(Intervention("kv-only", kv_layers="all")), threshold=0.0, direction="above")

def test_claim(verify):
    verify(CLAIM, "corrected")
"""
LONG = " ".join(["the lake lies in a valley"] * 100)


@pytest.fixture
def loads(monkeypatch):
    """Counts weight loads: a refusal must come before the first."""
    calls = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", counting)
    return calls


def refused(pytester, loads, *args, match):
    pytester.makepyfile(CLAIM_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.outlines + result.errlines if line.strip()]
    assert len(lines) <= 2, "\n".join(lines)  # the refusal and nothing else: no traceback
    assert not any("Traceback" in line or "INTERNALERROR" in line for line in lines)
    result.stderr.fnmatch_lines([f"ERROR: {match}"])
    assert loads == []


def write_pairs(path, *pairs):
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it(pytester, loads):
    refused(pytester, loads, "--device", "cuda", match="--device cuda: this machine has no CUDA device*")


def test_a_cuda_index_beyond_the_count(pytester, loads, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    refused(pytester, loads, "--device", "cuda:3",
            match="--device cuda:3: this machine has 2 CUDA device(s), cuda:0..cuda:1*")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_where_it_is_not_available(pytester, loads):
    refused(pytester, loads, "--device", "mps", match="--device mps: the MPS backend is not available*")


def test_a_prompt_shorter_than_the_window_in_the_subjects_tokens(pytester, loads, tmp_path):
    pairs = write_pairs(tmp_path / "p.jsonl", {"id": "ok", "baseline": LONG[:200], "champion": LONG[:200]},
                        {"id": "tiny", "baseline": LONG[:200], "champion": "the loop returns"})
    refused(pytester, loads, "--prompts", str(pairs),
            match="--prompts *: pair 'tiny' has a champion of 4 tokens; expected at least the patch "
                  "window of 16 tokens*")


def test_prompts_and_generation_beyond_the_models_positions(pytester, loads, tmp_path):
    pairs = write_pairs(tmp_path / "p.jsonl", {"id": "long", "baseline": LONG, "champion": LONG})
    refused(pytester, loads, "--prompts", str(pairs),
            match="*pair 'long' has a prompt of 601 tokens, plus 24 generated, 626 positions; the model "
                  "has max_position_embeddings 512*")


def test_gpt2_positions_are_its_n_positions(pytester, loads, tmp_path):
    from tiny import save_tiny, tiny_gpt2

    folder = save_tiny(tiny_gpt2, tmp_path / "gpt2", n_positions=64)
    refused(pytester, loads, "--model", str(folder),
            match="*pair * has a prompt of * tokens, plus 24 generated, * positions; the model has "
                  "n_positions 64*")


def test_longrope_positions_beyond_its_switch_to_the_long_factors(pytester, loads, tmp_path):
    import shutil

    from harness.toy import TOY_MODEL_DIR

    # The refusal needs the config and the tokenizer only (no weights load): the toy's tokenizer
    # beside a Phi-3 config with LongRoPE switching at 32 positions.
    folder = tmp_path / "phi3"
    shutil.copytree(TOY_MODEL_DIR, folder)
    rope = {"rope_type": "longrope", "short_factor": [1.0] * 6, "long_factor": [4.0] * 6}
    transformers.Phi3Config(hidden_size=64, num_attention_heads=4, partial_rotary_factor=0.75, rope_scaling=rope,
                            original_max_position_embeddings=32, max_position_embeddings=128).save_pretrained(folder)
    refused(pytester, loads, "--model", str(folder),
            match="*pair *: rope_type 'longrope': * positions exceed original_max_position_embeddings 32, *"
                  "total at most 32 positions")


def test_a_malformed_ledger(pytester, loads, tmp_path):
    ledger = tmp_path / "ledger.toml"
    ledger.write_text("this is [ not toml")
    refused(pytester, loads, "--ledger", str(ledger), match="--ledger *: unreadable ledger*")


def test_a_report_dir_that_is_a_file(pytester, loads, tmp_path):
    (tmp_path / "afile").write_text("")
    refused(pytester, loads, "--report-dir", str(tmp_path / "afile"),
            match="--report-dir *afile: a file of that name exists*")


def test_a_report_dir_that_cannot_be_created(pytester, loads, tmp_path):
    (tmp_path / "afile").write_text("")
    refused(pytester, loads, "--report-dir", str(tmp_path / "afile" / "below"),
            match="--report-dir *below: cannot write there*")


def test_a_generation_length_beyond_the_bound_needs_allow_long(pytester, loads):
    refused(pytester, loads, "--gen-tokens", "5000", match="--gen-tokens 5000: expected at most 1024*--allow-long*")


def test_a_report_dir_probe_leaves_nothing_behind(pytester, tmp_path):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    target = tmp_path / "new" / "deeper"
    assert pytester.runpytest("-p", "no:cacheprovider", "--report-dir", str(target)).ret == 0
    assert not (tmp_path / "new").exists()
