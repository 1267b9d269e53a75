"""Rendering a run folder: summary.md layout, INCOMPLETE runs, NaN values, valid PNGs.

Run folders are built by hand with the real RunWriter (no model is loaded).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessLookupError, HarnessValueError
from harness.report import ClaimRow, RunWriter, SampleRow, render
from harness.report.__main__ import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROVENANCE = {"run_id": "20250101-000000", "model": "toy", "device": "cpu", "dtype": "float32",
              "pairs": 2, "seeds": [0, 1], "gen_tokens": 8, "prompts": "bundled toy bank",
              "command": "pytest claims/ | tee run.log",
              "protocols": {"original": {"temperature": 0.8, "refeed_last": True}}}
LONG_TAIL = "TAIL-THAT-MUST-BE-CUT"


def claim_row(claim: str, protocol: str, efficiency: float = 0.1, low: float = -0.1, high: float = 0.3,
              verdict: str = "inconclusive", threshold: float = 0.2, direction: str = "below",
              arm: str = "kv", kind_rv: bool = False) -> ClaimRow:
    """A claim row as the evaluation and the plugin would give it."""
    return ClaimRow(
        claim=claim, protocol=protocol, metric="r_v" if kind_rv else "marker_score",
        measure="R_V difference" if kind_rv else f"efficiency of {arm} on marker_score",
        estimate=efficiency, ci_low=low, ci_high=high, level=0.95, interval_method="t on pair means",
        n_pairs=2, n_seeds=0 if kind_rv else 2, verdict=verdict, reason=f"reason for {claim}",
        threshold=threshold, direction=direction, kv_layers="" if kind_rv else "all(4)",
        sites="v_proj@27->L3" if not kind_rv else "v_proj@27->L3;v_proj@5->L1",
        changed_prefill=0 if kind_rv else 12, changed_decode=0, calls_prefill=0 if kind_rv else 4,
        calls_decode=0 if kind_rv else 16, alt_metric="" if kind_rv else "champion_logprob",
        alt_estimate=efficiency, alt_low=low, alt_high=high, alt_verdict="" if kind_rv else verdict,
        statement=f"Statement of {claim}.", source_file="seeds/finding.txt",
        source_quote=f"quote for {claim}", arms=() if kind_rv else ("baseline", "champion", arm),
        guards=() if kind_rv else (f"ok gap_floor: gap fine for {claim}",
                                   "FAILED patch_changed: decode changed nothing"),
        model="toy", outcome="xfail", expected=verdict,
    )


def sample_rows(protocol: str, arms: Iterable[str], pairs: Sequence[str] = ("p1", "p2"),
                seeds: Sequence[int] = (0, 1)) -> list[SampleRow]:
    """One results row per pair x arm x seed; one long, multi-line text; a NaN metric."""
    rows = []
    for arm in arms:
        for pair in pairs:
            for seed in seeds:
                text = f"{arm} {pair} seed{seed} the observer | observing `itself`\nagain"
                if arm == "champion" and pair == pairs[0] and seed == 0:
                    text += " word" * 80 + " " + LONG_TAIL
                rows.append(SampleRow(protocol=protocol, pair=pair, arm=arm, seed=seed, n_tokens=8, text=text,
                                      metrics={"marker_score": 2.0, "marker_rate": 0.25, "distinct_2": 0.9,
                                               "echo_rate": None}))
    return rows


def cell(claim: str, protocol: str, **kw: Any) -> tuple[ClaimRow, list[SampleRow]]:
    row = claim_row(claim, protocol, **kw)
    return row, sample_rows(protocol, row.arms)


def all_cells(sweep: bool = True) -> list[tuple[ClaimRow, list[SampleRow]]]:
    """A few claims under two protocols: ordinary, NaN, rv, and (optionally) a partial-KV sweep."""
    cells = []
    for protocol in ("original", "corrected"):
        cells.append(cell("kv-only-fails", protocol, verdict="refuted"))
        cells.append(cell("l27-v-full-kv", protocol, efficiency=math.nan, low=math.nan, high=math.nan,
                          verdict="invalid", threshold=0.8, direction="above", arm="kv+v_proj@27"))
        cells.append(cell("rv-contraction", protocol, efficiency=-0.4, low=-0.6, high=-0.2,
                          verdict="supported", threshold=0.0, kind_rv=True))
        if sweep:
            for block in ("prefix", "suffix"):
                for k in (8, 16, 24):
                    nan = block == "suffix" and k == 16 and protocol == "corrected"
                    eff = math.nan if nan else k / 32 + (0.1 if block == "prefix" else -0.1)
                    cells.append(cell(f"partial-kv-{block}-{k}", protocol, efficiency=eff, low=eff - 0.2,
                                      high=eff + 0.15, verdict="inconclusive", threshold=0.5,
                                      direction="above", arm=f"kv[{block}{k}]"))
    return cells


def write_run(directory: Path, cells: Iterable[tuple[ClaimRow, list[SampleRow]]], complete: bool = True,
              provenance: dict[str, Any] | None = None) -> Path:
    """A run folder as the plugin writes it, through the real RunWriter.

    Closing a run renders it; that is skipped here (the tests render explicitly, and
    drawing plots for every folder built would make them slow).
    """
    writer = RunWriter(directory, dict(provenance or PROVENANCE))
    for row, rows in cells:
        writer.add(row, rows)
    writer.close(complete=complete, render=False)
    return directory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered once per module: drawing the plots is the slow part."""
    path = write_run(tmp_path_factory.mktemp("render") / "run", all_cells())
    render(path)
    return path


def _md(path: Path) -> str:
    return (path / "summary.md").read_text(encoding="utf-8")


def test_summary_starts_with_title_and_the_table_comes_before_the_sections(run_dir: Path) -> None:
    md = _md(run_dir)
    lines = md.splitlines()
    assert lines[0] == "# Claims report: toy"
    header = next(i for i, line in enumerate(lines) if line.startswith("| claim"))
    assert "verdict" in lines[header] and "interval" in lines[header] and "mapped layers/sites" in lines[header]
    assert re.match(r"^\|[-|: ]+\|$", lines[header + 1]), "not a github table separator"
    first_section = next(i for i, line in enumerate(lines) if line.startswith("### "))
    assert header < first_section
    table = lines[header + 2: next(i for i in range(header, len(lines)) if not lines[i].startswith("|"))]
    assert len(table) == len(all_cells())  # one row per claim x protocol
    assert lines.index("## Provenance") > first_section


def test_table_rows_show_values_and_nan_as_na(run_dir: Path) -> None:
    rows = [line for line in _md(run_dir).splitlines() if line.startswith("| l27-v-full-kv")]
    assert len(rows) == 2 and all("n/a" in r and "invalid" in r for r in rows)
    kv = next(line for line in _md(run_dir).splitlines() if line.startswith("| kv-only-fails"))
    assert "0.1" in kv and "[-0.1, 0.3]" in kv and "refuted" in kv and "kv all(4); v_proj@27->L3" in kv


def _section(md: str, title: str) -> str:
    return md.split(f"### {title}")[1].split("\n### ")[0].split("\n## ")[0]


def test_claim_sections_say_what_why_and_show_samples(run_dir: Path) -> None:
    md = _md(run_dir)
    section = _section(md, "kv-only-fails [original]")
    assert "> Statement of kv-only-fails." in section
    assert '`seeds/finding.txt`: "quote for kv-only-fails"' in section
    assert "- Arms: `kv` (against baseline and champion)" in section
    assert "[-0.1, 0.3]" in section and "below 0.2" in section
    assert "**refuted**" in section and "reason for kv-only-fails" in section
    assert "FAILED patch_changed: decode changed nothing" in section
    assert "prefill 4 calls, 12 values changed; decode 16 calls, 0 values changed" in section
    assert "- Pairs: 2 x 2 seeds" in section
    # Samples side by side: one row per (pair, seed), a column per arm, the i-th pair's i-th seed.
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert [c.strip() for c in table[0].strip("|").split("|")] == ["pair · seed", "baseline", "champion", "kv"]
    assert [line.split("|")[1].strip() for line in table[1:]] == ["p1 · seed 0", "p2 · seed 1"]
    assert "kv p2 seed1 the observer \\| observing `itself` again" in table[2]  # one line, pipe escaped
    assert LONG_TAIL not in md  # truncated to a line
    assert "…" in section


def test_an_rv_section_shows_only_the_fields_its_measure_has(run_dir: Path) -> None:
    section = _section(_md(run_dir), "rv-contraction [original]")
    assert "R_V difference" in section and "**supported**" in section
    assert "- Pairs: 2 (prompt pass: no sampling)" in section
    for absent in ("Arms", " seeds", "seed ", "Patch applications", "Samples", "n/a", "champion_logprob"):
        assert absent not in section, absent


def test_how_to_read_defines_the_terms_from_the_run_and_the_registries(run_dir: Path) -> None:
    from harness.guards import DEGENERATION_RATIO, ECHO_MARGIN
    from harness.metrics import METRICS

    md = _md(run_dir)
    guide = md.split("## How to read this report")[1].split("\n## ")[0]
    assert md.index("## How to read this report") < md.index("## Claims")
    assert "(arm − baseline) / (champion − baseline)" in guide and "above 1" in guide
    for metric in METRICS.values():
        bounds = f"bounds [{metric.bounds[0]:g}, {metric.bounds[1]:g}]" if metric.bounds else "no known bounds"
        assert f"`{metric.name}` (floor {metric.floor:g}, {bounds}): {metric.description}" in guide
    assert f"{DEGENERATION_RATIO:g} x" in guide and f"more than {ECHO_MARGIN:g} more" in guide
    for word in ("**original**", "**corrected**", "**supported**", "**refuted**", "**inconclusive**",
                 "**invalid**", "*within*", "**disagrees**", "`docs/statistics.md`"):
        assert word in guide, word
    assert "t on pair means" in guide and "at the 95% level" in guide  # from the rows
    for words in ("at most 5%", "within its declared bounds", "independent draws", "Bonferroni"):
        assert words in guide, words  # what is guaranteed, and under which assumptions
    assert "temperature 0.8" in guide  # from the provenance's protocol parameters


def test_a_selection_says_how_many_cells_of_the_family_ran(tmp_path: Path) -> None:
    row, samples = cell("kv-only-fails", "corrected", verdict="refuted")
    path = write_run(tmp_path / "run", [(dataclasses.replace(row, family_size=35), samples)])
    render(path)
    head = "\n".join(_md(path).splitlines()[:6])
    assert "Run complete: 1 of the family's 35 claim x protocol cells (1 claim)" in head
    assert "not selected" in head
    assert "**Verdicts:** 0 supported, 1 refuted, 0 inconclusive, 0 invalid" in head


def test_a_run_closed_before_any_claim_is_an_empty_incomplete_report(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path / "run", dict(PROVENANCE, stopped="SIGINT"))
    writer.close(complete=False)
    md = _md(tmp_path / "run")
    assert "INCOMPLETE" in md and "stopped: SIGINT" in md and "only no claim cell finished" in md
    assert "No claim finished." in md
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["claims"] == []
    assert (tmp_path / "run" / "claims.csv").read_text().startswith("claim,protocol")
    assert not (tmp_path / "run" / "efficiency.png").exists()
    assert (tmp_path / "run" / "report.html").exists()


def test_provenance_is_a_table(run_dir: Path) -> None:
    prov = _md(run_dir).split("## Provenance")[1]
    assert "| field" in prov and "| seeds" in prov and "0, 1" in prov and "| gen_tokens" in prov
    table = [line for line in prov.splitlines() if line.startswith("|")]
    # An escaped pipe keeps the column count: every row splits into the same cells.
    assert {len(re.split(r"(?<!\\)\|", line)) for line in table} == {4}
    assert "pytest claims/ \\| tee run.log" in prov
    assert "| protocols" not in prov  # nested: a table of its own, a column per protocol
    params = prov.split("Protocol parameters:")[1]
    assert re.search(r"\| parameter +\| original +\|", params) and re.search(r"\| temperature +\| 0.8 +\|", params)


def test_incomplete_run_is_marked_with_the_number_finished(tmp_path: Path) -> None:
    cells = all_cells(sweep=False)[:4]
    path = write_run(tmp_path / "run", cells, complete=False)
    render(path)
    head = "\n".join(_md(path).splitlines()[:4])
    assert "INCOMPLETE" in head and "only 4 claim x protocol cells (3 claims) finished" in head
    done = write_run(tmp_path / "done", cells, complete=True)
    render(done)
    assert "INCOMPLETE" not in _md(done)


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5000, f"{path.name}: {len(data)} bytes, suspiciously small"


def test_plots_are_valid_pngs(run_dir: Path) -> None:
    _assert_png(run_dir / "efficiency.png")
    _assert_png(run_dir / "layer_sweep.png")
    md = _md(run_dir)
    assert "![efficiency](efficiency.png)" in md and "![layer_sweep](layer_sweep.png)" in md


def test_no_sweep_plot_without_partial_kv_claims(tmp_path: Path) -> None:
    path = write_run(tmp_path / "run", all_cells(sweep=False))
    (path / "layer_sweep.png").write_bytes(b"stale")  # from earlier data: must not survive
    render(path)
    _assert_png(path / "efficiency.png")
    assert not (path / "layer_sweep.png").exists()
    assert "layer_sweep" not in _md(path)


def test_all_nan_values_do_not_crash(tmp_path: Path) -> None:
    nan = dict(efficiency=math.nan, low=math.nan, high=math.nan, threshold=math.nan)
    cells = [cell("partial-kv-prefix-8", "original", **nan), cell("kv-only-fails", "original", **nan)]
    path = write_run(tmp_path / "run", cells)
    render(path)
    assert (path / "efficiency.png").read_bytes()[:8] == PNG_MAGIC
    assert (path / "layer_sweep.png").read_bytes()[:8] == PNG_MAGIC


def test_results_with_a_cut_last_line_render_and_a_corrupt_middle_line_is_refused(tmp_path: Path) -> None:
    path = write_run(tmp_path / "run", all_cells(sweep=False))
    results = path / "results.jsonl"
    results.write_text(results.read_text() + '{"protocol": "orig', encoding="utf-8")
    render(path)  # a run killed mid-write
    lines = results.read_text().splitlines()
    results.write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(HarnessValueError, match=r"results.jsonl:2"):
        render(path)


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(HarnessLookupError, match="not a run folder"):
        render(tmp_path)


def test_summary_json_missing_falls_back_to_claims_csv(tmp_path: Path) -> None:
    path = write_run(tmp_path / "run", all_cells(sweep=False))
    (path / "summary.json").unlink()
    render(path)
    md = _md(path)
    assert "INCOMPLETE" in md and md.count("| kv-only-fails") == 2


def test_cli(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir / "summary.md").unlink()
    assert main(["render", str(run_dir)]) == 0
    assert (run_dir / "summary.md").exists()
    assert main(["render", str(tmp_path / "missing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_importing_the_report_package_loads_no_plotting_library() -> None:
    code = "import sys, harness.report; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'tabulate', 'torch'))))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_an_outlier_does_not_stretch_the_efficiency_axis_and_is_marked_clipped(tmp_path: Path) -> None:
    import dataclasses

    from harness.report.plots import efficiency_limits, plot_efficiency

    rows = [row for row, _ in all_cells()]
    lo, hi = efficiency_limits(rows)
    ends = [x for r in rows for x in (r.ci_low, r.ci_high, r.estimate) if math.isfinite(x)]
    assert lo <= min(ends) and hi >= max(ends)  # nothing outlying: every interval whole on the axis
    assert plot_efficiency(rows, tmp_path / "plain.png") == []

    wide = dataclasses.replace(rows[0], estimate=0.4, ci_low=0.1, ci_high=7.0)  # one interval to 7
    far = dataclasses.replace(rows[1], claim="far", estimate=6.5, ci_low=6.0, ci_high=7.0)  # an outlying estimate
    lo, hi = efficiency_limits([wide, far, *rows[2:]])
    assert hi < 2.0 and lo > -1.0
    clipped = plot_efficiency([wide, far, *rows[2:]], tmp_path / "clipped.png")
    assert clipped == [(0, 7.0), (1, 6.5), (1, 6.0), (1, 7.0)]
    assert (tmp_path / "clipped.png").stat().st_size > 1000


def test_the_metrics_a_run_recorded_are_the_ones_explained():
    """A finding's own metrics are not importable at render time: the run's provenance
    carries them, and the explanation lists those (else the generic registry's)."""
    from harness.report.explain import metric_lines

    recorded = {"metrics": [{"name": "my_rate", "floor": 0.05, "description": "my words per word"}]}
    assert metric_lines(recorded) == ["- `my_rate` (floor 0.05, no known bounds): my words per word"]
    assert any(line.startswith("- `distinct_2` (floor") for line in metric_lines({}))


def test_how_to_read_explains_sequential_cells_only_when_the_run_has_them(tmp_path: Path) -> None:
    from harness.report.schema import BETTING_METHOD, SEQUENTIAL_METHOD

    for method, said in ((SEQUENTIAL_METHOD, True), (BETTING_METHOD, False)):
        row, samples = cell("kv-only-fails", "corrected", verdict="refuted")
        path = write_run(tmp_path / method[:10], [(dataclasses.replace(row, interval_method=method), samples)])
        render(path)
        text = _md(path)
        assert ("anytime-valid), so stopping at the first decision keeps the same promise" in text) is said
