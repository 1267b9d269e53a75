"""The arms runner on the embedded toy model: seeding, batching, protocols."""

from __future__ import annotations

import pytest
import torch

from tiny import KV_ONLY, L27_V, NOTHING, RELAY
from harness.errors import HarnessLookupError, HarnessValueError
from harness.generate import CORRECTED, ORIGINAL, Intervention, Runner, get_protocol
from harness.model import load_subject
from harness.prompts import Pair, default_pairs, spread


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


@pytest.mark.parametrize("protocol", [CORRECTED, ORIGINAL], ids=lambda p: p.name)
def test_a_self_splice_changes_no_kv_value_and_a_real_one_does(runner, pair, protocol):
    same = Pair("same", pair.baseline, pair.baseline)
    assert runner.run(same, KV_ONLY, short(protocol), (1,)).kv_changed == 0
    assert runner.run(pair, KV_ONLY, short(protocol), (1,)).kv_changed > 0
    assert runner.run(pair, "baseline", short(protocol), (1,)).kv_changed == -1  # no splice


def test_greedy_protocol_is_deterministic_across_seeds(runner, pair):
    greedy = short(CORRECTED).with_(greedy=True)
    result = runner.run(pair, "baseline", greedy, (0, 1, 2))
    assert len(set(result.tokens)) == 1


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


@pytest.mark.parametrize("protocol", [ORIGINAL, CORRECTED], ids=lambda p: p.name)
@pytest.mark.parametrize("arm", ["baseline", "champion", KV_ONLY, L27_V, RELAY], ids=str)
def test_pairs_batched_give_the_same_rows_and_counts_as_one_pair_at_a_time(protocol, arm):
    """Left padding, stacked caches and per-pair patch groups change nothing for any pair."""
    pairs = spread(default_pairs(), 8)  # equal, longer and shorter champions: padding varies
    seeds = {p.id: p.seeds(3) for p in pairs}
    batched = Runner(load_subject()).run_many(pairs, arm, short(protocol), seeds)
    alone = Runner(load_subject())
    for pair, together in zip(pairs, batched):
        single = alone.run(pair, arm, short(protocol), seeds[pair.id])
        assert together.tokens == single.tokens, pair.id
        assert together.patch_counts == single.patch_counts, pair.id


def test_the_batch_size_does_not_change_the_results():
    pairs = spread(default_pairs(), 6)
    seeds = {p.id: p.seeds(4) for p in pairs}
    big = Runner(load_subject()).run_many(pairs, L27_V, short(CORRECTED), seeds)
    runner = Runner(load_subject(), max_batch=5)  # one pair (4 rows) per call
    small = runner.run_many(pairs, L27_V, short(CORRECTED), seeds)
    assert [r.tokens for r in big] == [r.tokens for r in small]
    assert runner.calls == len(pairs)


@pytest.mark.parametrize("protocol", [CORRECTED, ORIGINAL], ids=lambda p: p.name)
def test_kv_arms_run_together_give_what_each_arm_gives_alone(protocol):
    """Three layer sets on 4 pairs in shared generate calls (rows of all arms in one batch),
    against each arm run alone on a fresh runner: the same tokens, splice counts and names."""
    pairs = spread(default_pairs(), 4)
    seeds = {p.id: p.seeds(3) for p in pairs}
    arms = [Intervention(f"kv@{a}..{b}", kv_layers=tuple(range(a, b + 1))) for a, b in ((0, 7), (8, 31), (16, 23))]
    together = Runner(load_subject())
    together.run_kv_arms(pairs, arms, short(protocol), seeds)
    assert together.calls == 1  # 36 rows: one call
    for arm in arms:
        alone = Runner(load_subject()).run_many(pairs, arm, short(protocol), seeds)
        found = together.run_many(pairs, arm, short(protocol), seeds)  # memoised: no new call
        assert [r.tokens for r in found] == [r.tokens for r in alone]
        assert [(r.arm, r.kv_changed, r.kv_layers, r.seeds) for r in found] == \
            [(r.arm, r.kv_changed, r.kv_layers, r.seeds) for r in alone]
    assert together.calls == 1
    with pytest.raises(HarnessValueError, match="is not a KV-only arm"):
        together.run_kv_arms(pairs, [L27_V], short(protocol), seeds)


def test_corrected_no_intervention_is_the_baseline_run_once(runner, pair):
    before = runner.calls
    base = runner.run(pair, "baseline", short(CORRECTED), (9, 10))
    nothing = runner.run(pair, NOTHING, short(CORRECTED), (9, 10))
    assert nothing.tokens == base.tokens and nothing.same_as == "baseline" and nothing.arm == NOTHING.name
    assert runner.calls - before <= 1
    assert runner.run(pair, NOTHING, short(ORIGINAL), (9, 10)).same_as == ""  # the original's loop differs


def test_original_scoring_in_one_pass_equals_step_by_step_decoding_under_its_hooks(runner, pair):
    """The original hook never writes into one-token calls, so one teacher-forced pass
    without it gives what decoding token by token under it gives."""
    from harness.compat import cache_kwarg, output_cache
    from harness.patches import PatchSpec, install, record

    protocol = short(ORIGINAL, 8)
    continuation = runner.champion_continuation(pair, protocol)
    spec = PatchSpec("v_proj@27", phases=("decode",), mode="original")
    source = record(runner.model, runner.layout, runner.ids(pair.champion), [spec.site])[spec.site]
    ids_b = runner.ids(pair.baseline)
    from harness.kv import prefill, splice

    snap = splice(prefill(runner.model, ids_b)[1], prefill(runner.model, runner.ids(pair.champion))[1],
                  "all", "right")
    cache, step, total = snap.to_cache(), ids_b[:, -1:], 0.0
    with install(runner.model, runner.layout, [spec], {spec: source}, prompt_len=ids_b.shape[1]), torch.no_grad():
        for token in continuation:
            out = runner.model(input_ids=step, use_cache=True, **{cache_kwarg(runner.model): cache})
            total += float(torch.log_softmax(out.logits[0, -1].float(), -1)[token])
            cache, step = output_cache(out), torch.tensor([[token]])
    one_pass = runner.continuation_logprob(pair, L27_V, protocol, continuation)
    assert abs(one_pass - total / len(continuation)) < 1e-4


@pytest.mark.parametrize("protocol", [ORIGINAL, CORRECTED], ids=lambda p: p.name)
@pytest.mark.parametrize("arm", ["baseline", "champion", KV_ONLY, L27_V], ids=str)
def test_scores_batched_over_pairs_equal_each_pair_scored_alone(protocol, arm):
    pairs = spread(default_pairs(), 6)
    batched = Runner(load_subject()).scores(pairs, arm, short(protocol, 8))
    alone = Runner(load_subject())
    for pair, value in zip(pairs, batched):
        single = alone.continuation_logprob(pair, arm, short(protocol, 8),
                                            alone.champion_continuation(pair, short(protocol, 8)))
        assert abs(value - single) < 1e-4, pair.id


def _forward_calls(pairs, arm, protocol):
    """Forward calls of the whole model for one arm on ``pairs`` (a fresh runner: nothing memoised)."""
    runner = Runner(load_subject())
    calls = []
    handle = runner.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        runner.run_many(pairs, arm, protocol, {p.id: p.seeds(2) for p in pairs})
    finally:
        handle.remove()
    return len(calls)


@pytest.mark.parametrize("protocol", [ORIGINAL, CORRECTED, CORRECTED.with_(decode_source="aligned")],
                         ids=["original", "corrected", "corrected-aligned"])
@pytest.mark.parametrize("arm", ["baseline", KV_ONLY, L27_V, RELAY], ids=str)
def test_forward_passes_per_arm_do_not_grow_with_the_number_of_pairs(protocol, arm):
    """Every prefill of an arm (clean caches, sources, patched prefill, the aligned source's
    champion run) is one padded pass for all pairs: 2 pairs and 6 pairs take as many model
    calls, which is the decoding steps plus a few passes."""
    protocol = short(protocol, 4)
    pairs = spread(default_pairs(), 6)
    few, many = _forward_calls(pairs[:2], arm, protocol), _forward_calls(pairs, arm, protocol)
    assert few == many
    # at most: champion caches, baseline caches, one source pass per site, the patched prefill,
    # and for an aligned source the champion's own generation and its recording
    decoding = protocol.gen_tokens * (2 if protocol.decode_source == "aligned" else 1)
    assert many <= decoding + 6


@pytest.mark.parametrize("protocol", [ORIGINAL, CORRECTED], ids=lambda p: p.name)
def test_reference_arms_sample_with_the_reference_top_k_and_interventions_with_theirs(runner, pair, protocol):
    """top-k 1 is the argmax: every seed gives the same tokens. Set it on one side only and the
    other side must still vary with the seed."""
    seeds = tuple(range(6))
    ref_greedy = short(protocol).with_(reference_top_k=1, top_k=None)
    arm_greedy = short(protocol).with_(reference_top_k=None, top_k=1)
    assert len(set(runner.run(pair, "baseline", ref_greedy, seeds).tokens)) == 1
    assert len(set(runner.run(pair, KV_ONLY, ref_greedy, seeds).tokens)) > 1
    assert len(set(runner.run(pair, KV_ONLY, arm_greedy, seeds).tokens)) == 1
    assert len(set(runner.run(pair, "baseline", arm_greedy, seeds).tokens)) > 1
