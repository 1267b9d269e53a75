"""Guards: sanity checks on the experiment itself. A failed guard makes a verdict ``invalid``.

On the machinery: a champion-baseline gap too small to divide by, a patch that
changed nothing in a phase it declared, two arms that should differ but are
token-identical. On the *text* an arm produced: a behaviour metric computed on
text can be fooled by two artefacts that are not the champion's behaviour, text
that repeats itself (the original score even adds a bonus for it) and text that
copies the champion prompt. An arm showing either has not transferred a
behaviour, whatever the metric says. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["GuardResult", "guard_gap_floor", "guard_patch_changed", "guard_arms_differ", "MIN_DIFFERING_SHARE",
           "guard_kv_changed", "DEGENERATION_RATIO",
           "ECHO_MARGIN", "guard_degeneration", "guard_echo", "mean"]


@dataclass(frozen=True)
class GuardResult:
    """One sanity check on the experiment itself; a failed guard makes the verdict invalid."""

    name: str
    ok: bool
    message: str


def guard_gap_floor(gaps_by_pair: Mapping[str, float], floor: float, max_fraction: float = 0.5) -> GuardResult:
    """Fail when more than ``max_fraction`` of pairs have a champion-baseline gap < ``floor``.

    ``gaps_by_pair`` maps pair id -> champion minus baseline (per-pair means). A NaN gap
    counts as below the floor. Efficiency is undefined for those pairs; if most pairs lack
    a gap, the claim measures nothing. No pair at all fails too.
    """
    name = "gap_floor"
    if not gaps_by_pair:
        return GuardResult(name, False, "no pairs to measure a champion-baseline gap on")
    below = sorted(p for p, g in gaps_by_pair.items() if not float(g) >= floor)
    n = len(gaps_by_pair)
    msg = f"{len(below)}/{n} pairs have a champion-baseline gap below the floor {floor:g}"
    if len(below) / n > max_fraction:
        shown = ", ".join(below[:5]) + (", ..." if len(below) > 5 else "")
        return GuardResult(name, False, f"{msg} (more than {max_fraction:.0%}): {shown}")
    return GuardResult(name, True, msg)


def guard_patch_changed(counts: Mapping[str, int], declared_phases: Sequence[str], site: str = "patch") -> GuardResult:
    """Fail when a declared phase of a patch changed zero values.

    ``counts`` maps phase ("prefill", "decode", ...) -> number of values the patch actually
    changed; a declared phase missing from ``counts`` counts as zero. The original
    protocol's decode-time hooks never fired; this is the guard that catches it.
    """
    name = f"patch_changed[{site}]"
    idle = [ph for ph in declared_phases if int(counts.get(ph, 0)) == 0]
    if idle:
        return GuardResult(name, False, f"patch at {site} changed no values in phase(s): {', '.join(idle)}")
    done = ", ".join(f"{ph}={int(counts[ph])}" for ph in declared_phases)
    return GuardResult(name, True, f"patch at {site} changed values: {done}")


def _token_tuples(seqs: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    return [tuple(int(t) for t in seq) for seq in seqs]


#: Least share of (pair, seed) rows in which two arms that should differ must differ. Under
#: shared seeds a working intervention changes nearly every sampled continuation (the toy
#: reference: 99-100% of rows for the layer-27 arms against KV alone, 56% for the weakest
#: control, V at layer 5); a majority admits an intervention that acts on half of the prompts
#: and refuses one that only nudges a token now and then, where the old rule (any one token of
#: any one seed) passed.
MIN_DIFFERING_SHARE = 0.5


def guard_arms_differ(
    tokens_a: Mapping[str, Sequence[Sequence[int]]],
    tokens_b: Mapping[str, Sequence[Sequence[int]]],
    names: tuple[str, str] = ("a", "b"),
    min_share: float = MIN_DIFFERING_SHARE,
) -> GuardResult:
    """Fail when fewer than ``min_share`` of the (pair, seed) rows differ between two arms.

    Inputs map pair id -> one token-id sequence per seed (same seed order in both). Under
    shared seeds, arms that should differ but are token-identical in most rows mean the
    intervention did (almost) nothing. Only pairs present in both are compared; none fails.
    """
    name = f"arms_differ[{names[0]} vs {names[1]}]"
    common = sorted(set(tokens_a) & set(tokens_b))
    if not common:
        return GuardResult(name, False, f"no pair generated under both {names[0]} and {names[1]}")
    rows = [(x, y) for p in common for x, y in zip(_token_tuples(tokens_a[p]), _token_tuples(tokens_b[p]))]
    differing = sum(x != y for x, y in rows)
    text = (f"{differing}/{len(rows)} rows (pair x seed) of {len(common)} pairs differ between {names[0]} "
            f"and {names[1]}")
    if not rows or differing < min_share * len(rows):
        return GuardResult(name, False, f"{text}; at least {min_share:.0%} must")
    return GuardResult(name, True, text)


def guard_kv_changed(arm: str, changed_by_pair: Mapping[str, int]) -> GuardResult:
    """Fail when the arm's KV splice changed no key or value element in any pair.

    ``changed_by_pair`` maps pair id -> elements the splice changed beyond rounding (see
    harness/kv.py ``changed_values``). A splice that wrote what the cache held already would
    make every "KV alone fails" claim pass whatever KV does, so it makes the cell invalid.
    """
    name = f"kv_changed[{arm}]"
    total = sum(int(v) for v in changed_by_pair.values())
    if total == 0:
        return GuardResult(name, False, f"the KV splice of {arm} changed no key or value in any of "
                                        f"{len(changed_by_pair)} pairs")
    idle = sum(int(v) == 0 for v in changed_by_pair.values())
    return GuardResult(name, True, f"the KV splice of {arm} changed {total} key/value elements "
                                   f"({idle}/{len(changed_by_pair)} pairs unchanged)")


#: An arm degenerates when its mean distinct-2 is below this share of the lower of the two
#: reference arms' (the baseline and the champion, sampled the same way).
DEGENERATION_RATIO = 0.75
#: An arm echoes when its mean share of 4-grams copied from the champion prompt exceeds the
#: champion arm's own (the champion continuing its own prompt) by more than this.
ECHO_MARGIN = 0.10


def mean(values: Iterable[float | None]) -> float:
    """Mean of the defined values; NaN when none is."""
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(kept) / len(kept) if kept else math.nan


def guard_degeneration(arm: str, arm_d2: float, baseline_d2: float, champion_d2: float) -> GuardResult:
    """Fail when the arm's distinct-2 is far below both reference arms' (repetitive text)."""
    name = f"degeneration[{arm}]"
    reference = min(baseline_d2, champion_d2)
    if math.isnan(arm_d2) or math.isnan(reference):
        return GuardResult(name, True, f"{arm}: distinct-2 undefined (texts under 2 words); not judged")
    limit = DEGENERATION_RATIO * reference
    text = (f"{arm}: distinct-2 {arm_d2:.2f} vs baseline {baseline_d2:.2f}, champion {champion_d2:.2f} "
            f"(degenerate below {DEGENERATION_RATIO:g} x {reference:.2f} = {limit:.2f})")
    return GuardResult(name, arm_d2 >= limit, text if arm_d2 >= limit else f"{text}: repetitive text")


def guard_echo(arm: str, arm_echo: float, champion_echo: float) -> GuardResult:
    """Fail when the arm copies the champion prompt more than the champion arm itself does."""
    name = f"echo[{arm}]"
    if math.isnan(arm_echo):
        return GuardResult(name, True, f"{arm}: echo undefined (texts under 4 words); not judged")
    reference = 0.0 if math.isnan(champion_echo) else champion_echo
    limit = reference + ECHO_MARGIN
    text = (f"{arm}: {arm_echo:.2f} of 4-grams copied from the champion prompt vs the champion arm's "
            f"{reference:.2f} (echo above {limit:.2f})")
    return GuardResult(name, arm_echo <= limit, text if arm_echo <= limit else f"{text}: copies the prompt")
