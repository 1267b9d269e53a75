"""Families with absolute learned positions beside GPT-2 (harness/layouts/opt.py, harness/layouts/bigcode.py):
OPT (unfused q, k, v; positions with an offset of 2) and GPT-BigCode (fused ``c_attn``, multi-query).

Keys carry no rotation, so the corrected splice is ``left``: slot j holds the champion's KV of
its token j, computed at position j. The identities of tests/test_generate_identities.py, on
fewer pairs and seeds: a self-splice and own-activation patches are the baseline, cached decoding
is full recomputation, a champion at least as long as the baseline gives exactly a generation from
``champion[:len_b - 1] + baseline[-1:]``, and pairs batched with left padding equal pairs alone.
"""

from __future__ import annotations

import functools

import pytest
import torch
from tiny import ABSOLUTE_CONFIGS, KV_ONLY, RELAY, family_builder, tiny_subject
from test_generate_identities import recompute

from harness.errors import HarnessValueError
from harness.generate import CORRECTED, Intervention, Runner
from harness.prompts import Pair, default_pairs

SEEDS = (0, 1, 2, 3)
BANK = default_pairs()
FAMILIES = sorted(ABSOLUTE_CONFIGS)
OWN_SITES = {"opt": ("v_proj@27", "resid_pre@18", "attn_out@5", "resid_post@31"),
             "gpt_bigcode": ("v_proj@27", "resid_pre@18", "attn_out@5", "mlp_out@31")}


@functools.lru_cache(maxsize=None)
def runner(name: str) -> Runner:
    return Runner(tiny_subject(family_builder(name)))


def protocol(**changes):
    return CORRECTED.with_(gen_tokens=8, **changes)


@pytest.mark.parametrize("name", FAMILIES)
def test_absolute_positions_splice_left(name: str) -> None:
    r = runner(name)
    assert r.layout.positions == "absolute" and r.layout.rope is None
    assert r.alignment(CORRECTED) == "left"


@pytest.mark.parametrize("name", FAMILIES)
def test_self_splice_own_patches_and_cached_decoding_equal_the_baseline(name: str) -> None:
    r = runner(name)
    own = Intervention("own", patches=OWN_SITES[name])
    for pair in BANK[::4]:
        same = Pair(f"{pair.id}-self", pair.baseline, pair.baseline)
        base = r.run(same, "baseline", protocol(), SEEDS).tokens
        assert r.run(same, KV_ONLY, protocol(), SEEDS).tokens == base, pair.id
        assert list(base) == [tuple(t) for t in recompute(r, r.ids(pair.baseline), protocol(), SEEDS)], pair.id
        patched = r.run(same, own, protocol(decode_source="aligned"), SEEDS)
        assert patched.tokens == r.run(same, "baseline", protocol(decode_source="aligned"), SEEDS).tokens
        assert {c.phase for c in patched.patch_counts if c.calls} == {"prefill", "decode"}


@pytest.mark.parametrize("name", FAMILIES)
def test_left_full_kv_from_a_champion_at_least_as_long_is_its_prefix_cut_to_the_baseline(name: str) -> None:
    r = runner(name)
    checked = 0
    for pair in BANK[::2]:
        ids_b, ids_c = r.ids(pair.baseline), r.ids(pair.champion)
        if ids_c.shape[1] < ids_b.shape[1]:
            continue
        claimed = torch.cat([ids_c[:, : ids_b.shape[1] - 1], ids_b[:, -1:]], dim=1)
        assert list(r.run(pair, KV_ONLY, protocol(), SEEDS).tokens) == \
            [tuple(row) for row in recompute(r, claimed, protocol(), SEEDS)], pair.id
        checked += ids_c.shape[1] > ids_b.shape[1]
    assert checked >= 2


@pytest.mark.parametrize("name", FAMILIES)
def test_pairs_batched_with_left_padding_equal_pairs_alone(name: str) -> None:
    pairs = BANK[::6]
    seeds = {p.id: SEEDS[:2] for p in pairs}
    arm = RELAY if name != "opt" else Intervention("kv+v_proj@27", kv_layers="all", patches=("v_proj@27",))
    batched = Runner(tiny_subject(family_builder(name))).run_many(pairs, arm, protocol(), seeds)
    for pair, together in zip(pairs, batched):
        single = runner(name).run(pair, arm, protocol(), seeds[pair.id])
        assert together.tokens == single.tokens and together.patch_counts == single.patch_counts, pair.id


def test_opt_refuses_mlp_out_in_one_line() -> None:
    with pytest.raises(HarnessValueError, match=r"site mlp_out@5: OPT has no MLP module .*use resid_post") as info:
        runner("opt").layout.resolve("mlp_out@5")
    assert "\n" not in str(info.value)
