"""The bundled prompt bank, generated from the toy's corpus.

Usage::

    python -m harness.toy.bank [--out FILE] [--seed S] [--pairs N] [--half a|b]

writes N (baseline, champion) pairs as JSON Lines, one
``{"id", "group", "baseline", "champion"}`` object a line. The bank is a pure
function of its seed: ``python -m harness.toy.bank --out harness/prompts/toy_pairs.jsonl``
rewrites the bundled bank byte for byte. ``--half a`` (``b``) writes only every other pair of
each group: two disjoint halves with every group in each, for checking
that verdicts on one half do not contradict those on the other
(``python -m harness.report compare``).

Each pair has a factual baseline (sentences of one topic of
:data:`~harness.toy.corpus.FACT_TEMPLATES`) and a self-referential champion
(sentences of :data:`~harness.toy.corpus.SELF_TEMPLATES`). Its ``group`` is
``RELATION/TOPIC``: the length relation of the two prompts in the toy's tokens,
which decides how the original protocol's right-aligned splice lands
(``equal``, ``champion-longer``, ``champion-shorter``), and the baseline's topic
(``equal/cooking``). The relations alternate down the file and each cycles
through the topics, so the 24 groups are equal in size and
:func:`harness.prompts.spread` covers relations first, then topics.

Every prompt

* is at least :data:`MIN_TOKENS` toy tokens long (the patch window of 16 plus BOS
  and one spare) and at most :data:`MAX_TOKENS` (so the full profile's 200
  generated tokens fit the toy's 512 positions with room to spare);
* occurs in no training document: its word sequence is not a contiguous part of
  any document of the corpus the toy was trained on (``documents(TRAIN_SEED,
  TRAIN_DOCS)``, as :mod:`harness.toy.train` generates it), so the claims test
  continuation of new text, not recall of memorised text;
* is unique in the bank.

Baselines contain no marker (the corpus guarantees it); a champion must have a
marker rate of at least :data:`MIN_CHAMPION_MARKER_RATE`. Imports neither torch
nor transformers.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.cli import one_line_errors
from harness.errors import HarnessValueError
from harness.toy.corpus import FACT_TEMPLATES, documents, sentence, words_of

#: The claims finding's behaviour markers (``MARKERS`` in ``claims/finding.py``, which the
#: engine does not import): the toy is trained on that finding's registers, and its bank picks
#: champions by their rate. A test checks this copy against the finding's list.
SELECTION_MARKERS: tuple[str, ...] = (
    "itself", "self", "recursive", "loop", "process", "cycle", "return", "eigen",
    "writing", "mirror", "awareness", "consciousness", "observer", "observing",
    "generating", "emerging", "simultaneous", "fixed point", "solution", "answerer",
    "answer is",
)
_PATTERNS = tuple(re.compile(r"\b" + r"\s+".join(re.escape(part) for part in m.split()) + r"\b", re.IGNORECASE)
                  for m in SELECTION_MARKERS)


def marker_rate(text: str) -> float:
    """Word-bounded marker hits per word: the claims finding's ``marker_rate``, for selection."""
    n_words = len(text.split())
    return sum(len(p.findall(text)) for p in _PATTERNS) / n_words if n_words else 0.0

__all__ = [
    "RELATIONS",
    "TOPICS",
    "BANK_SEED",
    "BANK_PAIRS",
    "TRAIN_SEED",
    "TRAIN_DOCS",
    "MIN_TOKENS",
    "MAX_TOKENS",
    "MIN_CHAMPION_MARKER_RATE",
    "BankPair",
    "TrainingText",
    "n_tokens",
    "render",
    "generate",
    "to_jsonl",
    "half",
    "main",
]

#: length relation -> id prefix, in the order the relations alternate down the bank.
RELATIONS: dict[str, str] = {"equal": "eq", "champion-longer": "cl", "champion-shorter": "cs"}
TOPICS: tuple[str, ...] = tuple(sorted(FACT_TEMPLATES))
BANK_SEED = 16
BANK_PAIRS = 240
#: The training corpus as ``harness.toy.train`` draws it (its default seed and
#: ``TrainSettings.n_docs``); a test checks these against the trainer.
TRAIN_SEED = 0
TRAIN_DOCS = 12_000
MIN_TOKENS = 18
MAX_TOKENS = 96
MIN_CHAMPION_MARKER_RATE = 0.15
#: Sentences per prompt: 2 to 5 like the hand-written bank this one replaced.
_SENTENCES = (2, 5)
#: Draws per pair before giving up (a length relation that the templates cannot
#: reach would otherwise loop for ever).
_MAX_DRAWS = 20_000


@dataclass(frozen=True)
class BankPair:
    """One generated pair, as written to the bank."""

    id: str
    group: str
    baseline: str
    champion: str

    def as_json(self) -> str:
        return json.dumps({"id": self.id, "group": self.group, "baseline": self.baseline,
                           "champion": self.champion}, ensure_ascii=False)


def n_tokens(text: str) -> int:
    """Length in the toy's tokens, BOS included (its tokenizer splits exactly like ``words_of``)."""
    return len(words_of(text)) + 1


def render(sentences: Sequence[str]) -> str:
    """Corpus sentences ("the loop , and the self .") as prose ("The loop, and the self.").

    Only spacing and capitals change, and the toy's tokenizer lower-cases and splits
    punctuation off, so the tokens are those of the corpus sentences.
    """
    out = []
    for s in sentences:
        text = s.replace(" .", ".").replace(" ,", ",").replace(" :", ":")
        out.append(text[:1].upper() + text[1:])
    return " ".join(out)


class TrainingText:
    """The toy's training documents, searchable for a prompt's word sequence."""

    def __init__(self, seed: int = TRAIN_SEED, n_docs: int = TRAIN_DOCS) -> None:
        # One line per document, words separated by single spaces and padded with a
        # space on each side, so a search for " w1 w2 ... wn " matches whole words
        # within one document only.
        self._text = "\n".join(" " + " ".join(words_of(doc)) + " " for _, doc in documents(seed, n_docs))

    def contains(self, prompt: str) -> bool:
        """Whether the prompt's words occur contiguously in a training document."""
        return " " + " ".join(words_of(prompt)) + " " in self._text


def _relation(n_baseline: int, n_champion: int) -> str:
    if n_champion == n_baseline:
        return "equal"
    return "champion-longer" if n_champion > n_baseline else "champion-shorter"


def _prompt(rng: random.Random, register: str, topic: str | None) -> str:
    n = rng.randint(*_SENTENCES)
    return render([sentence(register, rng, topic) for _ in range(n)])


def _fits(text: str) -> bool:
    return MIN_TOKENS <= n_tokens(text) <= MAX_TOKENS


def generate(seed: int = BANK_SEED, n_pairs: int = BANK_PAIRS,
             training: TrainingText | None = None) -> list[BankPair]:
    """``n_pairs`` pairs, a pure function of ``seed`` (and of the training corpus).

    Pair i has length relation ``RELATIONS[i % 3]`` and baseline topic
    ``TOPICS[(i // 3) % 8]``, so every relation sees every topic. The baseline is drawn together with a champion,
    and the two are drawn again until they have the pair's length relation and pass
    every check.
    """
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 1:
        raise HarnessValueError(f"--pairs {n_pairs!r}: expected a positive integer number of pairs")
    training = training if training is not None else TrainingText()
    rng = random.Random(seed)
    relations = list(RELATIONS)
    used: set[str] = set()
    pairs: list[BankPair] = []

    def cheap(text: str) -> bool:
        return _fits(text) and text not in used

    for i in range(n_pairs):
        relation, topic = relations[i % len(relations)], TOPICS[(i // len(relations)) % len(TOPICS)]
        for _ in range(_MAX_DRAWS):
            baseline, champion = _prompt(rng, "fact", topic), _prompt(rng, "self", None)
            # The training search is the costly test: it runs last.
            if (cheap(baseline) and cheap(champion)
                    and _relation(n_tokens(baseline), n_tokens(champion)) == relation
                    and marker_rate(champion) >= MIN_CHAMPION_MARKER_RATE
                    and not training.contains(baseline) and not training.contains(champion)):
                break
        else:  # pragma: no cover - the templates reach every relation within a few hundred draws
            raise HarnessValueError(f"pair {i}: no {relation} pair in {_MAX_DRAWS} draws; change --seed")
        used.update((baseline, champion))
        pairs.append(BankPair(id=f"{RELATIONS[relation]}-{i + 1:03d}-{topic}", group=f"{relation}/{topic}",
                              baseline=baseline, champion=champion))
    return pairs


def to_jsonl(pairs: Sequence[BankPair]) -> str:
    """The bank file's text: one JSON object a line, a final newline."""
    return "".join(p.as_json() + "\n" for p in pairs)


def half(pairs: Sequence[BankPair], which: str) -> list[BankPair]:
    """One of two disjoint halves, each holding every group: within each group, in bank
    order, the 1st, 3rd, 5th, ... pair goes to ``"a"``, the 2nd, 4th, ... to ``"b"``.

    (Not even and odd positions of the file: a group's pairs lie 24 positions apart,
    so all of them share a parity.)
    """
    if which not in ("a", "b"):
        raise HarnessValueError(f"--half {which!r}: expected 'a' or 'b'")
    seen: dict[str, int] = {}
    out = []
    for pair in pairs:
        rank = seen.get(pair.group, 0)
        seen[pair.group] = rank + 1
        if rank % 2 == (0 if which == "a" else 1):
            out.append(pair)
    return out


@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.toy.bank",
                                 description="Generate the toy prompt bank from the toy's corpus.")
    ap.add_argument("--out", type=Path, default=None, metavar="FILE",
                    help="where to write the JSONL bank (default: standard output)")
    ap.add_argument("--seed", type=int, default=BANK_SEED, help=f"bank seed (default {BANK_SEED})")
    ap.add_argument("--pairs", type=int, default=BANK_PAIRS, help=f"number of pairs (default {BANK_PAIRS})")
    ap.add_argument("--half", choices=("a", "b"), default=None,
                    help="write one of two disjoint halves, every other pair of each group")
    args = ap.parse_args(argv)
    pairs = generate(args.seed, args.pairs)
    if args.half is not None:
        pairs = half(pairs, args.half)
    text = to_jsonl(pairs)
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"{len(pairs)} pairs: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
