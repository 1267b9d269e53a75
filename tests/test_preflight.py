"""Refusals at the start of a run: one line, exit code 4, before any weights load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers

from harness.toy import TOY_MODEL_DIR

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


@pytest.mark.skipif(not transformers.__version__.startswith("5"), reason="transformers 4.x's Phi-3 config takes LongRoPE only as {type, short_factor, long_factor}; these configs are written the 5.x way")
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


@pytest.mark.parametrize(("cut", "match"), [
    (0.5, "*model.safetensors: not a whole safetensors file (its tensors need * bytes, the file has *)*"),
    (None, "*model.safetensors: not a whole safetensors file (unreadable header*"),
])
def test_a_cut_or_corrupt_safetensors_file(pytester, loads, tmp_path, cut, match):
    folder = tmp_path / "damaged"
    shutil.copytree(TOY_MODEL_DIR, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * cut)] if cut else data[:8] + b"{not json" + data[17:])
    refused(pytester, loads, "--model", str(folder), match=match)


def test_an_embedding_smaller_than_the_tokenizers_ids(pytester, loads, tmp_path):
    folder = tmp_path / "small-vocab"
    shutil.copytree(TOY_MODEL_DIR, folder)
    from harness.prompts import default_pairs

    tokenizer = transformers.AutoTokenizer.from_pretrained(TOY_MODEL_DIR)
    top = max(max(tokenizer(getattr(p, r)).input_ids) for p in default_pairs() for r in ("baseline", "champion"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": top}))  # one row short of the top id
    refused(pytester, loads, "--model", str(folder),
            match=f"the bundled bank: pair * with token id {top}; the model's embedding has vocab_size "
                  f"{top} rows (ids 0..{top - 1}); the tokenizer does not match the weights*")


def test_seeds_beyond_memory_are_refused_before_the_run(pytester, loads):
    from harness.preflight import available_memory

    if available_memory() is None:
        pytest.skip("no /proc/meminfo here")
    refused(pytester, loads, "--seeds", "10000000",
            match="--seeds 10000000: * pairs x 10000000 seeds need at least * GiB for their samples, this machine "
                  "has * GiB available; expected at most about * seeds here; lower --seeds (or --pairs)")


def test_the_memory_bound_refuses_just_above_what_is_available():
    from harness.preflight import PreflightError, RunOptions, check_memory, samples_bytes

    options = RunOptions(pairs=4, seeds=10, gen_tokens=24)
    need = samples_bytes(4, 10, 24)
    assert need == 4 * 10 * 6 * (12_000 + 40 * 24)
    check_memory(options, available=need)  # fits exactly: no refusal
    with pytest.raises(PreflightError, match="^--seeds 10: 4 pairs x 10 seeds need at least .*about 9 seeds here"):
        check_memory(options, available=need - 1)


def test_a_malformed_ledger(pytester, loads, tmp_path):
    ledger = tmp_path / "ledger.toml"
    ledger.write_text("this is [ not toml")
    refused(pytester, loads, "--ledger", str(ledger), match="--ledger *: unreadable ledger*")


ENTRY = ('[[verdict]]\nmodel = "m"\nsettings = "s"\nclaim = "c"\nprotocol = "corrected"\nverdict = {}\n'
         'reason = "r"\nreport = "x"\n')


@pytest.mark.parametrize(("content", "match"), [
    (ENTRY.format(3), "--ledger *: *verdict entry 1: verdict = 3; expected a quoted string*"),
    (ENTRY.format('"supportd"'), "--ledger *: *verdict entry 1: verdict = 'supportd'; expected one of supported, "
                                 "refuted, inconclusive, invalid*"),
])
def test_a_ledger_entry_of_the_wrong_type_or_verdict(pytester, loads, tmp_path, content, match):
    ledger = tmp_path / "ledger.toml"
    ledger.write_text(content)
    refused(pytester, loads, "--ledger", str(ledger), match=match)


def test_a_ledger_path_that_is_missing_or_a_folder_is_not_an_empty_ledger(pytester, loads, tmp_path):
    refused(pytester, loads, "--ledger", "typo.toml",
            match="--ledger 'typo.toml': no such file; expected a TOML file of known verdicts*")
    refused(pytester, loads, "--ledger", str(tmp_path), match="--ledger *: a folder; expected a TOML file*")


def test_more_pairs_than_the_bank_has_are_refused_with_its_size(pytester, loads, tmp_path):
    from harness.prompts import default_pairs

    n = len(default_pairs())
    refused(pytester, loads, "--pairs", "99999",
            match=f"--pairs 99999: the bundled toy bank has {n} pairs; expected at most {n}; pass --pairs {n}*")
    pairs = write_pairs(tmp_path / "p.jsonl", {"baseline": LONG[:200], "champion": LONG[:210]})
    refused(pytester, loads, "--prompts", str(pairs), "--pairs", "2",
            match="--pairs 2: --prompts *p.jsonl has 1 pairs; expected at most 1*")


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


def test_a_hub_id_without_a_reachable_hub_is_refused_at_once(monkeypatch):
    import time

    from harness.preflight import PreflightError, _tokenizer_and_config

    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    started = time.monotonic()
    with pytest.raises(PreflightError, match=r"^--model nobody/no-such-model: not in the local hub cache, and the "
                                             r"hub \(127\.0\.0\.1:9\) cannot be reached"):
        _tokenizer_and_config.__wrapped__("nobody/no-such-model", False)
    assert time.monotonic() - started < 10  # not the hub client's retries


def test_a_static_or_compiled_decoding_on_transformers_4_is_refused(pytester, loads, monkeypatch):
    from harness import compat

    monkeypatch.setattr(compat, "transformers_major", lambda: 4)
    for decoding in ("static", "compiled"):
        refused(pytester, loads, "--decoding", decoding,
                match=f"--decoding {decoding} needs transformers 5 (installed: *); use --decoding dynamic*")


@pytest.mark.skipif(not transformers.__version__.startswith("5"), reason="the compiler check comes after the version's")
def test_a_compiled_decoding_on_the_cpu_without_a_compiler_is_refused(pytester, loads, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    refused(pytester, loads, "--decoding", "compiled",
            match="--decoding compiled on 'cpu' needs a C++ compiler (inductor builds the decoding step with it)*")
