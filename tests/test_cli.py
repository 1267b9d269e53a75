"""Every `python -m harness...` entry point: a HarnessError is one line on stderr and exit code 2;
help texts are plain text (no docstring markup)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from harness.cli import EXIT_REFUSED, error_line, one_line_errors
from harness.errors import HarnessLookupError, HarnessValueError

MARKUP = re.compile(r"``|:func:|:class:|:mod:|:meth:|`")


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300)


def _one_line_refusal(out: subprocess.CompletedProcess, words: str) -> None:
    assert out.returncode == EXIT_REFUSED, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_the_wrapper_flattens_a_multi_line_message_and_keeps_real_bugs_loud(capsys):
    @one_line_errors
    def refuses(argv=None):
        raise HarnessValueError("first line\n  second line")

    @one_line_errors
    def crashes(argv=None):
        raise RuntimeError("a bug")

    assert refuses([]) == 2
    assert capsys.readouterr().err == "error: first line second line\n"
    with pytest.raises(RuntimeError):
        crashes([])
    assert error_line(HarnessLookupError("x\ny")) == "error: x y"


@pytest.mark.parametrize("args, words", [
    (("render", "/nonexistent/run"), "not a run folder"),
    (("merge", "/nonexistent/a", "--out", "/tmp/never-written-merge"), "no such run folder"),
    (("matrix", "/nonexistent/a", "--out", "/tmp/never-written-matrix"), "no such run folder"),
])
def test_report_commands_refuse_in_one_line(args, words):
    _one_line_refusal(_run("harness.report", *args), words)


def test_ledger_update_on_a_missing_folder_is_one_line():
    _one_line_refusal(_run("harness.ledger", "update", "/nonexistent/run"), "no such run folder")


def test_bench_on_a_missing_model_folder_is_one_line():
    _one_line_refusal(_run("harness.bench", "--model", "/nonexistent/model-folder"), "no such folder")


def test_toy_train_turns_a_harness_error_into_one_line(monkeypatch, capsys, tmp_path):
    pytest.importorskip("torch")
    from harness.toy import train

    def refuse(*args, **kwargs):
        raise HarnessValueError("cannot train here:\nno room")

    monkeypatch.setattr(train, "train", refuse)
    assert train.main(["--tiny", "--steps", "1", "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err == "error: cannot train here: no room\n"


def _help(main: Callable[..., int], argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_help_texts_carry_no_markup(capsys):
    from harness.ledger import main as ledger_main
    from harness.report.__main__ import main as report_main

    texts = {" ".join(a): _help(report_main, a, capsys) for a in
             (["--help"], ["merge", "--help"], ["render", "--help"], ["matrix", "--help"])}
    texts["ledger"] = _help(ledger_main, ["--help"], capsys)
    texts["ledger update"] = _help(ledger_main, ["update", "--help"], capsys)
    pytest.importorskip("torch")
    from harness.bench import main as bench_main
    from harness.toy.train import main as train_main

    texts["bench"] = _help(bench_main, ["--help"], capsys)
    texts["toy.train"] = _help(train_main, ["--help"], capsys)
    for name, text in texts.items():
        assert text.startswith("usage: python -m harness"), name
        assert not MARKUP.search(text), f"{name}: {MARKUP.search(text)[0]!r} in\n{text}"


def _written_run(folder):
    from test_render import all_cells

    from harness.report import RunWriter

    writer = RunWriter(folder, {"model": "toy"})
    for row, samples in all_cells(sweep=False):
        writer.add(row, samples)
    writer.close(complete=True, render=False)
    return folder


def test_render_of_a_cut_results_file_says_incomplete_with_the_missing_count(tmp_path):
    run = _written_run(tmp_path / "run")
    lines = (run / "results.jsonl").read_text().splitlines(keepends=True)
    n, kept = len(lines), len(lines) // 2
    (run / "results.jsonl").write_text("".join(lines[:kept]) + lines[kept][:10])  # cut mid-line, as a full disk
    out = _run("harness.report", "render", str(run))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.strip().splitlines() == [
        f"{run / 'summary.md'} (INCOMPLETE: results.jsonl has {kept} of {n} samples, {n - kept} missing)"]
    summary = (run / "summary.md").read_text()
    assert "INCOMPLETE RUN" in summary and "Run complete" not in summary
    assert f"has {kept} of the {n} samples the run wrote: {n - kept} missing" in summary


def test_render_of_a_whole_run_says_nothing_more_than_its_path(tmp_path):
    run = _written_run(tmp_path / "run")
    out = _run("harness.report", "render", str(run))
    assert out.returncode == 0 and out.stdout.strip() == str(run / "summary.md")
    assert "Run complete" in (run / "summary.md").read_text()


@pytest.mark.parametrize("summary, words", [
    ("[1, 2]", "summary.json: a JSON list; expected an object with 'complete', 'provenance'"),
    ('{"complete": true, "provenance": [], "claims": []}', "'provenance' is a list"),
    ('{"complete": true, "provenance": {}, "claims": {"a": 1}}', "'claims' is not a list of objects"),
    ('{"complete": true, "provenance": {}, "claims": [{"claim": 1}]}', "a claim row is not of this harness's"),
    ('{"complete": true, "provenance": {}, "claims": [], "samples": "many"}', "'samples' = 'many'; expected a count"),
])
def test_render_of_a_summary_of_the_wrong_shape_is_one_line(tmp_path, summary, words):
    (tmp_path / "summary.json").write_text(summary)
    _one_line_refusal(_run("harness.report", "render", str(tmp_path)), words)
