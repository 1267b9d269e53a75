"""The steering finding: its metric (a register classifier trained on the toy's corpus), its
arms (steering vectors and ablations) and :data:`FINDING` (``conftest.py`` binds it).

A second, shipped example of a finding, of another kind than ``claims/``: activation
addition (contrastive activation addition: the steering vector is the mean champion
activation minus the mean baseline activation at a site, added with a coefficient at every
position) judged on a classifier's score rather than on marker words.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from pathlib import Path

from harness.finding import Finding
from harness.metrics import Metric
from harness.records import Intervention
from harness.toy import corpus

__all__ = ["FINDING", "SOURCE_FILE", "register_probability", "steer", "ABLATE_ATTN_27"]

SOURCE_FILE = "findings/steering/README.md"
#: Documents the classifier is trained on (seeded, of both registers), and its smoothing.
_TRAIN_SEED, _TRAIN_DOCS, _ALPHA = 2024, 400, 1.0


@lru_cache(maxsize=1)
def _log_odds() -> tuple[dict[str, float], float]:
    """Per word: log P(word | self register) - log P(word | fact register), multinomial naive
    Bayes with add-one smoothing over the toy's vocabulary; and the value of an unseen word."""
    counts = {"self": Counter(), "fact": Counter()}
    for register, text in corpus.documents(_TRAIN_SEED, _TRAIN_DOCS):
        counts[register].update(corpus.words_of(text))
    vocab = set(corpus.vocabulary()) | set(counts["self"]) | set(counts["fact"])
    totals = {r: sum(c.values()) + _ALPHA * (len(vocab) + 1) for r, c in counts.items()}
    odds = {w: math.log((counts["self"][w] + _ALPHA) / totals["self"])
            - math.log((counts["fact"][w] + _ALPHA) / totals["fact"]) for w in vocab}
    unseen = math.log(_ALPHA / totals["self"]) - math.log(_ALPHA / totals["fact"])
    return odds, unseen


def register_probability(text: str, champion_prompt: str = "") -> float:
    """The classifier's probability that ``text`` is in the self-referential register (equal
    priors): sigmoid of the summed per-word log-odds. NaN for a text with no word (nothing
    to classify)."""
    words = corpus.words_of(text)
    if not words:
        return math.nan
    odds, unseen = _log_odds()
    total = sum(odds.get(w, unseen) for w in words)
    return 1.0 / (1.0 + math.exp(-total)) if total > -700 else 0.0


def steer(site: str, coefficient: float) -> Intervention:
    """Add ``coefficient`` x the pair's steering vector at ``site`` (as written for 32 layers)."""
    return Intervention(f"steer {site} x{coefficient:g}", steer=(site,), coefficient=coefficient)


STEER_18 = steer("resid_pre@18", 1.0)
ABLATE_ATTN_27 = Intervention("mean-ablate attn_out@27", ablate=("attn_out@27",), ablation="mean")

FINDING = Finding(
    name="steering",
    folder=Path(__file__).resolve().parent,
    source_file=SOURCE_FILE,
    metrics=(Metric("register_probability", 0.1, "a naive-Bayes register classifier trained on the toy's "
                    "corpus: probability that the text is in the champion's (self-referential) register",
                    register_probability, (0.0, 1.0)),),
    protocol_metrics={"original": "register_probability", "corrected": "register_probability"},
    bank=None,  # the bundled toy bank
    ledger="ledger.toml",
    arms=(STEER_18, ABLATE_ATTN_27),
    # Its own family: the claim cells of test_steering_claims.py (a test checks the count).
    family_size=4,
)
