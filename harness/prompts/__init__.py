"""Prompt banks: (baseline, champion) pairs stored as JSON Lines files.

Each non-blank line of a bank is one JSON object::

    {"id": "geo-1", "group": "equal", "baseline": "the river flows ...", "champion": "the loop ..."}

``baseline`` and ``champion`` are required non-empty strings; ``id`` is
optional (default ``pair-<line number>``) and must be unique in the file;
``group`` is optional (the kind of pair; :func:`spread` takes pairs from every group).
:func:`load_pairs` refuses a malformed file with a one-line
:class:`~harness.errors.PromptFileError` naming the file, the line and the fix.
The bundled bank (:data:`DEFAULT_PROMPTS`) is generated from the embedded toy
model's corpus by ``python -m harness.toy.bank``. This module imports neither torch nor transformers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessValueError, PromptFileError

__all__ = ["Pair", "DEFAULT_PROMPTS", "load_pairs", "default_pairs", "spread", "growing", "pair_seeds", "file_hash"]

#: The bundled bank, in the toy model's vocabulary (baseline: factual register,
#: champion: self-referential register), written by :mod:`harness.toy.bank`.
DEFAULT_PROMPTS: Path = Path(__file__).resolve().parent / "toy_pairs.jsonl"

_FORMAT_HINT = 'each line must be a JSON object like {"id": "p1", "baseline": "...", "champion": "..."}'


@dataclass(frozen=True)
class Pair:
    """A baseline prompt and the champion prompt whose behaviour should transfer to it."""

    id: str
    baseline: str
    champion: str
    #: The kind of pair (the bundled bank: the prompts' length relation); None when the
    #: file does not say.
    group: str | None = None

    def seeds(self, n: int, offset: int = 0) -> tuple[int, ...]:
        """This pair's n sampling seeds of seed set ``offset`` (see :func:`pair_seeds`)."""
        return pair_seeds(self, n, offset)


def pair_seeds(pair: Pair, n: int, offset: int = 0) -> tuple[int, ...]:
    """n seeds of the pair's own, shared by every arm of the pair.

    Derived from the two prompts (not the id or the position in a file), so pairs draw
    independent samples, which the intervals assume, while arm differences within a
    pair stay paired. 48-bit bases: two pairs' seed ranges practically never overlap.
    ``offset`` K > 0 (``--seed-offset``) hashes K in too: another, independent seed set;
    0 is the seed set every earlier run used.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise HarnessValueError(f"number of seeds {n!r}; expected a positive integer")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise HarnessValueError(f"seed offset {offset!r}; expected a whole number >= 0")
    text = f"{pair.baseline}\0{pair.champion}" + (f"\0{offset}" if offset else "")
    digest = hashlib.sha256(text.encode()).hexdigest()
    base = int(digest[:12], 16)
    return tuple(base + i for i in range(n))


def file_hash(path: str | Path) -> str:
    """sha256 of a prompts file's bytes (recorded with the verdicts it produced)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _fail(path: Path, line: int | None, problem: str, fix: str) -> PromptFileError:
    where = f"{path}:{line}" if line is not None else f"{path}"
    return PromptFileError(f"{where}: {problem}; {fix}")


def _parse_line(path: Path, lineno: int, raw: str) -> Pair:
    try:
        obj: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _fail(path, lineno, f"invalid JSON ({exc.msg} at column {exc.colno})", _FORMAT_HINT) from None
    if not isinstance(obj, dict):
        raise _fail(path, lineno, f"expected a JSON object, got {type(obj).__name__}", _FORMAT_HINT)
    for key in ("baseline", "champion"):
        if key not in obj:
            raise _fail(path, lineno, f"missing key {key!r}", f"add a non-empty {key!r} string to the object")
        value = obj[key]
        if not isinstance(value, str):
            raise _fail(path, lineno, f"{key!r} is of type {type(value).__name__}, not a string",
                        f"write the {key} prompt as a JSON string")
        if not value.strip():
            raise _fail(path, lineno, f"{key!r} is empty", f"write a non-empty {key} prompt or delete the line")
    pair_id = obj.get("id", f"pair-{lineno}")
    if not isinstance(pair_id, str) or not pair_id.strip():
        raise _fail(path, lineno, f"'id' must be a non-empty string, got {pair_id!r}",
                    "give the pair a string id or remove the 'id' key")
    group = obj.get("group")
    if group is not None and (not isinstance(group, str) or not group.strip()):
        raise _fail(path, lineno, f"'group' must be a non-empty string, got {group!r}",
                    "name the kind of pair with a string or remove the 'group' key")
    return Pair(id=pair_id, baseline=obj["baseline"], champion=obj["champion"], group=group)


def load_pairs(path: str | Path) -> list[Pair]:
    """Read a JSONL prompt bank; blank lines are skipped.

    Raises :class:`~harness.errors.PromptFileError` for an unreadable file,
    invalid JSON, a missing key, an empty or non-string prompt, a duplicate id,
    or a file with no pair at all.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (editors on Windows) is not text
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise _fail(path, None, f"cannot read the prompts file ({reason})",
                    "pass the path of a readable UTF-8 JSONL file") from None
    pairs: list[Pair] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        pair = _parse_line(path, lineno, raw)
        if pair.id in first_line:
            raise _fail(path, lineno, f"duplicate id {pair.id!r} (first used on line {first_line[pair.id]})",
                        "give every pair a unique id")
        first_line[pair.id] = lineno
        pairs.append(pair)
    if not pairs:
        raise _fail(path, None, "no pairs in the file", _FORMAT_HINT)
    return pairs


def default_pairs() -> list[Pair]:
    """The bundled bank (:data:`DEFAULT_PROMPTS`)."""
    return load_pairs(DEFAULT_PROMPTS)


def spread(pairs: Sequence[Pair], n: int | None) -> list[Pair]:
    """``n`` pairs spread evenly over the bank and its groups, in bank order (all when n is None).

    Banks are often grouped (equal lengths first, then longer champions, ...); taking
    the first n would test one group only. Each group (pairs without one form a group
    of their own) gets its share of the n by its size (largest remainders, ties to the
    group met first), taken evenly spaced within the group; a bank without groups gets
    n evenly spaced pairs.
    """
    if n is None or n >= len(pairs):
        return list(pairs)
    if n < 1:
        raise HarnessValueError(f"number of pairs {n}; expected a positive integer")
    members: dict[str | None, list[int]] = {}
    for index, pair in enumerate(pairs):
        members.setdefault(pair.group, []).append(index)
    quotas = {g: n * len(ix) / len(pairs) for g, ix in members.items()}
    shares = {g: int(q) for g, q in quotas.items()}
    order = list(members)  # first appearance breaks ties in the remainders
    by_remainder = sorted(order, key=lambda g: (-(quotas[g] - shares[g]), order.index(g)))
    for g in by_remainder[: n - sum(shares.values())]:
        shares[g] += 1
    chosen = []
    for g, ix in members.items():
        step = len(ix) / shares[g] if shares[g] else 0.0
        chosen.extend(ix[int(i * step)] for i in range(shares[g]))
    return [pairs[i] for i in sorted(chosen)]


def growing(pairs: Sequence[Pair], first: Sequence[Pair], budget: int) -> list[list[Pair]]:
    """The pair lists a sequential run evaluates a cell on: ``first``, then ``first`` plus a
    batch of as many more, each batch spread (:func:`spread`) over the pairs of ``pairs`` not
    yet taken, up to ``budget`` pairs or the whole bank. Each list extends the one before it,
    so the pairs arrive in one order, fixed before any result is seen."""
    lists = [list(first)]
    limit = min(budget, len(pairs))
    while len(lists[-1]) < limit:
        taken = {p.id for p in lists[-1]}
        left = [p for p in pairs if p.id not in taken]
        lists.append(lists[-1] + spread(left, min(max(len(first), 1), limit - len(lists[-1]))))
    return lists
