"""Claims and their measures, as records: what a claim computes and what it asserts.

A :class:`Claim` names a *measure* (what is computed per pair), a threshold and a
direction. Each measure type computes its own per-pair values from an evaluation
context (see :mod:`harness.evaluate`), so adding a kind of claim means adding one
class here:

- :class:`Efficiency`: an arm's transfer efficiency, (arm - baseline) / (champion - baseline);
- :class:`Contrast`: the difference of two arms' efficiencies, paired per pair;
- :class:`Interaction`: the 2x2 factorial interaction of two factors, (both - first) -
  (second - neither) on efficiencies, per pair;
- :class:`RvDifference`: R_V(champion prompt) - R_V(baseline prompt) on the prompt
  pass, which no protocol choice affects (it runs once, as protocol ``any``);
- :class:`PrDifference`: PR(V at a layer) of the champion prompt minus the baseline's
  (prompt pass, protocol-independent);
- :class:`GeometryShift`: how far an arm's own generations move R_V from the
  baseline's toward the champion's;
- :class:`MinimalKvSet`: the smallest set of layers whose KV alone keeps a share of
  the full-KV efficiency, searched on half of the pairs and confirmed on the other.

Nothing here imports torch or pytest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol as TypingProtocol

from harness.errors import HarnessValueError, did_you_mean
from harness.metrics import lookup_metric
from harness.records import Intervention

__all__ = ["Source", "Claim", "Efficiency", "Contrast", "Interaction", "RvDifference", "PrDifference", "GeometryShift",
           "MinimalKvSet", "DIRECTIONS", "RULE_VERSION", "ANY_PROTOCOL"]

#: The verdict rule's version: recorded with every ledger entry, bumped whenever a change
#: to metrics, intervals, guards or the decision could move a verdict.
RULE_VERSION = 3
DIRECTIONS = ("above", "below", "within")
#: The protocol name of a protocol-independent claim cell.
ANY_PROTOCOL = "any"


@dataclass(frozen=True)
class Source:
    """Where a claim comes from: the findings file and the sentence it rests on."""

    file: str
    quote: str


class Context(TypingProtocol):
    """What a measure may ask of the evaluation (implemented by :mod:`harness.evaluate`)."""

    def efficiencies(self, arm: Intervention, metric: str) -> dict[str, float]: ...

    def rv_difference(self, late: int, early: int) -> dict[str, float]: ...

    def pr_difference(self, layer: int) -> dict[str, float]: ...

    def geometry_shift(self, arm: Intervention, late: int, early: int) -> dict[str, float]: ...

    def minimal_kv_set(self, share: float, block: int, metric: str,
                       search_seeds: int | None = None) -> dict[str, float]: ...


def _check_metric(metric: str | None) -> None:
    if metric is not None:
        lookup_metric(metric)  # a one-line refusal naming the known metrics


@dataclass(frozen=True)
class Efficiency:
    """The arm's transfer efficiency per pair on ``metric`` (None: the protocol's metric)."""

    arm: Intervention
    metric: str | None = None

    protocol_independent = False

    def __post_init__(self) -> None:
        _check_metric(self.metric)

    @property
    def arms(self) -> tuple[Intervention, ...]:
        return (self.arm,)

    def describe(self, metric: str) -> str:
        return f"efficiency of {self.arm.name} on {metric}"

    def per_pair(self, ctx: Context, metric: str) -> dict[str, float]:
        return ctx.efficiencies(self.arm, metric)


@dataclass(frozen=True)
class Contrast:
    """Efficiency of ``arm`` minus efficiency of ``versus``, per pair."""

    arm: Intervention
    versus: Intervention
    metric: str | None = None

    protocol_independent = False

    def __post_init__(self) -> None:
        _check_metric(self.metric)

    @property
    def arms(self) -> tuple[Intervention, ...]:
        return (self.arm, self.versus)

    def describe(self, metric: str) -> str:
        return f"efficiency of {self.arm.name} minus that of {self.versus.name}, on {metric}"

    def per_pair(self, ctx: Context, metric: str) -> dict[str, float]:
        a, b = ctx.efficiencies(self.arm, metric), ctx.efficiencies(self.versus, metric)
        return {p: a[p] - b[p] for p in a if p in b and not (math.isnan(a[p]) or math.isnan(b[p]))}


@dataclass(frozen=True)
class Interaction:
    """The interaction of two factors in a 2x2 factorial, per pair, on efficiencies:
    (``both`` - ``first``) - (``second`` - ``neither``): how much more the second factor adds
    on top of the first than on its own. E.g. KV x V_PROJ: both = KV + V patch, first = KV
    alone, second = V patch alone, neither = no intervention. 0: the factors add up."""

    both: Intervention
    first: Intervention
    second: Intervention
    neither: Intervention
    metric: str | None = None

    protocol_independent = False

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if len({self.both, self.first, self.second, self.neither}) != 4:
            raise HarnessValueError("Interaction: the four cells of the 2x2 design must be four different arms")

    @property
    def arms(self) -> tuple[Intervention, ...]:
        return (self.both, self.first, self.second, self.neither)

    def describe(self, metric: str) -> str:
        return (f"interaction on {metric}: (efficiency of {self.both.name} - of {self.first.name}) - "
                f"(of {self.second.name} - of {self.neither.name})")

    def per_pair(self, ctx: Context, metric: str) -> dict[str, float]:
        b, f, s, n = (ctx.efficiencies(arm, metric) for arm in self.arms)
        out = {}
        for p in b:
            values = [d.get(p, math.nan) for d in (b, f, s, n)]
            if not any(math.isnan(v) for v in values):
                out[p] = (values[0] - values[1]) - (values[2] - values[3])
        return out


class _PromptPass:
    """A measure of the prompts alone (one forward pass each): no arm, no sampling, no
    metric, and no protocol choice affects it, so it runs once."""

    protocol_independent = True
    metric = None

    @property
    def arms(self) -> tuple[Intervention, ...]:
        return ()


@dataclass(frozen=True)
class RvDifference(_PromptPass):
    """R_V(champion) - R_V(baseline) per pair, on the prompt pass.

    R_V = PR(V at ``late``) / PR(V at ``early``) over the last 16 prompt positions
    (layers as written for a 32-layer model).
    """

    late: int = 27
    early: int = 5

    def describe(self, metric: str) -> str:
        return f"R_V(champion) - R_V(baseline), R_V = PR(V@{self.late}) / PR(V@{self.early}), prompt pass"

    def per_pair(self, ctx: Context, metric: str) -> dict[str, float]:
        return ctx.rv_difference(self.late, self.early)


@dataclass(frozen=True)
class PrDifference(_PromptPass):
    """PR(V at ``layer``) of the champion prompt minus that of the baseline prompt, per pair
    (last 16 prompt positions; layer as written for a 32-layer model)."""

    layer: int

    def describe(self, metric: str) -> str:
        return f"PR(V@{self.layer}) of the champion prompt minus the baseline's, prompt pass"

    def per_pair(self, ctx: Context, metric: str) -> dict[str, float]:
        return ctx.pr_difference(self.layer)


@dataclass(frozen=True)
class GeometryShift:
    """Where the arm's generations put R_V, from the baseline's (0) to the champion's (1).

    Per sample, R_V = PR(V@late) / PR(V@early) over the last 16 positions of the
    sequence the arm produced (prompt + continuation), read by a *clean* teacher-forced
    pass: no splice, no patch, so a patched V cannot move R_V by construction. Per pair:
    (mean R_V of the arm - of the baseline arm) / (of the champion arm - of the baseline
    arm), undefined when the champion and baseline differ by less than 0.05.
    """

    arm: Intervention
    late: int = 27
    early: int = 5

    protocol_independent = False
    metric = None

    @property
    def arms(self) -> tuple[Intervention, ...]:
        return (self.arm,)

    def describe(self, metric: str) -> str:
        return (f"R_V shift of {self.arm.name}'s generations toward the champion's "
                f"(R_V = PR(V@{self.late}) / PR(V@{self.early}), clean pass over prompt + continuation)")

    def per_pair(self, ctx: Context, metric: str) -> dict[str, float]:
        return ctx.geometry_shift(self.arm, self.late, self.early)


@dataclass(frozen=True)
class MinimalKvSet:
    """KV of the smallest layer set that keeps ``share`` of the full-KV efficiency.

    The search (greedy removal of blocks of ``block`` layers, as written for 32 layers,
    while the remaining set keeps ``share`` of the full-KV efficiency) runs on the first
    half of the pairs; the value per pair, on the other half only, is efficiency(set) -
    ``share`` x efficiency(all layers): above 0 when the set found keeps the share on
    pairs it was not chosen on.

    The search samples ``search_seeds`` seeds per pair (None: the run's seeds): it only
    chooses the set, and the verdict rests on the held-out half with every seed, so a cheaper
    search costs at most a worse choice, never the test's validity.
    """

    share: float = 0.8
    block: int = 4
    metric: str | None = None
    search_seeds: int | None = 2

    protocol_independent = False

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if not 0 < self.share <= 1 or self.block < 1 or 32 % self.block:
            raise HarnessValueError(f"MinimalKvSet(share={self.share}, block={self.block}): expected 0 < share "
                                    "<= 1 and a block size that divides 32")
        if self.search_seeds is not None and (not isinstance(self.search_seeds, int) or self.search_seeds < 1):
            raise HarnessValueError(f"MinimalKvSet(search_seeds={self.search_seeds!r}): expected a positive "
                                    "number of seeds, or None for the run's seeds")

    @property
    def arms(self) -> tuple[Intervention, ...]:
        return (Intervention("kv-only", kv_layers="all"),)

    def describe(self, metric: str) -> str:
        return (f"efficiency of the minimal KV layer set minus {self.share:g} x full-KV efficiency, on "
                f"{metric}, on held-out pairs")

    def per_pair(self, ctx: Context, metric: str) -> dict[str, float]:
        return ctx.minimal_kv_set(self.share, self.block, metric, self.search_seeds)


Measure = Efficiency | Contrast | Interaction | RvDifference | PrDifference | GeometryShift | MinimalKvSet
_MEASURES = (Efficiency, Contrast, Interaction, RvDifference, PrDifference, GeometryShift, MinimalKvSet)


@dataclass(frozen=True)
class Claim:
    """One claim of a finding, as a test can check it.

    The claim holds when ``measure`` is ``direction`` ``threshold`` (``above``,
    ``below``), or, for ``within``, lies in [``threshold``, ``threshold_high``]: an
    equivalence claim such as "about 0%". ``must_differ_from``: an arm whose tokens
    must differ from the claim arm's somewhere, or the claim is invalid (the
    intervention did nothing). No field has a default that states a claim for you.
    """

    id: str
    statement: str
    source: Source
    measure: Measure
    threshold: float
    direction: str
    threshold_high: float | None = None
    must_differ_from: Intervention | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.measure, _MEASURES):
            raise HarnessValueError(f"claim {self.id}: measure {self.measure!r}; expected one of "
                                    + ", ".join(m.__name__ for m in _MEASURES))
        if self.direction not in DIRECTIONS:
            raise HarnessValueError(f"claim {self.id}: direction {self.direction!r}; expected one of "
                                    f"{', '.join(DIRECTIONS)}." + did_you_mean(str(self.direction), DIRECTIONS))
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold):
            raise HarnessValueError(f"claim {self.id}: threshold {self.threshold!r}; expected a finite number")
        if self.direction == "within":
            high = self.threshold_high
            if not isinstance(high, (int, float)) or not math.isfinite(high) or high <= self.threshold:
                raise HarnessValueError(
                    f"claim {self.id}: a 'within' claim needs threshold_high > threshold, got {high!r}")
        elif self.threshold_high is not None:
            raise HarnessValueError(f"claim {self.id}: threshold_high is only for direction 'within'")

    @property
    def arms(self) -> tuple[Intervention, ...]:
        extra = (self.must_differ_from,) if self.must_differ_from is not None else ()
        return tuple(dict.fromkeys((*self.measure.arms, *extra)))

    @property
    def protocol_independent(self) -> bool:
        return self.measure.protocol_independent

    def bound_text(self) -> str:
        if self.direction == "within":
            return f"within [{self.threshold:g}, {self.threshold_high:g}]"
        return f"{self.direction} {self.threshold:g}"


def metric_for(claim: Claim, protocol: Any, finding: Any = None) -> str:
    """The metric a claim is judged on under ``protocol``: the claim's own, else the protocol's
    fixed one, else the one its finding names for the protocol (default: the generic finding's)."""
    if finding is None:
        from harness.finding import GENERIC as finding
    return getattr(claim.measure, "metric", None) or protocol.metric or finding.metric_for(protocol.name)


def describe_settings(settings: Mapping[str, Any]) -> str:
    """A canonical one-line text of the settings a verdict was measured with (the ledger key)."""
    return " ".join(f"{k}={settings[k]}" for k in sorted(settings))
