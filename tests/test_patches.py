"""Persistent patches on tiny random-weight models: identities, counts, cleanup."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import HarnessValueError
from harness.kv import cache_kwarg, output_cache
from harness.patches import PatchSpec, install, norm_matched_random, record, source_site
from harness.sites import Site, layout_for
from tiny import HostReads, changed_by_group, random_prompt, tiny_gpt2, tiny_llama_gqa, tiny_mistral, tiny_neox, tiny_phi3

MODEL, CONFIG = tiny_mistral()
LAYOUT = layout_for(MODEL)
KINDS = ["v_proj", "resid_pre", "resid_post", "attn_out", "mlp_out"]


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@given(kind=st.sampled_from(KINDS), layer=st.sampled_from([0, 5, 18, 27, 31]),
       length=st.integers(6, 24), window=st.integers(1, 6))
def test_patch_with_own_activations_is_a_noop(kind, layer, length, window):
    ids = random_prompt(length, seed=length)
    spec = PatchSpec(Site(kind, layer), phases=("prefill",), window=window)
    own = record(MODEL, LAYOUT, ids, [spec.site])[spec.site]
    with install(MODEL, LAYOUT, [spec], {spec: own}, prompt_len=length) as handles:
        patched = logits(MODEL, ids)
    torch.testing.assert_close(patched, logits(MODEL, ids), rtol=0, atol=1e-5)
    assert handles[0].changed("prefill") == 0
    assert handles[0].counts[0].calls == 1


@given(kind=st.sampled_from(KINDS), length=st.integers(8, 24))
def test_patch_with_another_prompts_activations_changes_logits(kind, length):
    ids, other = random_prompt(length, seed=1), random_prompt(length + 3, seed=2)
    spec = PatchSpec(Site(kind, 27), phases=("prefill",), window=4)
    source = record(MODEL, LAYOUT, other, [spec.site])[spec.site]
    with install(MODEL, LAYOUT, [spec], {spec: source}, prompt_len=length) as handles:
        patched = logits(MODEL, ids)
    clean = logits(MODEL, ids)
    assert (patched[0, -1] - clean[0, -1]).abs().max() > 1e-3
    # Only the last `window` positions were written: earlier logits are untouched.
    torch.testing.assert_close(patched[:, : length - 4], clean[:, : length - 4], rtol=0, atol=1e-6)
    assert handles[0].changed("prefill") > 0


def decode_steps(model, ids, steps, specs, sources, prompt_len, *, install_after_prefill):
    """Greedy decoding with the KV cache; returns (tokens, handles)."""
    kw = cache_kwarg(model)

    def run():
        out = model(input_ids=ids, use_cache=True)
        cache, tokens = output_cache(out), []
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        return cache, nxt, tokens

    with torch.no_grad():
        if install_after_prefill:
            cache, nxt, tokens = run()
            with install(model, LAYOUT, specs, sources, prompt_len) as handles:
                for _ in range(steps):
                    tokens.append(int(nxt))
                    out = model(input_ids=nxt, use_cache=True, **{kw: cache})
                    cache, nxt = output_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
        else:
            with install(model, LAYOUT, specs, sources, prompt_len) as handles:
                cache, nxt, tokens = run()
                for _ in range(steps):
                    tokens.append(int(nxt))
                    out = model(input_ids=nxt, use_cache=True, **{kw: cache})
                    cache, nxt = output_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
    return tokens, handles


def test_original_v_patch_changes_nothing_during_decoding():
    ids, champion = random_prompt(20, seed=3), random_prompt(22, seed=4)
    spec = PatchSpec("v_proj@27", phases=("decode",), mode="original")
    source = record(MODEL, LAYOUT, champion, [source_site(spec)])[source_site(spec)]
    _, handles = decode_steps(MODEL, ids, 6, [spec], {spec: source}, 20, install_after_prefill=True)
    counts = {c.phase: c for c in handles[0].counts}
    assert counts["decode"].calls == 6
    assert counts["decode"].changed == 0


def test_corrected_v_patch_changes_values_at_every_decoding_step():
    ids, champion = random_prompt(20, seed=3), random_prompt(22, seed=4)
    spec = PatchSpec("v_proj@27", phases=("decode",), mode="corrected")
    source = record(MODEL, LAYOUT, champion, [spec.site])[spec.site]
    steps, changed = 6, []
    kw = cache_kwarg(MODEL)
    with torch.no_grad():
        out = MODEL(input_ids=ids, use_cache=True)
        cache, nxt = output_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
        with install(MODEL, LAYOUT, [spec], {spec: source}, prompt_len=20) as handles:
            for _ in range(steps):
                out = MODEL(input_ids=nxt, use_cache=True, **{kw: cache})
                cache, nxt = output_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
                changed.append(handles[0].changed("decode"))
    assert all(b > a for a, b in zip([0, *changed], changed)), changed


def test_original_resid_patch_is_fed_from_the_layer_output():
    spec = PatchSpec("resid_pre@18", mode="original")
    assert source_site(spec) == Site("resid_post", 18)
    assert source_site(PatchSpec("resid_pre@18")) == Site("resid_pre", 18)


@pytest.mark.parametrize("builder", [tiny_mistral, tiny_llama_gqa])
@pytest.mark.parametrize("decode_source", ["last", "mean"])
def test_decode_patch_gives_same_tokens_with_cache_as_with_full_recomputation(builder, decode_source):
    model, _ = builder(seed=5)
    layout = layout_for(model)
    ids, champion = random_prompt(18, seed=6), random_prompt(21, seed=7)
    specs = [PatchSpec(s, window=4, decode_source=decode_source) for s in ("v_proj@27", "resid_pre@18")]
    acts = record(model, layout, champion, [s.site for s in specs])
    sources = {s: acts[s.site] for s in specs}
    steps = 8
    kw = cache_kwarg(model)
    with torch.no_grad(), install(model, layout, specs, sources, prompt_len=18):
        out = model(input_ids=ids, use_cache=True)
        cache, seq, cached = output_cache(out), ids, []
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(steps):
            cached.append(int(nxt))
            out = model(input_ids=nxt, use_cache=True, **{kw: cache})
            cache, nxt = output_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
        full = []
        for _ in range(steps):
            nxt = model(input_ids=seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            full.append(int(nxt))
            seq = torch.cat([seq, nxt], dim=1)
    assert cached == full
    assert hook_count(model) == 0


def test_hooks_are_removed_after_an_exception_inside_the_context():
    ids = random_prompt(10, seed=8)
    spec = PatchSpec("mlp_out@5", window=4)
    source = record(MODEL, LAYOUT, ids, [spec.site])[spec.site]
    with pytest.raises(RuntimeError, match="boom"):
        with install(MODEL, LAYOUT, [spec], {spec: source}, prompt_len=10):
            assert hook_count(MODEL) == 2  # the patch and the position tracker
            raise RuntimeError("boom")
    assert hook_count(MODEL) == 0


def test_prompt_shorter_than_window_is_refused():
    ids = random_prompt(10, seed=9)
    spec = PatchSpec("v_proj@27", window=16)
    source = record(MODEL, LAYOUT, random_prompt(20, seed=1), [spec.site])[spec.site]
    with pytest.raises(HarnessValueError, match="shorter than the patch window 16"):
        with install(MODEL, LAYOUT, [spec], {spec: source}, prompt_len=ids.shape[1]):
            pass
    assert hook_count(MODEL) == 0


def test_kv_site_is_not_patchable():
    with pytest.raises(HarnessValueError, match="cannot be patched"):
        PatchSpec("kv@27")


def test_norm_matched_random_keeps_each_position_norm():
    source = torch.randn(7, 16) * torch.arange(1, 8).unsqueeze(1)
    noise = norm_matched_random(source, seed=0)
    torch.testing.assert_close(noise.norm(dim=-1), source.norm(dim=-1))
    assert not torch.allclose(noise, source)
    torch.testing.assert_close(noise, norm_matched_random(source, seed=0))


@pytest.mark.parametrize("builder", [tiny_gpt2, tiny_neox, tiny_phi3], ids=lambda b: b.__name__)
def test_a_fused_v_proj_patch_writes_the_source_values_into_the_cache_and_leaves_keys(builder):
    """On a fused QKV, the patched slice is what the attention uses as V: the layer's cached
    values at the window's slots are the source's, head by head; its keys (and queries, which
    the rest of the logits depend on) come from the untouched q and k slices."""
    model = builder()[0]
    layout = layout_for(model)
    target, source = random_prompt(12, 5), random_prompt(10, 6)
    spec = PatchSpec(Site("v_proj", 27), phases=("prefill",), window=4)
    layer = layout.resolve(spec.site).layer
    src = record(model, layout, source, [spec.site])[spec.site]  # (10, kv_heads * head_dim)
    with torch.no_grad():
        plain = output_cache(model(input_ids=target, use_cache=True))
        with install(model, layout, [spec], {spec: src}, prompt_len=12) as handles:
            patched = output_cache(model(input_ids=target, use_cache=True))
    (k0, v0), (k1, v1) = [(c.layers[layer].keys, c.layers[layer].values) for c in (plain, patched)]
    expected = src[-4:].view(4, layout.num_kv_heads, layout.head_dim).transpose(0, 1)[None]
    torch.testing.assert_close(v1[:, :, -4:], expected, rtol=0, atol=0)
    assert torch.equal(v1[:, :, :-4], v0[:, :, :-4]) and torch.equal(k1, k0)
    assert handles[0].changed("prefill") == 4 * layout.num_kv_heads * layout.head_dim


@pytest.mark.parametrize("kind", ["v_proj", "resid_pre"])
def test_a_self_patch_in_bfloat16_counts_no_change(kind):
    """bf16 rounds at about 4e-3: writing back a value recomputed in another batch shape must
    count as no change, or the patch guard would pass a patch that did nothing."""
    model = tiny_mistral()[0].to(torch.bfloat16)
    layout = layout_for(model)
    ids = torch.cat([random_prompt(12, seed=3), random_prompt(12, seed=3)])  # batch 2: other rounding
    spec = PatchSpec(Site(kind, 18), phases=("prefill",), window=4)
    own = record(model, layout, ids[:1], [spec.site])[spec.site]  # recorded at batch 1
    # one rounding step of bf16 away, as a source recorded under another batch shape can be
    eps = torch.finfo(torch.bfloat16).eps
    own = (own.float() * (1 + eps)).to(torch.bfloat16)
    assert not torch.equal(own, record(model, layout, ids[:1], [spec.site])[spec.site])
    with install(model, layout, [spec], {spec: own}, prompt_len=12) as handles:
        logits(model, ids)
    assert handles[0].counts[0].calls == 1
    assert handles[0].changed("prefill") == 0


def _calls_by_hand(pad: int, prompt_len: int, starts, width: int) -> dict[str, int]:
    """Calls that reach each phase, from the positions of one row group, in plain Python."""
    calls = {"prefill": 0, "decode": 0}
    for start in starts:
        positions = [start + t - pad for t in range(width)]
        calls["prefill"] += any(0 <= p < prompt_len for p in positions)
        calls["decode"] += any(p >= prompt_len for p in positions)
    return calls


def test_the_batched_patch_reads_nothing_back_from_a_start_on_the_device():
    """A static cache gives a call's first slot as a tensor on the device. The batched patch
    computes positions, the edit and its counts from it without reading a value back to the
    host, so a decoding step never waits on the device for it (and can be captured whole)."""
    from harness.patch_rows import RowGroup, _Group, _Packed

    gen = torch.Generator().manual_seed(0)
    spec = PatchSpec("v_proj@27", window=2)
    groups = [RowGroup(slice(0, 2), 1, 4, torch.randn(5, 8, generator=gen)),
              RowGroup(slice(2, 3), 0, 7, torch.randn(6, 8, generator=gen))]  # the groups' phases differ
    x = torch.randn(3, 2, 8, generator=gen)
    on_device, on_host = ([_Group(spec, g) for g in groups] for _ in range(2))
    packed, reference = _Packed(spec, on_device, x), _Packed(spec, on_host, x)
    starts = range(0, 8, 2)  # prompt slots, the prompt's end, decoding slots
    changed = [{"prefill": 0, "decode": 0} for _ in groups]
    for start in starts:
        device_start = torch.tensor(start)
        with HostReads() as reads:
            out = packed.edit(x, device_start)
        assert reads.count == 0
        torch.testing.assert_close(out, reference.edit(x, start), rtol=0, atol=0)
        for total, by_hand in zip(changed, changed_by_group(x, out, start, groups)):
            for phase, n in by_hand.items():
                total[phase] += n
    packed.flush_into(on_device)
    reference.flush_into(on_host)
    for g, ref, group, expected in zip(on_device, on_host, groups, changed):
        assert g.calls == ref.calls == _calls_by_hand(group.pad, group.prompt_len, starts, x.shape[1])
        assert g.changed == ref.changed == expected and g.changed["prefill"] > 0 and g.changed["decode"] > 0
