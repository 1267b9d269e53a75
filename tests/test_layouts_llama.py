"""The Llama layout's relatives (harness/layouts/llama.py): OLMo 2 and 3, Granite, Mixtral,
Qwen3-MoE, StableLM, Phi-2, Cohere, Cohere 2 and Gemma 3, as tiny random models in the toy's
vocabulary.

Each family must pass the runner's identities (a self-splice of every layer is the baseline;
the corrected full-KV splice of an equal-length pair is a plain generation from the champion's
prefix and the baseline's last token; patches with the prompt's own activations change no
token), its re-rotation must be exact (layer 0's moved keys are the keys of a prefill at the
new positions; with BOS masked the whole spliced cache is the source run at shifted
positions), and on the mixture-of-experts families a self-patch must leave every router choice
as it was. Fewer pairs and seeds than tests/test_generate_identities.py: ten families.
"""

from __future__ import annotations

import functools

import pytest
import torch
import transformers
from tiny import FAMILY_CONFIGS, KV_ONLY, family_builder, random_prompt, tiny_subject
from test_generate_identities import recompute

from harness.generate import CORRECTED, Intervention, Runner
from harness.kv import cache_kwarg, output_cache, prefill, snapshot, splice
from harness.layouts import layout_for
from harness.patches import PatchSpec, install, record
from harness.prompts import Pair, default_pairs

SEEDS = (0, 1, 2, 3)
BANK = default_pairs()
PAIRS = BANK[::4]
EQUAL = [p for p in BANK if p.id.startswith("eq-")][:4]
FAMILIES = sorted(FAMILY_CONFIGS)
ROTARY_STYLE = {"cohere": "interleaved", "cohere2": "interleaved"}
MOE = ("mixtral", "qwen3_moe")


def available(name: str) -> None:
    if not hasattr(transformers, FAMILY_CONFIGS[name][1]):
        pytest.skip(f"transformers {transformers.__version__} has no {FAMILY_CONFIGS[name][1]}")


@functools.lru_cache(maxsize=None)
def runner(name: str) -> Runner:
    return Runner(tiny_subject(family_builder(name)))


@functools.lru_cache(maxsize=None)
def plain(name: str):
    return family_builder(name)()[0]


def protocol(**changes):
    return CORRECTED.with_(gen_tokens=8, **changes)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_family_gets_its_layout_and_rotary_style(name: str) -> None:
    available(name)
    r = runner(name)
    assert r.layout.positions == "rotary" and r.alignment(CORRECTED) == "right-rerotated"
    assert r.layout.rope.style == ROTARY_STYLE.get(name, "half")


@pytest.mark.parametrize("name", FAMILIES)
def test_self_splice_and_own_activation_patches_equal_the_baseline(name: str) -> None:
    available(name)
    r = runner(name)
    own = Intervention("own", patches=("v_proj@27", "resid_pre@18", "mlp_out@5", "attn_out@31"))
    for pair in PAIRS:
        same = Pair(f"{pair.id}-self", pair.baseline, pair.baseline)
        base = r.run(same, "baseline", protocol(), SEEDS).tokens
        assert r.run(same, KV_ONLY, protocol(), SEEDS).tokens == base, pair.id
        patched = r.run(same, own, protocol(decode_source="aligned"), SEEDS)
        assert patched.tokens == r.run(same, "baseline", protocol(decode_source="aligned"), SEEDS).tokens, pair.id
        assert {c.phase for c in patched.patch_counts if c.calls} == {"prefill", "decode"}


@pytest.mark.parametrize("name", FAMILIES)
def test_corrected_full_kv_equals_generation_from_champion_prefix_and_baseline_last_token(name: str) -> None:
    available(name)
    r = runner(name)
    for pair in EQUAL:
        ids_b, ids_c = r.ids(pair.baseline), r.ids(pair.champion)
        claimed = torch.cat([ids_c[:, :-1], ids_b[:, -1:]], dim=1)
        assert list(r.run(pair, KV_ONLY, protocol(), SEEDS).tokens) == \
            [tuple(row) for row in recompute(r, claimed, protocol(), SEEDS)], pair.id


def forward(m, ids, *, cache=None, mask=None, positions=None):
    kwargs = {cache_kwarg(m): cache} if cache is not None else {}
    with torch.no_grad():
        return m(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("ls, extra", [(5, 4), (9, 2)])
def test_rerotated_splice_equals_the_source_at_shifted_positions(name: str, ls: int, extra: int) -> None:
    """Layer 0's moved keys are a shifted prefill's (its input carries no position); with BOS masked
    out the next token's logits are those of the source run at the shifted positions, and the plain
    "right" splice (keys left at their old positions) is not."""
    available(name)
    m = plain(name)
    lt = ls + extra
    source, target = random_prompt(ls, 60 + ls), random_prompt(lt, 61 + ls)
    no_bos = torch.ones(1, ls, dtype=torch.long)
    no_bos[0, 0] = 0
    s = snapshot(output_cache(forward(m, source, mask=no_bos)))
    _, t = prefill(m, target)
    shifted = torch.tensor([[0, *range(extra + 1, extra + ls)]])
    moved = snapshot(output_cache(forward(m, source, mask=no_bos, positions=shifted)))
    spliced = splice(t, s, "all", "right-rerotated", rotary_emb=layout_for(m).rope)
    torch.testing.assert_close(spliced.keys[0][:, :, lt - ls + 1 :], moved.keys[0][:, :, 1:], rtol=1e-5, atol=1e-5)
    token = torch.tensor([[13]])
    ref_mask = torch.cat([no_bos, torch.ones(1, 1, dtype=torch.long)], 1)
    reference = forward(m, torch.cat([source, token], 1), mask=ref_mask,
                        positions=torch.tensor([[*shifted[0].tolist(), lt]])).logits[0, -1]
    mask = torch.zeros(1, lt + 1, dtype=torch.long)
    mask[0, lt - ls + 1 :] = 1
    gaps = {}
    for align in ("right-rerotated", "right"):
        spliced = splice(t, s, "all", align, rotary_emb=layout_for(m).rope)
        out = forward(m, token, cache=spliced.to_cache(), mask=mask, positions=torch.tensor([[lt]]))
        gaps[align] = (out.logits[0, -1] - reference).abs().max().item()
    assert gaps["right-rerotated"] < 1e-4 and gaps["right"] > 1e-3, gaps


def router_choices(m, run) -> list[torch.Tensor]:
    """The experts each router picks, per router call, while ``run()`` runs."""
    picked, handles = [], []
    k = int(getattr(m.config, "num_experts_per_tok"))

    def hook(module, args, output):
        # transformers 5 routers return (logits, weights, indices); 4.x gates are Linear layers (logits)
        index = output[-1] if isinstance(output, tuple) else output.topk(k, dim=-1).indices
        picked.append(index.sort(dim=-1).values.clone())

    for block in m.model.layers:
        moe = getattr(block, "mlp", None) or getattr(block, "block_sparse_moe")
        handles.append(moe.gate.register_forward_hook(hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return picked


@pytest.mark.parametrize("name", MOE)
def test_a_self_patch_leaves_every_router_choice_unchanged(name: str) -> None:
    available(name)
    r = runner(name)
    m, layout = r.model, r.layout
    ids, other = r.ids(BANK[0].baseline), r.ids(BANK[1].champion)
    sites = ["resid_pre@18", "v_proj@27", "attn_out@5"]

    specs = [PatchSpec(site, phases=("prefill",), window=16) for site in sites]

    def patched(source_ids):
        acts = record(m, layout, source_ids, [s.site for s in specs])
        return lambda: _patched_forward(m, layout, specs, acts, ids)

    clean = router_choices(m, lambda: m(input_ids=ids, use_cache=False))
    own = router_choices(m, patched(ids))
    assert len(own) == len(clean) == layout.n_layers
    assert all(torch.equal(a, b) for a, b in zip(own, clean))
    # The test can fail: another prompt's activations move some routing.
    foreign = router_choices(m, patched(other))
    assert not all(torch.equal(a, b) for a, b in zip(foreign, clean))


def _patched_forward(m, layout, specs, acts, ids) -> None:
    with install(m, layout, specs, {s: acts[s.site] for s in specs}, prompt_len=ids.shape[1]):
        m(input_ids=ids, use_cache=False)


WINDOWED = ("gemma3_text", "cohere2", "olmo3")


@pytest.mark.parametrize("name", WINDOWED)
def test_identities_hold_with_sliding_windows_that_bind(name: str) -> None:
    """Local layers with a window of 8, every prompt longer: the cache is kept whole and the
    model's own sliding mask hides what lies beyond the window. Cached generation equals full
    recomputation, a self-splice is the baseline, and the window changes tokens (it binds)."""
    available(name)
    r = Runner(tiny_subject(family_builder(name), sliding_window=8))
    differ = 0
    for pair in PAIRS[:4]:
        base = r.run(pair, "baseline", protocol(), SEEDS)
        assert list(base.tokens) == [tuple(t) for t in recompute(r, r.ids(pair.baseline), protocol(), SEEDS)]
        same = Pair(f"{pair.id}-self", pair.baseline, pair.baseline)
        assert r.run(same, KV_ONLY, protocol(), SEEDS).tokens == r.run(same, "baseline", protocol(), SEEDS).tokens
        differ += base.tokens != runner(name).run(pair, "baseline", protocol(), SEEDS).tokens
    assert differ >= 1
