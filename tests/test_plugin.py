"""The pytest plugin: light import, options, the hook guard, claims end to end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import transformers
from tiny import CLAIM_FILE, OPT_IN, SMALL, opt_in

pytest_plugins = ["pytester"]


def test_importing_the_plugin_loads_neither_torch_nor_transformers():
    code = "import sys, harness.plugin; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_options_are_in_the_harness_group(pytester):
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    assert "claims harness" in text
    for option in ("--model", "--device", "--dtype", "--prompts", "--seeds", "--gen-tokens",
                   "--report-dir", "--allow-pickle", "--trust-remote-code", "--pairs", "--profile"):
        assert option in text


def test_bad_device_is_a_usage_error(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--device", "gpu0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--device 'gpu0' is not a device*"])


def test_missing_prompts_file_is_a_usage_error(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--prompts", "nope.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--prompts 'nope.jsonl': no such file*"])


def test_a_test_that_leaves_a_hook_on_the_model_fails(pytester):
    pytester.makepyfile(
        """
        def test_leaves_a_hook(subject):
            subject.model.model.layers[3].mlp.register_forward_hook(lambda *a: None)

        def test_sees_a_clean_model(subject):
            assert not any(m._forward_hooks for m in subject.model.modules())
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test left hooks on the model*layers.3.mlp*"])


def test_a_claim_run_writes_its_rows_and_table(pytester, tmp_path):
    pytester.makepyfile(
        """
        import pytest
        from harness.claims import Claim, Efficiency, Source
        from harness.records import Intervention

        CLAIM = Claim(id="kv-only-transfers", statement="KV alone transfers.", source=Source("test", "quote"),
                      measure=Efficiency(Intervention("kv-only", kv_layers="all")), threshold=-100.0,
                      direction="above")

        @pytest.mark.parametrize("protocol", ["original", "corrected"])
        def test_claim(verify, protocol):
            verify(CLAIM, protocol)
        """
    )
    report = tmp_path / "report"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--pairs", "2", "--seeds", "2", "--gen-tokens", "6",
        "--report-dir", str(report),
    )
    result.stdout.fnmatch_lines(["*claims*", "*kv-only-transfers*", f"*report: {report}*"])
    with (report / "claims.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["protocol"] for r in rows} == {"original", "corrected"}
    for column in ("claim", "protocol", "metric", "estimate", "ci_low", "ci_high", "n_pairs",
                   "n_seeds", "verdict", "expected", "level", "family_size", "settings"):
        assert column in rows[0]
    samples = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    # 2 protocols x 2 pairs x 3 arms (baseline, champion, kv-only) x 2 seeds
    assert len(samples) == 24
    assert json.loads((report / "summary.json").read_text())["complete"] is True
    assert not (pytester.path / "reports" / "latest").exists()  # a run outside reports/ is not "latest"
    assert (report / "summary.md").read_text().startswith("# Claims report")


def test_malformed_prompts_file_is_refused_before_any_test_runs(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    bad = pytester.path / "pairs.jsonl"
    bad.write_text('{"baseline": "a b c", "champion": "d e f"}\n{"baseline": "x"}\n')
    result = pytester.runpytest("--prompts", str(bad))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pairs.jsonl:2: missing key 'champion'*"])


def test_missing_model_folder_is_refused_before_any_test_runs(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--model", str(pytester.path / "no-model"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no such folder*"])


def test_every_public_name_resolves_and_the_package_import_stays_light():
    code = ("import sys, harness; light = 'torch' not in sys.modules; "
            "[getattr(harness, n) for n in harness.__all__]; print(light, len(harness.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "True"


def test_the_family_size_in_pytest_ini_is_the_number_of_claim_cells():
    """Every claim cell of claims/ counts in the family the intervals are corrected for;
    a claim added without updating harness_family_size would make every interval too narrow."""
    import configparser
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    ini = configparser.ConfigParser()
    ini.read(root / "pytest.ini")
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "claims"], capture_output=True, text=True, cwd=root)
    cells = [line for line in out.stdout.splitlines() if "::" in line]
    assert len(cells) == int(ini["pytest"]["harness_family_size"]), out.stdout[-500:]


HOST_CONFTEST = """
import pytest

def pytest_addoption(parser):
    parser.addoption("--model", default="host-model")
    parser.addoption("--device", default="host-device")
    parser.addoption("--seeds", type=int, default=3)

@pytest.fixture
def subject(pytestconfig):
    return {"model": pytestconfig.getoption("model"), "seeds": pytestconfig.getoption("seeds")}
"""

HOST_TEST = """
import sys

def test_host_options_and_fixture_are_its_own(subject, pytestconfig):
    assert subject == {"model": "m7", "seeds": 5}
    assert pytestconfig.getoption("device") == "host-device"

def test_no_harness_and_no_torch_at_start():
    loaded = sorted(m for m in ("torch", "transformers", "harness", "harness.plugin") if m in sys.modules)
    assert loaded == [], loaded
"""


def test_a_host_project_with_its_own_model_option_and_subject_fixture_runs_unaffected(tmp_path):
    """Installed is not active: a project of its own (its conftest defines --model, --device, --seeds
    and a ``subject`` fixture) starts, passes, and never imports the harness or torch."""
    (tmp_path / "conftest.py").write_text(HOST_CONFTEST)
    (tmp_path / "test_host.py").write_text(HOST_TEST)
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--model", "m7",
                          "--seeds", "5"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 passed" in out.stdout and "error" not in out.stdout.lower()


def test_a_folder_opts_in_with_the_plugin_option_or_a_conftest_line(tmp_path):
    """Outside this repository the plugin is one ``-p harness.plugin`` or one conftest line away."""
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")

    def help_text(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, "--help"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300).stdout

    bare, by_option = help_text(), help_text(*OPT_IN)
    assert "claims harness" not in bare and "--gen-tokens" not in bare
    assert "claims harness" in by_option and "--gen-tokens" in by_option
    opt_in(tmp_path)
    assert "--gen-tokens" in help_text()


def _claims(pytester):
    (pytester.path / "claims").mkdir(exist_ok=True)
    (pytester.path / "claims" / "test_claims.py").write_text(CLAIM_FILE)


def test_the_run_ends_with_the_claims_table_and_a_line_counting_verdicts(pytester, tmp_path, monkeypatch):
    import xml.etree.ElementTree as ET

    _claims(pytester)
    summary_page = tmp_path / "step_summary.md"
    summary_page.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_page))
    report = tmp_path / "r"
    result = pytester.runpytest_subprocess(*SMALL, "--report-dir", str(report), "--junitxml", str(tmp_path / "j.xml"))
    lines = result.stdout.str().rstrip().splitlines()
    assert lines[-1] == ("claims: 2 supported, 0 refuted, 0 inconclusive, 0 invalid; ledger: no entries for "
                         "these settings, 2 verdicts reported, not judged (--ledger-strict fails those not supported)")
    assert "passed" in lines[-2]  # pytest's own count, just before
    table = lines.index(next(x for x in lines if x.startswith("claim ") and " verdict" in x))
    # Each claim is a line of numbers and an indented line of sizes, mapping and reason.
    assert [x.split()[0] for x in lines[table + 2: table + 6: 2]] == ["kv-only-transfers"] * 2
    for detail in lines[table + 3: table + 7: 2]:
        assert detail.startswith("    2 pairs x 2 seeds | mapped: kv ") and "interval wholly above" in detail
    section = lines[table: lines.index(next(x for x in lines if x.startswith("intervals: ")))]
    assert max(len(x) for x in section) <= 120
    assert "interval wholly above -100" in "\n".join(lines[table:])

    # JUnit XML: the small properties a CI dashboard shows, not the record (that is in the folder).
    with (report / "claims.csv").open() as handle:
        rows = {r["protocol"]: r for r in csv.DictReader(handle)}
    cases = ET.parse(tmp_path / "j.xml").getroot().iter("testcase")
    seen = 0
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        protocol = case.get("name").split("[")[1].rstrip("]")
        assert set(props) == {"verdict", "efficiency", "ci_low", "ci_high", "expected", "model"}
        row = rows[protocol]
        assert props["verdict"] == row["verdict"] == "supported" and props["model"] == row["model"]
        assert float(props["efficiency"]) == pytest.approx(float(row["estimate"]))
        assert float(props["ci_low"]) == pytest.approx(float(row["ci_low"]))
        seen += 1
    assert seen == 2
    assert len((tmp_path / "j.xml").read_text()) < 5000  # no 48 KB blob of JSON per test

    page = summary_page.read_text()
    assert page.startswith("earlier step\n")  # appended, not replaced
    assert "## Claims report: toy" in page and "**Verdicts:** 2 supported" in page
    assert page.count("| kv-only-transfers") == 2 and f"Report folder: `{report}`" in page

    # A ledger that expected another verdict: the closing line names the cell.
    model, settings = rows["corrected"]["model"], rows["corrected"]["settings"]
    (pytester.path / "ledger.toml").write_text(
        f'[[verdict]]\nmodel = "{model}"\nsettings = "{settings}"\nclaim = "kv-only-transfers"\n'
        'protocol = "corrected"\nverdict = "refuted"\nreason = "r"\nreport = "x"\n')
    result = pytester.runpytest_subprocess(*SMALL, "--report-dir", str(tmp_path / "r2"), "--ledger", "ledger.toml")
    out = result.stdout.str().rstrip().splitlines()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert out[-1] == ("claims: 2 supported, 0 refuted, 0 inconclusive, 0 invalid; ledger: 1 unexpected: "
                       "kv-only-transfers [corrected] supported (expected refuted)")
    # pytest's failure lines come before the table: the table and the count end the run.
    assert out.index(next(x for x in out if x.startswith("FAILED"))) < out.index(
        next(x for x in out if x.startswith("claim ") and " verdict" in x))
    assert any("kv-only-transfers" in x and "expected refuted" in x for x in out[:-1])


NOT_SUPPORTED = CLAIM_FILE.replace('id="kv-only-transfers"', 'id="kv-only-above-100"').replace(
    "threshold=-100.0", "threshold=100.0").replace('["original", "corrected"]', '["corrected"]')


def test_settings_without_ledger_entries_report_verdicts_without_failing_unless_strict(pytester, tmp_path):
    """A scaled-down run (settings the ledger never measured) reports its verdicts and exits 0,
    saying so in its last line; --ledger-strict makes a verdict other than supported fail."""
    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "test_claims.py").write_text(NOT_SUPPORTED)
    result = pytester.runpytest_subprocess(*SMALL, "--seeds", "1", "--report-dir", str(tmp_path / "a"))
    lines = result.stdout.str().rstrip().splitlines()
    assert result.ret == pytest.ExitCode.OK, lines[-30:]
    assert "1 xfailed" in lines[-2] and "reported, not judged" in lines[-1] and "1 unexpected" not in lines[-1]
    assert any(x.startswith("kv-only-above-100 ") and x.rstrip().endswith(" no entry") for x in lines)  # ledger cell
    with (tmp_path / "a" / "claims.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert row["verdict"] != "supported" and row["outcome"] == "unjudged" and row["expected"] == ""

    result = pytester.runpytest_subprocess(*SMALL, "--seeds", "1", "--report-dir", str(tmp_path / "b"),
                                           "--ledger-strict")
    lines = result.stdout.str().rstrip().splitlines()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "1 unexpected (no entries for these settings: a claim without one must be supported)" in lines[-1]


def test_reports_latest_is_left_alone_by_a_run_outside_reports(pytester, tmp_path):
    _claims(pytester)
    reports = pytester.path / "reports"
    (reports / "run-1").mkdir(parents=True)
    (reports / "latest").symlink_to("run-1")
    result = pytester.runpytest_subprocess(*SMALL, "--report-dir", str(tmp_path / "elsewhere"))
    assert (tmp_path / "elsewhere" / "summary.md").exists(), result.stdout.str()
    assert os.readlink(reports / "latest") == "run-1"
    pytester.runpytest_subprocess(*SMALL, "--report-dir", str(reports / "run-2"))
    assert os.readlink(reports / "latest") == "run-2"  # a run under reports/ is the latest


def test_every_harness_option_is_in_the_readme_table_and_help_has_no_markup(pytester):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `--"))
    text = pytester.runpytest("--help").stdout.str()
    block = text.split("claims harness")[1].split("\n\n")[0]
    names = re.findall(r"^\s{2}(--[a-z][a-z-]+)", block, re.M)
    assert len(names) >= 14 and "--model" in names and "--shard" in names
    missing = [n for n in names if not re.search(rf"`{re.escape(n)}\b", table)]
    assert not missing, f"options missing from the README's options table: {missing}"
    assert "`" not in block and ":func:" not in block and ":class:" not in block


def test_test_module_names_are_unique_across_tests_and_claims():
    """pytest imports test modules by basename (rootdir-relative, no packages): two files of
    one name in tests/ and claims/ break the README's `pytest` at collection."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    names = [p.name for folder in ("tests", "claims") for p in (root / folder).glob("test_*.py")]
    # The findings' folders are in the default run too, and so are their finding modules.
    names += [p.name for p in (root / "findings").glob("*/test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    modules = ["finding.py"] + [p.name for p in (root / "findings").glob("*/*.py") if not p.name.startswith(
        ("test_", "conftest"))]
    assert len(modules) == len(set(modules)), sorted(modules)


def test_a_run_with_device_auto_records_the_device_map_in_its_provenance(tmp_path):
    """--device auto end to end (accelerate's device map; on a machine without a GPU it places
    everything on the CPU): the claim cell runs and the report says where the model lives."""
    pytest.importorskip("accelerate")
    from pathlib import Path

    from tiny import save_tiny, tiny_llama_gqa

    root = Path(__file__).resolve().parents[1]
    folder = save_tiny(tiny_llama_gqa, tmp_path / "model")
    report = tmp_path / "report"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "claims/test_transfer.py", "-k", "l27-v-full-kv and corrected",
         "-p", "no:cacheprovider", "-q", "--model", str(folder), "--device", "auto", "--pairs", "2",
         "--seeds", "2", "--gen-tokens", "4", "--report-dir", str(report)],
        capture_output=True, text=True, cwd=root, env=dict(os.environ, PYTHONPATH=str(root)), timeout=600)
    assert out.returncode in (0, 1), (out.stdout + out.stderr)[-3000:]  # verdicts, not a refusal or error
    provenance = json.loads((report / "summary.json").read_text())["provenance"]
    assert provenance["device"] == "auto"
    assert provenance["device_map"] and set(provenance["device_map"].values()) <= {"cpu", "disk"} | {
        f"cuda:{i}" for i in range(8)} | {str(i) for i in range(8)}


def test_a_subset_run_keeps_the_ini_family_and_records_its_seed_offset(pytester, tmp_path):
    """-k runs one cell of two: its level still comes from harness_family_size; --seed-offset
    draws another seed set, and the report and the ledger key say which."""
    from harness.prompts import default_pairs, spread

    _claims(pytester)
    pytester.makeini("[pytest]\nharness_family_size = 7\n")
    report = tmp_path / "r"
    result = pytester.runpytest_subprocess(*SMALL, "-k", "corrected", "--seed-offset", "3",
                                           "--report-dir", str(report))
    with (report / "claims.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1, result.stdout.str()[-2000:]
    assert int(rows[0]["family_size"]) == 7 and float(rows[0]["level"]) == pytest.approx(1 - 0.05 / 7)
    assert "family=7" in rows[0]["settings"] and "seed_offset=3" in rows[0]["settings"]
    summary = json.loads((report / "summary.json").read_text())
    assert summary["provenance"]["seed_offset"] == 3
    assert "seed set 3" in (report / "summary.md").read_text()
    pairs = spread(default_pairs(), 2)
    seeds = {json.loads(line)["seed"] for line in (report / "results.jsonl").read_text().splitlines()}
    assert seeds == {s for p in pairs for s in p.seeds(2, 3)}
    assert not seeds & {s for p in pairs for s in p.seeds(2)}


def test_a_negative_seed_offset_is_a_usage_error(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--seed-offset", "-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--seed-offset -1: expected a whole number >= 0*"])


@pytest.mark.skipif(not transformers.__version__.startswith("5"), reason="static decoding needs transformers 5")
def test_a_static_decoding_run_records_it_and_samples_what_the_dynamic_reference_does(pytester, tmp_path,
                                                                                        monkeypatch):
    """--decoding reaches the runner (its generate calls get a static cache; the report says which)
    and, on the toy in float32, a static cache samples the same texts as the default dynamic one."""
    from harness import decoding as module

    made = []
    real = module.static_cache
    monkeypatch.setattr(module, "static_cache", lambda *a, **k: made.append(a) or real(*a, **k))
    # in this process (the count above sees its calls): a module name no other test file has
    (pytester.path / "claims").mkdir(exist_ok=True)
    (pytester.path / "claims" / "test_decoding_run.py").write_text(CLAIM_FILE)
    texts = {}
    for decoding in ("dynamic", "static"):
        report = tmp_path / decoding
        before = len(made)
        pytester.runpytest(*SMALL, "--decoding", decoding, "--report-dir", str(report))
        assert (len(made) > before) is (decoding == "static")
        summary = json.loads((report / "summary.json").read_text())
        assert summary["provenance"]["decoding"] == decoding
        rows = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
        texts[decoding] = {(r["protocol"], r["pair"], r["arm"], r["seed"]): r["text"] for r in rows}
    assert texts["static"] == texts["dynamic"] and len(texts["static"]) > 0
