"""The claims suite's own metrics (claims/finding.py): the original's marker score and the
word-bounded marker rate, against hand-computed values (counts written out next to each case)."""

from __future__ import annotations

import pytest
from tiny import claims_finding

_F = claims_finding()
FINDING, MARKERS, marker_rate, marker_score = _F.FINDING, _F.MARKERS, _F.marker_rate, _F.marker_score


def test_markers_are_the_original_list_in_order():
    assert MARKERS[:3] == ("itself", "self", "recursive")
    assert MARKERS[-3:] == ("solution", "answerer", "answer is")
    assert len(MARKERS) == 21


# ------------------------------------------------------------------ marker_score


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("nothing to see", 0),
        # "itself" contains "self": both markers.
        ("itself", 2),
        # "herself" contains "self" only.
        ("herself", 1),
        # "returned" contains "return".
        ("returned", 1),
        # "answerer" contains "answerer"; "answer is" needs the space.
        ("answerer", 1),
        # "the answer is" -> "answer is" only ("answerer" absent).
        ("the answer is", 1),
        # "answerer is": "answerer" yes; "answer is"? "answerer is" has "er is" after
        # "answer", so no.
        ("answerer is", 1),
        # Case-insensitive: LOOP, Cycle.
        ("LOOP Cycle", 2),
        # Distinct: loop repeated three times counts once.
        ("loop loop loop", 1),
        # "fixed point" needs the single space; "fixedpoint" does not match.
        ("a fixed point", 1),
        ("a fixedpoint", 0),
        # "observing" contains no "observer"; "self-observer": self, observer.
        ("observing", 1),
        ("self-observer", 2),
        # "processing" -> process; "generating" -> generating; "eigenvalue" -> eigen.
        ("processing generating eigenvalue", 3),
        # "consciousness" and "awareness"; "self-awareness" adds "self".
        ("self-awareness consciousness", 3),
    ],
)
def test_marker_score_substring_quirks(text, expected):
    assert marker_score(text) == expected


def test_marker_score_bonus_needs_more_than_ten_words():
    # 10 words, 1 distinct (10%): no bonus because the text has exactly 10 words.
    assert marker_score("a " * 10) == 0
    # 11 words, 1 distinct: bonus.
    assert marker_score("a " * 11) == 5


def test_marker_score_bonus_boundary_at_sixty_percent():
    # 20 words, 12 distinct = exactly 60%: not below 60%, no bonus.
    words = [f"w{i}" for i in range(12)] + ["w0"] * 8
    assert len(words) == 20 and len(set(words)) == 12
    assert marker_score(" ".join(words)) == 0
    # 20 words, 11 distinct = 55%: bonus.
    words = [f"w{i}" for i in range(11)] + ["w0"] * 9
    assert marker_score(" ".join(words)) == 5


def test_marker_score_bonus_is_case_sensitive_on_raw_words():
    # 12 words: "loop" x6 and "Loop" x6 -> 2 distinct raw words (17%): bonus; marker "loop"
    # counted once. Score 1 + 5.
    assert marker_score("loop Loop " * 6) == 6
    # 12 words, 8 distinct raw (67%) although only 4 distinct lowercased: no bonus.
    text = "a b c d A B C D a b c d"
    assert len(set(text.split())) == 8
    assert marker_score(text) == 0


def test_marker_score_bonus_adds_to_markers():
    # 11 words: "self" x11 -> 1 distinct word: markers {"self"} = 1, plus 5.
    assert marker_score("self " * 11) == 6


# ------------------------------------------------------------------ marker_rate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0.0),
        ("   ", 0.0),
        # 1 word, "itself" only (no "self" at a word boundary).
        ("itself", 1.0),
        # "herself", "returned": no word-bounded marker -> 0 of 2.
        ("herself returned", 0.0),
        # "loop loop cycle dog": 3 hits / 4 words (every occurrence counts).
        ("loop loop cycle dog", 0.75),
        # "the answer is a fixed point": "answer is" 1 + "fixed point" 1 = 2 / 6 words.
        ("the answer is a fixed point", 2 / 6),
        # "answerer" counts as itself, not as "answer is": 1 / 2.
        ("answerer is", 0.5),
        # Case-insensitive; punctuation is a boundary: "Self," "LOOP." -> 2 / 3.
        ("Self, LOOP. x", 2 / 3),
        # A hyphen is a word boundary: "self-aware" -> self 1 / 1.
        ("self-aware", 1.0),
        # Multi-word marker across a newline still counts once: 1 / 2.
        ("fixed\npoint", 0.5),
    ],
)
def test_marker_rate_hand_counted(text, expected):
    assert marker_rate(text) == pytest.approx(expected)


def test_marker_rate_has_no_repetition_bonus():
    # 11 words, all "a": score would get +5, rate is 0.
    assert marker_rate("a " * 11) == 0.0


def test_the_finding_judges_each_protocol_on_its_marker_metric():
    assert FINDING.metric_for("original") == "marker_score"
    assert FINDING.metric_for("corrected") == "marker_rate"
    table = FINDING.metric_table()
    assert table["marker_score"].per_sample("self " * 11, "") == 6.0
    assert table["marker_rate"].per_sample("self a", "") == 0.5
