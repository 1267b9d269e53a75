"""What a report says about one claim cell: the fields that apply to its measure, and samples.

Shared by ``summary.md`` and ``report.html`` so both say the same. A field is shown
only when the cell's measure has it: an R_V difference (a prompt-pass geometry
measure) has no arms, seeds, samples, model metric or patch counts, and none of
those lines appear for it. Values are markdown-ish text (``**bold**``, backticks),
which the HTML writer converts. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from harness.report.brief import fmt, interval_text, zero_width
from harness.report.schema import ClaimRow, SampleRow

__all__ = ["Fact", "claim_facts", "SampleGrid", "sample_grid", "bound_text"]

#: Sample rows shown per claim cell, each from another pair and another seed.
SAMPLES_PER_CELL = 3
SAMPLE_CHARS = 160


@dataclass(frozen=True)
class Fact:
    label: str
    text: str
    items: tuple[str, ...] = ()  # sub-items (guards), one per line


def bound_text(row: ClaimRow) -> str:
    if row.direction == "within":
        return f"within [{fmt(row.threshold)}, {fmt(row.threshold_high)}]"
    return f"{row.direction} {fmt(row.threshold)}".strip()


def _level(row: ClaimRow) -> str:
    return f"{100 * row.level:.4g}%" if math.isfinite(row.level) else "n/a"


def claim_facts(row: ClaimRow) -> list[Fact]:
    """The cell's fields, in reading order; only those its measure has."""
    facts = [
        Fact("Measure", f"{row.measure or row.metric or 'n/a'}; the claim holds if it is {bound_text(row)}"),
        Fact("Estimate", f"{fmt(row.estimate)}, {_level(row)} interval {interval_text(row)} "
                         f"({row.interval_method or 'n/a'})"
                         + (", zero width: every pair gave the same value" if zero_width(row) else "")),
        Fact("Verdict", f"**{row.verdict or 'n/a'}** (expected {row.expected or 'n/a'}, outcome "
                        f"{row.outcome or 'n/a'}): {row.reason or 'no reason recorded'}"),
    ]
    if row.verdict == "inconclusive" and math.isfinite(row.mde):
        facts.append(Fact("Within reach", f"effects at least {fmt(row.mde)} from the threshold (MDE, 80% "
                                          "power); smaller ones could not be detected with these pairs"))
    samples = f" x {row.n_seeds} seeds" if row.n_seeds else " (prompt pass: no sampling)"
    facts.append(Fact("Pairs", f"{row.n_pairs}{samples}"))
    interventions = [a for a in row.arms if a not in ("baseline", "champion")]
    if interventions:
        facts.append(Fact("Arms", ", ".join(f"`{a}`" for a in interventions) + " (against baseline and champion)"))
    if row.alt_metric:
        facts.append(Fact(f"On {row.alt_metric}", f"estimate {fmt(row.alt_estimate)}, interval "
                          f"[{fmt(row.alt_low)}, {fmt(row.alt_high)}], verdict {row.alt_verdict or 'n/a'}"
                          + ("" if row.metrics_agree else "; **disagrees** with the text metric")))
    mapped = "; ".join(p for p in (f"KV of layers {row.kv_layers}" if row.kv_layers else "",
                                   row.sites.replace(";", ", ")) if p)
    if mapped:
        facts.append(Fact("Mapped to the model", mapped))
    if row.calls_prefill or row.calls_decode:
        facts.append(Fact("Patch applications", f"prefill {row.calls_prefill} calls, {row.changed_prefill} "
                          f"values changed; decode {row.calls_decode} calls, {row.changed_decode} values changed"))
    if row.guards:
        failed = [g.removeprefix("FAILED ") for g in row.guards if g.startswith("FAILED ")]
        passed = [g.removeprefix("ok ").split(":", 1)[0] for g in row.guards if g.startswith("ok ")]
        text = (f"{len(failed)} failed, {len(passed)} passed" if failed else f"all {len(passed)} passed")
        items = tuple(f"FAILED {g}" for g in failed) + ((f"passed: {', '.join(passed)}",) if passed else ())
        facts.append(Fact("Guards", text, items))
    if row.shared:
        facts.append(Fact("Run once", "; ".join(row.shared)))
    if row.notes:
        facts.append(Fact("Search", f"{len(row.notes)} steps", tuple(row.notes)))
    if row.flags:
        facts.append(Fact("Flags", ", ".join(row.flags)))
    return facts


@dataclass(frozen=True)
class SampleGrid:
    """Samples side by side: one row per (pair, seed), one column per arm."""

    arms: tuple[str, ...]
    rows: tuple[tuple[str, int, tuple[str, ...]], ...]  # (pair, seed, text per arm)


def _spread(items: Sequence[str], k: int) -> list[str]:
    """``k`` items spread evenly over ``items`` (first and last included)."""
    if len(items) <= k:
        return list(items)
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)] if k > 1 else [items[0]]


def sample_grid(row: ClaimRow, results: Sequence[SampleRow], k: int = SAMPLES_PER_CELL,
                chars: int = SAMPLE_CHARS) -> SampleGrid:
    """Up to ``k`` samples of the cell: pairs spread over the bank, the i-th pair's i-th seed.

    Every arm of the cell shows the same pair and seed, so a row reads across as the
    baseline, the champion and the interventions on one prompt with one seed.
    """
    arms = tuple(row.arms)
    if not arms:
        return SampleGrid((), ())
    texts: dict[tuple[str, int, str], str] = {}
    seeds: dict[str, list[int]] = {}
    for s in results:
        if s.protocol == row.protocol and s.arm in arms:
            texts[(s.pair, s.seed, s.arm)] = s.text
            seeds.setdefault(s.pair, [])
            if s.seed not in seeds[s.pair]:
                seeds[s.pair].append(s.seed)
    out = []
    for i, pair in enumerate(_spread(list(seeds), k)):
        own = sorted(seeds[pair])
        seed = own[i % len(own)]
        out.append((pair, seed, tuple(_one_line(texts.get((pair, seed, a)), chars) for a in arms)))
    return SampleGrid(arms, tuple(out))


def _one_line(text: str | None, limit: int) -> str:
    if text is None:
        return "(not sampled)"
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
