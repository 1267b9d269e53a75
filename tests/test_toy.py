"""Tests of the embedded toy model: corpus, tokenizer, shipped weights, behaviour, trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import claims_finding

import harness
from harness.toy import TOY_MODEL_DIR
from harness.toy import corpus

# The toy is a subject for the claims suite's finding: its registers are judged by that
# finding's markers (the engine has none).
MARKERS, marker_rate = claims_finding().MARKERS, claims_finding().marker_rate

# ----------------------------------------------------------------- corpus ---


def test_corpus_is_deterministic_and_seeded() -> None:
    a, b, c = (list(corpus.documents(seed, 40)) for seed in (1, 1, 2))
    assert a == b
    assert a != c
    assert {r for r, _ in a} == set(corpus.REGISTERS)


def test_factual_register_has_no_marker_even_as_substring() -> None:
    vocab = corpus.register_vocabulary("fact")
    assert not [(w, m) for w in vocab for m in MARKERS if m in w]
    # Multi-word markers and words that touch across a space are only visible in text.
    text = " ".join(t for r, t in corpus.documents(3, 400) if r == "fact").lower()
    assert not [m for m in MARKERS if m in text]
    # ... and a marker word would have been caught: the check can fail.
    assert "self" in " ".join(t for r, t in corpus.documents(3, 400) if r == "self")


def test_self_register_marker_rate(toy_tokenizer) -> None:
    # Scored as the model's continuations are: decoded by the toy tokenizer.
    texts = [t for r, t in corpus.documents(4, 300) if r == "self"]
    decoded = toy_tokenizer.batch_decode(toy_tokenizer(texts)["input_ids"], skip_special_tokens=True)
    rate = marker_rate(" ".join(decoded))
    assert 0.3 <= rate <= 0.4, rate


def test_documents_are_several_sentences_and_single_register() -> None:
    for register, text in corpus.documents(5, 60):
        assert text.count(".") >= 6
        has_marker = any(m in text.lower() for m in MARKERS)
        assert has_marker == (register == "self")


# --------------------------------------------------------- tokenizer/model ---


@pytest.fixture(scope="module")
def toy_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOY_MODEL_DIR)


@pytest.fixture(scope="module")
def toy_model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TOY_MODEL_DIR).eval()


def test_toy_folder_is_inside_the_package() -> None:
    assert TOY_MODEL_DIR == Path(harness.__file__).resolve().parent / "toy" / "model"
    names = {p.name for p in TOY_MODEL_DIR.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors",
            "tokenizer.json", "tokenizer_config.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]


def test_importing_toy_does_not_import_torch() -> None:
    code = "import sys, harness.toy; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_loads_offline_from_the_installed_package(tmp_path: Path) -> None:
    # A fresh interpreter, outside the source tree, with the hub switched off.
    code = (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "from harness.toy import TOY_MODEL_DIR\n"
        "m = AutoModelForCausalLM.from_pretrained(TOY_MODEL_DIR)\n"
        "t = AutoTokenizer.from_pretrained(TOY_MODEL_DIR)\n"
        "print(type(m).__name__, m.config.num_hidden_layers, t('the loop')['input_ids'][0])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["MistralForCausalLM", "32", "1"]


def test_architecture(toy_model) -> None:
    cfg = toy_model.config
    assert type(toy_model).__name__ == "MistralForCausalLM"
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (32, 4, 2)
    assert (cfg.hidden_size, cfg.head_dim) == (64, 16)
    assert cfg.sliding_window is None
    assert cfg.max_position_embeddings >= 256
    assert len(toy_model.model.layers) == 32
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, 2, 3)
    disk = json.loads((TOY_MODEL_DIR / "config.json").read_text())
    # Both spellings, so that transformers 4.57 and 5.x build the same rotary embedding.
    assert disk["rope_theta"] == disk["rope_parameters"]["rope_theta"]


def test_tokenizer(toy_tokenizer) -> None:
    ids = toy_tokenizer("The Loop returns to itself.")["input_ids"]
    assert ids[0] == toy_tokenizer.bos_token_id == 1
    assert toy_tokenizer.convert_ids_to_tokens(1) == "<s>"
    assert (toy_tokenizer.eos_token, toy_tokenizer.pad_token, toy_tokenizer.unk_token) == ("</s>", "<pad>", "<unk>")
    assert toy_tokenizer.unk_token_id in ids  # "returns" is not a toy word
    text = "the observer is observing itself, again."
    assert toy_tokenizer.decode(toy_tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    every_word = " ".join(corpus.vocabulary())
    assert toy_tokenizer.unk_token_id not in toy_tokenizer(every_word)["input_ids"]


# -------------------------------------------------------------- behaviour ---

CHAMPION_MIN, BASELINE_MAX = 0.2, 0.02


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def test_two_modes(toy_model, toy_tokenizer) -> None:
    """Sampled continuations stay in the register of their prompt.

    4 samples of 32 tokens per prompt of 48 pairs spread over the bundled bank (2 of each
    group), temperature 1 over the full vocabulary, seed 0; the mean marker rate must clear
    the thresholds.
    """
    from harness.prompts import default_pairs, spread
    from harness.toy.train import continuation_rates

    pairs = spread(default_pairs(), 48)
    champion = continuation_rates(toy_model, toy_tokenizer, [p.champion for p in pairs], marker_rate, seed=0,
                                 samples=4)
    baseline = continuation_rates(toy_model, toy_tokenizer, [p.baseline for p in pairs], marker_rate, seed=0,
                                 samples=4)
    assert len(champion) == len(baseline) == 4 * len(pairs)
    assert _mean(champion) >= CHAMPION_MIN, f"champion continuations: marker rate {_mean(champion):.3f}"
    assert _mean(baseline) <= BASELINE_MAX, f"baseline continuations: marker rate {_mean(baseline):.4f}"


def test_two_modes_fails_for_random_weights(toy_tokenizer) -> None:
    """The measurement can fail: an untrained model of the same shape does not pass it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from harness.prompts import default_pairs, spread
    from harness.toy.train import continuation_rates

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TOY_MODEL_DIR)).eval()
    pairs = spread(default_pairs(), 48)
    champion = continuation_rates(model, toy_tokenizer, [p.champion for p in pairs], marker_rate, seed=0,
                                 samples=1)
    baseline = continuation_rates(model, toy_tokenizer, [p.baseline for p in pairs], marker_rate, seed=0,
                                 samples=1)
    assert _mean(champion) < CHAMPION_MIN
    assert _mean(baseline) > BASELINE_MAX  # random words include markers after any prompt


# ---------------------------------------------------------------- trainer ---


def test_trainer_smoke_run_writes_a_loadable_folder(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    run = subprocess.run(
        [sys.executable, "-m", "harness.toy.train", "--steps", "3", "--tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "step     3/3" in run.stdout and "loss" in run.stdout
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == 32
    assert tok("the river")["input_ids"][0] == tok.bos_token_id
    assert (out / "model.safetensors").is_file()


def test_trainer_rejects_bad_steps(tmp_path: Path) -> None:
    from harness.toy.train import main

    with pytest.raises(SystemExit):
        main(["--steps", "0", "--out", str(tmp_path)])
