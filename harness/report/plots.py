"""The report's plots: each claim's estimate and interval, and the partial-KV layer sweep.

matplotlib is imported inside the functions that draw, so importing this module stays
cheap. Each PNG is written beside and renamed, so a reader never sees half a plot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.report.schema import ClaimRow

__all__ = ["VERDICT_COLOURS", "SWEEP_ID", "efficiency_limits", "plot_efficiency", "plot_sweep", "sweep_rows",
           "finite", "save_png"]

#: Claims of the partial-KV layer sweep, e.g. ``partial-kv-prefix-8``.
SWEEP_ID = re.compile(r"^partial-kv-(prefix|suffix)-(\d+)$")
VERDICT_COLOURS = {"supported": "tab:green", "refuted": "tab:red",
                   "inconclusive": "tab:orange", "invalid": "tab:gray"}


def finite(value: Any) -> float | None:
    """A float for plotting, or None for a missing, NaN or infinite value."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def save_png(fig: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    tmp.replace(path)


#: Estimates and interval ends further than this many interquartile ranges (of the estimates) from
#: their middle half do not widen the axis.
OUTLIER_IQRS = 3.0


def efficiency_limits(claims: Sequence[ClaimRow]) -> tuple[float, float]:
    """The x range of the efficiency plot: every threshold and every estimate but outliers, with a
    margin. An interval or an outlying estimate beyond it is drawn clipped at the edge, marked."""
    thresholds = [x for r in claims for x in (finite(r.threshold), finite(r.threshold_high)) if x is not None]
    estimates = sorted(x for x in (finite(r.estimate) for r in claims) if x is not None)
    ends = [x for r in claims for x in (finite(r.ci_low), finite(r.ci_high)) if x is not None]
    core = list(thresholds)
    if estimates:
        q1, q3 = estimates[len(estimates) // 4], estimates[(3 * len(estimates)) // 4]
        reach = OUTLIER_IQRS * max(q3 - q1, 0.25)
        core += [x for x in estimates + ends if q1 - reach <= x <= q3 + reach]
    if not core:
        return -0.1, 1.1
    lo, hi = min(core + [0.0]), max(core + [0.0])
    margin = 0.1 * max(hi - lo, 1.0)
    return lo - margin, hi + margin


def _clipped(value: float | None, lo: float, hi: float) -> float | None:
    return None if value is None else min(max(value, lo), hi)


def plot_efficiency(claims: Sequence[ClaimRow], path: Path) -> list[tuple[int, float]]:
    """Each claim x protocol on its own row: estimate, interval, verdict colour, threshold.

    Returns the (row, value) of every estimate or interval end drawn clipped at the axis's edge
    (marked there with an arrowhead and the value)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(8, 1.2 + 0.32 * max(len(claims), 1)))
    ax = fig.add_subplot()
    lo_x, hi_x = efficiency_limits(claims)
    clipped: list[tuple[int, float]] = []
    for y, row in enumerate(claims):
        colour = VERDICT_COLOURS.get(row.verdict, "black")
        est, low, high = (finite(v) for v in (row.estimate, row.ci_low, row.ci_high))
        for side, edge in ((1, hi_x), (-1, lo_x)):
            beyond = [v for v in (est, low, high) if v is not None and side * (v - edge) > 0]
            clipped += [(y, v) for v in beyond]
            if beyond:  # one mark per row and side, with the values it stands for
                ax.plot([edge], [y], ">" if side > 0 else "<", color=colour, markersize=7)
                ax.annotate(", ".join(f"{v:.3g}" for v in beyond), (edge, y), textcoords="offset points",
                            fontsize=6, xytext=(-4 * side, 4), ha="right" if side > 0 else "left")
        low, high, shown = _clipped(low, lo_x, hi_x), _clipped(high, lo_x, hi_x), _clipped(est, lo_x, hi_x)
        if low is not None and high is not None:  # drawn as a segment: no error bars below zero length
            ax.plot([low, high], [y, y], color=colour, linewidth=2, solid_capstyle="butt")
        if shown is not None and shown == est:
            ax.plot([est], [y], "o", color=colour, markersize=6)
        threshold = finite(row.threshold)
        if threshold is not None:
            marker = ">" if row.direction == "above" else "<" if row.direction == "below" else "|"
            ax.plot([threshold], [y], marker, color="black", markersize=5)
            if row.direction == "within" and finite(row.threshold_high) is not None:
                ax.plot([row.threshold_high], [y], marker, color="black", markersize=5)
    ax.set_yticks(range(len(claims)), [f"{r.claim} [{r.protocol}]" for r in claims], fontsize=8)
    ax.set_ylim(len(claims) - 0.5, -0.5)  # first claim on top, as in the table
    ax.set_xlim(lo_x, hi_x)
    ax.axvline(0.0, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlabel("estimate with its interval (efficiency, contrast or geometry difference: see the table)")
    handles = [Line2D([], [], color=c, marker="o", label=v) for v, c in VERDICT_COLOURS.items()]
    handles += [Line2D([], [], color="black", marker=m, linestyle="", label=f"threshold, claim: {d}")
                for m, d in ((">", "above"), ("<", "below"), ("|", "within bounds"))]
    if clipped:
        handles.append(Line2D([], [], color="black", marker=">", linestyle="", label="beyond the axis (value shown)"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Claims: estimate, interval and threshold")
    save_png(fig, path)
    return clipped


def sweep_rows(claims: Sequence[ClaimRow]) -> dict[tuple[str, str], list[tuple[int, ClaimRow]]]:
    """``partial-kv-*`` rows grouped by (block, protocol), sorted by k."""
    groups: dict[tuple[str, str], list[tuple[int, ClaimRow]]] = {}
    for row in claims:
        match = SWEEP_ID.match(row.claim)
        if match:
            groups.setdefault((match[1], row.protocol), []).append((int(match[2]), row))
    return {k: sorted(v, key=lambda kv: kv[0]) for k, v in sorted(groups.items())}


def plot_sweep(groups: Mapping[tuple[str, str], Sequence[tuple[int, ClaimRow]]], path: Path) -> None:
    """Efficiency vs k, one line per (block, protocol), intervals as vertical segments."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    colours = {"prefix": "tab:blue", "suffix": "tab:purple"}
    styles = ["-", "--", ":", "-."]
    protocols = sorted({p for _, p in groups})
    # Small horizontal offsets keep the intervals of different lines apart.
    offsets = {key: (i - (len(groups) - 1) / 2) * 0.25 for i, key in enumerate(groups)}
    thresholds = set()
    for (block, protocol), cells in groups.items():
        xs = [k + offsets[(block, protocol)] for k, _ in cells]
        ys = [finite(r.estimate) for _, r in cells]
        colour, style = colours.get(block, "black"), styles[protocols.index(protocol) % len(styles)]
        ax.plot(xs, [math.nan if y is None else y for y in ys], style, marker="o", color=colour,
                label=f"{block} [{protocol}]")  # NaN leaves a gap in the line
        for x, (_, row) in zip(xs, cells):
            low, high = finite(row.ci_low), finite(row.ci_high)
            if low is not None and high is not None:
                ax.plot([x, x], [low, high], color=colour, linewidth=1.5, alpha=0.7)
            if finite(row.threshold) is not None:
                thresholds.add(finite(row.threshold))
            y = finite(row.estimate)
            if row.verdict == "invalid" and y is not None:  # a broken experiment, not a result
                invalid = ax.plot([x], [y], "x", color="tab:gray", markersize=10, mew=2)[0]
                invalid.set_label("invalid")
    for t in sorted(thresholds):
        ax.axhline(t, color="black", linewidth=0.9, linestyle=":", label=f"threshold {t:g}")
    ax.set_xticks(sorted({k for cells in groups.values() for k, _ in cells}))
    ax.set_xlabel("k (prefix: KV of layers 0..k; suffix: layers k..31; as written for 32 layers)")
    ax.set_ylabel("transfer efficiency, with its interval")
    ax.set_title("Partial-KV layer sweep")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # one "invalid" entry however many points
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    save_png(fig, path)
