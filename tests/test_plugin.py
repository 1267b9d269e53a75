"""The pytest plugin: light import, options, the hook guard, claims end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

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
