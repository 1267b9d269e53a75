"""Error rates of the shipped rule, measured on data like a run's: ``python -m harness.stats study``.

A population of pairs (one line per pair of a JSONL file, ``{"arm": a, "baseline": b,
"champion": c}``: the per-pair means of one metric; or a synthetic scenario) is taken as the
truth. Each simulated run draws ``family`` cells of ``n`` pairs with replacement, puts every
cell's threshold exactly at the population's value and counts decisive verdicts, all false:

- the shipped rule (harness/bounded.py): the estimand is mean(arm - baseline) /
  mean(champion - baseline); a false verdict is "above" or "below" shown at the threshold;
- the old rule, for comparison: Student t on per-pair efficiencies (pairs whose gap is under
  the metric's floor dropped), whose estimand is the population's mean per-pair efficiency.

It prints the family-wise error (share of runs with any false decisive verdict), the per-cell
coverage at 95% and at the Bonferroni level, and the power against a true value ``shift`` away
from the threshold. Pure numpy.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from harness.betting import N_ORDERS, reject_positive_mean
from harness.bounded import linear_bounds
from harness.cli import one_line_errors
from harness.errors import HarnessValueError
from harness.metrics import known_metrics
from harness.stats import FAMILY_ALPHA, t_bounds

__all__ = ["SCENARIOS", "StudyResult", "scenario", "load_pairs_file", "pairs_from_results", "study",
           "render_table", "write_table", "main"]

_CHUNK_VALUES = 2_000_000  # values per batch of data sets: bounds the capital's (sets, orders, n) array
_W_NUM, _W_DEN = np.array([1.0, -1.0, 0.0]), np.array([0.0, -1.0, 1.0])  # columns: arm, baseline, champion


def _scenario_normal(rng: np.random.Generator, size: int) -> np.ndarray:
    base = np.clip(rng.normal(0.1, 0.03, size), 0, 1)
    champ = np.clip(base + rng.normal(0.3, 0.05, size), 0, 1)
    arm = np.clip(base + 0.5 * (champ - base) + rng.normal(0, 0.05, size), 0, 1)
    return np.stack([arm, base, champ], axis=1)


def _scenario_lognormal(rng: np.random.Generator, size: int) -> np.ndarray:
    champ = rng.uniform(0.25, 0.45, size)
    return np.stack([np.minimum(rng.lognormal(-2.5, 1.0, size), 1.0), np.zeros(size), champ], axis=1)


def _zeros(share: float):
    def make(rng: np.random.Generator, size: int) -> np.ndarray:
        champ = rng.uniform(0.2, 0.5, size)
        arm = np.where(rng.random(size) < share, 0.0, rng.uniform(0, 1, size) * champ)
        return np.stack([arm, np.zeros(size), champ], axis=1)
    return make


#: Synthetic populations of per-pair means on a metric in [0, 1] (the baseline mostly 0, as
#: under the corrected protocol): name -> (description, generator).
SCENARIOS = {
    "normal": ("arm halfway between baseline and champion, normal noise", _scenario_normal),
    "lognormal": ("baseline 0, arm lognormal(-2.5, 1) capped at 1 (skewness ~6)", _scenario_lognormal),
    "zeros": ("baseline 0, arm 0 in 50% of pairs, else uniform below the champion", _zeros(0.5)),
    "zeros80": ("baseline 0, arm 0 in 80% of pairs, else uniform below the champion", _zeros(0.8)),
}


def scenario(name: str, size: int = 20_000, seed: int = 0) -> np.ndarray:
    """A synthetic population (size, 3): columns arm, baseline, champion, within [0, 1]."""
    if name not in SCENARIOS:
        raise HarnessValueError(f"--scenario {name!r}: expected one of {', '.join(SCENARIOS)}.")
    return SCENARIOS[name][1](np.random.default_rng(seed), size)


def load_pairs_file(path: Path) -> np.ndarray:
    """(n_pairs, 3) from a JSONL file of {"arm", "baseline", "champion"} lines."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise HarnessValueError(f"--pairs-file {path}: cannot be read ({exc.strerror}).") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rows.append([float(rec[k]) for k in ("arm", "baseline", "champion")])
        except (ValueError, KeyError, TypeError):
            raise HarnessValueError(f"--pairs-file {path} line {i}: expected {{\"arm\": a, \"baseline\": b, "
                                    f"\"champion\": c}} with numbers, got {line[:80]!r}.") from None
    if len(rows) < 2:
        raise HarnessValueError(f"--pairs-file {path}: {len(rows)} pair(s); at least 2 are needed.")
    return np.array(rows)


def pairs_from_results(results: Path, protocol: str, arm: str, metric: str) -> list[dict[str, float]]:
    """Per-pair seed means of ``metric`` for ``arm`` and the two reference arms, from a run's
    results.jsonl, in pair order (pairs missing an arm or a value are left out)."""
    values: dict[tuple[str, str], list[float]] = {}
    for line in Path(results).read_text().splitlines():
        rec = json.loads(line)
        if rec.get("protocol") == protocol and rec.get(metric) is not None:
            values.setdefault((rec["arm"], rec["pair"]), []).append(float(rec[metric]))
    pairs = sorted({p for a, p in values if a == arm})
    out = []
    for p in pairs:
        row = {k: values.get((a, p)) for k, a in (("arm", arm), ("baseline", "baseline"), ("champion", "champion"))}
        if all(row.values()):
            out.append({k: float(np.mean(v)) for k, v in row.items()})
    if not out:
        raise HarnessValueError(f"no pair of {results} has arm {arm!r} under protocol {protocol!r} with {metric}.")
    return out


@dataclass(frozen=True)
class StudyResult:
    """Error rates of one population (percentages; ``*_t`` for the old t rule)."""

    source: str
    n: int
    family: int
    runs: int
    truth: float
    fwer: float
    fwer_above: float
    fwer_below: float
    coverage95: float
    coverage_family: float
    power: float
    fwer_t: float
    coverage95_t: float
    power_t: float
    shift: float


def _shown(x: np.ndarray, theta: float, bounds: tuple[float, float], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounded rule on data sets x (sets, n, 3): ("above theta" shown, "below theta" shown)."""
    low, high = (bounds[0],) * 3, (bounds[1],) * 3
    gap = reject_positive_mean(x @ _W_DEN, *linear_bounds(_W_DEN, low, high), alpha)
    out = []
    for sign in (1.0, -1.0):
        w = sign * (_W_NUM - theta * _W_DEN)
        out.append(gap & reject_positive_mean(x @ w, *linear_bounds(w, low, high), alpha))
    return out[0], out[1]


def _t_excludes(x: np.ndarray, truth: float, level: float, floor: float, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Old rule: (interval excludes truth, interval wholly above truth - shift), per data set."""
    gap = x[..., 2] - x[..., 1]
    eff = np.where(gap >= floor, (x[..., 0] - x[..., 1]) / np.where(gap >= floor, gap, 1.0), np.nan)
    excl, power = np.zeros(len(x), bool), np.zeros(len(x), bool)
    for i, row in enumerate(eff):  # rows differ in how many pairs pass the floor
        row = row[np.isfinite(row)]
        if row.size >= 2 and np.ptp(row) > 0:
            _, lo, hi = t_bounds(row, level)
            excl[i], power[i] = lo > truth or hi < truth, lo > truth - shift
    return excl, power


def study(population: np.ndarray, *, n: int = 24, family: int = 45, runs: int = 2000,
          bounds: tuple[float, float] = (0.0, 1.0), floor: float = 0.05, shift: float = 0.25,
          seed: int = 0, source: str = "", alpha: float = FAMILY_ALPHA) -> StudyResult:
    """Simulate ``runs`` runs of ``family`` cells of ``n`` pairs drawn from ``population``
    (shape (N, 3): arm, baseline, champion per pair); see the module doc."""
    for name, value in (("n", n), ("family", family), ("runs", runs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "n" else 1):
            raise HarnessValueError(f"--{name} {value!r}: expected a positive integer (n at least 2).")
    pop = np.asarray(population, dtype=np.float64)
    num, den = pop @ _W_NUM, pop @ _W_DEN
    if not den.mean() > 0:
        raise HarnessValueError("the population's mean champion - baseline gap is not positive: "
                                "its efficiency is not defined.")
    truth = float(num.mean() / den.mean())
    ok = den >= floor
    truth_t = float(np.mean(num[ok] / den[ok])) if ok.any() else math.nan
    rng = np.random.default_rng(seed)
    level = 1.0 - alpha / family
    side = (1.0 - level) / 2.0
    counts = dict.fromkeys(("above", "below", "any", "cov95", "covf", "power", "t_any", "t_cov95", "t_power"), 0)
    family_any = np.zeros(runs, bool)
    family_above, family_below, family_t = (np.zeros(runs, bool) for _ in range(3))
    cells = runs * family
    chunk = max(1, _CHUNK_VALUES // (n * N_ORDERS))
    for start in range(0, cells, chunk):
        size = min(chunk, cells - start)
        x = pop[rng.integers(0, len(pop), (size, n))]
        run_of = (start + np.arange(size)) // family
        above, below = _shown(x, truth, bounds, side)
        a95, b95 = _shown(x, truth, bounds, 0.025)
        power = _shown(x, truth - shift, bounds, side)[0]
        t_excl, t_power = _t_excludes(x, truth_t, level, floor, shift)
        t95 = _t_excludes(x, truth_t, 0.95, floor, shift)[0]
        np.logical_or.at(family_above, run_of, above)
        np.logical_or.at(family_below, run_of, below)
        np.logical_or.at(family_t, run_of, t_excl)
        counts["covf"] += int(np.sum(~(above | below)))
        counts["cov95"] += int(np.sum(~(a95 | b95)))
        counts["power"] += int(power.sum())
        counts["t_cov95"] += int(np.sum(~t95))
        counts["t_power"] += int(t_power.sum())
    family_any = family_above | family_below
    pct = lambda k, total: round(100.0 * k / total, 2)  # noqa: E731
    return StudyResult(source=source, n=n, family=family, runs=runs, truth=truth,
                       fwer=pct(family_any.sum(), runs), fwer_above=pct(family_above.sum(), runs),
                       fwer_below=pct(family_below.sum(), runs), coverage95=pct(counts["cov95"], cells),
                       coverage_family=pct(counts["covf"], cells), power=pct(counts["power"], cells),
                       fwer_t=pct(family_t.sum(), runs), coverage95_t=pct(counts["t_cov95"], cells),
                       power_t=pct(counts["t_power"], cells), shift=shift)


#: The doc's populations: the reference run's per-pair files (docs/study/, metric by protocol)
#: and the synthetic scenarios.
STUDY_DIR = Path(__file__).resolve().parent.parent / "docs" / "study"
TABLE_START, TABLE_END = "<!-- study-table -->", "<!-- /study-table -->"


def _reference_scales() -> dict[str, tuple[str, tuple[float, float], float]]:
    """(metric, bounds, floor) of the metric each protocol of the reference run judged on,
    from ``scales.json`` beside the per-pair files (the finding's metrics are not the engine's)."""
    raw = json.loads((STUDY_DIR / "scales.json").read_text())
    return {p: (v["metric"], (float(v["bounds"][0]), float(v["bounds"][1])), float(v["floor"])) for p, v in raw.items()}


def _populations() -> list[tuple[str, np.ndarray, tuple[float, float], float]]:
    """(label, population, bounds, floor) for every row of the doc's table."""
    out, scales = [], _reference_scales()
    for path in sorted(STUDY_DIR.glob("*.jsonl")):
        name, bounds, floor = scales["original" if path.stem.endswith(".original") else "corrected"]
        out.append((f"`{path.stem}` ({name})", load_pairs_file(path), bounds, floor))
    _, bounds, floor = scales["corrected"]
    out += [(f"scenario {name}", scenario(name), bounds, floor) for name in SCENARIOS]
    return out


def default_sizes() -> tuple[int, int]:
    """The two cell sizes of the doc's table: the quick profile's pairs and the whole bundled bank's."""
    from harness.preflight import PROFILES
    from harness.prompts import default_pairs

    return int(PROFILES["quick"][0]), len(default_pairs())


def render_table(*, family: int, runs: int, runs_large: int, sizes: tuple[int, int] | None = None,
                 shift: float = 0.25) -> str:
    """The markdown table of docs/statistics.md: every population at two cell sizes (default:
    :func:`default_sizes`)."""
    sizes = sizes or default_sizes()
    head = (f"Family {family}, threshold at the truth; {runs} runs at n = {sizes[0]}, {runs_large} at "
            f"n = {sizes[1]}; power: \"above truth - {shift:g}\" supported.\n\n"
            "| population | truth | n | betting: family-wise error (above / below) | coverage 95% | power "
            "| t: family-wise error | coverage 95% | power |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for label, pop, bounds, floor in _populations():
        for n, r in zip(sizes, (runs, runs_large)):
            res = study(pop, n=n, family=family, runs=r, bounds=bounds, floor=floor, shift=shift)
            lines.append(f"| {label} | {res.truth:.3f} | {n} | {res.fwer:.1f} ({res.fwer_above:.1f} / "
                         f"{res.fwer_below:.1f}) | {res.coverage95:.1f} | {res.power:.1f} | {res.fwer_t:.1f} | "
                         f"{res.coverage95_t:.1f} | {res.power_t:.1f} |")
    return head + "\n".join(lines) + "\n"


def write_table(doc: Path, table: str) -> None:
    """Replace the text between the study-table markers of ``doc`` with ``table``."""
    text = doc.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise HarnessValueError(f"{doc}: no {TABLE_START} ... {TABLE_END} markers to write the table between.")
    before, rest = text.split(TABLE_START, 1)
    doc.write_text(f"{before}{TABLE_START}\n{table}{TABLE_END}{rest.split(TABLE_END, 1)[1]}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness.stats", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("study", help="error rates of the shipped rule on a population of pairs")
    src = cmd.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs-file", type=Path, metavar="F.jsonl",
                     help='one pair per line: {"arm": a, "baseline": b, "champion": c} (per-pair means)')
    src.add_argument("--scenario", choices=tuple(SCENARIOS), help="a synthetic population instead")
    cmd.add_argument("--n", type=int, default=None, help="pairs per cell (default: the quick profile's)")
    cmd.add_argument("--family", type=int, default=46, help="cells per run: the Bonferroni family (default 46, the suite's)")
    cmd.add_argument("--runs", type=int, default=2000, help="simulated runs (default 2000)")
    cmd.add_argument("--bounds", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"),
                     help="bounds of the metric's per-pair means (default 0 1: a rate)")
    cmd.add_argument("--floor", type=float, default=0.05, help="the metric's gap floor (default 0.05)")
    cmd.add_argument("--metric", default=None, metavar="NAME",
                     help="take bounds and floor from this known metric instead (one with bounds)")
    cmd.add_argument("--shift", type=float, default=0.25, help="true distance from the threshold for power")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--json", action="store_true", help="print one JSON object")
    tab = commands.add_parser("table", help="regenerate the study table of docs/statistics.md")
    tab.add_argument("--family", type=int, default=46, help="cells per run (harness_family_size)")
    tab.add_argument("--runs", type=int, default=2000, help="runs at the quick profile's pairs per cell")
    tab.add_argument("--runs-large", type=int, default=200, help="runs at the whole bank's pairs per cell")
    tab.add_argument("--write", type=Path, metavar="DOC", help="write it into DOC between the markers")
    return parser


@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "table":
        table = render_table(family=args.family, runs=args.runs, runs_large=args.runs_large)
        if args.write is not None:
            write_table(args.write, table)
        else:
            print(table, end="")
        return 0
    bounds, floor, scale = tuple(args.bounds), args.floor, f"--bounds {args.bounds[0]:g} {args.bounds[1]:g}"
    if args.metric is not None:
        table = known_metrics()
        if args.metric not in table or table[args.metric].bounds is None:
            with_bounds = ", ".join(m for m in table if table[m].bounds)
            raise HarnessValueError(f"--metric {args.metric!r}: not a known metric with bounds; expected one of "
                                    f"{with_bounds}, or give --bounds LOW HIGH and --floor")
        bounds, floor, scale = table[args.metric].bounds, table[args.metric].floor, f"--metric {args.metric}"
    if args.pairs_file is not None:
        pop, source = load_pairs_file(args.pairs_file), str(args.pairs_file)
    else:
        pop, source = scenario(args.scenario), f"scenario {args.scenario}"
    low, high = bounds
    if pop.min() < low or pop.max() > high:
        raise HarnessValueError(f"{source}: values from {pop.min():.4g} to {pop.max():.4g} lie outside the bounds "
                                f"[{low:g}, {high:g}] of {scale}; give the bounds of the metric the file measures.")
    res = study(pop, n=args.n or default_sizes()[0], family=args.family, runs=args.runs, bounds=bounds, floor=floor,
                shift=args.shift, seed=args.seed, source=source)
    if args.json:
        print(json.dumps(asdict(res)))
        return 0
    print(f"{source}: truth {res.truth:.4g} (ratio of means), {res.n} pairs per cell, {res.family} cells, "
          f"{res.runs} runs, bounds {bounds}")
    print(f"  betting rule: family-wise error {res.fwer}% (false 'above' {res.fwer_above}%, false 'below' "
          f"{res.fwer_below}%); coverage {res.coverage95}% at 95%, {res.coverage_family}% at the family level; "
          f"power {res.power}% at {res.shift:g} from the threshold")
    print(f"  old t rule:   family-wise error {res.fwer_t}%; coverage {res.coverage95_t}% at 95%; "
          f"power {res.power_t}% at {res.shift:g}")
    return 0
