"""Loading subjects: refusals before weights load, safetensors only, identity hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.errors import HarnessLookupError, HarnessValueError, UnsupportedModelError
from harness.model import check_device, check_dtype, load_subject
from tiny import tiny_mistral


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_folder_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(HarnessLookupError) as exc:
        load_subject(tmp_path / "no-such-model")
    assert "no such folder" in one_line(exc) and "save_pretrained" in one_line(exc)


def test_folder_with_only_pickle_weights_is_refused_unless_allowed(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(HarnessValueError) as exc:
        load_subject(tmp_path)
    text = one_line(exc)
    assert "pytorch_model.bin" in text and "--allow-pickle" in text


def test_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(HarnessLookupError) as exc:
        load_subject(tmp_path)
    assert "no weights" in one_line(exc)


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(HarnessLookupError) as exc:
        load_subject(tmp_path)
    assert "config.json" in one_line(exc)


@pytest.mark.parametrize("model_type", ["falcon", "bloom", "mpt"])
def test_fused_qkv_layout_without_an_adapter_is_refused_before_weights_load(tmp_path, model_type):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    # Garbage weights: reaching the loader would raise a different error.
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UnsupportedModelError) as exc:
        load_subject(tmp_path)
    text = one_line(exc)
    assert model_type in text and "mistral" in text and "fused QKV" in text


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "phi3"])
def test_a_saved_fused_qkv_model_loads_with_its_layout(tmp_path, family):
    from tiny import save_tiny, tiny_gpt2, tiny_neox, tiny_phi3

    from harness.layouts import GPT2Layout, GPTNeoXLayout, Phi3Layout

    builder, layout = {"gpt2": (tiny_gpt2, GPT2Layout), "gpt_neox": (tiny_neox, GPTNeoXLayout),
                       "phi3": (tiny_phi3, Phi3Layout)}[family]
    subject = load_subject(save_tiny(builder, tmp_path / family))
    assert type(subject.layout) is layout and subject.n_layers == 4
    assert subject.tokenizer.bos_token_id == 1


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "", "CPU"])
def test_bad_device_is_refused(device):
    with pytest.raises(HarnessValueError, match="--device"):
        check_device(device)


def test_bad_dtype_is_refused():
    with pytest.raises(HarnessValueError, match="float32, bfloat16, float16"):
        check_dtype("fp8")


def test_saved_random_model_loads_and_its_identity_follows_its_weights(tmp_path):
    from harness.toy import TOY_MODEL_DIR
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOY_MODEL_DIR)
    model, _ = tiny_mistral(seed=0, vocab_size=len(tokenizer))
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        model, _ = tiny_mistral(seed=seed, vocab_size=len(tokenizer))
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    a, a_again, b = (load_subject(tmp_path / n) for n in ("a", "a", "b"))
    assert a.n_layers == 4 and a.name == "a"
    assert a.identity == a_again.identity
    assert a.weights_hash != b.weights_hash
    assert a.tokenizer_hash == b.tokenizer_hash
    assert not a.model.training


def test_toy_is_the_default_subject():
    subject = load_subject()
    assert subject.name == "toy"
    assert subject.n_layers == 32
    assert subject.identity.startswith("toy@")


def test_the_toy_by_its_own_path_has_the_toys_identity(monkeypatch):
    """``--model harness/toy/model`` is the toy: the ledger's entries for it apply."""
    from harness.toy import TOY_MODEL_DIR

    monkeypatch.chdir(TOY_MODEL_DIR.parents[2])
    assert Path("harness/toy/model").is_dir()
    by_path = load_subject("harness/toy/model")
    assert by_path.name == "toy" and by_path.identity == load_subject().identity


def test_weights_that_disagree_with_their_config_are_one_error_not_a_traceback(tmp_path):
    import shutil

    from harness.toy import TOY_MODEL_DIR

    folder = tmp_path / "mismatch"
    shutil.copytree(TOY_MODEL_DIR, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": config["intermediate_size"] + 8}))
    with pytest.raises(HarnessValueError, match=r"^--model .*mismatch: cannot load its weights: ") as info:
        load_subject(str(folder))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- --device auto
_WITHOUT_ACCELERATE = """
import sys
sys.modules["accelerate"] = None  # unimportable, as on a machine without it
from harness.errors import PreflightError
from harness.preflight import RunOptions, preflight
from harness.model import load_subject
for check in (lambda: preflight(RunOptions(device="auto")), lambda: load_subject(device="auto")):
    try:
        check()
    except PreflightError as exc:
        print("refused:", exc)
import transformers
print("weights loaded:", any(isinstance(m, transformers.PreTrainedModel) for m in __import__("gc").get_objects()))
from harness.bench import main
print("rc", main(["--device", "auto"]))
"""


def test_device_auto_without_accelerate_is_refused_in_one_line_naming_the_install(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _WITHOUT_ACCELERATE], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    lines = out.stdout.splitlines()
    refused = [line for line in lines if line.startswith("refused:")]
    assert len(refused) == 2, out.stdout + out.stderr  # preflight and load_subject, one line each
    for line in refused:
        assert "--device auto" in line and "accelerate" in line and "pip install 'claims-harness[auto]'" in line
    assert "weights loaded: False" in lines  # refused before any weights load
    assert lines[-1] == "rc 2"  # python -m harness.bench: one line, exit 2
    assert out.stderr.strip().count("\n") == 0 and "--device auto" in out.stderr


@pytest.fixture(scope="module")
def offloaded(tmp_path_factory):
    """A tiny model saved to a folder, and loaded with --device auto under a CPU budget that
    leaves part of it on disk (accelerate's offload hooks move it in per call)."""
    pytest.importorskip("accelerate")
    from tiny import save_tiny, tiny_llama_gqa

    folder = save_tiny(tiny_llama_gqa, tmp_path_factory.mktemp("model"))
    subject = load_subject(folder, device="auto", max_memory={"cpu": 150_000},
                           offload_folder=tmp_path_factory.mktemp("offload"))
    return folder, subject


def test_device_auto_spreads_the_model_and_records_where_each_part_lives(offloaded):
    from harness.model import device_map, input_device

    folder, subject = offloaded
    placed = device_map(subject.model)
    assert {"cpu", "disk"} <= set(placed.values()), placed
    assert any(p.device.type == "meta" for p in subject.model.parameters())  # really offloaded
    assert input_device(subject.model).type == "cpu"
    assert device_map(load_subject(folder).model) == {"(whole model)": "cpu"}
    with pytest.raises(HarnessValueError, match="device='auto'"):
        load_subject(folder, max_memory={"cpu": 1})


def test_offloaded_model_keeps_the_identities_and_the_tokens_of_the_model_on_one_device(offloaded):
    from harness.generate import CORRECTED, ORIGINAL, Runner
    from harness.plugin import _hooks_on
    from harness.prompts import Pair, default_pairs, spread
    from harness.records import Intervention
    from tiny import KV_ONLY, L27_V

    folder, subject = offloaded
    pairs = spread(default_pairs(), 3)
    seeds = {p.id: p.seeds(3) for p in pairs}
    spread_runner, plain_runner = Runner(subject), Runner(load_subject(folder))
    for protocol in (ORIGINAL.with_(gen_tokens=6), CORRECTED.with_(gen_tokens=6)):
        for arm in ("baseline", L27_V):  # layer 27 maps to the last layer: on disk
            got = spread_runner.run_many(pairs, arm, protocol, seeds)
            want = plain_runner.run_many(pairs, arm, protocol, seeds)
            assert [r.tokens for r in got] == [r.tokens for r in want], (protocol.name, str(arm))
            assert [r.patch_counts for r in got] == [r.patch_counts for r in want]
    protocol = CORRECTED.with_(gen_tokens=6, decode_source="aligned")
    same = Pair("self", pairs[0].baseline, pairs[0].baseline)
    baseline = spread_runner.run(same, "baseline", protocol, (0, 1, 2)).tokens
    assert spread_runner.run(same, KV_ONLY, protocol, (0, 1, 2)).tokens == baseline  # self-splice
    own = spread_runner.run(same, Intervention("own", patches=("v_proj@27", "resid_pre@18")), protocol, (0, 1, 2))
    assert own.tokens == baseline  # a patch with the model's own activations is a no-op
    assert all(c.calls > 0 for c in own.patch_counts)
    assert _hooks_on(subject.model) == []  # ours all removed; accelerate's are not torch hooks
    assert hasattr(subject.model.model.layers[-1], "_hf_hook")  # and accelerate's are still in place


def test_a_model_wholly_offloaded_to_disk_runs_where_accelerate_executes_it(offloaded, tmp_path):
    """Every parameter sits on 'meta' (weights on disk): inputs go to the execution device."""
    from harness.generate import CORRECTED, Runner
    from harness.model import device_map
    from harness.prompts import default_pairs, spread
    from tiny import L27_V

    folder, _ = offloaded
    subject = load_subject(folder, device="auto", max_memory={"cpu": 100_000}, offload_folder=tmp_path)
    assert device_map(subject.model) == {"(whole model)": "disk"}
    assert all(p.device.type == "meta" for p in subject.model.parameters())
    pairs = spread(default_pairs(), 2)
    seeds = {p.id: p.seeds(2) for p in pairs}
    protocol = CORRECTED.with_(gen_tokens=4)
    got = Runner(subject).run_many(pairs, L27_V, protocol, seeds)
    assert [r.tokens for r in got] == [r.tokens for r in Runner(load_subject(folder)).run_many(pairs, L27_V, protocol, seeds)]
