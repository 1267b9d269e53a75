""""How to read this report": the terms a reader needs, filled in from the run's own rows.

The text is markdown (paragraphs, ``- `` lists, inline code and bold), written once
for ``summary.md`` and turned into HTML by :mod:`harness.report.html`. Metric
descriptions and guard thresholds come from :mod:`harness.metrics` and
:mod:`harness.guards` at render time (both import no torch); a run's numbers
(interval method, level, family size, protocol parameters) come from its rows and
provenance, so the explanation always matches the run it explains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.report.schema import SEQUENTIAL_METHOD, ClaimRow

__all__ = ["how_to_read", "metric_lines"]

EFFICIENCY = "(arm − baseline) / (champion − baseline)"


def metric_lines(provenance: Mapping[str, Any] | None = None) -> list[str]:
    """One list item per metric: name, floor, bounds, description. A run records its finding's
    metrics in its provenance (the finding's own are not importable at render time);
    an older run's come from the generic registry."""
    recorded = (provenance or {}).get("metrics")
    if isinstance(recorded, list) and recorded:
        return [f"- `{m['name']}` (floor {m['floor']:g}, {_bounds(m.get('bounds'))}): {m['description']}"
                for m in recorded
                if isinstance(m, dict) and {"name", "floor", "description"} <= set(m)]
    try:
        from harness.metrics import METRICS
    except ImportError:  # a reader without numpy: the names are still in the table
        return ["- (metric descriptions unavailable: `harness.metrics` could not be imported)"]
    return [f"- `{m.name}` (floor {m.floor:g}, {_bounds(m.bounds)}): {m.description}" for m in METRICS.values()]


def _bounds(b: Any) -> str:
    return f"bounds [{b[0]:g}, {b[1]:g}]" if b else "no known bounds"


def _guard_thresholds() -> tuple[str, str]:
    try:
        from harness.guards import DEGENERATION_RATIO, ECHO_MARGIN
    except ImportError:
        return "a set share", "a set margin"
    return f"{DEGENERATION_RATIO:g} x", f"{ECHO_MARGIN:g}"


def _protocol_words(provenance: Mapping[str, Any]) -> list[str]:
    params = provenance.get("protocols") if isinstance(provenance.get("protocols"), dict) else {}

    def said(name: str) -> str:
        p = params.get(name) or {}
        bits = []
        if p.get("gen_tokens"):
            bits.append(f"{p['gen_tokens']} tokens")
        if p.get("temperature") is not None:
            bits.append(f"temperature {p['temperature']:g}")
        if p.get("metric"):
            bits.append(f"judged on `{p['metric']}`")
        return f" ({', '.join(bits)})" if bits else ""

    return [
        f"- **original**{said('original')}: the finding's scripts reproduced with their defects, but seeded. "
        "Reference arms sample from the prompt (top-k 50); an intervention prefills the whole baseline, "
        "splices the champion's cache right-aligned (BOS dropped, positions misaligned), registers its "
        "patches only after the prefill, re-feeds the baseline's last token and samples from the full "
        "vocabulary. Its decode-time hooks never change a value, which the patch guard reports.",
        f"- **corrected**{said('corrected')}: the same question with the defects fixed. Every arm prefills "
        "its prompt without the last token and feeds that token once; patches act in the prefill and in "
        "every decoding step; a KV splice puts the champion's prefix cache in place of the baseline's, "
        "right-aligned with keys re-rotated to their new positions, BOS kept.",
        "- **any**: a measure no protocol choice affects (geometry on the prompt pass), run once.",
        "",
        "Both protocols sample every arm of a pair with the pair's own seeds, so arms differ by the "
        "intervention, not by sampling noise.",
    ]


def _interval_words(rows: Sequence[ClaimRow]) -> str:
    levels = sorted({r.level for r in rows if math.isfinite(r.level)})
    families = sorted({r.family_size for r in rows if r.family_size})
    methods = " / ".join(sorted({r.interval_method for r in rows if r.interval_method})) or "not recorded"
    level = " and ".join(f"{100 * x:.4g}%" for x in levels)
    if levels and families:
        family = " / ".join(map(str, families))
        how = f"each cell at the {level} level (1 − 0.05 / {family}, Bonferroni over the family of {family} cells)"
    elif levels:
        how = f"each cell at the {level} level"
    else:
        how = "at a level corrected for the family of claim cells"
    return (f"**What is guaranteed.** Verdicts are decided {how} by a betting test of bounded means "
            "(Waudby-Smith and Ramdas): an efficiency is the ratio of mean gains over pairs, mean(arm − "
            "baseline) / mean(champion − baseline), and \"above t\" is shown when mean(arm − baseline − "
            "t (champion − baseline)) > 0 and the mean gap > 0 are both shown. The chance of any false "
            "supported or refuted verdict among the family's cells is at most 5% (Bonferroni), whatever the distribution "
            "of the per-pair values (skewed, mostly zero) and whatever the dependence between cells, under "
            "two assumptions: the metric stays within its declared bounds (below), and the pairs are "
            "independent draws from one population of pairs (exchangeable), the seeds averaged within a "
            "pair. The interval is the set of values neither one-sided test rejects. Cells flagged "
            "`no_guarantee` (a geometry shift: no known bounds) and the `champion_logprob` "
            "columns use a Student t interval on per-pair values, with no such promise. "
            "The price of the guarantee is pairs: few pairs decide only large effects. For inconclusive "
            f"cells the MDE is the interval's half-width. Interval methods in this run: {methods}."
            f"{_SEQUENTIAL_WORDS if any(r.interval_method == SEQUENTIAL_METHOD for r in rows) else ''} Details "
            "and measured error rates: `docs/statistics.md`.")


_SEQUENTIAL_WORDS = (" The sequential cells (`--until-decided`) took pairs in batches until decided or out of "
                     "budget, in an order fixed before any result; their test holds at every number of pairs at "
                     "once (anytime-valid), so stopping at the first decision keeps the same promise. Their pair "
                     "count is in the pairs column.")


def _seed_words(provenance: Mapping[str, Any]) -> list[str]:
    offset = provenance.get("seed_offset")
    if not offset:
        return []
    return [f"**Seeds.** This run sampled with seed set {offset} (`--seed-offset {offset}`), not the default "
            "set 0: the same claims on another sample, to check that verdicts do not hang on the seeds.", ""]


def how_to_read(rows: Sequence[ClaimRow], provenance: Mapping[str, Any]) -> list[str]:
    """The section's markdown lines (a ``## `` heading, then paragraphs and lists)."""
    ratio, margin = _guard_thresholds()
    out = [
        "## How to read this report", "",
        "**Cells.** Each claim of the finding is tested under each protocol that matters to it; one "
        "claim under one protocol is a *cell*, with its own interval and verdict.", "",
        f"**Efficiency** = {EFFICIENCY} on one metric, shown per prompt pair; a cell's estimate is the "
        "ratio of the means over pairs (not the mean of per-pair ratios). Each term is the pair's mean over "
        "its seeds (baseline: the baseline prompt alone; champion: the champion prompt alone; arm: the "
        "baseline prompt under the intervention). 0 means the arm behaves like the baseline, 1 like the "
        "champion. Values above 1 occur when the arm scores higher than the champion itself: a small "
        "champion-baseline gap in the denominator amplifies sampling noise, and an intervention can "
        "overshoot (e.g. repetitive text collecting markers). Pairs whose gap is below the metric's floor "
        "are left out. A *contrast* is the difference of two arms' efficiencies; an *R_V difference* is "
        "geometry on the prompt pass (participation ratio of V at a late layer over an early one, champion "
        "minus baseline): no generation, so no arms, seeds or samples.", "",
        "**Metrics** (per generated sample, then averaged):", "",
        *metric_lines(provenance), "",
        "**Protocols.**", "",
        *_protocol_words(provenance), "",
        "**Verdicts**, from one-sided tests at the claim's threshold itself:", "",
        "- **supported**: the claim's side of the threshold is shown (for a *within* claim, \"about X\": "
        "above its low bound and below its high bound);",
        "- **refuted**: the other side is shown (*within*: below the low bound or above the high one);",
        "- **inconclusive**: neither is shown; not evidence of no effect;",
        "- **invalid**: the experiment itself is broken (a guard failed, or fewer than 2 pairs had a "
        "value): no evidence either way.", "",
        _interval_words(rows), "",
        *_seed_words(provenance),
        f"**Guards** on the machinery and on the text. A champion-baseline gap below the floor on most "
        "pairs; a patch that changed no value in a phase it declared; a KV splice that changed no key or "
        "value; an arm that is a reference arm's own computation (the cell would compare it with itself); "
        "two arms that should differ but gave identical tokens in more than half of the rows; a pair mean "
        f"outside the metric's bounds; *degeneration*: an arm whose distinct-2 is below {ratio} the lower of the "
        f"baseline's and champion's (repetitive text); *echo*: an arm copying more than {margin} more of "
        "the champion prompt's 4-grams than the champion arm does. Any failed guard makes the cell invalid.",
        "",
        "**Model metric.** Each efficiency cell is also measured on `champion_logprob` (the `alt_*` "
        "columns): the mean log-probability, teacher-forced under the arm, of the champion's own greedy "
        "continuation; no text heuristics. When the text metric and the model metric give opposite "
        "decisive verdicts (one supported, the other refuted) the cell is flagged **disagrees**: read its "
        "verdict as depending on the metric.", "",
        "**Expected and outcome.** *expected* is the verdict the ledger (`claims/ledger.toml`) records for "
        "this model and settings (supported where it has none); the test passes when the verdict is "
        "supported as expected, is an expected failure (xfail) when it matches a known other verdict, and "
        "fails when the verdict changed.", "",
    ]
    return out
