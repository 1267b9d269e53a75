"""The arms runner on the embedded toy model: seeding, batching, protocols."""

from __future__ import annotations

import pytest
import torch

from tiny import KV_ONLY, L27_V, NOTHING, RELAY
from harness.errors import HarnessLookupError
from harness.generate import CORRECTED, ORIGINAL, Runner, SeededSampler, get_protocol
from harness.model import load_subject
from harness.prompts import Pair, default_pairs


@pytest.fixture(scope="module")
def runner():
    return Runner(load_subject())


@pytest.fixture(scope="module")
def pair():
    return default_pairs()[0]


def short(protocol, tokens=12):
    return protocol.with_(gen_tokens=tokens)


@pytest.mark.parametrize("protocol", [ORIGINAL, CORRECTED], ids=lambda p: p.name)
@pytest.mark.parametrize("arm", ["baseline", "champion", KV_ONLY, L27_V], ids=str)
def test_row_i_of_a_batched_run_equals_a_run_with_seed_i_alone(runner, pair, protocol, arm):
    seeds = (3, 11, 42)
    batched = runner.run(pair, arm, short(protocol), seeds)
    for i, seed in enumerate(seeds):
        alone = runner.run(pair, arm, short(protocol), (seed,))
        assert batched.tokens[i] == alone.tokens[0]


def test_same_seed_gives_same_tokens_and_other_seeds_differ(runner, pair):
    a = runner.run(pair, "champion", short(CORRECTED, 16), (0, 1, 2, 3))
    b = runner.run(pair, "champion", short(CORRECTED, 16), (0, 1, 2, 3))
    assert a.tokens == b.tokens
    assert len(set(a.tokens)) > 1


def test_original_l27_patch_changes_nothing_and_equals_kv_only_token_for_token(runner, pair):
    seeds = (0, 1, 2, 3)
    kv = runner.run(pair, KV_ONLY, short(ORIGINAL), seeds)
    for arm in (L27_V, RELAY):
        patched = runner.run(pair, arm, short(ORIGINAL), seeds)
        assert patched.tokens == kv.tokens
        decode = [c for c in patched.patch_counts if c.phase == "decode"]
        assert decode and all(c.calls > 0 and c.changed == 0 for c in decode)


def test_corrected_l27_patch_changes_values_in_every_declared_phase(runner, pair):
    patched = runner.run(pair, L27_V, short(CORRECTED), (0, 1))
    counts = {c.phase: c for c in patched.patch_counts}
    assert counts["prefill"].changed > 0
    assert counts["decode"].changed > 0 and counts["decode"].calls >= 1


def test_corrected_empty_intervention_equals_the_baseline_arm(runner, pair):
    seeds = (5, 6, 7)
    assert runner.run(pair, NOTHING, short(CORRECTED), seeds).tokens == \
        runner.run(pair, "baseline", short(CORRECTED), seeds).tokens


def test_corrected_self_splice_of_all_layers_equals_the_baseline_arm(runner, pair):
    same = Pair("same", pair.baseline, pair.baseline)
    seeds = (1, 2)
    assert runner.run(same, KV_ONLY, short(CORRECTED), seeds).tokens == \
        runner.run(same, "baseline", short(CORRECTED), seeds).tokens


def test_greedy_protocol_is_deterministic_across_seeds(runner, pair):
    greedy = short(CORRECTED).with_(greedy=True)
    result = runner.run(pair, "baseline", greedy, (0, 1, 2))
    assert len(set(result.tokens)) == 1


def test_seeded_sampler_with_top_1_picks_the_argmax():
    scores = torch.randn(4, 50)
    out = SeededSampler([0, 1, 2, 3], temperature=0.8, top_k=1)(None, scores)
    assert torch.equal(out.argmax(-1), scores.argmax(-1))
    assert torch.isinf(out).sum() == 4 * 49


def test_seeded_sampler_follows_the_softmax_at_its_temperature():
    scores = torch.tensor([[0.0, 1.0, 2.0]])
    temperature, n = 0.8, 6000
    sampler = SeededSampler([7], temperature=temperature, top_k=None)
    draws = torch.tensor([int(sampler(None, scores).argmax()) for _ in range(n)])
    freq = torch.bincount(draws, minlength=3).float() / n
    expected = torch.softmax(scores[0] / temperature, -1)
    assert torch.allclose(freq, expected, atol=0.03)


def test_unknown_protocol_suggests_the_closest():
    with pytest.raises(HarnessLookupError, match="Did you mean 'corrected'"):
        get_protocol("corected")


def test_an_arm_gives_the_same_result_whatever_ran_before_it(pair):
    """Memoised clean passes (champion cache, baseline prefill) must never be computed
    under another arm's hooks: a fresh runner that runs the patched arm first agrees
    with one that ran the plain arms first."""
    seeds = (0, 1)
    for protocol in (short(ORIGINAL), short(CORRECTED)):
        warm = Runner(load_subject())
        warm.run(pair, KV_ONLY, protocol, seeds)
        warm.run(pair, "baseline", protocol, seeds)
        cold = Runner(load_subject())
        first, second = cold.run(pair, RELAY, protocol, seeds), warm.run(pair, RELAY, protocol, seeds)
        assert first.tokens == second.tokens
        assert first.patch_counts == second.patch_counts
        if protocol.name == "original":
            assert all(c.calls == 0 for c in first.patch_counts if c.phase == "prefill")


def test_intervention_with_a_layer_outside_the_finding_is_refused_at_once():
    from harness.errors import HarnessValueError
    from harness.generate import Intervention

    with pytest.raises(HarnessValueError, match="0..31"):
        Intervention("bad", kv_layers=(27, 32))
    with pytest.raises(HarnessLookupError, match="Did you mean 'v_proj'"):
        Intervention("bad", patches=("vproj@27",))
