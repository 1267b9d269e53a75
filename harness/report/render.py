"""Render a run folder as a human-readable report: ``summary.md`` and plots.

Reads a run folder (:func:`harness.report.load_run`) and writes, beside its data:

- ``summary.md``: completeness, the claims table first, then one section per
  claim x protocol (statement, source, arms, interval, verdict and why, patch
  counts, sample generations), then the provenance;
- ``efficiency.png``: each claim's estimate and interval against its threshold;
- ``layer_sweep.png``: the ``partial-kv-{prefix,suffix}-{k}`` claims against k,
  only when the run has any.

matplotlib and tabulate are imported inside the functions that draw or format,
so importing this module stays cheap (the pytest plugin may import it).

Command line: ``python -m harness.report render RUN_DIR``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.report.schema import ClaimRow, SampleRow
from harness.report.writer import Run, load_run, write_atomic

__all__ = ["summary_markdown", "render", "plot_efficiency", "plot_sweep", "sweep_rows"]

TITLE = "# Claims report"
SAMPLES_PER_ARM = 3
SAMPLE_CHARS = 200
#: Claims of the partial-KV layer sweep, e.g. ``partial-kv-prefix-8``.
SWEEP_ID = re.compile(r"^partial-kv-(prefix|suffix)-(\d+)$")
VERDICT_COLOURS = {"supported": "tab:green", "refuted": "tab:red",
                   "inconclusive": "tab:orange", "invalid": "tab:gray"}


# -- formatting ----------------------------------------------------------------


def _finite(value: Any) -> float | None:
    """A float for plotting, or None for a missing, NaN or infinite value."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _interval(row: ClaimRow) -> str:
    low, high = row.ci_low, row.ci_high
    if _finite(low) is None and _finite(high) is None:
        return "n/a"
    return f"[{_fmt(low)}, {_fmt(high)}]"


def _level(row: ClaimRow) -> str:
    return f"{row.level:.4g}" if math.isfinite(row.level) else "n/a"


def _mapped(row: ClaimRow) -> str:
    parts = []
    if row.kv_layers:
        parts.append(f"kv {row.kv_layers}")
    if row.sites:
        parts.append(row.sites)
    return "; ".join(parts) or "-"


def _one_line(text: Any, limit: int = SAMPLE_CHARS) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _fenced(lines: Sequence[str]) -> list[str]:
    # A fence longer than any backtick run in the content cannot be closed by it.
    longest = max((len(m) for line in lines for m in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", *lines, fence]


def _cell(value: Any) -> str:
    # A bare "|" or a line break inside a cell would break the github table.
    return " ".join(str(value).split()).replace("|", "\\|")


def _prov_value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(json.dumps(v, default=str) if isinstance(v, (dict, list)) else _fmt(v) for v in value)
    return _fmt(value)


def _claims_table(claims: Sequence[ClaimRow]) -> str:
    from tabulate import tabulate

    headers = ["claim", "protocol", "estimate", "interval", "n pairs", "n seeds",
               "verdict", "expected", "mapped layers/sites"]
    rows = [[_cell(c) for c in (
        r.claim, r.protocol, _fmt(r.estimate), _interval(r), _fmt(r.n_pairs),
        _fmt(r.n_seeds) if r.n_seeds else "-", r.verdict or "n/a", r.expected or "-", _mapped(r))]
        for r in claims]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _samples(results: Sequence[SampleRow], protocol: str, arm: str) -> list[SampleRow]:
    """A few generations of an arm: the first seed of each pair, pairs in file order."""
    rows = [r for r in results if r.protocol == protocol and r.arm == arm]
    order = {pid: i for i, pid in enumerate(dict.fromkeys(r.pair for r in rows))}
    rank = {}
    for r in rows:
        rank.setdefault(r.pair, []).append(r.seed)
    rows.sort(key=lambda r: (sorted(rank[r.pair]).index(r.seed), order[r.pair]))
    return rows[:SAMPLES_PER_ARM]


def _claim_section(row: ClaimRow, results: Sequence[SampleRow]) -> list[str]:
    out = [f"### {row.claim} [{row.protocol}]", ""]
    if row.statement:
        out += [f"> {_one_line(row.statement, limit=2000)}", ""]
    if row.source_file or row.source_quote:
        out += [f"Source: `{row.source_file or '?'}`: \"{row.source_quote}\"", ""]
    bound = (f"within [{_fmt(row.threshold)}, {_fmt(row.threshold_high)}]" if row.direction == "within"
             else f"{row.direction} {_fmt(row.threshold)}")
    out += [
        f"- Measure: {row.measure or 'n/a'}; estimate {_fmt(row.estimate)}, {_level(row)} interval "
        f"{_interval(row)} ({row.interval_method or 'n/a'}); the claim holds if it is {bound}",
        f"- Verdict: **{row.verdict or 'n/a'}** (expected {row.expected or 'n/a'}, "
        f"outcome {row.outcome or 'n/a'}): {row.reason or 'no reason recorded'}",
    ]
    if row.arms:
        out.append(f"- Arms: {', '.join(row.arms)}")
    if row.n_seeds:
        out.append(f"- Pairs and seeds: {row.n_pairs} pairs x {row.n_seeds} seeds")
    if row.alt_metric:
        out.append(f"- On {row.alt_metric}: estimate {_fmt(row.alt_estimate)}, interval "
                   f"[{_fmt(row.alt_low)}, {_fmt(row.alt_high)}], verdict {row.alt_verdict}"
                   + ("" if row.metrics_agree else " (**disagrees with the text metric**)"))
    if row.kv_layers or row.sites:
        out.append(f"- Mapped layers/sites: {_mapped(row)}")
    if row.calls_prefill or row.calls_decode:
        out.append(f"- Patch applications: prefill {row.calls_prefill} calls, {row.changed_prefill} values "
                   f"changed; decode {row.calls_decode} calls, {row.changed_decode} values changed")
    if row.guards:
        out += ["- Guards:", *[f"  - {g}" for g in row.guards]]
    out.append("")
    for arm in row.arms:
        samples = _samples(results, row.protocol, arm)
        if samples:
            out += [f"Sample generations, {arm}:", ""]
            out += _fenced([f"{s.pair} seed {s.seed}: {_one_line(s.text)}" for s in samples])
            out.append("")
    return out


def summary_markdown(run: Run, plots: Sequence[str] = ()) -> str:
    """The text of ``summary.md`` for ``run``; ``plots`` are image files to link."""
    from tabulate import tabulate

    model = run.provenance.get("model")
    n_cells, n_claims = len(run.claims), len({r.claim for r in run.claims})
    out = [f"{TITLE}{f': {model}' if model else ''}", ""]
    if run.complete:
        out += [f"Run complete: {n_claims} claims, {n_cells} claim x protocol cells.", ""]
    else:
        out += [f"> **INCOMPLETE RUN**: the run did not finish; only {n_claims} claims "
                f"({n_cells} claim x protocol cells) finished. Verdicts below cover those only.", ""]
        if run.extra.get("missing_shards"):
            out += [f"Shards with no report folder: {', '.join(run.extra['missing_shards'])}.", ""]
        missing = run.provenance.get("missing") or []
        if run.provenance.get("stopped"):
            out += [f"Stopped: {_prov_value(run.provenance['stopped'])}.", ""]
        if missing:
            out += [f"Claim tests that failed without a result ({len(missing)}): "
                    + ", ".join(f"`{m}`" for m in missing), ""]
    if run.extra.get("shards"):
        out += [f"Merged from {len(run.extra['shards'])} shards: {', '.join(map(str, run.extra['shards']))}.", ""]
    if run.extra.get("result_conflicts"):
        out += [f"> **Warning**: {len(run.extra['result_conflicts'])} sample rows differ between shards "
                "for the same (protocol, pair, arm, seed); the first shard's rows are kept.", ""]
    out += ["## Claims", "", _claims_table(run.claims) if run.claims else "No claim finished.", ""]
    if plots:
        out += ["## Plots", "", *[f"![{Path(p).stem}]({p})" for p in plots], ""]
    out += ["## Claims in detail", ""]
    for row in run.claims:
        out += _claim_section(row, run.results)
    # Nested values (protocol parameters) would make one huge table cell: shown as JSON below.
    nested = {k: v for k, v in run.provenance.items() if isinstance(v, dict)}
    prov = [[_cell(k), _cell(_prov_value(v))] for k, v in run.provenance.items() if k not in nested]
    out += ["## Provenance", "",
            tabulate(prov, headers=["field", "value"], tablefmt="github", disable_numparse=True)
            if prov else "No provenance recorded.", ""]
    for key, value in nested.items():
        out += [f"{key}:", "", *_fenced(json.dumps(value, indent=2, default=str).splitlines()), ""]
    return "\n".join(out)


# -- plots -----------------------------------------------------------------------


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    tmp.replace(path)


def plot_efficiency(claims: Sequence[ClaimRow], path: Path) -> None:
    """Each claim x protocol on its own row: estimate, interval, verdict colour, threshold."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(8, 1.2 + 0.32 * max(len(claims), 1)))
    ax = fig.add_subplot()
    for y, row in enumerate(claims):
        colour = VERDICT_COLOURS.get(row.verdict, "black")
        est, low, high = (_finite(v) for v in (row.estimate, row.ci_low, row.ci_high))
        if low is not None and high is not None:  # drawn as a segment: no error bars below zero length
            ax.plot([low, high], [y, y], color=colour, linewidth=2, solid_capstyle="butt")
        if est is not None:
            ax.plot([est], [y], "o", color=colour, markersize=6)
        threshold = _finite(row.threshold)
        if threshold is not None:
            marker = ">" if row.direction == "above" else "<" if row.direction == "below" else "|"
            ax.plot([threshold], [y], marker, color="black", markersize=5)
            if row.direction == "within" and _finite(row.threshold_high) is not None:
                ax.plot([row.threshold_high], [y], marker, color="black", markersize=5)
    ax.set_yticks(range(len(claims)), [f"{r.claim} [{r.protocol}]" for r in claims], fontsize=8)
    ax.set_ylim(len(claims) - 0.5, -0.5)  # first claim on top, as in the table
    ax.axvline(0.0, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlabel("estimate with its interval (efficiency, contrast or geometry difference: see the table)")
    handles = [Line2D([], [], color=c, marker="o", label=v) for v, c in VERDICT_COLOURS.items()]
    handles += [Line2D([], [], color="black", marker=m, linestyle="", label=f"threshold, claim: {d}")
                for m, d in ((">", "above"), ("<", "below"))]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Claims: estimate, interval and threshold")
    _save(fig, path)


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
        ys = [_finite(r.estimate) for _, r in cells]
        colour, style = colours.get(block, "black"), styles[protocols.index(protocol) % len(styles)]
        ax.plot(xs, [math.nan if y is None else y for y in ys], style, marker="o", color=colour,
                label=f"{block} [{protocol}]")  # NaN leaves a gap in the line
        for x, (_, row) in zip(xs, cells):
            low, high = _finite(row.ci_low), _finite(row.ci_high)
            if low is not None and high is not None:
                ax.plot([x, x], [low, high], color=colour, linewidth=1.5, alpha=0.7)
            if _finite(row.threshold) is not None:
                thresholds.add(_finite(row.threshold))
            y = _finite(row.estimate)
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
    _save(fig, path)


def render(run_dir: Path) -> None:
    """Write ``summary.md``, ``efficiency.png`` and (for a sweep) ``layer_sweep.png`` into ``run_dir``."""
    run = load_run(Path(run_dir))
    plots = []
    eff = run.directory / "efficiency.png"
    if run.claims:
        plot_efficiency(run.claims, eff)
        plots.append("efficiency.png")
    elif eff.exists():
        eff.unlink()
    groups = sweep_rows(run.claims)
    sweep = run.directory / "layer_sweep.png"
    if groups:
        plot_sweep(groups, sweep)
        plots.append("layer_sweep.png")
    elif sweep.exists():  # a stale plot from earlier data in this folder would mislead
        sweep.unlink()
    write_atomic(run.directory / "summary.md", summary_markdown(run, plots))
