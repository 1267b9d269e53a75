"""Evaluate a claim: run its arms, compute its measure per pair, guard, interval, verdict.

Data flow for one claim cell (a claim under a protocol):

1. every arm the claim needs, plus the two reference arms, is run on every pair with
   the pair's own seeds (:meth:`harness.prompts.Pair.seeds`), through the runner's memo;
2. each sample's metrics are computed once (:func:`harness.metrics.sample_metrics`);
3. the claim's measure turns them into one value per pair (:mod:`harness.claims`);
4. guards check the experiment (gap floor, patches that changed nothing, arms that
   should differ, degenerate or echoing text);
5. an interval at the family-wise level and the verdict (:mod:`harness.stats`);
6. the same measure on the model-based metric, beside it.

The result is a :class:`~harness.report.ClaimRow` and the cell's
:class:`~harness.report.SampleRow` s. Nothing here knows about pytest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.claims import (
    ANY_PROTOCOL,
    Claim,
    Contrast,
    Efficiency,
    GeometryShift,
    Interaction,
    MinimalKvSet,
    PrDifference,
    RvDifference,
    metric_for,
)
from harness.geometry import Geometry
from harness.errors import HarnessValueError
from harness.guards import guard_degeneration, guard_echo, mean
from harness.finding import GENERIC, MODEL_METRIC, Finding
from harness.metrics import Metric, efficiency, r_v, sample_metrics
from harness.records import ArmResult, Intervention, Protocol
from harness.report.schema import ClaimRow, SampleRow
from harness.sites import Site, parse_site
from harness.guards import (GuardResult, guard_arms_differ, guard_gap_floor, guard_kv_changed,
                            guard_patch_changed)
from harness.stats import decide, family_level, mean_interval
from harness.verdict import judge

__all__ = ["Evaluation", "Evaluator", "MODEL_METRIC"]

# MODEL_METRIC (from harness.finding): the model-based metric every efficiency claim is also
# measured on, beside the metric it is judged on.
#: Smallest |R_V(champion) - R_V(baseline)| for which a geometry shift is defined.
GEOMETRY_FLOOR = 0.05
REFERENCE_ARMS = ("baseline", "champion")


@dataclass(frozen=True)
class Evaluation:
    row: ClaimRow
    samples: tuple[SampleRow, ...]


class _Cell:
    """The evaluation context of one claim cell: pairs, protocol, seeds (see claims.Context)."""

    def __init__(self, evaluator: Evaluator, pairs: Sequence[Any], protocol: Protocol, n_seeds: int) -> None:
        self.ev, self.pairs, self.protocol, self.n_seeds = evaluator, list(pairs), protocol, n_seeds
        self.used: dict[str, ArmResult] = {}
        #: What a measure found on its way (a search path, a layer set), for the report.
        self.notes: list[str] = []
        self.found_layers: tuple[int, ...] | None = None
        self.rv_gaps: dict[str, float] = {}
        self.kv_set_parts: tuple[Any, ...] | None = None  # (held-out cell, set arm, full arm)

    @property
    def order(self) -> list[str] | None:
        """The pair ids in the order they arrived, when the evaluator tests sequentially."""
        return [p.id for p in self.pairs] if self.ev.sequential else None

    def seeds(self) -> dict[str, tuple[int, ...]]:
        """Each pair's seeds in this cell (the run's seed set)."""
        return {p.id: p.seeds(self.n_seeds, self.ev.seed_offset) for p in self.pairs}

    def results(self, arm: str | Intervention) -> dict[str, ArmResult]:
        """The arm on every pair, in one batched call (memoised by the runner)."""
        out = {}
        for pair, res in zip(self.pairs, self.ev.runner.run_many(self.pairs, arm, self.protocol, self.seeds())):
            out[pair.id] = res
            self.used[f"{pair.id}\0{res.arm}"] = res
        return out

    def metric_by_pair(self, arm: str | Intervention, metric: str) -> dict[str, float]:
        """The metric per pair: the mean over seeds, or the teacher-forced score."""
        if self.ev.metric(metric).per_sample is None:
            return dict(zip((p.id for p in self.pairs), self.ev.runner.scores(self.pairs, arm, self.protocol)))
        by_id = {p.id: p for p in self.pairs}
        return {pid: mean(m.get(metric) for m in self.ev.metrics(res, by_id[pid].champion))
                for pid, res in self.results(arm).items()}

    def efficiencies(self, arm: Intervention, metric: str) -> dict[str, float]:
        base, champ = self.metric_by_pair("baseline", metric), self.metric_by_pair("champion", metric)
        value = self.metric_by_pair(arm, metric)
        floor = self.ev.metric(metric).floor
        return {pid: efficiency(value[pid], base[pid], champ[pid], floor) for pid in value}

    def gaps(self, metric: str) -> dict[str, float]:
        base, champ = self.metric_by_pair("baseline", metric), self.metric_by_pair("champion", metric)
        return {pid: champ[pid] - base[pid] for pid in base}

    def rv_difference(self, late: int, early: int) -> dict[str, float]:
        sites = (Site("v_proj", late), Site("v_proj", early))
        for site in sites:  # one padded pass per site for every prompt, not one per prompt
            self.ev.runner.activations([t for p in self.pairs for t in (p.champion, p.baseline)], site)
        out = {}
        for pair in self.pairs:
            rv = [r_v(*(self.ev.runner.activation(text, s) for s in sites), window=self.protocol.window)
                  for text in (pair.champion, pair.baseline)]
            out[pair.id] = rv[0] - rv[1]
        return out

    def pr_difference(self, layer: int) -> dict[str, float]:
        geo = self.ev.geometry
        geo.pr_profiles([t for p in self.pairs for t in (p.champion, p.baseline)])  # one padded pass
        return {p.id: float(geo.pr_profile(p.champion)[layer] - geo.pr_profile(p.baseline)[layer])
                for p in self.pairs}

    def sequence_rv(self, arm: str | Intervention, late: int, early: int) -> dict[str, float]:
        """Mean over seeds of R_V on each sample's own sequence (its prompt + continuation)."""
        results = self.results(arm)
        seqs, owners = [], []
        for pair in self.pairs:
            prompt = self.ev.runner.ids(pair.champion if arm == "champion" else pair.baseline)[0].tolist()
            for tokens in results[pair.id].tokens:
                seqs.append(prompt + list(tokens))
                owners.append(pair.id)
        values = self.ev.sequence_rv(seqs, late, early)
        return {p.id: mean(v for o, v in zip(owners, values) if o == p.id) for p in self.pairs}

    def geometry_shift(self, arm: Intervention, late: int, early: int) -> dict[str, float]:
        base, champ, value = (self.sequence_rv(a, late, early) for a in ("baseline", "champion", arm))
        self.rv_gaps = {pid: champ[pid] - base[pid] for pid in base}
        return {pid: (value[pid] - base[pid]) / gap if abs(gap) >= GEOMETRY_FLOOR else math.nan
                for pid, gap in self.rv_gaps.items()}

    def minimal_kv_set(self, share: float, block: int, metric: str,
                       search_seeds: int | None = None) -> dict[str, float]:
        """Greedy removal of layer blocks on the even-indexed pairs, with ``search_seeds`` seeds
        each (None: the run's); values on the odd ones, with every seed."""
        seeds = self.n_seeds if search_seeds is None else min(search_seeds, self.n_seeds)
        search = _Cell(self.ev, self.pairs[0::2], self.protocol, seeds)
        confirm = _Cell(self.ev, self.pairs[1::2], self.protocol, self.n_seeds)
        full = Intervention("kv-only", kv_layers="all")
        target = share * mean(search.efficiencies(full, metric).values())
        blocks = [tuple(range(b, b + block)) for b in range(0, 32, block)]
        kept = list(blocks)
        self.notes.append(f"search on {len(search.pairs)} pairs x {seeds} seeds: full KV {target / share:.3g}, "
                          f"target {share:g} x that = {target:.3g}")
        while len(kept) > 1:
            candidates = [(b, [x for x in kept if x != b]) for b in kept]
            # Every candidate of this round in shared generate calls (memoised for the efficiencies below).
            self.ev.runner.run_kv_arms(search.pairs, [_kv_arm(rest) for _, rest in candidates], self.protocol,
                                       search.seeds())
            trials = [(mean(search.efficiencies(_kv_arm(rest), metric).values()), b, rest) for b, rest in candidates]
            best, removed, rest = max(trials, key=lambda t: (t[0], -t[1][0]))
            if not best >= target:
                self.notes.append(f"stop: removing any block leaves at most {best:.3g} < {target:.3g}")
                break
            self.notes.append(f"drop layers {removed[0]}..{removed[-1]}: {best:.3g}")
            kept = rest
        found = _kv_arm(kept)
        self.found_layers = found.kv_layers
        self.notes.append(f"set found: {found.name} ({len(found.kv_layers)} of 32 layers); confirmed on "
                          f"{len(confirm.pairs)} other pairs")
        eff_set, eff_full = confirm.efficiencies(found, metric), confirm.efficiencies(full, metric)
        self.kv_set_parts = (confirm, found, full)  # for the bounded rule (harness/verdict.py)
        self.used.update(confirm.used)  # the search's candidates are in the notes, not the samples
        return {pid: eff_set[pid] - share * eff_full[pid] for pid in eff_set
                if not (math.isnan(eff_set[pid]) or math.isnan(eff_full[pid]))}

    def pooled(self, arm: str | Intervention, metric: str) -> float:
        by_id = {p.id: p for p in self.pairs}
        return mean(m.get(metric) for pid, res in self.results(arm).items()
                    for m in self.ev.metrics(res, by_id[pid].champion))


class Evaluator:
    """Evaluates claims on one runner; memoises each sample's metrics."""

    def __init__(self, runner: Any, alpha: float = 0.05, finding: Finding = GENERIC, seed_offset: int = 0,
                 sequential: bool = False) -> None:
        self.runner = runner
        #: Test in the pairs' arrival order, valid at every n (a run adds pairs until decided).
        self.sequential = sequential
        self.alpha = alpha
        #: The finding whose metrics the samples get and whose choice of metric claims are judged on.
        self.finding = finding
        self.table: dict[str, Metric] = finding.metric_table()
        #: Which seed set every pair samples with (``--seed-offset``; 0: the default set).
        self.seed_offset = seed_offset
        self.geometry = Geometry(runner)
        self._metrics: dict[tuple, tuple[dict[str, float | None], ...]] = {}
        self._rv: dict[tuple, float] = {}

    def sequence_rv(self, sequences: Sequence[Sequence[int]], late: int, early: int) -> list[float]:
        """R_V per token sequence, memoised (the reference arms' sequences recur across claims)."""
        keys = [(tuple(s), late, early) for s in sequences]
        todo = list(dict.fromkeys(k for k in keys if k not in self._rv))
        for k, v in zip(todo, self.geometry.sequence_rv([k[0] for k in todo], late, early)):
            self._rv[k] = v
        return [self._rv[k] for k in keys]

    def metric(self, name: str) -> Metric:
        """The metric called ``name`` in this finding's table; a one-line refusal otherwise."""
        if name not in self.table:
            raise HarnessValueError(f"metric {name!r} is not a metric of finding {self.finding.name!r}; expected "
                                    f"one of {', '.join(self.table)} (declare it in the finding's metrics)")
        return self.table[name]

    def metrics(self, res: ArmResult, champion_prompt: str) -> tuple[dict[str, float | None], ...]:
        key = (res.pair_id, res.arm, res.protocol, res.seeds, res.tokens)
        if key not in self._metrics:
            self._metrics[key] = tuple(sample_metrics(t, champion_prompt, self.table) for t in res.texts)
        return self._metrics[key]

    def evaluate(self, claim: Claim, pairs: Sequence[Any], protocol: Protocol, *, n_seeds: int,
                 family_size: int) -> Evaluation:
        """Run every arm the claim needs and decide its verdict under ``protocol``."""
        if not pairs:
            raise HarnessValueError(f"claim {claim.id}: no prompt pairs to evaluate on")
        if family_size < 1:
            raise HarnessValueError(f"family size {family_size}; expected at least 1 claim cell")
        cell = _Cell(self, pairs, protocol, n_seeds)
        level = family_level(family_size, self.alpha)
        metric = metric_for(claim, protocol, self.finding)
        self.metric(metric)
        values = claim.measure.per_pair(cell, metric)
        guards = self._guards(claim, cell, metric)
        interval, decision, mde = judge(claim, cell, metric, values, _threshold(claim), level, guards)
        measure = claim.measure
        text_metric = isinstance(measure, (Efficiency, Contrast, Interaction, MinimalKvSet))
        row = dict(
            claim=claim.id, protocol=ANY_PROTOCOL if claim.protocol_independent else protocol.name,
            verdict=str(decision.verdict), reason=decision.reason, measure=measure.describe(metric),
            metric=metric if text_metric else "pr" if isinstance(measure, PrDifference) else "r_v",
            estimate=interval.estimate,
            ci_low=interval.low, ci_high=interval.high, level=level, interval_method=interval.method,
            degenerate=interval.degenerate, n_pairs=interval.n_pairs,
            n_seeds=n_seeds if claim.measure.arms else 0, threshold=float(claim.threshold),
            threshold_high=math.nan if claim.threshold_high is None else float(claim.threshold_high),
            direction=claim.direction, family_size=family_size,
            mde=mde, flags=decision.flags, statement=claim.statement,
            source_file=claim.source.file, source_quote=claim.source.quote,
            guards=tuple(f"{'ok' if g.ok else 'FAILED'} {g.name}: {g.message}" for g in guards),
            notes=tuple(cell.notes), finding=self.finding.name,
        )
        if isinstance(measure, (Efficiency, Contrast, Interaction)):
            row.update(self._alt(claim, cell, level, guards))
            decisive = {"supported", "refuted"}
            row["metrics_agree"] = not (row["verdict"] in decisive and row["alt_verdict"] in decisive
                                        and row["verdict"] != row["alt_verdict"])
        if measure.arms:
            row.update(self._patches(claim, cell))
        if isinstance(measure, MinimalKvSet) and cell.found_layers is not None:
            n_layers = self.runner.layout.n_layers
            row["kv_layers"] = _layers_text(sorted({self.runner.layout.map(x) for x in cell.found_layers}), n_layers)
        if isinstance(measure, RvDifference):
            row["sites"] = ";".join(f"v_proj@{layer}->L{self.runner.layout.map(layer)}"
                                    for layer in (measure.late, measure.early))
        if isinstance(measure, PrDifference):
            row["sites"] = f"v_proj@{measure.layer}->L{self.runner.layout.map(measure.layer)}"
            row["series"] = self._pr_profile(cell)
        samples = tuple(self._samples(cell))
        row["arms"] = tuple(dict.fromkeys(s.arm for s in samples))
        row["shared"] = tuple(sorted({f"{r.arm} = {r.same_as} (the same computation, run once)"
                                      for r in cell.used.values() if r.same_as}))
        return Evaluation(ClaimRow(**row), samples)

    # -- parts of a row ------------------------------------------------------------

    def _guards(self, claim: Claim, cell: _Cell, metric: str) -> list[GuardResult]:
        if not claim.measure.arms:
            return []
        if isinstance(claim.measure, GeometryShift):
            gaps = {pid: abs(g) for pid, g in cell.rv_gaps.items()}
            guards = [guard_gap_floor(gaps, GEOMETRY_FLOOR)]
        else:
            guards = [guard_gap_floor(cell.gaps(metric), self.metric(metric).floor)]
        if isinstance(claim.measure, MinimalKvSet):
            return guards
        d2 = {a: cell.pooled(a, "distinct_2") for a in REFERENCE_ARMS}
        echo_champion = cell.pooled("champion", "echo_rate")
        for arm in claim.measure.arms:
            runs = cell.results(arm)
            guards += _patch_guards(runs)
            # A factorial's "neither" cell is the baseline by design: one of four arms, not the
            # claim's arm compared with itself.
            reference_ok = isinstance(claim.measure, Interaction) and arm == claim.measure.neither
            guards += _identity_guards(arm, runs, reference_ok=reference_ok)
            guards.append(guard_degeneration(arm.name, cell.pooled(arm, "distinct_2"), d2["baseline"],
                                             d2["champion"]))
            guards.append(guard_echo(arm.name, cell.pooled(arm, "echo_rate"), echo_champion))
        if claim.must_differ_from is not None:
            mine, other = cell.results(claim.measure.arms[0]), cell.results(claim.must_differ_from)
            guards.append(guard_arms_differ({k: r.tokens for k, r in mine.items()},
                                            {k: r.tokens for k, r in other.items()},
                                            names=(claim.measure.arms[0].name, claim.must_differ_from.name)))
        return list(dict.fromkeys(guards))

    def _pr_profile(self, cell: _Cell) -> str:
        """PR of V per layer, mean and 95% interval over the pairs, for champion and baseline
        prompts (JSON, for the report's profile plot; descriptive, not a verdict)."""
        out: dict[str, Any] = {"layers": list(range(32)),
                               "mapped": [self.runner.layout.map(x) for x in range(32)]}
        for role in ("champion", "baseline"):
            profiles = [self.geometry.pr_profile(getattr(p, role)) for p in cell.pairs]
            cols = [mean_interval({str(i): float(v[layer]) for i, v in enumerate(profiles)}, 0.95)
                    for layer in range(32)]
            out[role] = {"mean": [c.estimate for c in cols], "low": [c.low for c in cols],
                         "high": [c.high for c in cols]}
        return json.dumps(out)

    def _alt(self, claim: Claim, cell: _Cell, level: float, guards: list[GuardResult]) -> dict[str, Any]:
        values = claim.measure.per_pair(cell, MODEL_METRIC)
        interval = mean_interval(values, level)
        machine = [g for g in guards if not g.name.startswith(("degeneration", "echo", "gap_floor"))]
        machine.append(guard_gap_floor(cell.gaps(MODEL_METRIC), self.metric(MODEL_METRIC).floor))
        alt = decide(interval, _threshold(claim), claim.direction, machine)
        return dict(alt_metric=MODEL_METRIC, alt_estimate=interval.estimate, alt_low=interval.low,
                    alt_high=interval.high, alt_verdict=str(alt.verdict))

    def _patches(self, claim: Claim, cell: _Cell) -> dict[str, Any]:
        arm = claim.measure.arms[0]
        runs = cell.results(arm)
        sums = dict.fromkeys(("calls_prefill", "changed_prefill", "calls_decode", "changed_decode"), 0)
        for res in runs.values():
            for c in res.patch_counts:
                sums[f"calls_{c.phase}"] += c.calls
                sums[f"changed_{c.phase}"] += c.changed
        n_layers = self.runner.layout.n_layers
        kv = arm.mapped_kv_layers(n_layers)
        named = [*arm.patches, *(f"{kind}:{site}" for kind, site in arm.edits)]
        sites = ";".join(f"{s}->L{self.runner.layout.map(parse_site(s.split(':')[-1]).layer)}" for s in named)
        return dict(sums, kv_layers=_layers_text(kv, n_layers), sites=sites)

    def _samples(self, cell: _Cell) -> list[SampleRow]:
        by_id = {p.id: p for p in cell.pairs}
        rows = []
        for res in cell.used.values():
            for seed, tokens, text, metrics in zip(res.seeds, res.tokens, res.texts,
                                                   self.metrics(res, by_id[res.pair_id].champion)):
                rows.append(SampleRow(protocol=res.protocol, pair=res.pair_id, arm=res.arm, seed=seed,
                                      n_tokens=len(tokens), text=text, metrics=metrics, finding=self.finding.name))
        return rows


def _kv_arm(blocks: Sequence[tuple[int, ...]]) -> Intervention:
    layers = sorted(x for b in blocks for x in b)
    return Intervention(f"kv@{_layers_text(layers, 32)}", kv_layers=tuple(layers))


def _threshold(claim: Claim) -> Any:
    return (claim.threshold, claim.threshold_high) if claim.direction == "within" else claim.threshold


def _patch_guards(runs: Mapping[str, ArmResult]) -> list[GuardResult]:
    """Each declared phase of each patch must have changed something, summed over pairs."""
    totals: dict[tuple[str, int], dict[str, int]] = {}
    declared: tuple[str, ...] = ()
    for res in runs.values():
        declared = res.declared_phases or declared
        for c in res.patch_counts:
            slot = totals.setdefault((c.site, c.layer), {})
            slot[c.phase] = slot.get(c.phase, 0) + c.changed
    return [guard_patch_changed(changed, declared, site=f"{site}(L{layer})")
            for (site, layer), changed in totals.items()]


def _identity_guards(arm: Intervention, runs: Mapping[str, ArmResult],
                     reference_ok: bool = False) -> list[GuardResult]:
    """An arm that is a reference arm's own computation compares a thing with itself (it cannot
    fail), unless ``reference_ok`` (a factorial's empty cell); a KV splice must have changed the cache."""
    guards = []
    same = sorted({r.same_as for r in runs.values() if r.same_as})
    if same and not reference_ok:
        guards.append(GuardResult(f"self_comparison[{arm.name}]", False,
                                  f"{arm.name} is the {same[0]} arm's own computation under this protocol: "
                                  "the cell compares it with itself"))
    if arm.kv_layers:
        guards.append(guard_kv_changed(arm.name, {pid: r.kv_changed for pid, r in runs.items()}))
    return guards


def _layers_text(layers: Sequence[int], n_layers: int) -> str:
    if not layers:
        return ""
    if tuple(layers) == tuple(range(n_layers)):
        return f"all({n_layers})"
    if tuple(layers) == tuple(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ",".join(map(str, layers))
