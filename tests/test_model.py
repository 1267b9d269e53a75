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
