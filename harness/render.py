"""Render a run folder as a human-readable report: ``summary.md`` and plots.

Reads what :class:`harness.report.RunWriter` wrote (``results.jsonl``,
``claims.csv``, ``summary.json``) and writes, beside them:

- ``summary.md``: completeness, the claims table first, then one section per
  claim x protocol (statement, source, arms, interval, verdict and why, patch
  counts, sample generations), then the provenance;
- ``efficiency.png``: each claim's estimate and interval against its threshold;
- ``layer_sweep.png``: the ``partial-kv-{prefix,suffix}-{k}`` claims against k,
  only when the run has any.

matplotlib and tabulate are imported inside the functions that draw or format,
so importing this module stays cheap (the pytest plugin may import it).

Command line: ``python -m harness.render RUN_DIR``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, HarnessLookupError, HarnessValueError

__all__ = ["Run", "load_run", "read_results", "summary_markdown", "render", "main"]

TITLE = "# Claims report"
SAMPLES_PER_ARM = 3
SAMPLE_CHARS = 200
#: Claims of the partial-KV layer sweep, e.g. ``partial-kv-prefix-8``.
SWEEP_ID = re.compile(r"^partial-kv-(prefix|suffix)-(\d+)$")
VERDICT_COLOURS = {"supported": "tab:green", "refuted": "tab:red",
                   "inconclusive": "tab:orange", "invalid": "tab:gray"}
_FLOAT_COLUMNS = ("efficiency", "ci_low", "ci_high", "threshold")
_INT_COLUMNS = ("n_pairs", "n_seeds", "calls_prefill", "changed_prefill", "calls_decode", "changed_decode")


@dataclass(frozen=True)
class Run:
    """One run folder as read from disk. Rows are plain dicts, as the writer stored them."""

    directory: Path
    complete: bool
    provenance: Mapping[str, Any]
    claims: tuple[dict[str, Any], ...]
    results: tuple[dict[str, Any], ...]
    extra: Mapping[str, Any]  # summary.json keys beyond complete/provenance/claims (e.g. shards)


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``results.jsonl``; a truncated last line (a run killed mid-write) is dropped.

    A malformed line anywhere else means the file is corrupt, and is refused.
    """
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # only the last write can be cut short
                break
            raise HarnessValueError(f"{path}:{number}: not a JSON row ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise HarnessValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _number(value: str, kind: type) -> Any:
    try:
        return kind(value)
    except ValueError:  # e.g. "1.0" in an int column; a non-number stays text
        return float(value) if kind is int else value


def _read_claims_csv(path: Path) -> list[dict[str, Any]]:
    """Claim rows from claims.csv, typed like summary.json's (empty cell -> None)."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows: list[dict[str, Any]] = list(csv.DictReader(handle))
    for row in rows:
        for col, value in row.items():
            kind = float if col in _FLOAT_COLUMNS else int if col in _INT_COLUMNS else None
            row[col] = None if value == "" else _number(value, kind) if kind else value
    return rows


def _key(row: Mapping[str, Any]) -> tuple[str, str]:
    return (str(row.get("claim")), str(row.get("protocol")))


def load_run(run_dir: Path) -> Run:
    """Read a run folder. ``summary.json`` is the main source of claim rows; a cell found
    only in ``claims.csv`` (a run stopped between the two writes) is kept too."""
    run_dir = Path(run_dir)
    summary_path, csv_path = run_dir / "summary.json", run_dir / "claims.csv"
    if not summary_path.exists() and not csv_path.exists():
        raise HarnessLookupError(f"{run_dir}: not a run folder (no summary.json or claims.csv)")
    summary: dict[str, Any] = {}
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise HarnessValueError(f"{summary_path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    claims = {_key(r): dict(r) for r in summary.get("claims", [])}
    if csv_path.exists():
        for row in _read_claims_csv(csv_path):
            claims.setdefault(_key(row), row)
    extra = {k: v for k, v in summary.items() if k not in ("complete", "provenance", "claims")}
    return Run(directory=run_dir, complete=bool(summary.get("complete", False)),
               provenance=dict(summary.get("provenance", {})),
               claims=tuple(claims[k] for k in sorted(claims)),
               results=tuple(read_results(run_dir / "results.jsonl")), extra=extra)


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


def _interval(row: Mapping[str, Any]) -> str:
    low, high = row.get("ci_low"), row.get("ci_high")
    if _finite(low) is None and _finite(high) is None:
        return "n/a"
    return f"[{_fmt(low)}, {_fmt(high)}]"


def _mapped(row: Mapping[str, Any]) -> str:
    parts = []
    if row.get("kv_layers"):
        parts.append(f"kv {row['kv_layers']}")
    if row.get("sites"):
        parts.append(str(row["sites"]))
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


def _claims_table(claims: Sequence[Mapping[str, Any]]) -> str:
    from tabulate import tabulate

    headers = ["claim", "protocol", "efficiency", "95% interval", "n pairs", "n seeds",
               "verdict", "expected", "mapped layers/sites"]
    rows = [[_cell(c) for c in (
        r.get("claim"), r.get("protocol"), _fmt(r.get("efficiency")), _interval(r), _fmt(r.get("n_pairs")),
        _fmt(r.get("n_seeds")), r.get("verdict") or "n/a", r.get("expected") or "-", _mapped(r))]
        for r in claims]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _samples(results: Sequence[Mapping[str, Any]], protocol: str, arm: str) -> list[Mapping[str, Any]]:
    """The first few generations of an arm: lowest seed first, one per pair in file order."""
    rows = [r for r in results if r.get("protocol") == protocol and r.get("arm") == arm]
    order = {pid: i for i, pid in enumerate(dict.fromkeys(r.get("pair") for r in rows))}
    rows.sort(key=lambda r: (r.get("seed") if isinstance(r.get("seed"), int) else 0, order[r.get("pair")]))
    return rows[:SAMPLES_PER_ARM]


def _claim_section(row: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> list[str]:
    protocol = str(row.get("protocol"))
    direction, threshold = row.get("direction") or "?", _fmt(row.get("threshold"))
    out = [f"### {row.get('claim')} [{protocol}]", ""]
    if row.get("statement"):
        out += [f"> {_one_line(row['statement'], limit=2000)}", ""]
    if row.get("source_file") or row.get("source_quote"):
        out += [f"Source: `{row.get('source_file') or '?'}`: \"{row.get('source_quote') or ''}\"", ""]
    arms = list(row.get("arms") or [])
    out += [
        f"- Arms: {', '.join(arms) if arms else 'n/a'}",
        f"- Metric: {row.get('metric') or 'n/a'}; estimate {_fmt(row.get('efficiency'))}, "
        f"95% interval {_interval(row)}; the claim holds if it is {direction} {threshold}",
        f"- Verdict: **{row.get('verdict') or 'n/a'}** (expected {row.get('expected') or 'n/a'}, "
        f"outcome {row.get('outcome') or 'n/a'}): {row.get('reason') or 'no reason recorded'}",
        f"- Mapped layers/sites: {_mapped(row)}",
        f"- Patch applications: prefill {_fmt(row.get('calls_prefill'))} calls, "
        f"{_fmt(row.get('changed_prefill'))} values changed; decode {_fmt(row.get('calls_decode'))} calls, "
        f"{_fmt(row.get('changed_decode'))} values changed",
    ]
    guards = list(row.get("guards") or [])
    if guards:
        out += ["- Guards:", *[f"  - {g}" for g in guards]]
    out.append("")
    for arm in arms:
        samples = _samples(results, protocol, arm)
        if samples:
            out += [f"Sample generations, {arm}:", ""]
            out += _fenced([f"{s.get('pair')} seed {s.get('seed')}: {_one_line(s.get('text'))}" for s in samples])
            out.append("")
    return out


def summary_markdown(run: Run, plots: Sequence[str] = ()) -> str:
    """The text of ``summary.md`` for ``run``; ``plots`` are image files to link."""
    from tabulate import tabulate

    model = run.provenance.get("model")
    n_cells, n_claims = len(run.claims), len({r.get("claim") for r in run.claims})
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


def plot_efficiency(claims: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Each claim x protocol on its own row: estimate, interval, verdict colour, threshold."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(8, 1.2 + 0.32 * max(len(claims), 1)))
    ax = fig.add_subplot()
    for y, row in enumerate(claims):
        colour = VERDICT_COLOURS.get(str(row.get("verdict")), "black")
        est, low, high = (_finite(row.get(k)) for k in ("efficiency", "ci_low", "ci_high"))
        if low is not None and high is not None:  # drawn as a segment: no error bars below zero length
            ax.plot([low, high], [y, y], color=colour, linewidth=2, solid_capstyle="butt")
        if est is not None:
            ax.plot([est], [y], "o", color=colour, markersize=6)
        threshold = _finite(row.get("threshold"))
        if threshold is not None:
            marker = ">" if row.get("direction") == "above" else "<"
            ax.plot([threshold], [y], marker, color="black", markersize=5)
    ax.set_yticks(range(len(claims)), [f"{r.get('claim')} [{r.get('protocol')}]" for r in claims], fontsize=8)
    ax.set_ylim(len(claims) - 0.5, -0.5)  # first claim on top, as in the table
    ax.axvline(0.0, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlabel("estimate with 95% interval (efficiency; R_V difference for rv claims)")
    handles = [Line2D([], [], color=c, marker="o", label=v) for v, c in VERDICT_COLOURS.items()]
    handles += [Line2D([], [], color="black", marker=m, linestyle="", label=f"threshold, claim: {d}")
                for m, d in ((">", "above"), ("<", "below"))]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Claims: estimate, interval and threshold")
    _save(fig, path)


def sweep_rows(claims: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[tuple[int, Mapping[str, Any]]]]:
    """``partial-kv-*`` rows grouped by (block, protocol), sorted by k."""
    groups: dict[tuple[str, str], list[tuple[int, Mapping[str, Any]]]] = {}
    for row in claims:
        match = SWEEP_ID.match(str(row.get("claim")))
        if match:
            groups.setdefault((match[1], str(row.get("protocol"))), []).append((int(match[2]), row))
    return {k: sorted(v, key=lambda kv: kv[0]) for k, v in sorted(groups.items())}


def plot_sweep(groups: Mapping[tuple[str, str], Sequence[tuple[int, Mapping[str, Any]]]], path: Path) -> None:
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
        ys = [_finite(r.get("efficiency")) for _, r in cells]
        colour, style = colours.get(block, "black"), styles[protocols.index(protocol) % len(styles)]
        ax.plot(xs, [math.nan if y is None else y for y in ys], style, marker="o", color=colour,
                label=f"{block} [{protocol}]")  # NaN leaves a gap in the line
        for x, (_, row) in zip(xs, cells):
            low, high = _finite(row.get("ci_low")), _finite(row.get("ci_high"))
            if low is not None and high is not None:
                ax.plot([x, x], [low, high], color=colour, linewidth=1.5, alpha=0.7)
            if _finite(row.get("threshold")) is not None:
                thresholds.add(_finite(row.get("threshold")))
            y = _finite(row.get("efficiency"))
            if row.get("verdict") == "invalid" and y is not None:  # a broken experiment, not a result
                invalid = ax.plot([x], [y], "x", color="tab:gray", markersize=10, mew=2)[0]
                invalid.set_label("invalid")
    for t in sorted(thresholds):
        ax.axhline(t, color="black", linewidth=0.9, linestyle=":", label=f"threshold {t:g}")
    ax.set_xticks(sorted({k for cells in groups.values() for k, _ in cells}))
    ax.set_xlabel("k (prefix: KV of layers 0..k; suffix: layers k..31; as written for 32 layers)")
    ax.set_ylabel("transfer efficiency, 95% interval")
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
    path = run.directory / "summary.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(summary_markdown(run, plots), encoding="utf-8")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.render RUN_DIR``: render a run folder, print where it went."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.render", description=render.__doc__)
    parser.add_argument("run_dir", type=Path, help="a run folder (e.g. reports/latest)")
    args = parser.parse_args(argv)
    try:
        render(args.run_dir)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(args.run_dir / "summary.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
