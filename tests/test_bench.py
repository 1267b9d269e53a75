"""The bench's bandwidth bound: bytes a decoding step reads, the device's bandwidth, the report line."""

from __future__ import annotations

import re

import pytest

from harness.bench import bytes_per_step, device_bandwidth, main
from harness.errors import HarnessValueError
from tiny import VOCAB, tiny_llama_gqa


def test_bytes_per_step_are_every_weight_once_and_each_rows_kv_cache():
    model, _ = tiny_llama_gqa()
    h, inner, layers, kv_dim = 32, 64, 4, 2 * 8  # hidden, MLP, layers, KV heads x head dim
    per_layer = h * h + 2 * h * kv_dim + h * h + 3 * h * inner + 2 * h  # q, k and v, o, MLP, two norms
    weights_want = (VOCAB * h + layers * per_layer + h + VOCAB * h) * 4  # embed, layers, norm, head; float32
    weights, kv = bytes_per_step(model, rows=5, cached=10.5)
    assert weights == weights_want
    assert kv == pytest.approx(2 * layers * kv_dim * 4 * 5 * 10.5)  # keys and values, float32


def test_the_bandwidth_is_the_given_one_or_a_labelled_guess_on_the_cpu():
    assert device_bandwidth("cpu", 12.5) == (12.5, "given")
    gbs, where = device_bandwidth("cpu", None)
    assert gbs > 0 and "guess" in where and "--bandwidth-gbs" in where
    with pytest.raises(HarnessValueError, match="--bandwidth-gbs -1"):
        device_bandwidth("cpu", -1)


def test_the_bench_sets_the_measured_step_against_the_bound_it_states(capsys):
    assert main(["--threads", "1", "--pairs", "2", "--seeds", "2", "--tokens", "4", "--skip-single",
                 "--bandwidth-gbs", "25"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"harness / bare generate: \d+\.\d\dx", out)
    line = next(x for x in out.splitlines() if x.startswith("decoding step"))
    step, bound, weights, kv, gbs, share = (float(v) for v in re.search(
        r"([\d.]+) ms measured.*bound ([\d.e-]+) ms = \(([\d.e-]+) GB weights \+ ([\d.e-]+) GB KV cache\) / ([\d.]+) GB/s"
        r".*at ([\d.]+)% of the bound", line).groups())
    assert gbs == 25 and step > 0
    assert bound == pytest.approx((weights + kv) / gbs * 1e3, rel=2e-3)  # ms, as printed (4 digits)
    assert share == pytest.approx(100 * bound / step, rel=0.05, abs=0.2)


def test_the_compile_report_says_whether_the_step_was_captured_and_counts_graph_breaks():
    from harness.bench import compile_report

    assert compile_report("cpu", 0, 0) == "compiled step: 0 graph break(s) while compiling; no CUDA graphs on cpu"
    assert compile_report("cuda", 2, 0) == "compiled step: 2 graph break(s) while compiling; captured as CUDA graphs"
    skipped = compile_report("cuda:1", 0, 3)
    assert "CUDA graphs skipped 3 time(s)" in skipped and "not captured" in skipped
