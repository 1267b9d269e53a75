"""The generated prompt bank (harness/toy/bank.py) and the bundled file it writes."""

from __future__ import annotations

import inspect
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from harness.prompts import DEFAULT_PROMPTS, default_pairs, spread
from harness.toy import TOY_MODEL_DIR
from harness.toy.bank import (
    BANK_PAIRS,
    MIN_TOKENS,
    RELATIONS,
    TOPICS,
    TRAIN_DOCS,
    TRAIN_SEED,
    TrainingText,
    generate,
    main,
    n_tokens,
    render,
    to_jsonl,
)
from harness.toy.corpus import documents


@pytest.fixture(scope="module")
def toy_tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(TOY_MODEL_DIR / "tokenizer.json"))


@pytest.fixture(scope="module")
def training() -> TrainingText:
    return TrainingText()


def _ids(tok: Tokenizer, text: str) -> list[int]:
    """The toy tokenizer's ids of ``text`` without the BOS its post-processor prepends."""
    ids = tok.encode(text).ids
    assert ids[0] == tok.token_to_id("<s>")
    return ids[1:]


# ------------------------------------------------------------ reproducible ---

@pytest.mark.slow
def test_regenerating_the_bank_gives_the_bundled_file_byte_for_byte(tmp_path: Path,
                                                                    training: TrainingText) -> None:
    assert to_jsonl(generate(training=training)).encode() == DEFAULT_PROMPTS.read_bytes()
    out = tmp_path / "bank.jsonl"
    assert main(["--out", str(out)]) == 0
    assert out.read_bytes() == DEFAULT_PROMPTS.read_bytes()


def test_the_bank_is_a_pure_function_of_its_seed(training: TrainingText) -> None:
    first = generate(seed=3, n_pairs=9, training=training)
    random.seed(12345)  # the global RNG must not matter
    assert generate(seed=3, n_pairs=9, training=training) == first
    assert generate(seed=4, n_pairs=9, training=training) != first


def test_a_bad_pair_count_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--pairs", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--pairs 0" in err and "positive integer" in err


# ------------------------------------------------------------ the bundled bank ---

def test_the_bundled_bank_has_every_relation_and_topic_in_equal_groups() -> None:
    pairs = default_pairs()
    assert len(pairs) == BANK_PAIRS >= 200
    groups = Counter(p.group for p in pairs)
    assert set(groups) == {f"{r}/{t}" for r in RELATIONS for t in TOPICS}
    assert set(groups.values()) == {BANK_PAIRS // len(groups)}
    for p in pairs:
        relation, topic = p.group.split("/")
        assert p.id.startswith(RELATIONS[relation] + "-") and p.id.endswith("-" + topic)


def test_each_group_names_the_length_relation_in_the_toy_tokens(toy_tokenizer: Tokenizer) -> None:
    for p in default_pairs():
        nb, nc = len(_ids(toy_tokenizer, p.baseline)), len(_ids(toy_tokenizer, p.champion))
        expected = "equal" if nb == nc else "champion-longer" if nc > nb else "champion-shorter"
        assert p.group.split("/")[0] == expected, (p.id, nb, nc)


def test_token_counts_follow_the_tokenizer(toy_tokenizer: Tokenizer) -> None:
    for p in default_pairs()[:60]:
        for text in (p.baseline, p.champion):
            assert n_tokens(text) == len(toy_tokenizer.encode(text).ids)


def test_every_prompt_covers_the_patch_window_and_fits_the_full_profile() -> None:
    """Through the run's own preflight: 16-token window, 200 generated tokens, 512 positions."""
    from harness.plugin import PROFILES
    from harness.preflight import RunOptions, _check_prompt_lengths

    _, _, full_tokens = PROFILES["full"]
    _check_prompt_lengths(RunOptions(gen_tokens=full_tokens, window=16))
    assert MIN_TOKENS >= 16 + 1
    # And the check is not vacuous: a window longer than the shortest prompt is refused.
    from harness.errors import PreflightError

    shortest = min(n_tokens(t) for p in default_pairs() for t in (p.baseline, p.champion))
    with pytest.raises(PreflightError, match="patch window"):
        _check_prompt_lengths(RunOptions(gen_tokens=full_tokens, window=shortest + 1))


def test_no_two_prompts_of_the_bank_are_the_same() -> None:
    texts = [t for p in default_pairs() for t in (p.baseline, p.champion)]
    assert len(set(texts)) == len(texts)


# ------------------------------------------------------------ training overlap ---

def test_the_bank_draws_the_training_corpus_as_the_trainer_does() -> None:
    from harness.toy.train import TrainSettings, main as train_main, train

    assert inspect.signature(train).parameters["seed"].default == TRAIN_SEED
    assert TrainSettings().n_docs == TRAIN_DOCS
    # The command line's default seed is the one the shipped weights were trained with.
    assert f'"--seed", type=int, default={TRAIN_SEED}' in inspect.getsource(train_main)


@pytest.mark.slow
def test_no_prompt_occurs_in_the_training_token_stream(toy_tokenizer: Tokenizer) -> None:
    """Searched in the token stream the trainer builds (``encode_corpus``), independently
    of the generator's own word search."""
    from transformers import AutoTokenizer

    from harness.toy.train import encode_corpus

    hf_tokenizer = AutoTokenizer.from_pretrained(TOY_MODEL_DIR)
    stream = encode_corpus(hf_tokenizer, TRAIN_SEED, TRAIN_DOCS).tolist()
    # One character per token id (all ids < 0x110000 - 0x100), so a substring is a token run.
    chars = "".join(chr(0x100 + i) for i in stream)

    def occurs(text: str) -> bool:
        return "".join(chr(0x100 + i) for i in _ids(toy_tokenizer, text)) in chars

    found = [(p.id, role) for p in default_pairs() for role in ("baseline", "champion")
             if occurs(getattr(p, role))]
    assert found == []
    # The search can fail: three sentences cut from a training document are found.
    doc = next(text for register, text in documents(TRAIN_SEED, 5) if register == "fact")
    excerpt = render([s.strip() + " ." for s in doc.split(" .")[1:4]])
    assert occurs(excerpt)


def test_the_generators_training_search_finds_what_the_corpus_contains(training: TrainingText) -> None:
    _, doc = next(documents(TRAIN_SEED, 1))
    sentences = [s.strip() + " ." for s in doc.split(" .") if s.strip()]
    assert training.contains(render(sentences[2:5]))
    assert training.contains(doc)
    # Whole words only, and within one document: a cut word or a join of two documents is not.
    assert not training.contains(render(sentences[2:5])[1:])
    (_, first), (_, second) = list(documents(TRAIN_SEED, 2))
    assert not training.contains(render([first.split(" .")[-2].strip() + " .", second.split(" .")[0] + " ."]))


def test_render_keeps_the_corpus_tokens() -> None:
    s = ["so the answer is : the loop , and the self .", "the mirror ."]
    assert render(s) == "So the answer is: the loop, and the self. The mirror."
    from harness.toy.corpus import words_of

    assert words_of(render(s)) == words_of(" ".join(s))


def test_the_bank_file_has_the_four_fields_in_order() -> None:
    first = DEFAULT_PROMPTS.read_text(encoding="utf-8").splitlines()[0]
    assert list(json.loads(first)) == ["id", "group", "baseline", "champion"]


def test_the_halves_are_disjoint_cover_the_bank_and_hold_every_group(tmp_path: Path) -> None:
    from harness.prompts import load_pairs
    from harness.toy.bank import half

    halves = {}
    for which in ("a", "b"):
        out = tmp_path / f"{which}.jsonl"
        assert main(["--half", which, "--out", str(out)]) == 0
        halves[which] = load_pairs(out)
    a, b = halves["a"], halves["b"]
    bank = default_pairs()
    assert len(a) == len(b) == len(bank) // 2
    assert not {p.id for p in a} & {p.id for p in b}
    assert sorted(p.id for p in a + b) == sorted(p.id for p in bank)
    groups = {p.group for p in bank}
    assert {p.group for p in a} == {p.group for p in b} == groups
    # The quick profile's spread of each half still covers every relation.
    assert {p.group.split("/")[0] for p in spread(a, 6)} == set(RELATIONS)
    with pytest.raises(ValueError, match="--half 'c'"):
        half([], "c")


def test_the_banks_selection_markers_are_the_claims_findings_and_rate_alike() -> None:
    """The bank picks champions with a copy of the claims finding's markers (the engine does
    not import a finding): the copy and its rate must be the finding's own."""
    from tiny import claims_finding

    from harness.toy.bank import SELECTION_MARKERS, marker_rate

    finding = claims_finding()
    assert SELECTION_MARKERS == finding.MARKERS
    for pair in default_pairs()[::7]:
        for text in (pair.champion, pair.baseline, pair.champion + " fixed\npoint self-loop"):
            assert marker_rate(text) == finding.marker_rate(text)
