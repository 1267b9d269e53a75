"""Claim records and their evaluation: arms -> metric -> efficiency -> interval -> verdict.

Nothing here knows about pytest; the plugin turns a :class:`ClaimResult` into
a pass, an expected failure or a failure by way of the ledger.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessLookupError, HarnessValueError, did_you_mean
from harness.generate import ArmResult, Intervention, Protocol, Runner
from harness.metrics import distinct_2, echo_rate, efficiency, marker_rate, marker_score, r_v
from harness.sites import Site, map_layer
from harness.stats import (
    DIRECTIONS,
    GuardResult,
    Interval,
    cluster_bootstrap,
    decide,
    guard_arms_differ,
    guard_gap_floor,
    guard_patch_changed,
    paired_contrast,
)

__all__ = [
    "SEED_FILE",
    "Source",
    "Claim",
    "ClaimResult",
    "ArmCache",
    "METRICS",
    "evaluate",
]

SEED_FILE = "seeds/000_83d9e96518e33c6a.txt"
KINDS = ("efficiency", "contrast", "rv")

#: Per-sample metrics: (generated text, pair) -> float.
METRICS: dict[str, Callable[[str, Any], float]] = {
    "marker_score": lambda text, pair: float(marker_score(text)),
    "marker_rate": lambda text, pair: marker_rate(text),
    "distinct_2": lambda text, pair: distinct_2(text),
    "echo_rate": lambda text, pair: echo_rate(text, pair.champion),
}
#: Per-pair metrics computed from the model, not from sampled text: teacher-forced mean
#: log-probability, under an arm, of the champion's own greedy continuation.
PAIR_METRICS = ("champion_logprob",)
#: Smallest champion-baseline gap for which an efficiency is defined, per metric.
FLOORS = {"marker_score": 1.0, "marker_rate": 0.05, "distinct_2": 0.05, "echo_rate": 0.05,
          "champion_logprob": 0.1}


@dataclass(frozen=True)
class Source:
    """Where a claim comes from: the findings file and the sentence it rests on."""

    file: str
    quote: str


@dataclass(frozen=True)
class Claim:
    """One claim of a finding, as a test can check it.

    ``efficiency``: the arm's transfer efficiency on ``metric`` is ``direction``
    ``threshold``. ``contrast``: efficiency(arm) - efficiency(versus) is. ``rv``:
    R_V(champion) - R_V(baseline) on the prompt pass is (layers ``rv_layers``).
    ``must_differ_from``: an arm whose tokens must differ from the claim arm's
    somewhere, or the claim is invalid (the intervention did nothing).
    """

    id: str
    statement: str
    source: Source
    arm: Intervention | None = None
    kind: str = "efficiency"
    metric: str = "marker_score"
    threshold: float = 0.2
    direction: str = "below"
    versus: Intervention | None = None
    must_differ_from: Intervention | None = None
    rv_layers: tuple[int, int] = (27, 5)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise HarnessLookupError(f"claim {self.id}: kind {self.kind!r}; expected one of {', '.join(KINDS)}."
                                     + did_you_mean(self.kind, KINDS))
        known = (*METRICS, *PAIR_METRICS)
        if self.metric not in known and self.kind != "rv":
            raise HarnessLookupError(f"claim {self.id}: unknown metric {self.metric!r}; expected one of "
                                     f"{', '.join(known)}." + did_you_mean(self.metric, known))
        if self.direction not in DIRECTIONS:
            raise HarnessValueError(f"claim {self.id}: direction {self.direction!r}; expected 'above' or 'below'")
        if self.kind != "rv" and self.arm is None:
            raise HarnessValueError(f"claim {self.id}: an {self.kind} claim needs an arm")
        if self.kind == "contrast" and self.versus is None:
            raise HarnessValueError(f"claim {self.id}: a contrast claim needs 'versus'")

    @property
    def arms(self) -> tuple[Intervention, ...]:
        return tuple(a for a in (self.arm, self.versus, self.must_differ_from) if a is not None)


@dataclass(frozen=True)
class ClaimResult:
    """What one claim measured under one protocol."""

    claim: str
    protocol: str
    metric: str
    efficiency: float
    ci_low: float
    ci_high: float
    n_pairs: int
    n_seeds: int
    verdict: str
    reason: str
    threshold: float
    direction: str
    kv_layers: str = ""
    sites: str = ""
    changed_prefill: int = 0
    changed_decode: int = 0
    calls_prefill: int = 0
    calls_decode: int = 0
    statement: str = ""
    source_file: str = ""
    source_quote: str = ""
    arms: tuple[str, ...] = ()
    guards: tuple[GuardResult, ...] = ()
    arm_results: tuple[ArmResult, ...] = field(default=(), repr=False)

    def row(self) -> dict[str, Any]:
        """The claims-table row: every field but the arm results; guards as text."""
        keep = ("claim", "protocol", "metric", "efficiency", "ci_low", "ci_high", "n_pairs", "n_seeds",
                "verdict", "reason", "threshold", "direction", "kv_layers", "sites", "changed_prefill",
                "changed_decode", "calls_prefill", "calls_decode", "statement", "source_file",
                "source_quote")
        row = {k: getattr(self, k) for k in keep}
        row["arms"] = list(self.arms)
        row["guards"] = [f"{'ok' if g.ok else 'FAILED'} {g.name}: {g.message}" for g in self.guards]
        return row


class ArmCache:
    """Memoises arm results per (pair, arm, protocol, seeds) for one runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._done: dict[tuple, ArmResult] = {}

    def get(self, pair: Any, arm: str | Intervention, protocol: Protocol, seeds: Sequence[int]) -> ArmResult:
        key = (pair.id, pair.baseline, pair.champion, arm, protocol, tuple(seeds))
        if key not in self._done:
            self._done[key] = self.runner.run(pair, arm, protocol, seeds)
        return self._done[key]

    def logprob(self, pair: Any, arm: str | Intervention, protocol: Protocol) -> float:
        """Teacher-forced mean log-probability of the champion's greedy continuation under ``arm``."""
        key = ("logprob", pair.id, pair.baseline, pair.champion, arm, protocol)
        if key not in self._done:
            continuation = self.runner.champion_continuation(pair, protocol)
            self._done[key] = self.runner.continuation_logprob(pair, arm, protocol, continuation)
        return self._done[key]


def _metric_by_pair(results: Mapping[str, ArmResult], metric: str, pairs: Mapping[str, Any]) -> dict[str, float]:
    fn = METRICS[metric]
    out = {}
    for pid, res in results.items():
        vals = [fn(t, pairs[pid]) for t in res.texts]
        finite = [v for v in vals if not math.isnan(v)]
        out[pid] = sum(finite) / len(finite) if finite else math.nan
    return out


def _efficiencies(claim: Claim, arm: Intervention, cache: ArmCache, pairs: Sequence[Any],
                  protocol: Protocol, seeds: Sequence[int]) -> tuple[dict, dict, dict[str, ArmResult], list[ArmResult]]:
    by_id = {p.id: p for p in pairs}
    runs = {name: {p.id: cache.get(p, name, protocol, seeds) for p in pairs} for name in ("baseline", "champion")}
    arm_runs = {p.id: cache.get(p, arm, protocol, seeds) for p in pairs}
    if claim.metric in PAIR_METRICS:
        base, champ, value = ({p.id: cache.logprob(p, a, protocol) for p in pairs}
                              for a in ("baseline", "champion", arm))
    else:
        base = _metric_by_pair(runs["baseline"], claim.metric, by_id)
        champ = _metric_by_pair(runs["champion"], claim.metric, by_id)
        value = _metric_by_pair(arm_runs, claim.metric, by_id)
    floor = FLOORS[claim.metric]
    gaps = {pid: champ[pid] - base[pid] for pid in by_id}
    effs = {pid: efficiency(value[pid], base[pid], champ[pid], floor) for pid in by_id}
    references = [r for name in ("baseline", "champion") for r in runs[name].values()]
    return effs, gaps, arm_runs, references


def _patch_summary(arm_runs: Mapping[str, ArmResult]) -> tuple[list[GuardResult], dict[str, int], str]:
    """Guards that each declared phase of each patch changed something, summed over pairs."""
    totals: dict[tuple[str, int], dict[str, list[int]]] = {}
    declared: tuple[str, ...] = ()
    for res in arm_runs.values():
        declared = res.declared_phases or declared
        for c in res.patch_counts:
            slot = totals.setdefault((c.site, c.layer), {})
            calls, changed = slot.setdefault(c.phase, [0, 0])
            slot[c.phase] = [calls + c.calls, changed + c.changed]
    guards, sums = [], {"calls_prefill": 0, "calls_decode": 0, "changed_prefill": 0, "changed_decode": 0}
    for (site, layer), phases in totals.items():
        guards.append(guard_patch_changed({p: v[1] for p, v in phases.items()}, declared, site=f"{site}(L{layer})"))
        for phase, (calls, changed) in phases.items():
            sums[f"calls_{phase}"] += calls
            sums[f"changed_{phase}"] += changed
    sites = ";".join(f"{site}->L{layer}" for site, layer in totals)
    return guards, sums, sites


def _rv_by_pair(claim: Claim, runner: Runner, pairs: Sequence[Any], window: int) -> dict[str, float]:
    late, early = (Site("v_proj", layer) for layer in claim.rv_layers)
    out = {}
    for p in pairs:
        rv = {}
        for which, text in (("b", p.baseline), ("c", p.champion)):
            rv[which] = r_v(runner.activation(text, late), runner.activation(text, early), window=window)
        out[p.id] = rv["c"] - rv["b"]
    return out


def evaluate(claim: Claim, cache: ArmCache, pairs: Sequence[Any], protocol: Protocol,
             seeds: Sequence[int], n_boot: int = 2000) -> ClaimResult:
    """Run every arm the claim needs and decide its verdict under ``protocol``."""
    if not pairs:
        raise HarnessValueError(f"claim {claim.id}: no prompt pairs to evaluate on")
    runner = cache.runner
    guards: list[GuardResult] = []
    sums: dict[str, int] = {}
    sites, kv_layers, arm_results = "", "", []
    if claim.kind == "rv":
        values = _rv_by_pair(claim, runner, pairs, protocol.window)
        interval: Interval = cluster_bootstrap({k: [v] for k, v in values.items()}, n_boot=n_boot)
        n_layers = runner.layout.n_layers
        sites = ";".join(f"v_proj@{layer}->L{map_layer(layer, n_layers)}" for layer in claim.rv_layers)
    else:
        effs, gaps, arm_runs, references = _efficiencies(claim, claim.arm, cache, pairs, protocol, seeds)
        guards.append(guard_gap_floor(gaps, FLOORS[claim.metric]))
        patch_guards, sums, sites = _patch_summary(arm_runs)
        guards += patch_guards
        arm_results = references + list(arm_runs.values())
        first = next(iter(arm_runs.values()))
        kv_layers = _layers_text(first.kv_layers, runner.layout.n_layers)
        if claim.kind == "contrast":
            other, _, other_runs, _ = _efficiencies(claim, claim.versus, cache, pairs, protocol, seeds)
            interval = paired_contrast({k: [v] for k, v in effs.items()}, {k: [v] for k, v in other.items()}, n_boot=n_boot)
            arm_results += list(other_runs.values())
            # The comparison arm's patches must have acted too, or the contrast means nothing.
            guards += [g for g in _patch_summary(other_runs)[0] if g not in guards]
        else:
            interval = cluster_bootstrap({k: [v] for k, v in effs.items()}, n_boot=n_boot)
        if claim.must_differ_from is not None:
            other_runs = {p.id: cache.get(p, claim.must_differ_from, protocol, seeds) for p in pairs}
            arm_results += [r for r in other_runs.values() if r not in arm_results]
            guards.append(guard_arms_differ(
                {k: r.tokens for k, r in arm_runs.items()}, {k: r.tokens for k, r in other_runs.items()},
                names=(claim.arm.name, claim.must_differ_from.name)))
    decision = decide(interval, claim.threshold, claim.direction, guards)
    return ClaimResult(
        claim=claim.id, protocol=protocol.name, metric=claim.metric if claim.kind != "rv" else "r_v",
        efficiency=interval.estimate, ci_low=interval.low, ci_high=interval.high,
        n_pairs=interval.n_pairs, n_seeds=len(seeds) if claim.kind != "rv" else 0,
        verdict=str(decision.verdict), reason=decision.reason, threshold=claim.threshold,
        direction=claim.direction, kv_layers=kv_layers, sites=sites, guards=tuple(guards),
        statement=claim.statement, source_file=claim.source.file, source_quote=claim.source.quote,
        arms=tuple(dict.fromkeys(r.arm for r in arm_results)),
        arm_results=tuple(arm_results), **sums,
    )


def _layers_text(layers: Sequence[int], n_layers: int) -> str:
    if not layers:
        return ""
    if tuple(layers) == tuple(range(n_layers)):
        return f"all({n_layers})"
    if tuple(layers) == tuple(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ",".join(map(str, layers))
