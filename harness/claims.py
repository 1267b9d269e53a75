"""Claims and their measures, as records: what a claim computes and what it asserts.

A :class:`Claim` names a *measure* (what is computed per pair), a threshold and a
direction. Each measure type computes its own per-pair values from an evaluation
context (see :mod:`harness.evaluate`), so adding a kind of claim means adding one
class here:

- :class:`Efficiency`: an arm's transfer efficiency, (arm - baseline) / (champion - baseline);
- :class:`Contrast`: the difference of two arms' efficiencies, paired per pair;
- :class:`RvDifference`: R_V(champion prompt) - R_V(baseline prompt) on the prompt
  pass, which no protocol choice affects (it runs once, as protocol ``any``).

Nothing here imports torch or pytest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol as TypingProtocol

from harness.errors import HarnessLookupError, HarnessValueError, did_you_mean
from harness.metrics import METRICS
from harness.records import Intervention

__all__ = ["Source", "Claim", "Efficiency", "Contrast", "RvDifference", "DIRECTIONS", "RULE_VERSION",
           "ANY_PROTOCOL"]

#: The verdict rule's version: recorded with every ledger entry, bumped whenever a change
#: to metrics, intervals, guards or the decision could move a verdict.
RULE_VERSION = 2
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


def _check_metric(metric: str | None) -> None:
    if metric is not None and metric not in METRICS:
        raise HarnessLookupError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}."
                                 + did_you_mean(metric, METRICS))


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
class RvDifference:
    """R_V(champion) - R_V(baseline) per pair, on the prompt pass.

    R_V = PR(V at ``late``) / PR(V at ``early``) over the last 16 prompt positions
    (layers as written for a 32-layer model).
    """

    late: int = 27
    early: int = 5

    protocol_independent = True
    metric = None

    @property
    def arms(self) -> tuple[Intervention, ...]:
        return ()

    def describe(self, metric: str) -> str:
        return f"R_V(champion) - R_V(baseline), R_V = PR(V@{self.late}) / PR(V@{self.early}), prompt pass"

    def per_pair(self, ctx: Context, metric: str) -> dict[str, float]:
        return ctx.rv_difference(self.late, self.early)


Measure = Efficiency | Contrast | RvDifference


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
        if not isinstance(self.measure, (Efficiency, Contrast, RvDifference)):
            raise HarnessValueError(
                f"claim {self.id}: measure {self.measure!r}; expected Efficiency, Contrast or RvDifference")
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


def metric_for(claim: Claim, protocol: Any) -> str:
    """The metric a claim is judged on under ``protocol``: the claim's own, else the protocol's."""
    return getattr(claim.measure, "metric", None) or protocol.metric


def describe_settings(settings: Mapping[str, Any]) -> str:
    """A canonical one-line text of the settings a verdict was measured with (the ledger key)."""
    return " ".join(f"{k}={settings[k]}" for k in sorted(settings))
