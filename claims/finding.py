"""The finding under test: its source file, its behaviour metrics (the original's marker
words), the metric each protocol judges on, its named arms (KV splices, persistent
patches), its bank and its ledger, declared as :data:`FINDING` (``conftest.py`` binds it
for the plugin).

Layers are written as in the finding (for a 32-layer model); the runner maps
them to the subject's depth. Claim modules import from here (``from finding import
...``): pytest puts this folder on the import path when it collects them.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.finding import Finding
from harness.metrics import Metric
from harness.records import Intervention

#: The findings file the claims quote, as the shared design names it.
SEED_FILE = "seeds/000_83d9e96518e33c6a.txt"

__all__ = [
    "MARKER_SCORE_MAX",
    "SEED_FILE", "FINDING", "MARKERS", "marker_score", "marker_rate",
    "KV_ONLY", "L27_V", "RELAY", "SINGLE_LAYER_KV", "V_WITHOUT_KV", "RESID_WITHOUT_KV",
    "WRONG_LAYER_V", "RANDOM_SOURCE_V", "NOTHING", "kv_prefix", "kv_suffix",
]

#: The original protocol's behaviour markers, matched as case-insensitive substrings.
MARKERS: tuple[str, ...] = (
    "itself", "self", "recursive", "loop", "process", "cycle", "return", "eigen",
    "writing", "mirror", "awareness", "consciousness", "observer", "observing",
    "generating", "emerging", "simultaneous", "fixed point", "solution", "answerer",
    "answer is",
)

#: Repetition bonus of the original score: added when the text has more than
#: ``_BONUS_MIN_WORDS`` words and fewer than ``_BONUS_DISTINCT_SHARE`` of them are distinct.
_BONUS = 5
_BONUS_MIN_WORDS = 10
_BONUS_DISTINCT_SHARE = 0.6
#: The largest marker_score: every marker once plus the repetition bonus.
MARKER_SCORE_MAX = len(MARKERS) + _BONUS

# One pattern per marker for the word-bounded rate: a multi-word marker's space matches any
# run of whitespace, so "fixed\npoint" still counts once.
_MARKER_WORD_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(r"\b" + r"\s+".join(re.escape(part) for part in m.split()) + r"\b", re.IGNORECASE)
    for m in MARKERS
)


# --------------------------------------------------------------------------- text metrics


def marker_score(text: str) -> int:
    """The original protocol's behaviour score, reproduced exactly.

    Counts the *distinct* markers that occur as case-insensitive substrings of ``text``
    (each marker at most once, however often it occurs). Substring matching is the
    original's, quirks included: "itself" counts both "itself" and "self", "herself"
    counts "self", "returned" counts "return", "answerer" counts "answerer" only
    ("answer is" needs the space).

    Plus 5 when the text has more than 10 whitespace-split words and fewer than 60% of
    them are distinct. Like the original (``len(set(words)) / len(words)`` on
    ``text.split()``), the distinctness is on the raw words: case-sensitive, punctuation
    attached ("Loop", "loop" and "loop." are three distinct words).
    """
    lowered = text.lower()
    score = sum(1 for m in MARKERS if m in lowered)
    words = text.split()
    if len(words) > _BONUS_MIN_WORDS and len(set(words)) / len(words) < _BONUS_DISTINCT_SHARE:
        score += _BONUS
    return score


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


KV_ONLY = Intervention("kv-only", kv_layers="all")
L27_V = Intervention("kv+v_proj@27", kv_layers="all", patches=("v_proj@27",))
RELAY = Intervention("kv+resid_pre@18+v_proj@27", kv_layers="all", patches=("resid_pre@18", "v_proj@27"))
SINGLE_LAYER_KV = Intervention("kv@27", kv_layers=(27,))
V_WITHOUT_KV = Intervention("v_proj@27", patches=("v_proj@27",))
RESID_WITHOUT_KV = Intervention("resid_pre@18", patches=("resid_pre@18",))
#: Controls: the same patch at the wrong layer, and norm-matched random activations.
WRONG_LAYER_V = Intervention("kv+v_proj@5", kv_layers="all", patches=("v_proj@5",))
RANDOM_SOURCE_V = Intervention("kv+random v_proj@27", kv_layers="all", patches=("v_proj@27",), source="random")
#: No splice, no patch: the intervention arms' decoding loop by itself.
NOTHING = Intervention("no intervention")


def kv_prefix(k: int) -> Intervention:
    """KV from layers 0..k (as written for 32 layers)."""
    return Intervention(f"kv@0..{k}", kv_layers=tuple(range(0, k + 1)))


def kv_suffix(k: int) -> Intervention:
    """KV from layers k..31 (as written for 32 layers)."""
    return Intervention(f"kv@{k}..31", kv_layers=tuple(range(k, 32)))


FINDING = Finding(
    name="kv-v-proj-transfer",
    folder=Path(__file__).resolve().parent,
    source_file=SEED_FILE,
    metrics=(
        Metric("marker_score", 1.0, "the original's score: distinct markers found as substrings, plus 5 when "
               "fewer than 60% of the words are distinct (rewards repetition)",
               lambda text, champion: float(marker_score(text)), (0.0, float(MARKER_SCORE_MAX))),
        Metric("marker_rate", 0.05, "word-bounded marker occurrences per generated word, no repetition bonus",
               lambda text, champion: marker_rate(text), (0.0, 1.0)),
    ),
    # The original scripts judged on their own score; the corrected protocol on the rate.
    protocol_metrics={"original": "marker_score", "corrected": "marker_rate"},
    bank=None,  # the bundled toy bank (harness/prompts/), written in the toy's two registers
    ledger="ledger.toml",
    arms=(KV_ONLY, L27_V, RELAY, SINGLE_LAYER_KV, V_WITHOUT_KV, RESID_WITHOUT_KV, WRONG_LAYER_V, RANDOM_SOURCE_V,
          NOTHING),
)
