"""Moving cached keys to new positions, for every rope type the harness accepts.

The reference is independent of harness.rope: a layer's unrotated keys are its ``k_proj`` output
on the hidden states of the source's own prefill, rotated by the library's
``apply_rotary_pos_emb`` with the cos/sin the model's rotary module gives for the new positions
(one call over them, as a prefill at those positions makes). The context threshold of the
sequence-dependent types is small (32), and the lengths cross it both ways, so LongRoPE's long
and short factor sets, and YaRN's attention factor, all act.
"""

from __future__ import annotations

import functools

import pytest
import torch
import transformers
from tiny import random_prompt, tiny_llama_gqa, tiny_phi3
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from harness.errors import HarnessValueError
from harness.kv import prefill, splice
from harness.layouts import layout_for

#: transformers 4.x's Phi-3 config takes LongRoPE only as {type, short_factor, long_factor};
#: these tests write their configs the 5.x way.
LONGROPE_CONFIGS_5X = pytest.mark.skipif(not transformers.__version__.startswith("5"),
                                         reason="Phi-3 LongRoPE configs written the transformers 5.x way")

THRESHOLD = 32
HALF = 4  # head_dim 8 -> 4 frequencies
ROPES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": THRESHOLD},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": THRESHOLD},
    "longrope": {"rope_type": "longrope", "short_factor": [1.0, 1.3, 1.7, 2.2],
                 "long_factor": [1.5, 3.0, 5.5, 9.0], "original_max_position_embeddings": THRESHOLD},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
}
# (source length, target length): both short, both beyond the threshold, and crossing it both ways.
LENGTHS = [(9, 14), (20, 45), (45, 20), (40, 60), (60, 37)]
TOL = dict(rtol=2e-5, atol=2e-5)


@functools.lru_cache(maxsize=None)
def model(kind: str):
    rope = ROPES[kind]
    extra = {} if rope is None else {"rope_scaling": dict(rope)}
    if kind == "longrope":  # Phi-3.5 / Phi-4-mini also name the threshold at the config's top level
        extra["original_max_position_embeddings"] = THRESHOLD
    return tiny_llama_gqa(max_position_embeddings=128, **extra)[0]


def reference_keys(m, ids: torch.Tensor, positions: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, keys (1, kv_heads, T, head_dim): ``k_proj`` of the prompt's own hidden states, rotated at
    ``positions`` (1, T) by the rotary module called over exactly those positions."""
    with torch.no_grad():
        hidden = m(ids, output_hidden_states=True).hidden_states
        keys = []
        for i, block in enumerate(m.model.layers):
            x = block.input_layernorm(hidden[i])
            k = block.self_attn.k_proj(x).view(1, ids.shape[1], -1, 8).transpose(1, 2)
            cos, sin = m.model.rotary_emb(x, positions)
            keys.append(apply_rotary_pos_emb(k, k, cos, sin)[1])
    return keys


@pytest.mark.parametrize("ls, lt", LENGTHS)
@pytest.mark.parametrize("kind", sorted(set(ROPES) - {"dynamic"}))
def test_moved_keys_equal_keys_computed_at_the_new_positions(kind: str, ls: int, lt: int) -> None:
    m = model(kind)
    source, target = random_prompt(ls, ls), random_prompt(lt, lt + 1)
    _, s = prefill(m, source)
    _, t = prefill(m, target)
    # The cache itself holds what the reference computes at the source's own positions.
    own = reference_keys(m, source, torch.arange(ls)[None])
    torch.testing.assert_close(s.keys[2], own[2], **TOL)
    spliced = splice(t, s, "all", "right-rerotated", rotary_emb=layout_for(m).rope)
    n = min(ls, lt) - 1
    expected = reference_keys(m, source, torch.arange(ls)[None] + (lt - ls))
    for i in range(len(s.keys)):
        torch.testing.assert_close(spliced.keys[i][:, :, lt - n :], expected[i][:, :, ls - n :], **TOL)


def test_longrope_keys_beyond_the_threshold_carry_the_long_factor_set() -> None:
    """The premise of the exact move: the model rotates a long sequence's keys, even its first ones,
    with the long factors, so the same token at the same position is cached differently."""
    m = model("longrope")
    long = random_prompt(THRESHOLD + 8, 5)
    _, whole = prefill(m, long)
    _, head = prefill(m, long[:, :10])
    assert (whole.keys[0][:, :, 1:10] - head.keys[0][:, :, 1:10]).abs().max() > 1e-2


@pytest.mark.parametrize("ls, lt", [(9, 14), (20, 30), (30, 12)])
def test_dynamic_ntk_within_the_original_context_moves_keys_exactly(ls: int, lt: int) -> None:
    m = model("dynamic")
    source, target = random_prompt(ls, 3), random_prompt(lt, 4)
    _, s = prefill(m, source)
    _, t = prefill(m, target)
    spliced = splice(t, s, "all", "right-rerotated", rotary_emb=layout_for(m).rope)
    n = min(ls, lt) - 1
    expected = reference_keys(m, source, torch.arange(ls)[None] + (lt - ls))
    for i in range(len(s.keys)):
        torch.testing.assert_close(spliced.keys[i][:, :, lt - n :], expected[i][:, :, ls - n :], **TOL)


def test_dynamic_ntk_beyond_the_original_context_is_refused_in_one_line() -> None:
    m = tiny_llama_gqa(max_position_embeddings=24, rope_scaling=dict(ROPES["dynamic"]))[0]
    _, s = prefill(m, random_prompt(20, 1))
    _, t = prefill(m, random_prompt(30, 2))
    with pytest.raises(HarnessValueError, match=r"rope_type 'dynamic': a sequence of 30 positions exceeds") as info:
        splice(t, s, "all", "right-rerotated", rotary_emb=layout_for(m).rope)
    assert "\n" not in str(info.value)


@LONGROPE_CONFIGS_5X
@pytest.mark.parametrize("ls, lt", [(20, 45), (45, 20)])
def test_phi3_longrope_moves_keys_across_the_threshold(ls: int, lt: int) -> None:
    """Phi-3.5's own configuration: fused qkv, partial rotary, LongRoPE with the threshold at 32."""
    import importlib

    rope = {k: v for k, v in ROPES["longrope"].items() if k != "original_max_position_embeddings"}
    rope["short_factor"], rope["long_factor"] = rope["short_factor"][:3] * 2, rope["long_factor"][:3] * 2
    m = tiny_phi3(rope_scaling=rope, original_max_position_embeddings=THRESHOLD, max_position_embeddings=128)[0]
    phi3 = importlib.import_module("transformers.models.phi3.modeling_phi3")
    source, target = random_prompt(ls, 7), random_prompt(lt, 8)
    _, s = prefill(m, source)
    _, t = prefill(m, target)
    spliced = splice(t, s, "all", "right-rerotated", rotary_emb=layout_for(m).rope)
    n, heads, kv, hd = min(ls, lt) - 1, 4, 2, 16
    with torch.no_grad():
        hidden = m(source, output_hidden_states=True).hidden_states
        for i, block in enumerate(m.model.layers):
            x = block.input_layernorm(hidden[i])
            k = torch.nn.functional.linear(x, block.self_attn.qkv_proj.weight[heads * hd : (heads + kv) * hd])
            k = k.view(1, ls, kv, hd).transpose(1, 2)
            cos, sin = m.model.rotary_emb(x, torch.arange(ls)[None] + (lt - ls))
            expected = phi3.apply_rotary_pos_emb(k, k, cos, sin)[1]
            torch.testing.assert_close(spliced.keys[i][:, :, lt - n :], expected[:, :, ls - n :], **TOL)


@LONGROPE_CONFIGS_5X
def test_a_run_that_crosses_the_longrope_switch_is_refused_and_one_below_it_runs() -> None:
    """Batched prompts on both sides of the switch, or a generation across it, would mix two factor
    sets: the runner refuses; with the switch beyond every sequence the corrected arm runs."""
    from tiny import KV_ONLY, tiny_subject

    from harness.generate import CORRECTED, Runner
    from harness.prompts import default_pairs

    rope = {"rope_type": "longrope", "short_factor": [1.0, 1.3, 1.7] * 2, "long_factor": [1.5, 3.0, 5.5] * 2}
    pair = default_pairs()[0]
    low = Runner(tiny_subject(tiny_phi3, rope_scaling=dict(rope), original_max_position_embeddings=THRESHOLD))
    with pytest.raises(HarnessValueError, match=r"rope_type 'longrope': \d+ positions exceed "
                                                r"original_max_position_embeddings 32"):
        low.run(pair, KV_ONLY, CORRECTED.with_(gen_tokens=20), (0,))
    high = Runner(tiny_subject(tiny_phi3, rope_scaling=dict(rope), original_max_position_embeddings=96))
    assert len(high.run(pair, KV_ONLY, CORRECTED.with_(gen_tokens=4), (0,)).tokens[0]) >= 1
