"""The runner's identities, over the whole bundled bank, eight seeds, several architectures.

An identity checked on one pair and two seeds proves little: a splice that is off by one
position still reproduces the baseline for some seeds. Each test here compares token for
token, for every pair of the bank (or, where the space is large, a Hypothesis sample of
it) and seeds 0..7, on the embedded toy (32-layer Mistral) and on tiny random models:
Llama with Llama 3 RoPE scaling, Qwen2 with q/k/v biases, a Mistral whose tokenizer has
no BOS, a Mistral with a sliding window of 12 that every sequence exceeds (the cache is kept
whole; the model's sliding mask hides what lies beyond the window), and the fused-QKV
families: GPT-2 (absolute positions: the corrected splice is ``left``), GPT-NeoX (rotary on
a quarter of each head) and Phi-3 (grouped-query, rotary on three quarters of each head).

The independent reference is a plain loop of full forward passes (no cache, no
``generate``) that samples with the same seeded sampler.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import (
    KV_ONLY,
    LLAMA3_ROPE,
    tiny_gpt2,
    tiny_llama_gqa,
    tiny_mistral,
    tiny_neox,
    tiny_phi3,
    tiny_qwen2,
    tiny_subject,
)

from harness.generate import CORRECTED, ORIGINAL, Intervention, Runner, SeededSampler
from harness.model import load_subject
from harness.patches import PATCHABLE, PatchSpec, install, record
from harness.prompts import Pair, default_pairs, spread

SEEDS = tuple(range(8))
TOKENS = 12
# 26 pairs spread over the bank's groups (every length relation, every topic): the
# identities hold pair by pair, and the whole bank would only multiply the time.
BANK = spread(default_pairs(), 26)
EQUAL = [p for p in BANK if p.group.startswith("equal/")]
SUBJECTS = {
    "toy": lambda: load_subject(),
    "llama3-rope": lambda: tiny_subject(tiny_llama_gqa, rope_scaling=LLAMA3_ROPE),
    "qwen2-bias": lambda: tiny_subject(tiny_qwen2),
    "mistral-no-bos": lambda: tiny_subject(tiny_mistral, bos=False),
    "mistral-sliding-12": lambda: tiny_subject(tiny_mistral, sliding_window=12),
    "gpt2-absolute": lambda: tiny_subject(tiny_gpt2),
    "neox-partial-rope": lambda: tiny_subject(tiny_neox),
    "phi3-gqa-partial-rope": lambda: tiny_subject(tiny_phi3),
}


@functools.lru_cache(maxsize=None)
def runner(name: str) -> Runner:
    return Runner(SUBJECTS[name]())


def corrected(**changes) -> object:
    return CORRECTED.with_(gen_tokens=TOKENS, **changes)


def self_pair(pair: Pair) -> Pair:
    return Pair(f"{pair.id}-self", pair.baseline, pair.baseline)


def recompute(r: Runner, ids: torch.Tensor, protocol, seeds=SEEDS) -> list[list[int]]:
    """Sample with full forward passes over the growing sequence: no cache, no generate."""
    seq = ids.expand(len(seeds), -1)
    sampler = SeededSampler(seeds, protocol.temperature, protocol.top_k, protocol.gen_tokens)
    with torch.no_grad():
        for _ in range(protocol.gen_tokens):
            scores = sampler(seq, r.model(input_ids=seq, use_cache=False).logits[:, -1])
            seq = torch.cat([seq, scores.argmax(-1, keepdim=True)], dim=1)
    eos = r.tokenizer.eos_token_id
    rows = seq[:, ids.shape[1]:].tolist()
    return [row[: row.index(eos) + 1] if eos in row else row for row in rows]


@pytest.mark.parametrize("name", sorted(SUBJECTS))
def test_corrected_self_splice_of_all_layers_equals_the_baseline_arm_on_every_pair(name):
    r = runner(name)
    for align in ("right-rerotated", "left") if name == "toy" else ("right-rerotated",):
        protocol = corrected(align=align)
        for pair in BANK:
            same = self_pair(pair)
            spliced, plain = r.run(same, KV_ONLY, protocol, SEEDS), r.run(same, "baseline", protocol, SEEDS)
            assert spliced.tokens == plain.tokens, f"{name}, {align}, {pair.id}"


@pytest.mark.parametrize("name", sorted(SUBJECTS))
def test_corrected_full_kv_equals_generation_from_champion_prefix_and_baseline_last_token(name):
    """For equal lengths, the corrected splice claims to be exactly the sequence
    champion[:-1] + baseline[-1:]: a plain generation from it must give the same tokens."""
    r = runner(name)
    protocol = corrected()
    for pair in EQUAL:
        ids_b, ids_c = r.ids(pair.baseline), r.ids(pair.champion)
        assert ids_b.shape == ids_c.shape, pair.id
        claimed = torch.cat([ids_c[:, :-1], ids_b[:, -1:]], dim=1)
        assert list(r.run(pair, KV_ONLY, protocol, SEEDS).tokens) == \
            [tuple(row) for row in recompute(r, claimed, protocol)], f"{name}, {pair.id}"


@pytest.mark.parametrize("name", sorted(SUBJECTS))
@settings(max_examples=10)
@given(data=st.data())
def test_patch_with_own_activations_in_prefill_and_decode_leaves_tokens_unchanged(name, data):
    """Source = the prompt's own activations, and during decoding its own activations
    at the same step (``aligned``): the patched arm must be the baseline arm."""
    pair = data.draw(st.sampled_from(BANK), label="pair")
    kind = data.draw(st.sampled_from(PATCHABLE), label="kind")
    layer = data.draw(st.sampled_from([0, 5, 18, 27, 31]), label="layer")
    r, protocol = runner(name), corrected(decode_source="aligned")
    same = self_pair(pair)
    patched = r.run(same, Intervention("own", patches=(f"{kind}@{layer}",)), protocol, SEEDS)
    assert patched.tokens == r.run(same, "baseline", protocol, SEEDS).tokens
    calls = {c.phase: c.calls for c in patched.patch_counts}
    assert calls["prefill"] >= 1 and calls["decode"] >= 1  # the patch saw both phases


@pytest.mark.parametrize("name", sorted(SUBJECTS))
@settings(max_examples=8)
@given(data=st.data())
def test_cached_decoding_under_a_patch_equals_full_recomputation(name, data):
    pair = data.draw(st.sampled_from(BANK), label="pair")
    kind = data.draw(st.sampled_from(PATCHABLE), label="kind")
    decode_source = data.draw(st.sampled_from(["last", "mean"]), label="decode_source")
    r, protocol = runner(name), corrected(decode_source=decode_source)
    arm = Intervention("patch", patches=(f"{kind}@27",))
    cached = r.run(pair, arm, protocol, SEEDS)
    spec = PatchSpec(f"{kind}@27", phases=protocol.patch_phases, window=protocol.window,
                     decode_source=decode_source)
    source = record(r.model, r.layout, r.ids(pair.champion), [spec.site])[spec.site]
    ids = r.ids(pair.baseline)
    with install(r.model, r.layout, [spec], {spec: source}, prompt_len=ids.shape[1]):
        reference = recompute(r, ids, protocol)
    assert list(cached.tokens) == [tuple(row) for row in reference]
    assert any(c.changed for c in cached.patch_counts if c.phase == "decode")


def test_a_sliding_window_binds_and_one_that_every_sequence_fits_changes_nothing():
    """The identities above hold with a window of 12 (every prompt is longer): that window must
    change tokens, or they would prove nothing about it; a window of 96 (longer than the
    longest prompt plus generation of the bank) changes none."""
    binding, plain = runner("mistral-sliding-12"), Runner(tiny_subject(tiny_mistral))
    wide = Runner(tiny_subject(tiny_mistral, sliding_window=96))
    differ = 0
    for pair in BANK[::5]:
        for arm in ("baseline", KV_ONLY):
            reference = plain.run(pair, arm, corrected(), SEEDS).tokens
            assert wide.run(pair, arm, corrected(), SEEDS).tokens == reference
            differ += binding.run(pair, arm, corrected(), SEEDS).tokens != reference
    assert differ >= 2


@pytest.mark.parametrize("name", ["gpt2-absolute", "neox-partial-rope", "toy"])
def test_the_runner_splices_absolute_positions_left_and_rotary_ones_rerotated(name):
    r = runner(name)
    absolute = name == "gpt2-absolute"
    assert r.layout.positions == ("absolute" if absolute else "rotary")
    assert r.alignment(CORRECTED) == ("left" if absolute else "right-rerotated")
    assert r.alignment(ORIGINAL) == "right"  # the original's splice, as its scripts did it


def test_gpt2_corrected_full_kv_from_a_champion_at_least_as_long_is_its_prefix_cut_to_the_baseline():
    """Absolute positions, ``left``: a champion at least as long as the baseline fills every slot
    of the baseline's prefix with its own first len_b - 1 tokens at their own positions, so the
    arm is exactly a plain generation from ``champion[:len_b - 1] + baseline[-1:]``."""
    r = runner("gpt2-absolute")
    protocol = corrected()
    checked = 0
    for pair in BANK:
        ids_b, ids_c = r.ids(pair.baseline), r.ids(pair.champion)
        if ids_c.shape[1] < ids_b.shape[1]:
            continue
        claimed = torch.cat([ids_c[:, : ids_b.shape[1] - 1], ids_b[:, -1:]], dim=1)
        assert list(r.run(pair, KV_ONLY, protocol, SEEDS).tokens) == \
            [tuple(row) for row in recompute(r, claimed, protocol)], pair.id
        checked += ids_c.shape[1] > ids_b.shape[1]
    assert checked >= 5  # longer champions, not only the equal-length pairs


@pytest.mark.parametrize("name", ["gpt2-absolute", "neox-partial-rope", "phi3-gqa-partial-rope"])
@pytest.mark.parametrize("protocol", [ORIGINAL, CORRECTED], ids=lambda p: p.name)
def test_fused_pairs_batched_equal_one_pair_at_a_time(name, protocol):
    """Left padding (positions counted from the mask: learned or rotary), stacked spliced caches
    and per-pair groups of a fused v_proj patch change nothing for any pair."""
    from tiny import RELAY

    pairs = BANK[::3]  # equal, longer and shorter champions: padding varies
    seeds = {p.id: SEEDS[:3] for p in pairs}
    short = protocol.with_(gen_tokens=8)
    batched = Runner(SUBJECTS[name]()).run_many(pairs, RELAY, short, seeds)
    alone = runner(name)
    for pair, together in zip(pairs, batched):
        single = alone.run(pair, RELAY, short, seeds[pair.id])
        assert together.tokens == single.tokens, pair.id
        assert together.patch_counts == single.patch_counts, pair.id
