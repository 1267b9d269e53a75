"""Behaviour metrics, transfer efficiency and R_V."""

from __future__ import annotations

import re

#: The original protocol's behaviour markers, matched as case-insensitive substrings.
MARKERS: tuple[str, ...] = (
    "itself", "self", "recursive", "loop", "process", "cycle", "return", "eigen",
    "writing", "mirror", "awareness", "consciousness", "observer", "observing",
    "generating", "emerging", "simultaneous", "fixed point", "solution", "answerer",
    "answer is",
)

# One pattern per marker for the word-bounded rate: a multi-word marker's space matches any
# run of whitespace, so "fixed\npoint" still counts once.
_MARKER_WORD_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(r"\b" + r"\s+".join(re.escape(part) for part in m.split()) + r"\b", re.IGNORECASE)
    for m in MARKERS
)


def marker_rate(text: str) -> float:
    """Word-bounded marker hits per generated word (no repetition bonus).

    Every occurrence of every marker counts, matched case-insensitively at word
    boundaries ("itself" does not count as "self"; "self-aware" does, since a hyphen is a
    boundary). A multi-word marker ("fixed point", "answer is") counts once per occurrence.
    The denominator is ``len(text.split())``; an empty text gives 0.0.
    """
    n_words = len(text.split())
    if n_words == 0:
        return 0.0
    hits = sum(len(p.findall(text)) for p in _MARKER_WORD_PATTERNS)
    return hits / n_words
