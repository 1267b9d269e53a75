"""Runs of different models (or dtypes) side by side: claims x models, verdict and efficiency.

``python -m harness.report matrix RUN_DIR... --out DIR`` writes ``matrix.md`` (one row
per claim cell, one column per run: verdict, estimate and interval) and ``matrix.png``
(the same grid, coloured by verdict). Runs are comparable only when their verdicts
were decided by the same rule: the claim rule's version (``rule=N`` in each row's
``settings``) and the family size (the family-wise level) must agree, or the matrix
is refused, naming the runs and values that differ. Other settings (pairs, seeds,
tokens) may differ between models; they are listed per column. Pure Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessLookupError, HarnessValueError
from harness.report.brief import fmt, interval_text
from harness.report.schema import ClaimRow
from harness.report.writer import Run, load_run, write_atomic

__all__ = ["Column", "matrix", "matrix_markdown", "parse_settings", "plot_matrix"]


def parse_settings(text: str) -> dict[str, str]:
    """``"dtype=float32 family=35 rule=2"`` -> ``{"dtype": "float32", "family": "35", "rule": "2"}``."""
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


@dataclass(frozen=True)
class Column:
    """One run in the matrix: its label, what it ran with, and its rows by (claim, protocol)."""

    label: str
    run: Run
    model: str
    dtype: str
    settings: str
    rule: str
    family: str

    @property
    def cells(self) -> dict[tuple[str, str], ClaimRow]:
        return {r.key: r for r in self.run.claims}


def _one(values: set[str], run: Run, what: str) -> str:
    if len(values) > 1:
        raise HarnessValueError(f"matrix: {run.directory} mixes {what} {', '.join(sorted(values))} in one run")
    return values.pop() if values else "?"


def _column(run: Run) -> Column:
    if not run.claims:
        raise HarnessValueError(f"matrix: {run.directory} has no claim rows")
    settings = {r.settings for r in run.claims}
    parsed = [parse_settings(s) for s in settings]
    rule = _one({p.get("rule", "?") for p in parsed}, run, "claim rules")
    family = _one({str(r.family_size) for r in run.claims}, run, "family sizes")
    model = str(run.provenance.get("model") or run.claims[0].model or run.directory.name)
    dtype = str(run.provenance.get("dtype") or next((p["dtype"] for p in parsed if "dtype" in p), "?"))
    return Column(model, run, model, dtype, sorted(settings)[0], rule, family)


def _labelled(columns: list[Column]) -> list[Column]:
    """Unique labels: the model, then with its dtype, then with its folder where still ambiguous."""
    from dataclasses import replace

    def clash(cols: list[Column]) -> set[str]:
        labels = [c.label for c in cols]
        return {x for x in labels if labels.count(x) > 1}

    same = clash(columns)
    columns = [replace(c, label=f"{c.model} ({c.dtype})") if c.label in same else c for c in columns]
    same = clash(columns)
    return [replace(c, label=f"{c.label} [{c.run.directory.name}]") if c.label in same else c for c in columns]


def _check_rules(columns: Sequence[Column]) -> None:
    first = columns[0]
    for other in columns[1:]:
        for what, a, b in (("claim rule", first.rule, other.rule), ("family size", first.family, other.family)):
            if a != b:
                raise HarnessValueError(
                    f"matrix: runs made with different claim rules: {first.run.directory} has {what} {a}, "
                    f"{other.run.directory} has {b}; verdicts decided by different rules cannot be compared "
                    "(re-run one with the other's harness and claims)")


def _cell_text(row: ClaimRow | None) -> str:
    if row is None:
        return "not run"
    return f"{row.verdict or 'n/a'} {fmt(row.estimate)} {interval_text(row)}"


def matrix_markdown(columns: Sequence[Column]) -> str:
    from tabulate import tabulate

    keys = sorted({k for c in columns for k in c.cells})
    out = ["# Claims matrix", "",
           f"{len(keys)} claim cells x {len(columns)} runs. Each cell: verdict, estimate (efficiency, "
           "contrast or geometry difference) and its interval; every run's intervals are at the family-wise "
           f"level of {columns[0].family} cells under claim rule {columns[0].rule}. *agree*: whether every run "
           "that has the cell gave the same verdict.", "", "Runs:", ""]
    for c in columns:
        state = "complete" if c.run.complete else "INCOMPLETE"
        identity = c.run.claims[0].model or c.model
        out.append(f"- **{c.label}**: `{identity}`, {c.dtype}, {state}, `{c.run.directory}`; settings {c.settings}")
    differ = sorted({k for c in columns for k, v in parse_settings(c.settings).items()
                     if any(parse_settings(o.settings).get(k) != v for o in columns)} - {"dtype"})
    if differ:
        out += ["", f"> Settings that differ between runs: {', '.join(differ)}; the verdicts are each run's own."]
    rows = []
    for key in keys:
        found = [c.cells.get(key) for c in columns]
        verdicts = {r.verdict for r in found if r is not None}
        agree = "-" if sum(r is not None for r in found) < 2 else ("yes" if len(verdicts) == 1 else "no")
        rows.append([key[0], key[1], *(_cell_text(r) for r in found), agree])
    table = tabulate(rows, headers=["claim", "protocol", *(c.label for c in columns), "agree"],
                     tablefmt="github", disable_numparse=True)
    return "\n".join([*out, "", table, "", "![matrix](matrix.png)", ""])


def plot_matrix(columns: Sequence[Column], path: Path) -> None:
    """The grid: a row per claim cell, a column per run, coloured by verdict, estimate and interval inside."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    from harness.report.plots import VERDICT_COLOURS, save_png

    keys = sorted({k for c in columns for k in c.cells})
    fig = Figure(figsize=(3.2 + 2.1 * len(columns), 1.4 + 0.3 * max(len(keys), 1)))
    ax = fig.add_subplot()
    for y, key in enumerate(keys):
        for x, column in enumerate(columns):
            row = column.cells.get(key)
            colour = VERDICT_COLOURS.get(row.verdict, "white") if row is not None else "white"
            ax.add_patch(Rectangle((x, y), 1, 1, facecolor=colour, alpha=0.55, edgecolor="white"))
            text = "not run" if row is None else f"{fmt(row.estimate)} {interval_text(row)}"
            ax.text(x + 0.5, y + 0.5, text, ha="center", va="center", fontsize=7)
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(keys), 0)  # first cell on top, as in matrix.md
    ax.set_xticks([x + 0.5 for x in range(len(columns))], [c.label for c in columns], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([y + 0.5 for y in range(len(keys))], [f"{c} [{p}]" for c, p in keys], fontsize=7)
    ax.tick_params(length=0)
    handles = [Patch(facecolor=c, alpha=0.55, label=v) for v, c in VERDICT_COLOURS.items()]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Verdict by claim cell and run: estimate [interval]", fontsize=9, pad=24)
    save_png(fig, path)


def matrix(dirs: Sequence[Path], out: Path) -> Path:
    """Write ``matrix.md`` and ``matrix.png`` for the run folders ``dirs`` into ``out``; return ``out``."""
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise HarnessValueError("matrix: no run folders given")
    for d in dirs:
        if not d.is_dir():
            raise HarnessLookupError(f"matrix: {d}: no such run folder")
    if len({d.resolve() for d in dirs}) < len(dirs):
        raise HarnessValueError("matrix: the same run folder is given twice")
    columns = _labelled([_column(load_run(d)) for d in dirs])
    _check_rules(columns)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_matrix(columns, out / "matrix.png")
    write_atomic(out / "matrix.md", matrix_markdown(columns))
    return out

