"""Progress of long claims: the engine's hook, the reporter's pacing, lines in a log and under xdist."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from tiny import CLAIM_FILE, SMALL

from harness import progress
from harness.progress import Progress, Reporter, Work, claim, format_line, install

pytest_plugins = ["pytester"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines:
    def __init__(self, live: bool) -> None:
        self.live = live
        self.shown: list[str] = []

    def show(self, text: str) -> None:
        self.shown.append(text)


@pytest.fixture
def reporter():
    """A reporter on a fake clock and a log sink, installed as the process's progress."""
    clock, sink = Clock(), Lines(live=False)
    bar = Reporter(sink, delay=10.0, interval=30.0, clock=clock)
    previous = install(bar)
    yield bar, clock, sink
    install(previous)


def test_the_default_progress_does_nothing_and_counts_nothing():
    code = "from harness import progress; print(type(progress.current()).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Progress"  # what the engine sees outside a pytest run
    previous = install(Progress())
    try:
        bar = progress.current()
        bar.start("kv-only", rows_total=10, tokens_per_row=5)
        bar.advance(rows=10, tokens=50)
        bar.done()
        with claim("c [corrected]") as cost:
            pass
    finally:
        install(previous)
    assert cost.work is None


def test_a_claim_shows_nothing_before_the_delay_then_periodic_lines_in_a_log(reporter):
    bar, clock, sink = reporter
    with claim("kv-only-fails [corrected]") as cost:
        bar.start("kv-only", rows_total=144, tokens_per_row=24)
        clock.now += 5
        bar.advance(tokens=144 * 6)
        assert sink.shown == []  # a short claim stays quiet
        clock.now += 7  # 12 s in; a quarter of the arm's tokens took 12 s
        bar.advance(tokens=144 * 0)
        assert len(sink.shown) == 1
        assert sink.shown[0] == "kv-only-fails [corrected] · kv-only · rows 0/144 · 72 tok/s · ETA 0:36"
        clock.now += 20
        bar.advance(tokens=144 * 6)
        assert len(sink.shown) == 1  # a log gets a line every 30 s, not every step
        clock.now += 11
        bar.advance(rows=144, tokens=144 * 12)
        bar.done()
        assert len(sink.shown) == 2 and "rows 144/144" in sink.shown[1] and "ETA 0:00" in sink.shown[1]
    assert cost.work == Work("kv-only-fails [corrected]", 43.0, 144, 144 * 24, 1)
    assert cost.work.describe() == "43.0 s, 1 arm, 144 rows, 80 tok/s"


def test_a_terminal_is_refreshed_often_and_each_claim_starts_afresh(reporter):
    bar, clock, sink = reporter
    sink.live = True
    with claim("a [original]"):
        bar.start("kv", 10, 100)
        for _ in range(8):
            clock.now += 2
            bar.advance(tokens=10)
    assert len(sink.shown) == 4  # from 10 s on, every step (each 2 s apart, more than the 0.25 s refresh)
    with claim("b [original]") as cost:
        bar.start("kv", 10, 100)
        bar.advance(tokens=10)
    assert len(sink.shown) == 4 and cost.work.label == "b [original]" and cost.work.tokens == 10


def test_eta_without_token_counts_uses_rows_and_the_clock_format():
    clock = Clock()
    bar = Reporter(None, clock=clock)
    bar.begin_claim("x")
    bar.start("arm", rows_total=4, tokens_per_row=0)
    assert bar.eta() is None  # nothing done yet: no pace to extrapolate
    clock.now += 30
    bar.advance(rows=1)
    assert bar.eta() == pytest.approx(90.0)
    assert format_line("x", "arm", 1, 4, 0.0, 3725.0) == "x · arm · rows 1/4 · ETA 1:02:05"


def test_the_token_ticker_counts_every_decoding_step_of_every_row():
    torch = pytest.importorskip("torch")
    from transformers import StoppingCriteriaList
    from tiny import tiny_llama_gqa

    model, _ = tiny_llama_gqa()
    bar = Reporter(None)
    previous = install(bar)
    try:
        bar.begin_claim("ticker")
        ids = torch.ones(3, 4, dtype=torch.long)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5,
                             min_new_tokens=5, do_sample=False, pad_token_id=0,
                             stopping_criteria=StoppingCriteriaList([progress.token_ticker()]))
        work = bar.end_claim()
    finally:
        install(previous)
    assert out.shape == (3, 9)  # the ticker stopped nothing
    assert work.tokens == 3 * 5


# A prototype of the engine's calls (what harness/generate.py is asked to make), so the
# plugin's progress output is tested against the real runner and the real generate loop.





@pytest.fixture
def claim_folder(pytester):
    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "test_claims.py").write_text(CLAIM_FILE)
    return pytester


def test_a_log_gets_plain_progress_lines_and_a_line_per_finished_claim(claim_folder, tmp_path):
    result = claim_folder.runpytest_subprocess(
        *SMALL, "--report-dir", str(tmp_path / "r"), "-o", "harness_progress_after=0")
    out = result.stdout.str()
    progress_lines = re.findall(r"^kv-only-transfers \[(?:original|corrected)\] · \S+ · rows \d+/\d+.*$", out, re.M)
    assert progress_lines, out
    assert any("tok/s" in line and "ETA" in line for line in progress_lines)
    assert "\r" not in out  # not a terminal: plain lines, nothing rewritten in place
    result.stdout.fnmatch_lines(["kv-only-transfers [[]corrected[]]: supported after * s, * arms, * rows, * tok/s"])
    assert out.rstrip().splitlines()[-1].startswith("claims: 2 supported")


def test_short_claims_under_q_print_no_progress(claim_folder, tmp_path):
    result = claim_folder.runpytest_subprocess(*SMALL, "--report-dir", str(tmp_path / "r"), "-q")
    out = result.stdout.str()
    assert " · rows " not in out and "supported after" not in out
    assert out.rstrip().splitlines()[-1].startswith("claims: 2 supported")


def test_under_xdist_the_controller_prints_a_line_per_finished_claim(claim_folder, tmp_path):
    result = claim_folder.runpytest_subprocess(
        *SMALL, "--report-dir", str(tmp_path / "r"), "-o", "harness_progress_after=0", "-n", "2")
    result.stdout.fnmatch_lines(["*[[]gw?[]] kv-only-transfers [[]*[]]: supported after * s, * rows, * tok/s*"])


def test_a_bad_progress_delay_is_a_usage_error(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("-o", "harness_progress_after=soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*harness_progress_after = 'soon'*seconds*"])
