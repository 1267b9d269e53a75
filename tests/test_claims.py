"""Claim records and their evaluation on the toy; the README's example claim runs."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from harness.arms import KV_ONLY, L27_V
from harness.claims import ArmCache, Claim, Source, evaluate
from harness.errors import HarnessLookupError, HarnessValueError
from harness.generate import CORRECTED, ORIGINAL, Runner
from harness.model import load_subject
from harness.prompts import default_pairs

pytest_plugins = ["pytester"]

SOURCE = Source("test", "quote")
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def cache():
    return ArmCache(Runner(load_subject()))


@pytest.fixture(scope="module")
def pairs():
    return default_pairs()[:3]


def small(protocol):
    return protocol.with_(gen_tokens=10)


def test_original_l27_claim_is_invalid_because_its_patch_never_wrote(cache, pairs):
    claim = Claim("l27", "s", SOURCE, arm=L27_V, threshold=0.8, direction="above", must_differ_from=KV_ONLY)
    result = evaluate(claim, cache, pairs, small(ORIGINAL), seeds=(0, 1), n_boot=200)
    assert result.verdict == "invalid"
    assert "changed no values in phase(s): decode" in result.reason
    assert "identical tokens for every seed" in result.reason
    assert result.calls_decode > 0 and result.changed_decode == 0
    assert result.kv_layers == "all(32)" and "v_proj@27->L27" in result.sites


def test_corrected_l27_claim_has_a_measured_interval(cache, pairs):
    claim = Claim("l27", "s", SOURCE, arm=L27_V, threshold=0.8, direction="above", must_differ_from=KV_ONLY)
    result = evaluate(claim, cache, pairs, small(CORRECTED), seeds=(0, 1), n_boot=200)
    assert result.changed_prefill > 0 and result.changed_decode > 0
    assert all(g.ok for g in result.guards if g.name.startswith("patch_changed"))
    if result.verdict != "invalid":
        assert result.ci_low <= result.efficiency <= result.ci_high


def test_rv_claim_measures_champion_minus_baseline(cache, pairs):
    claim = Claim("rv", "s", SOURCE, kind="rv", threshold=0.0, direction="below")
    result = evaluate(claim, cache, pairs, CORRECTED, seeds=(0,), n_boot=200)
    assert result.metric == "r_v" and result.n_pairs == len(pairs)
    assert math.isfinite(result.efficiency)


def test_claim_with_unknown_metric_suggests_the_closest():
    with pytest.raises(HarnessLookupError, match="Did you mean 'marker_rate'"):
        Claim("x", "s", SOURCE, arm=KV_ONLY, metric="marker_rat")


def test_contrast_claim_needs_a_versus_arm():
    with pytest.raises(HarnessValueError, match="needs 'versus'"):
        Claim("x", "s", SOURCE, kind="contrast", arm=KV_ONLY)


def test_efficiency_claim_needs_an_arm():
    with pytest.raises(HarnessValueError, match="needs an arm"):
        Claim("x", "s", SOURCE)


def test_the_readme_example_claim_runs(pytester, tmp_path):
    block = re.search(r"## Adding a claim.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    pytester.makepyfile(test_my_claim=block)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--pairs", "2", "--seeds", "2", "--gen-tokens", "6",
        "--report-dir", str(tmp_path / "r"),
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) == 0
    assert sum(outcomes.get(k, 0) for k in ("passed", "failed")) == 2
    assert (tmp_path / "r" / "claims.csv").read_text().count("l20-mlp-full-kv") == 2


def test_champion_logprob_is_highest_under_the_champion_and_deterministic(cache, pairs):
    protocol = CORRECTED.with_(gen_tokens=8)
    pair = pairs[0]
    champ = cache.runner.continuation_logprob(pair, "champion", protocol,
                                              cache.runner.champion_continuation(pair, protocol))
    base = cache.logprob(pair, "baseline", protocol)
    assert champ == cache.logprob(pair, "champion", protocol)
    assert champ > base
    assert champ <= 0.0


def test_champion_logprob_equals_a_full_forward_pass_under_the_champion(cache, pairs):
    import torch

    runner, pair = cache.runner, pairs[1]
    protocol = CORRECTED.with_(gen_tokens=6)
    continuation = runner.champion_continuation(pair, protocol)
    ids = runner.ids(pair.champion)
    full = torch.cat([ids, torch.tensor([continuation])], dim=1)
    with torch.no_grad():
        logp = torch.log_softmax(runner.model(input_ids=full).logits[0].float(), -1)
    n = ids.shape[1]
    expected = sum(float(logp[n - 1 + i, t]) for i, t in enumerate(continuation)) / len(continuation)
    assert abs(runner.continuation_logprob(pair, "champion", protocol, continuation) - expected) < 1e-4


def test_logprob_claim_evaluates(cache, pairs):
    claim = Claim("lp", "s", SOURCE, arm=KV_ONLY, metric="champion_logprob", threshold=0.5, direction="above")
    result = evaluate(claim, cache, pairs, CORRECTED.with_(gen_tokens=6), seeds=(0,), n_boot=200)
    assert result.metric == "champion_logprob"
    assert result.verdict in ("supported", "refuted", "inconclusive", "invalid")
    assert result.n_pairs >= 0


def test_contrast_is_invalid_when_the_comparison_arms_patch_never_wrote(cache, pairs):
    from harness.arms import WRONG_LAYER_V

    claim = Claim("c", "s", SOURCE, kind="contrast", arm=KV_ONLY, versus=WRONG_LAYER_V,
                  threshold=0.0, direction="above")
    result = evaluate(claim, cache, pairs, small(ORIGINAL), seeds=(0, 1), n_boot=200)
    assert result.verdict == "invalid"
    assert "v_proj@5(L5)" in result.reason
