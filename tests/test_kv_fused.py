"""KV caches and splices on the fused-QKV families (GPT-2, GPT-NeoX, Phi-3), both library lines.

Reference values are independent of harness.layouts and harness.kv's rotation: keys are
recomputed from each layer's input with the K part of the fused weight and the family's own
``apply_rotary_pos_emb`` (which rotates only the first ``rotary_dim`` dims of a head), and
logits come from plain forward passes at explicit positions.
"""

from __future__ import annotations

import functools
import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import random_prompt, tiny_gpt2, tiny_neox, tiny_phi3

from harness.errors import HarnessValueError
from harness.kv import cache_kwarg, output_cache, prefill, resolve_layers, snapshot, splice
from harness.layouts import layout_for

FUSED = {"gpt2": tiny_gpt2, "gpt_neox": tiny_neox, "phi3": tiny_phi3}
ROTARY = ("gpt_neox", "phi3")
N_LAYERS = 4
TOL = dict(rtol=1e-5, atol=1e-5)
LAYER_SETS = st.one_of(st.just("all"), st.lists(st.integers(0, N_LAYERS - 1), max_size=N_LAYERS, unique=True))


@functools.lru_cache(maxsize=None)
def model(name: str, n_layers: int = N_LAYERS):
    # The tiny models' vocabulary is 96: random_prompt draws ids below it.
    return FUSED[name](num_hidden_layers=n_layers) if name != "gpt2" else FUSED[name](n_layer=n_layers)


def m_(name: str, n_layers: int = N_LAYERS):
    return model(name, n_layers)[0]


def forward(m, ids, *, cache=None, mask=None, positions=None):
    kwargs = {cache_kwarg(m): cache} if cache is not None else {}
    with torch.no_grad():
        return m(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)


def _blocks(name: str, m):
    return {"gpt2": lambda: m.transformer.h, "gpt_neox": lambda: m.gpt_neox.layers,
            "phi3": lambda: m.model.layers}[name]()


def _unrotated_keys(name: str, m, blk, hidden: torch.Tensor) -> torch.Tensor:
    """Keys (1, kv_heads, T, head_dim) of one block before any rotation, from its input (1, T, d)."""
    cfg = m.config
    f = torch.nn.functional
    if name == "gpt2":
        d, heads = cfg.n_embd, cfg.n_head
        w, b = blk.attn.c_attn.weight, blk.attn.c_attn.bias  # Conv1D (d, 3d): [q | k | v]
        k = f.linear(blk.ln_1(hidden), w[:, d : 2 * d].T, b[d : 2 * d])
        kv, hd = heads, d // heads
    elif name == "gpt_neox":
        heads = cfg.num_attention_heads
        hd = cfg.hidden_size // heads
        lin = blk.attention.query_key_value  # rows per head: [q_h | k_h | v_h]
        w = lin.weight.view(heads, 3 * hd, -1)[:, hd : 2 * hd].reshape(heads * hd, -1)
        b = lin.bias.view(heads, 3 * hd)[:, hd : 2 * hd].reshape(-1)
        k = f.linear(blk.input_layernorm(hidden), w, b)
        kv = heads
    else:
        heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
        hd = cfg.hidden_size // heads
        w = blk.self_attn.qkv_proj.weight[heads * hd : (heads + kv) * hd]  # [q | k | v]
        k = f.linear(blk.input_layernorm(hidden), w)
    return k.view(1, hidden.shape[1], kv, hd).transpose(1, 2)


def independent_keys(name: str, m, ids: torch.Tensor, positions: torch.Tensor | None) -> list[torch.Tensor]:
    """Per layer, the cached keys of ``ids`` at ``positions`` (1, T), recomputed from hidden states.

    Rotary families: rotated by the family's own apply_rotary_pos_emb (partial rotary
    included). The hidden states of a rotary model depend on distances only, so the same
    states serve for shifted positions; GPT-2's keys carry no rotation.
    """
    module = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
    with torch.no_grad():
        hidden = m(ids, output_hidden_states=True).hidden_states
        keys = []
        for i, blk in enumerate(_blocks(name, m)):
            k = _unrotated_keys(name, m, blk, hidden[i])
            if name in ROTARY:
                cos, sin = layout_for(m).rotary_emb(hidden[i], positions)
                k = module.apply_rotary_pos_emb(k, k, cos, sin)[1]
            keys.append(k)
    return keys


@pytest.mark.parametrize("name", sorted(FUSED))
def test_the_cache_holds_the_keys_and_values_of_each_kv_head(name: str) -> None:
    m = m_(name)
    layout = layout_for(m)
    ids = random_prompt(7, 3)
    _, snap = prefill(m, ids)
    expected = independent_keys(name, m, ids, torch.arange(7)[None])
    assert (snap.n_layers, snap.n_kv_heads, snap.seq_len, snap.head_dim) == (4, layout.num_kv_heads, 7,
                                                                            layout.head_dim)
    for i in range(N_LAYERS):
        torch.testing.assert_close(snap.keys[i], expected[i], **TOL)


@pytest.mark.parametrize("name", ROTARY)
@settings(max_examples=15, deadline=None)
@given(lt=st.integers(2, 10), ls=st.integers(2, 10), layers=LAYER_SETS, seed=st.integers(0, 10_000))
def test_partially_rerotated_keys_equal_keys_computed_at_the_new_positions(name, lt, ls, layers, seed) -> None:
    """Only the rotated dims of a head move; the rest (no position in them) are copied."""
    m = m_(name)
    source, target = random_prompt(ls, seed), random_prompt(lt, seed + 1)
    _, s = prefill(m, source)
    _, t = prefill(m, target)
    spliced = splice(t, s, layers, "right-rerotated", rotary_emb=layout_for(m).rotary_emb)
    n, shift = min(lt, ls) - 1, lt - ls
    expected = independent_keys(name, m, source, torch.arange(ls)[None] + shift)
    for i in resolve_layers(layers, N_LAYERS):
        if n > 0:
            torch.testing.assert_close(spliced.keys[i][:, :, lt - n :], expected[i][:, :, ls - n :], **TOL)
            assert torch.equal(spliced.values[i][:, :, lt - n :], s.values[i][:, :, ls - n :])


@pytest.mark.parametrize("name", ROTARY)
@pytest.mark.parametrize("ls, extra", [(4, 3), (6, 1), (3, 7)])
def test_rerotated_splice_equals_the_source_at_shifted_positions(name: str, ls: int, extra: int) -> None:
    """With BOS masked out the whole spliced cache is the source run at shifted positions (every
    layer, not only the first); the plain "right" splice must fail it."""
    m = m_(name)
    lt = ls + extra
    source, target = random_prompt(ls, 40 + ls), random_prompt(lt, 41 + ls)
    no_bos = torch.ones(1, ls, dtype=torch.long)
    no_bos[0, 0] = 0
    s = snapshot(output_cache(forward(m, source, mask=no_bos)))
    _, t = prefill(m, target)
    token = torch.tensor([[13]])
    shifted = torch.tensor([[0, *range(extra + 1, extra + ls), lt]])
    ref_mask = torch.cat([no_bos, torch.ones(1, 1, dtype=torch.long)], 1)
    reference = forward(m, torch.cat([source, token], 1), mask=ref_mask, positions=shifted).logits[0, -1]
    mask = torch.zeros(1, lt + 1, dtype=torch.long)
    mask[0, lt - ls + 1 :] = 1  # the ls - 1 spliced slots and the new token
    gaps = {}
    for align in ("right-rerotated", "right"):
        spliced = splice(t, s, "all", align, rotary_emb=layout_for(m).rotary_emb)
        out = forward(m, token, cache=spliced.to_cache(), mask=mask, positions=torch.tensor([[lt]]))
        gaps[align] = (out.logits[0, -1] - reference).abs().max().item()
    assert gaps["right-rerotated"] < 1e-5 and gaps["right"] > 1e-3, gaps


# ---------------------------------------------------------------- absolute positions (GPT-2)


def test_gpt2_has_no_rotary_embedding_and_refuses_rerotation() -> None:
    m = m_("gpt2")
    assert layout_for(m).rotary_emb is None and layout_for(m).positions == "absolute"
    _, a = prefill(m, random_prompt(5, 1))
    _, b = prefill(m, random_prompt(6, 2))
    with pytest.raises(HarnessValueError, match="absolute positions has none: use 'left'"):
        splice(a, b, "all", "right-rerotated", rotary_emb=layout_for(m).rotary_emb)


@pytest.mark.parametrize("ls, lt", [(6, 6), (4, 9), (9, 4)])
def test_gpt2_left_splice_keeps_every_slot_at_its_own_position(ls: int, lt: int) -> None:
    """A left splice of all layers, then a token at position lt (after the target's slots):

    - equal lengths: the source's cache itself, and the token sees exactly source + token;
    - longer target, its own tail masked: the token sees the source at positions 0..ls-1 and
      itself at lt (a forward pass at those explicit positions);
    - longer source: its first lt slots, i.e. exactly source[:lt] + token.
    """
    m = m_("gpt2")
    source, target = random_prompt(ls, 50 + ls), random_prompt(lt, 51 + lt)
    _, s = prefill(m, source)
    _, t = prefill(m, target)
    spliced = splice(t, s, "all", "left")
    n = min(ls, lt)
    token = torch.tensor([[17]])
    mask = torch.ones(1, lt + 1, dtype=torch.long)
    mask[0, n:lt] = 0
    out = forward(m, token, cache=spliced.to_cache(), mask=mask, positions=torch.tensor([[lt]]))
    positions = torch.tensor([[*range(n), lt]])
    reference = forward(m, torch.cat([source[:, :n], token], 1), positions=positions)
    torch.testing.assert_close(out.logits[0, -1], reference.logits[0, -1], **TOL)
    for i in range(N_LAYERS):
        assert torch.equal(spliced.keys[i][:, :, :n], s.keys[i][:, :, :n])
        assert torch.equal(spliced.keys[i][:, :, n:], t.keys[i][:, :, n:])
    if ls != lt:
        # A right splice puts KV computed at other positions before the token: not the same.
        right = splice(t, s, "all", "right")
        shifted = forward(m, token, cache=right.to_cache(), mask=mask, positions=torch.tensor([[lt]]))
        assert (shifted.logits[0, -1] - reference.logits[0, -1]).abs().max() > 1e-3
