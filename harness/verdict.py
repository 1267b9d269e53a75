"""One cell's interval and verdict: the bounded betting rule where the measure allows it.

Efficiency, contrast, interaction and minimal-KV-set claims on a metric with known bounds, and the
prompt-pass R_V and PR differences (bounded by the window), are decided by
:mod:`harness.bounded`: the error guarantee holds for any distribution of the per-pair values
within the bounds. A geometry shift (per-pair ratios of R_V gaps) and unbounded metrics keep
the Student t interval on the per-pair values, flagged ``no_guarantee``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.bounded import (RatioData, contrast_data, decide_ratio, efficiency_data, interaction_data,
                             kv_set_data, mean_data)
from harness.claims import Claim, Contrast, Efficiency, Interaction, MinimalKvSet, PrDifference, RvDifference
from harness.errors import HarnessValueError
from harness.guards import GuardResult
from harness.metrics import lookup_metric
from harness.stats import Decision, Interval, decide, mean_interval, min_detectable_effect

__all__ = ["FLAG_NO_GUARANTEE", "ratio_data", "judge"]

#: The flag of a verdict the bounded rule does not cover (a t interval: no error guarantee).
FLAG_NO_GUARANTEE = "no_guarantee"


def ratio_data(claim: Claim, cell: Any, metric: str) -> RatioData | None:
    """The cell's per-pair data for the bounded rule, or None when the measure has no bounds.

    ``cell`` gives ``metric_by_pair(arm, metric)``, ``rv_difference``, ``pr_difference`` and
    ``protocol.window`` (harness/evaluate.py's cell).
    """
    measure = claim.measure
    bounds = lookup_metric(metric).bounds
    # A sequential run (pairs added until decided) tests in the order the pairs arrived.
    order = getattr(cell, "order", None)
    if isinstance(measure, (Efficiency, Contrast)) and bounds is not None:
        ref = [cell.metric_by_pair(a, metric) for a in ("baseline", "champion")]
        if isinstance(measure, Efficiency):
            return efficiency_data(cell.metric_by_pair(measure.arm, metric), *ref, bounds, order)
        return contrast_data(cell.metric_by_pair(measure.arm, metric),
                             cell.metric_by_pair(measure.versus, metric), *ref, bounds, order)
    if isinstance(measure, Interaction) and bounds is not None:
        arms = (measure.both, measure.first, measure.second, measure.neither, "baseline", "champion")
        return interaction_data(*(cell.metric_by_pair(a, metric) for a in arms), bounds, order)
    parts = getattr(cell, "kv_set_parts", None)  # set by the cell's minimal_kv_set
    if isinstance(measure, MinimalKvSet) and bounds is not None and parts is not None:
        confirm, found, full = parts  # judged on the held-out pairs only
        return kv_set_data(*(confirm.metric_by_pair(a, metric) for a in (found, full, "baseline", "champion")),
                           measure.share, bounds)
    # PR of a (window x d) matrix lies in [1, window], so R_V in [1/window, window]
    window = float(cell.protocol.window)
    if isinstance(measure, RvDifference):
        span = window - 1.0 / window
        return mean_data(cell.rv_difference(measure.late, measure.early), (-span, span), order)
    if isinstance(measure, PrDifference):
        return mean_data(cell.pr_difference(measure.layer), (1.0 - window, window - 1.0), order)
    return None


def _out_of_bounds(message: str) -> GuardResult:
    return GuardResult("bounds", False, message)


def judge(claim: Claim, cell: Any, metric: str, values: Mapping[str, float], threshold: Any,
          level: float, guards: Sequence[GuardResult]) -> tuple[Interval, Decision, float]:
    """(interval, decision, MDE) of one cell at the per-cell ``level``.

    The bounded rule's MDE is the interval's half-width (an effect that far from the
    threshold would be decided about half the time); NaN when the interval is unbounded.
    """
    data = ratio_data(claim, cell, metric)
    if data is None:
        interval = mean_interval(values, level)
        decision = decide(interval, threshold, claim.direction, guards)
        decision = Decision(decision.verdict, decision.reason, (*decision.flags, FLAG_NO_GUARANTEE))
        return interval, decision, min_detectable_effect(values, level)
    try:
        interval, decision = decide_ratio(data, threshold, claim.direction, level, guards)
    except HarnessValueError as exc:  # a per-pair mean outside the declared bounds
        failed = [*guards, _out_of_bounds(str(exc))]
        interval = Interval(data.estimate(), math.nan, math.nan, data.n, level, "none: values out of bounds")
        return interval, decide(interval, threshold, claim.direction, failed), math.nan
    half = (interval.high - interval.low) / 2.0
    return interval, decision, half if math.isfinite(half) else math.nan
