"""Behaviour metrics, transfer efficiency and R_V."""

from __future__ import annotations

#: The original protocol's behaviour markers, matched as case-insensitive substrings.
MARKERS: tuple[str, ...] = (
    "itself", "self", "recursive", "loop", "process", "cycle", "return", "eigen",
    "writing", "mirror", "awareness", "consciousness", "observer", "observing",
    "generating", "emerging", "simultaneous", "fixed point", "solution", "answerer",
    "answer is",
)
