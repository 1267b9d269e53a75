"""Short texts about claim rows, shared by the terminal, summary.md, report.html and CI summaries.

A one-line reason per claim cell, the count of verdicts, how many cells of the family
ran, and what the ledger said. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from harness.report.schema import ClaimRow

__all__ = ["VERDICTS", "short_reason", "verdict_counts", "counts_text", "coverage_text", "ledger_text",
           "closing_line", "cut", "fmt", "interval_text"]

VERDICTS = ("supported", "refuted", "inconclusive", "invalid")
REASON_CHARS = 72
#: Guard names (before their "[...]") as a reader would say them.
_GUARD_WORDS = {"patch_changed": "a patch changed nothing", "arms_differ": "arms gave identical tokens",
                "degeneration": "degenerate (repetitive) text", "echo": "text echoes the prompt",
                "gap_floor": "champion-baseline gap too small"}
#: Unexpected ledger outcomes named in the closing line before "and N more".
_NAMED = 5


def cut(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters (an ellipsis marks a cut)."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def fmt(value: object) -> str:
    """A number in 3 significant digits; NaN and None as ``n/a``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def interval_text(row: ClaimRow) -> str:
    if math.isnan(row.ci_low) and math.isnan(row.ci_high):
        return "n/a"
    return f"[{fmt(row.ci_low)}, {fmt(row.ci_high)}]"


def _failed_guards(row: ClaimRow) -> list[str]:
    names = [g.removeprefix("FAILED ").split(":", 1)[0].split("[", 1)[0] for g in row.guards
             if g.startswith("FAILED ")]
    return list(dict.fromkeys(_GUARD_WORDS.get(n, n) for n in names))


def short_reason(row: ClaimRow, limit: int = REASON_CHARS) -> str:
    """Why the cell got its verdict, in one short line (the full reason is in the report).

    Invalid: the failed guards in words. Otherwise the interval's relation to the
    threshold as the verdict rule states it (``wholly above 0.8``, ``straddles 0.2``),
    with what weakens it: no spread, few pairs, a model metric that disagrees.
    """
    reason = " ".join(row.reason.split())
    if row.verdict == "invalid":
        failed = _failed_guards(row)
        text = ", ".join(failed) if failed else reason
    else:
        relation = reason.rsplit(": ", 1)[-1] if ": " in reason else reason
        text = f"interval {relation}" if relation.startswith(("wholly", "straddles", "crosses")) else relation
        if zero_width(row):
            text = f"all {row.n_pairs} pairs gave {fmt(row.estimate)}: no width, no verdict"
    if "few_pairs" in row.flags:
        text += f"; only {row.n_pairs} pairs"
    if not row.metrics_agree and row.alt_verdict:
        text += f"; {row.alt_metric or 'model metric'} says {row.alt_verdict}"
    return cut(text, limit)


def verdict_counts(rows: Iterable[ClaimRow]) -> dict[str, int]:
    """Cells per verdict, in the order of :data:`VERDICTS` (other verdicts after them)."""
    counts = dict.fromkeys(VERDICTS, 0)
    for row in rows:
        counts[row.verdict or "n/a"] = counts.get(row.verdict or "n/a", 0) + 1
    return counts


def counts_text(rows: Iterable[ClaimRow]) -> str:
    """``12 supported, 9 refuted, 6 inconclusive, 7 invalid``."""
    return ", ".join(f"{n} {verdict}" for verdict, n in verdict_counts(rows).items()
                     if n or verdict in VERDICTS)


def coverage_text(rows: Sequence[ClaimRow], complete: bool = True) -> str:
    """How many cells of the family ran: a ``-k``, ``--lf`` or ``--shard`` run is a part of it."""
    ran = len(rows)
    family = max((r.family_size for r in rows), default=0)
    claims = len({r.claim for r in rows})
    noun = "claim" if claims == 1 else "claims"
    if not family or ran >= family:
        return f"{ran} claim x protocol cells ({claims} {noun})" + ("" if complete else " finished")
    if complete:
        return (f"{ran} of the family's {family} claim x protocol cells ({claims} {noun}); the others were "
                "not selected (-k, --lf or --shard)")
    return (f"{ran} of the family's {family} claim x protocol cells ({claims} {noun}) finished; the others "
            "did not run or did not finish")


def zero_width(row: ClaimRow) -> bool:
    """Whether the row's interval has no width ("degenerate": the flag's name in older reports)."""
    return "zero_width" in row.flags or "degenerate" in row.flags


def ledger_text(rows: Sequence[ClaimRow], covered: bool | None = None) -> str:
    """``ledger: all as expected``, or which cells' verdicts the ledger did not expect."""
    unexpected = [r for r in rows if r.outcome == "fail"]
    unjudged = sum(1 for r in rows if r.outcome == "unjudged")
    if not rows:
        return "ledger: nothing to compare"
    if unjudged and not unexpected:
        return (f"ledger: no entries for these settings, {unjudged} verdict{'s' if unjudged != 1 else ''} "
                "reported, not judged (--ledger-strict fails those not supported)")
    if not unexpected:
        return "ledger: all as expected"
    named = ", ".join(f"{r.claim} [{r.protocol}] {r.verdict} (expected {r.expected or 'supported'})"
                      for r in unexpected[:_NAMED])
    more = f" and {len(unexpected) - _NAMED} more" if len(unexpected) > _NAMED else ""
    why = " (no entries for these settings: a claim without one must be supported)" if covered is False else ""
    return f"ledger: {len(unexpected)} unexpected{why}: {named}{more}"


def closing_line(rows: Sequence[ClaimRow], covered: bool | None = None, missing: int = 0,
                 complete: bool = True) -> str:
    """The run's last line: ``claims: 12 supported, ...; ledger: all as expected``."""
    family = max((r.family_size for r in rows), default=0)
    part = f" ({len(rows)} of {family} cells)" if family and len(rows) < family else ""
    text = f"claims{part}: {counts_text(rows)}; {ledger_text(rows, covered)}"
    if missing:
        text += f"; {missing} claim test{'s' if missing != 1 else ''} failed without a result"
    if not complete:
        text += "; run INCOMPLETE"
    return text
