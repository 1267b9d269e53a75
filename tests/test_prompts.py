"""Tests of the prompt-bank loader and of the bundled bank."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import claims_finding
from tokenizers import Tokenizer

from harness.errors import PromptFileError
from harness.prompts import DEFAULT_PROMPTS, Pair, default_pairs, load_pairs, spread
from harness.toy import TOY_MODEL_DIR


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "bank.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _line(**obj: object) -> str:
    return json.dumps(obj)


# ---------------------------------------------------------------- loading ---

def test_loads_pairs_with_default_ids_and_skips_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, _line(id="a", baseline="b1", champion="c1"), "", "   ",
                  _line(baseline="b2", champion="c2"))
    assert load_pairs(path) == [Pair("a", "b1", "c1"), Pair("pair-4", "b2", "c2")]
    assert load_pairs(str(path)) == load_pairs(path)


def test_the_group_is_kept_and_optional(tmp_path: Path) -> None:
    path = _write(tmp_path, _line(id="a", group="equal/cooking", baseline="b1", champion="c1"),
                  _line(id="b", baseline="b2", champion="c2"))
    assert [p.group for p in load_pairs(path)] == ["equal/cooking", None]
    assert load_pairs(path)[0] == Pair("a", "b1", "c1", group="equal/cooking")


def test_pair_is_frozen() -> None:
    pair = Pair("a", "b", "c")
    with pytest.raises(AttributeError):
        pair.id = "x"  # type: ignore[misc]


def _refused(path: Path) -> str:
    with pytest.raises(PromptFileError) as info:
        load_pairs(path)
    message = str(info.value)
    assert "\n" not in message, "the message must be one line"
    assert str(path) in message, "the message must name the file"
    assert isinstance(info.value, ValueError)
    return message


@pytest.mark.parametrize(
    ("lines", "line_no", "problem"),
    [
        (['{"baseline": "b", "champion": '], 1, "invalid JSON"),
        ([_line(baseline="b", champion="c"), "[1, 2]"], 2, "JSON object"),
        ([_line(champion="c")], 1, "missing key 'baseline'"),
        (["", _line(baseline="b")], 2, "missing key 'champion'"),
        ([_line(baseline="   ", champion="c")], 1, "'baseline' is empty"),
        ([_line(baseline="b", champion="")], 1, "'champion' is empty"),
        ([_line(baseline=3, champion="c")], 1, "'baseline' is of type int"),
        ([_line(baseline="b", champion=["c"])], 1, "'champion' is of type list"),
        ([_line(id=7, baseline="b", champion="c")], 1, "'id' must be a non-empty string"),
        ([_line(group=3, baseline="b", champion="c")], 1, "'group' must be a non-empty string, got 3"),
        ([_line(group=" ", baseline="b", champion="c")], 1, "'group' must be a non-empty string"),
        ([_line(id="x", baseline="b", champion="c"), _line(id="x", baseline="b", champion="c")],
         2, "duplicate id 'x' (first used on line 1)"),
        # an explicit id may collide with a default one
        ([_line(baseline="b", champion="c"), _line(id="pair-1", baseline="b", champion="c")],
         2, "duplicate id 'pair-1'"),
    ],
)
def test_malformed_lines_are_refused_with_file_line_and_problem(
    tmp_path: Path, lines: list[str], line_no: int, problem: str
) -> None:
    message = _refused(_write(tmp_path, *lines))
    assert f"bank.jsonl:{line_no}:" in message
    assert problem in message
    assert ";" in message.split(problem, 1)[1], "the message must say how to fix it"


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path / "missing.jsonl")
    assert "cannot read" in message
    message = _refused(tmp_path)  # a directory
    assert "cannot read" in message
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"baseline": "caf\xe9", "champion": "c"}\n')
    assert "cannot read" in _refused(bad)


def test_file_without_pairs_is_refused(tmp_path: Path) -> None:
    assert "no pairs" in _refused(_write(tmp_path, "", ""))


def test_importing_prompts_does_not_import_torch() -> None:
    code = "import sys, harness.prompts; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ----------------------------------------------------------- bundled bank ---

@pytest.fixture(scope="module")
def toy_tokenizer() -> Tokenizer:
    # The bare tokenizers file is enough to count tokens and find <unk>.
    return Tokenizer.from_file(str(TOY_MODEL_DIR / "tokenizer.json"))


def _n_tokens(tok: Tokenizer, text: str) -> int:
    ids = tok.encode(text).ids
    assert ids[0] == tok.token_to_id("<s>"), "the toy tokenizer must prepend BOS"
    return len(ids) - 1


def test_bundled_bank_shape() -> None:
    pairs = default_pairs()
    assert DEFAULT_PROMPTS.name == "toy_pairs.jsonl" and DEFAULT_PROMPTS.is_file()
    assert len(pairs) >= 24
    assert len({p.id for p in pairs}) == len(pairs)
    assert len({p.baseline for p in pairs}) == len(pairs)
    assert len({p.champion for p in pairs}) == len(pairs)


def test_bundled_bank_uses_only_toy_vocabulary(toy_tokenizer: Tokenizer) -> None:
    unk = toy_tokenizer.token_to_id("<unk>")
    for p in default_pairs():
        for text in (p.baseline, p.champion):
            assert unk not in toy_tokenizer.encode(text).ids, f"{p.id}: <unk> in {text!r}"


def test_bundled_bank_lengths(toy_tokenizer: Tokenizer) -> None:
    lengths = [(_n_tokens(toy_tokenizer, p.baseline), _n_tokens(toy_tokenizer, p.champion))
               for p in default_pairs()]
    assert all(b > 16 and c > 16 for b, c in lengths), lengths
    assert sum(b == c for b, c in lengths) >= 4, "need pairs of equal token length"
    assert sum(c > b for b, c in lengths) >= 4, "need pairs where the champion is longer"
    assert sum(b > c for b, c in lengths) >= 4, "need pairs where the baseline is longer"
    assert len({n for pair in lengths for n in pair}) >= 12, "lengths should vary"


def test_bundled_bank_registers() -> None:
    MARKERS, marker_rate = claims_finding().MARKERS, claims_finding().marker_rate
    for p in default_pairs():
        low = p.baseline.lower()
        # The original score matches substrings, so a baseline must contain none.
        assert not [m for m in MARKERS if m in low], p.id
        assert marker_rate(p.champion) >= 0.15, p.id


def test_spread_takes_pairs_from_every_part_of_the_bundled_bank():
    from harness.prompts import spread

    bank = default_pairs()
    chosen = spread(bank, 6)
    assert len(chosen) == 6 and len({p.id for p in chosen}) == 6
    assert [bank.index(p) for p in chosen] == sorted(bank.index(p) for p in chosen)
    assert {p.id[:2] for p in chosen} == {"eq", "cl", "cs"}
    assert spread(bank, None) == bank and spread(bank, 1000) == bank


@pytest.mark.parametrize("n", [3, 12, 24, 48, 96, 120])
def test_spread_over_the_bundled_bank_covers_every_relation_and_topic_alike(n: int) -> None:
    from collections import Counter

    from harness.prompts import spread

    chosen = spread(default_pairs(), n)
    relations = Counter(p.group.split("/")[0] for p in chosen)
    topics = Counter(p.group.split("/")[1] for p in chosen)
    assert len(chosen) == n and len(relations) == 3 and max(relations.values()) - min(relations.values()) <= 1
    if n >= 24:
        assert len(topics) == 8 and max(topics.values()) - min(topics.values()) <= 1


def _grouped(sizes: dict[str | None, int]) -> list[Pair]:
    return [Pair(f"{g}-{i}", f"b {g} {i}", f"c {g} {i}", group=g) for g, k in sizes.items() for i in range(k)]


def test_spread_gives_each_group_its_share_by_size_in_bank_order() -> None:
    from harness.prompts import spread

    bank = _grouped({"a": 12, "b": 6, None: 6})  # grouped, and pairs without a group
    chosen = spread(bank, 8)
    assert [p.id for p in chosen] == ["a-0", "a-3", "a-6", "a-9", "b-0", "b-3", "None-0", "None-3"]
    # Shares 2.5 / 1.25 / 1.25 of 5: the largest remainder goes to "a", ties to the group met first.
    assert [p.group for p in spread(bank, 5)] == ["a", "a", "a", "b", None]
    # Fewer pairs than groups: the groups met first.
    assert [p.id for p in spread(_grouped({"x": 2, "y": 2, "z": 2}), 2)] == ["x-0", "y-0"]


def test_spread_of_a_bank_without_groups_is_evenly_spaced() -> None:
    from harness.prompts import spread

    bank = _grouped({None: 26})
    for n in (1, 5, 6, 24, 25):
        assert spread(bank, n) == [bank[int(i * 26 / n)] for i in range(n)]


def test_spread_refuses_a_non_positive_count() -> None:
    from harness.errors import HarnessValueError
    from harness.prompts import spread

    with pytest.raises(HarnessValueError, match="number of pairs 0"):
        spread(default_pairs(), 0)


def test_a_byte_order_mark_at_the_start_of_a_prompts_file_is_accepted(tmp_path):
    line = json.dumps({"id": "a", "baseline": "one two", "champion": "three four"})
    path = tmp_path / "bom.jsonl"
    path.write_bytes("\ufeff".encode() + (line + "\n").encode())
    (pair,) = load_pairs(path)
    assert (pair.id, pair.baseline, pair.champion) == ("a", "one two", "three four")


def test_growing_lists_extend_each_other_in_spread_batches_up_to_the_budget():
    from harness.prompts import growing

    bank = default_pairs()
    first = spread(bank, 24)
    lists = growing(bank, first, 100)
    assert lists[0] == first and [len(x) for x in lists] == [24, 48, 72, 96, 100]
    for shorter, longer in zip(lists, lists[1:]):
        assert longer[: len(shorter)] == shorter  # one arrival order: each list a prefix of the next
    assert len({p.id for p in lists[-1]}) == 100
    # each batch is spread over the groups of the pairs left: 24 groups, one pair of each
    assert len({p.group for p in lists[1][24:]}) == 24
    assert len(growing(bank, first, 10_000)[-1]) == len(bank)
    assert growing(bank, first, 24) == [first]
