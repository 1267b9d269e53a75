"""Render a run folder for a reader: ``summary.md``, ``report.html`` and the plots.

Reads a run folder (:func:`harness.report.load_run`) and writes, beside its data:

- ``summary.md``: whether the run is complete and how many cells of the family ran,
  the verdict counts, "How to read this report", the claims table, the plots, each
  claim cell (only the fields its measure has, samples side by side), the provenance;
- ``report.html``: the same in one self-contained file (:mod:`harness.report.html`);
- ``efficiency.png`` and, for a partial-KV sweep, ``layer_sweep.png``
  (:mod:`harness.report.plots`).

matplotlib and tabulate are imported inside the functions that draw or format,
so importing this module stays cheap (the pytest plugin may import it).

Command line: ``python -m harness.report render RUN_DIR``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.report.brief import counts_text, coverage_text, fmt, interval_text, ledger_text, short_reason
from harness.report.explain import how_to_read
from harness.report.facts import claim_facts, sample_grid
from harness.report.plots import plot_efficiency, plot_sweep, sweep_rows
from harness.report.schema import ClaimRow, SampleRow
from harness.report.writer import Run, load_run, write_atomic

__all__ = ["summary_markdown", "claims_table_markdown", "status_lines", "render", "plot_efficiency",
           "plot_sweep", "sweep_rows"]

TITLE = "# Claims report"
TABLE_HEADERS = ("claim", "protocol", "estimate", "interval", "n pairs", "n seeds", "verdict", "expected",
                 "why", "mapped layers/sites")


def _mapped(row: ClaimRow) -> str:
    parts = [f"kv {row.kv_layers}"] if row.kv_layers else []
    if row.sites:
        parts.append(row.sites)
    return "; ".join(parts) or "-"


def _fenced(lines: Sequence[str]) -> list[str]:
    # A fence longer than any backtick run in the content cannot be closed by it.
    longest = max((len(m) for line in lines for m in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", *lines, fence]


def _cell(value: Any) -> str:
    # A bare "|" or a line break inside a cell would break the github table. (A code span
    # cannot cross a cell's border, so backticks in sample text stay as they are.)
    return " ".join(str(value).split()).replace("|", "\\|")


def _prov_value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(json.dumps(v, default=str) if isinstance(v, (dict, list)) else fmt(v) for v in value)
    return fmt(value)


def table_rows(claims: Sequence[ClaimRow]) -> list[list[str]]:
    """The claims table's cells as text, one list per cell of the run (see :data:`TABLE_HEADERS`)."""
    return [[r.claim, r.protocol, fmt(r.estimate), interval_text(r), fmt(r.n_pairs),
             fmt(r.n_seeds) if r.n_seeds else "-", r.verdict or "n/a", r.expected or "-", short_reason(r),
             _mapped(r)] for r in claims]


def claims_table_markdown(claims: Sequence[ClaimRow]) -> str:
    """The claims as a github markdown table (also what a CI step summary shows)."""
    from tabulate import tabulate

    rows = [[_cell(c) for c in row] for row in table_rows(claims)]
    return tabulate(rows, headers=list(TABLE_HEADERS), tablefmt="github", disable_numparse=True)


def status_lines(run: Run) -> list[str]:
    """Complete or not, how many cells of the family ran, why it stopped, what is missing."""
    claims = list(run.claims)
    if run.complete:
        out = [f"Run complete: {coverage_text(claims)}.", ""]
    else:
        stopped = run.provenance.get("stopped")
        why = f" (stopped: {_prov_value(stopped)})" if stopped else ""
        done = coverage_text(claims, complete=False) if claims else "no claim cell finished"
        out = [f"> **INCOMPLETE RUN**: the run did not finish{why}; only {done}. "
               "Verdicts below cover those only.", ""]
        if run.extra.get("missing_samples"):
            out += [f"`results.jsonl` has {len(run.results)} of the {len(run.results) + run.extra['missing_samples']} "
                    f"samples the run wrote: {run.extra['missing_samples']} missing (a cut or damaged file).", ""]
        if run.extra.get("missing_shards"):
            out += [f"Shards with no report folder: {', '.join(run.extra['missing_shards'])}.", ""]
        missing = run.provenance.get("missing") or []
        if missing:
            out += [f"Claim tests that failed without a result ({len(missing)}): "
                    + ", ".join(f"`{m}`" for m in missing), ""]
    if run.extra.get("shards"):
        out += [f"Merged from {len(run.extra['shards'])} shards: {', '.join(map(str, run.extra['shards']))}.", ""]
    if run.extra.get("result_conflicts"):
        out += [f"> **Warning**: {len(run.extra['result_conflicts'])} sample rows differ between shards "
                "for the same (protocol, pair, arm, seed); the first shard's rows are kept.", ""]
    if claims:
        out += [f"**Verdicts:** {counts_text(claims)}; {ledger_text(claims)}.", ""]
    return out


def _claim_section(row: ClaimRow, results: Sequence[SampleRow]) -> list[str]:
    out = [f"### {row.claim} [{row.protocol}]", ""]
    if row.statement:
        out += [f"> {' '.join(row.statement.split())}", ""]
    if row.source_file or row.source_quote:
        out += [f"Source: `{row.source_file or '?'}`: \"{row.source_quote}\"", ""]
    for fact in claim_facts(row):
        out.append(f"- {fact.label}: {fact.text}")
        out += [f"  - {_cell(item)}" for item in fact.items]
    out.append("")
    grid = sample_grid(row, results)
    if grid.rows:
        from tabulate import tabulate

        out += [f"Samples ({len(grid.rows)} pairs, a different seed each; text cut to a line):", ""]
        rows = [[_cell(f"{pair} · seed {seed}"), *(_cell(t) for t in texts)] for pair, seed, texts in grid.rows]
        out += [tabulate(rows, headers=["pair · seed", *(_cell(a) for a in grid.arms)], tablefmt="github",
                         disable_numparse=True), ""]
    return out


def _protocol_table(protocols: Mapping[str, Any]) -> list[str]:
    """Protocol parameters as one table, a column per protocol (not a JSON dump)."""
    from tabulate import tabulate

    names = [n for n, v in protocols.items() if isinstance(v, dict)]
    keys = list(dict.fromkeys(k for n in names for k in protocols[n] if k != "name"))
    rows = [[_cell(k), *(_cell(_prov_value(protocols[n].get(k))) for n in names)] for k in keys]
    return [tabulate(rows, headers=["parameter", *names], tablefmt="github", disable_numparse=True), ""]


def _provenance(provenance: Mapping[str, Any]) -> list[str]:
    from tabulate import tabulate

    nested = {k: v for k, v in provenance.items() if isinstance(v, dict)}
    prov = [[_cell(k), _cell(_prov_value(v))] for k, v in provenance.items() if k not in nested]
    out = ["## Provenance", "",
           tabulate(prov, headers=["field", "value"], tablefmt="github", disable_numparse=True)
           if prov else "No provenance recorded.", ""]
    for key, value in nested.items():
        if key == "protocols" and all(isinstance(v, dict) for v in value.values()):
            out += ["Protocol parameters:", "", *_protocol_table(value)]
        else:
            out += [f"{key}:", "", *_fenced(json.dumps(value, indent=2, default=str).splitlines()), ""]
    return out


def summary_markdown(run: Run, plots: Sequence[str] = ()) -> str:
    """The text of ``summary.md`` for ``run``; ``plots`` are image files to link."""
    model = run.provenance.get("model")
    out = [f"{TITLE}{f': {model}' if model else ''}", "", *status_lines(run)]
    out += how_to_read(run.claims, run.provenance)
    out += ["## Claims", "", claims_table_markdown(run.claims) if run.claims else "No claim finished.", ""]
    if plots:
        out += ["## Plots", "", *[f"![{Path(p).stem}]({p})" for p in plots], ""]
    if run.claims:
        out += ["## Claims in detail", ""]
        for row in run.claims:
            out += _claim_section(row, run.results)
    out += _provenance(run.provenance)
    return "\n".join(out)


def render(run_dir: Path) -> None:
    """Write ``summary.md``, ``report.html``, ``efficiency.png``, and when the run has them the
    partial-KV sweep (``layer_sweep.png``) and the PR-per-layer profile (``pr_profile.png``)."""
    from harness.report.html import report_html
    from harness.report.profile import plot_profile, profile_series

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
    series = profile_series(run.claims)
    profile = run.directory / "pr_profile.png"
    if series is not None:
        plot_profile(series, profile)
        plots.append("pr_profile.png")
    elif profile.exists():
        profile.unlink()
    write_atomic(run.directory / "summary.md", summary_markdown(run, plots))
    write_atomic(run.directory / "report.html", report_html(run, plots))

