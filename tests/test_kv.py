"""The cache adapter, snapshots and splices, on tiny random models (both library versions).

Reference values are computed independently: plain forward passes with explicit
position ids and attention masks, and keys recomputed from hidden states with
the model's own projections and the library's ``apply_rotary_pos_emb``.
"""

from __future__ import annotations

import functools

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st
from tiny import random_prompt, tiny_llama_gqa, tiny_mistral, tiny_qwen2
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from harness.errors import HarnessLookupError, HarnessValueError
from harness.kv import (
    ALIGNMENTS,
    KVSnapshot,
    cache_from_kwargs,
    cache_kwarg,
    changed_values,
    output_cache,
    prefill,
    resolve_layers,
    snapshot,
    splice,
)

BUILDERS = {"mistral": tiny_mistral, "llama": tiny_llama_gqa, "qwen2": tiny_qwen2}
MODELS = st.sampled_from(sorted(BUILDERS))
N_LAYERS = 4
TOL = dict(rtol=1e-5, atol=1e-5)
LAYER_SETS = st.one_of(
    st.just("all"),
    st.lists(st.integers(0, N_LAYERS - 1), max_size=N_LAYERS, unique=True),
    st.builds(range, st.integers(0, N_LAYERS), st.integers(0, N_LAYERS)),
)


@functools.lru_cache(maxsize=None)
def model(name: str, n_layers: int = N_LAYERS):
    return BUILDERS[name](num_hidden_layers=n_layers)[0]


def forward(m, ids, *, cache=None, mask=None, positions=None):
    kwargs = {cache_kwarg(m): cache} if cache is not None else {}
    with torch.no_grad():
        return m(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)


def no_bos_mask(length: int) -> torch.Tensor:
    mask = torch.ones(1, length, dtype=torch.long)
    mask[0, 0] = 0
    return mask


def clones(snap: KVSnapshot) -> list[torch.Tensor]:
    return [t.clone() for t in (*snap.keys, *snap.values)]


def doubled(snap: KVSnapshot) -> KVSnapshot:
    """The snapshot with its batch row repeated (batch 2)."""
    return KVSnapshot(
        tuple(torch.cat([k, k]) for k in snap.keys), tuple(torch.cat([v, v]) for v in snap.values)
    )


def same_tensors(snap: KVSnapshot, saved: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip((*snap.keys, *snap.values), saved, strict=True))


# ---------------------------------------------------------------- the version adapter


def test_cache_kwarg_and_output_cache_follow_the_library_version() -> None:
    m = model("llama")
    major = int(transformers.__version__.split(".")[0])
    assert cache_kwarg(m) == ("cache" if major >= 5 else "past_key_values")
    out = forward(m, random_prompt(5, 0))
    cache = output_cache(out)
    assert cache.get_seq_length() == 5
    assert cache_from_kwargs({cache_kwarg(m): cache, "x": 1}) is cache
    assert cache_from_kwargs({"input_ids": None}) is None
    with pytest.raises(HarnessValueError, match="use_cache=True"):
        output_cache(type("Out", (), {})())


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_prefill_matches_a_plain_forward(name: str) -> None:
    m = model(name)
    ids = torch.cat([random_prompt(7, 1), random_prompt(7, 2)])
    logits, snap = prefill(m, ids)
    with torch.no_grad():
        expected = m(ids).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert (snap.n_layers, snap.batch, snap.n_kv_heads, snap.seq_len, snap.head_dim) == (4, 2, 2, 7, 8)
    assert not logits.requires_grad


def test_to_cache_repeats_a_batch_1_snapshot() -> None:
    m = model("mistral")
    ids = random_prompt(6, 3)
    _, snap = prefill(m, ids)
    cache = snap.to_cache(batch=3)
    token = torch.full((3, 1), 9)
    out = forward(m, token, cache=cache)
    single = forward(m, token[:1], cache=snap.to_cache())
    for row in range(3):
        torch.testing.assert_close(out.logits[row], single.logits[0], **TOL)
    two = doubled(snap)
    with pytest.raises(HarnessValueError, match="batch 2 to batch 3"):
        two.to_cache(batch=3)


def test_snapshot_refuses_ragged_or_empty_caches() -> None:
    k = torch.zeros(1, 2, 5, 8)
    with pytest.raises(HarnessValueError, match="ragged"):
        KVSnapshot((k, torch.zeros(1, 2, 4, 8)), (k, k))
    with pytest.raises(HarnessValueError):
        KVSnapshot((), ())


# ---------------------------------------------------------------- immutability


@given(MODELS, st.integers(2, 10), st.integers(1, 4), st.sampled_from(ALIGNMENTS))
def test_snapshots_are_never_mutated(name: str, length: int, steps: int, align: str) -> None:
    m = model(name)
    out = forward(m, random_prompt(length, length))
    live = output_cache(out)
    snap = snapshot(live)
    saved = clones(snap)
    # The live cache the snapshot was taken from is written in place and goes on
    # growing: the snapshot must not change.
    live.layers[0].keys.add_(1.0)
    forward(m, torch.tensor([[5]]), cache=live)
    assert same_tensors(snap, saved)
    # A cache made from the snapshot is consumed and extended for several steps.
    cache = snap.to_cache()
    for k, layer in zip(snap.keys, cache.layers):
        assert k.data_ptr() != layer.keys.data_ptr()
    cache.layers[-1].values.mul_(2.0)
    for step in range(steps):
        forward(m, torch.tensor([[7 + step]]), cache=cache)
    assert cache.get_seq_length() == length + steps
    assert same_tensors(snap, saved)
    # A splice returns fresh tensors for the layers it writes and leaves both inputs alone.
    other = snapshot(output_cache(forward(m, random_prompt(5, 99))))
    other_saved = clones(other)
    result = splice(snap, other, "all", align, rotary_emb=m.model.rotary_emb)
    result.keys[0].add_(1.0)
    assert same_tensors(snap, saved) and same_tensors(other, other_saved)
    # The layers it leaves alone are the target's own tensors: snapshots are never written into.
    partial = splice(snap, other, [0], align, rotary_emb=m.model.rotary_emb)
    assert all(partial.keys[i] is snap.keys[i] and partial.values[i] is snap.values[i] for i in range(1, N_LAYERS))
    assert partial.keys[0] is not snap.keys[0] and partial.values[0] is not snap.values[0]


# ---------------------------------------------------------------- layer sets


def test_resolve_layers() -> None:
    assert resolve_layers("all", 4) == (0, 1, 2, 3)
    assert resolve_layers(range(1, 3), 4) == (1, 2)
    assert resolve_layers([3, 1, 3], 4) == (1, 3)
    assert resolve_layers((), 4) == ()
    assert resolve_layers(2, 4) == (2,)
    for bad in ([4], [-1], range(0, 5)):
        with pytest.raises(HarnessValueError, match=r"valid layers are 0\.\.3"):
            resolve_layers(bad, 4)
    for bad in ("some", [True], [1.5], None):
        with pytest.raises(HarnessValueError):
            resolve_layers(bad, 4)


# ---------------------------------------------------------------- identities


def greedy(m, first: torch.Tensor, cache, steps: int = 4) -> tuple[torch.Tensor, list[int]]:
    """First-step logits and the greedy continuation of ``first`` after ``cache``."""
    out = forward(m, first, cache=cache)
    logits, tokens = out.logits[0, -1], []
    for _ in range(steps):
        tokens.append(int(out.logits[0, -1].argmax()))
        out = forward(m, torch.tensor([[tokens[-1]]]), cache=output_cache(out))
    return logits, tokens


@given(MODELS, st.integers(2, 12), LAYER_SETS, st.sampled_from(ALIGNMENTS))
def test_splicing_a_cache_with_itself_changes_nothing(
    name: str, length: int, layers, align: str
) -> None:
    m = model(name)
    ids = random_prompt(length, length + 11)
    _, snap = prefill(m, ids[:, :-1])
    spliced = splice(snap, snap, layers, align, rotary_emb=m.model.rotary_emb)
    for a, b in zip((*spliced.keys, *spliced.values), (*snap.keys, *snap.values)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    logits, tokens = greedy(m, ids[:, -1:], spliced.to_cache())
    expected_logits, expected_tokens = greedy(m, ids[:, -1:], snap.to_cache())
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=0)
    assert tokens == expected_tokens
    with torch.no_grad():
        full = m(ids).logits[0, -1]
    torch.testing.assert_close(logits, full, **TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_splice_counts_the_elements_it_changed_and_a_self_splice_none(dtype) -> None:
    m = model("llama")
    _, target = prefill(m, random_prompt(7, 1))
    _, source = prefill(m, random_prompt(7, 2))
    target = KVSnapshot(tuple(k.to(dtype) for k in target.keys), tuple(v.to(dtype) for v in target.values))
    source = KVSnapshot(tuple(k.to(dtype) for k in source.keys), tuple(v.to(dtype) for v in source.values))
    assert changed_values(target, splice(target, target, "all", "left")) == 0
    # a self-splice whose values moved by one rounding step of the dtype still counts 0
    nudged = KVSnapshot(tuple(k * (1 + torch.finfo(dtype).eps) for k in target.keys), target.values)
    assert changed_values(target, splice(target, nudged, "all", "left")) == 0
    spliced = splice(target, source, [1, 2], "left")
    # independently: only layers 1 and 2, every slot, elements that differ between the prompts
    expected = sum(int((~torch.isclose(source.keys[i].float(), target.keys[i].float(), rtol=1e-2, atol=1e-2)).sum()
                       + (~torch.isclose(source.values[i].float(), target.values[i].float(), rtol=1e-2,
                                         atol=1e-2)).sum()) for i in (1, 2))
    if dtype == torch.float32:
        expected = sum(int((source.keys[i] != target.keys[i]).sum() + (source.values[i] != target.values[i]).sum())
                       for i in (1, 2))
    assert 0 < changed_values(target, spliced) == expected


@given(MODELS, st.integers(2, 12), st.integers(0, 10_000))
def test_left_splice_of_all_layers_reproduces_the_source(name: str, length: int, seed: int) -> None:
    m = model(name)
    source, target = random_prompt(length, seed), random_prompt(length, seed + 1)
    _, s = prefill(m, source[:, :-1])
    _, t = prefill(m, target[:, :-1])
    out = forward(m, source[:, -1:], cache=splice(t, s, "all", "left").to_cache())
    with torch.no_grad():
        expected = m(source).logits[0, -1]
    torch.testing.assert_close(out.logits[0, -1], expected, **TOL)
    if length > 2 and not torch.equal(source[:, 1:-1], target[:, 1:-1]):
        # One layer left out: the target's KV there must show, or the test could not fail.
        partial = forward(m, source[:, -1:], cache=splice(t, s, range(1, 4), "left").to_cache())
        assert (partial.logits[0, -1] - expected).abs().max() > 1e-4


@given(MODELS, st.integers(2, 8), st.integers(1, 6), st.integers(0, 10_000))
def test_left_splice_into_a_longer_target_with_its_tail_masked(
    name: str, ls: int, extra: int, seed: int
) -> None:
    m = model(name)
    source, target = random_prompt(ls, seed), random_prompt(ls + extra, seed + 1)
    lt = ls + extra
    _, s = prefill(m, source)
    _, t = prefill(m, target)
    spliced = splice(t, s, "all", "left")
    mask = torch.ones(1, lt + 1, dtype=torch.long)
    mask[0, ls:lt] = 0  # the target's own slots past the source's length
    token = torch.tensor([[11]])
    out = forward(m, token, cache=spliced.to_cache(), mask=mask, positions=torch.tensor([[ls]]))
    with torch.no_grad():
        expected = m(torch.cat([source, token], dim=1)).logits[0, -1]
    torch.testing.assert_close(out.logits[0, -1], expected, **TOL)


# ---------------------------------------------------------------- right-rerotated


def independent_keys(m, ids, positions, mask=None) -> list[torch.Tensor]:
    """Per layer, keys (1, kv_heads, seq, head_dim) recomputed from hidden states at ``positions``."""
    with torch.no_grad():
        hidden = m(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        keys = []
        for i, block in enumerate(m.model.layers):
            x = block.input_layernorm(hidden[i])
            k = block.self_attn.k_proj(x).view(1, ids.shape[1], -1, 8).transpose(1, 2)
            cos, sin = m.model.rotary_emb(x, positions)
            keys.append(apply_rotary_pos_emb(k, k, cos, sin)[1])
    return keys


@given(MODELS, st.integers(2, 10), st.integers(2, 10), LAYER_SETS, st.integers(0, 10_000))
def test_rerotated_keys_equal_keys_computed_at_the_new_positions(
    name: str, lt: int, ls: int, layers, seed: int
) -> None:
    m = model(name)
    source, target = random_prompt(ls, seed), random_prompt(lt, seed + 1)
    _, s = prefill(m, source)
    _, t = prefill(m, target)
    spliced = splice(t, s, layers, "right-rerotated", rotary_emb=m.model.rotary_emb)
    n, shift = min(lt, ls) - 1, lt - ls
    expected = independent_keys(m, source, torch.arange(ls)[None] + shift)
    chosen = set(resolve_layers(layers, N_LAYERS))
    for i in range(N_LAYERS):
        if i in chosen and n > 0:
            torch.testing.assert_close(spliced.keys[i][:, :, lt - n :], expected[i][:, :, ls - n :], **TOL)
            torch.testing.assert_close(
                spliced.values[i][:, :, lt - n :], s.values[i][:, :, ls - n :], rtol=0, atol=0
            )
            head = slice(0, lt - n)  # BOS and, for a longer target, its own middle slots
        else:
            head = slice(0, lt)
        torch.testing.assert_close(spliced.keys[i][:, :, head], t.keys[i][:, :, head], rtol=0, atol=0)
        torch.testing.assert_close(spliced.values[i][:, :, head], t.values[i][:, :, head], rtol=0, atol=0)


@given(MODELS, st.integers(2, 8), st.integers(1, 8), st.integers(0, 10_000))
def test_rerotated_splice_equals_the_source_at_shifted_positions(
    name: str, ls: int, extra: int, seed: int
) -> None:
    """With BOS masked out, the spliced cache is the source run at positions shifted by len_t - len_s.

    The source is prefilled without attending to BOS, so its hidden states depend
    only on distances between its own tokens; those are kept by the shift, so the
    identity is exact at every layer. The plain "right" splice must fail it.
    """
    m = model(name)
    lt, shift = ls + extra, extra
    source, target = random_prompt(ls, seed), random_prompt(lt, seed + 1)
    s = snapshot(output_cache(forward(m, source, mask=no_bos_mask(ls))))
    _, t = prefill(m, target)
    token = torch.tensor([[13]])
    shifted = torch.tensor([[0, *range(shift + 1, shift + ls), lt]])
    reference = forward(m, torch.cat([source, token], 1), mask=no_bos_mask(ls + 1), positions=shifted)
    mask = torch.zeros(1, lt + 1, dtype=torch.long)
    mask[0, lt - ls + 1 :] = 1  # the n = ls - 1 spliced slots and the new token
    results = {}
    for align in ("right-rerotated", "right"):
        spliced = splice(t, s, "all", align, rotary_emb=m.model.rotary_emb)
        out = forward(m, token, cache=spliced.to_cache(), mask=mask, positions=torch.tensor([[lt]]))
        results[align] = (out.logits[0, -1] - reference.logits[0, -1]).abs().max().item()
    assert results["right-rerotated"] < 1e-5
    if ls > 2:
        # Unrotated keys sit at the wrong distance. (With one source token the new
        # token may equal it, and two identical keys/values make distance irrelevant.)
        assert results["right"] > 1e-3, results


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_rerotated_splice_in_a_one_layer_model_equals_a_shifted_prefill(name: str) -> None:
    # With one layer, every cached KV is a function of its own token and position, and
    # BOS attends only to itself, so keeping the target's BOS is exact too.
    m = model(name, 1)
    ls, lt = 5, 9
    source, target = random_prompt(ls, 21), random_prompt(lt, 22)
    _, s = prefill(m, source)
    _, t = prefill(m, target)
    spliced = splice(t, s, "all", "right-rerotated", rotary_emb=m.model.rotary_emb)
    token = torch.tensor([[17]])
    shifted = torch.tensor([[0, *range(lt - ls + 1, lt), lt]])
    reference = forward(m, torch.cat([source, token], 1), positions=shifted)
    mask = torch.ones(1, lt + 1, dtype=torch.long)
    mask[0, 1 : lt - ls + 1] = 0
    out = forward(m, token, cache=spliced.to_cache(), mask=mask, positions=torch.tensor([[lt]]))
    torch.testing.assert_close(out.logits[0, -1], reference.logits[0, -1], **TOL)
    ref_snap = snapshot(output_cache(reference))
    torch.testing.assert_close(spliced.keys[0][:, :, lt - ls + 1 :], ref_snap.keys[0][:, :, 1:ls], **TOL)
    torch.testing.assert_close(spliced.keys[0][:, :, :1], ref_snap.keys[0][:, :, :1], rtol=0, atol=1e-6)


def test_rerotated_deeper_layers_keep_the_sources_distance_to_bos() -> None:
    """Documented limit: beyond layer 0 the source's KV were computed at its own distance to BOS.

    So with BOS attended, a re-rotated splice is not a prefill at shifted positions;
    layer 0 agrees exactly, deeper layers do not.
    """
    m = model("llama")
    ls, lt = 5, 10
    source, target = random_prompt(ls, 31), random_prompt(lt, 32)
    _, s = prefill(m, source)
    _, t = prefill(m, target)
    spliced = splice(t, s, "all", "right-rerotated", rotary_emb=m.model.rotary_emb)
    shifted = torch.tensor([[0, *range(lt - ls + 1, lt)]])
    ref = snapshot(output_cache(forward(m, source, positions=shifted)))
    moved = [spliced.keys[i][:, :, lt - ls + 1 :] for i in range(4)]
    gaps = [(moved[i] - ref.keys[i][:, :, 1:]).abs().max().item() for i in range(4)]
    assert gaps[0] < 1e-5
    assert min(gaps[1:]) > 1e-3, gaps


# ---------------------------------------------------------------- the original's right alignment


@given(MODELS, st.integers(2, 10), st.integers(2, 10), LAYER_SETS, st.integers(0, 10_000))
def test_right_splice_is_the_originals(name: str, lt: int, ls: int, layers, seed: int) -> None:
    m = model(name)
    _, s = prefill(m, random_prompt(ls, seed))
    _, t = prefill(m, random_prompt(lt, seed + 1))
    spliced = splice(t, s, layers, "right")
    n = min(lt, ls)
    chosen = set(resolve_layers(layers, N_LAYERS))
    for i in range(N_LAYERS):
        pairs = ((spliced.keys[i], t.keys[i], s.keys[i]), (spliced.values[i], t.values[i], s.values[i]))
        for got, tgt, src in pairs:
            if i in chosen:
                assert torch.equal(got[:, :, lt - n :], src[:, :, ls - n :])
                assert torch.equal(got[:, :, : lt - n], tgt[:, :, : lt - n])
            else:
                assert torch.equal(got, tgt)
        if i in chosen and ls > lt:
            # BOS is overwritten by a source token's KV (keys still rotated for its old position).
            assert torch.equal(spliced.keys[i][:, :, 0], s.keys[i][:, :, ls - lt])
            assert not torch.allclose(spliced.keys[i][:, :, 0], t.keys[i][:, :, 0], atol=1e-3)


@given(MODELS, st.integers(2, 10), st.integers(2, 10), LAYER_SETS, st.integers(0, 10_000))
def test_left_splice_slots(name: str, lt: int, ls: int, layers, seed: int) -> None:
    m = model(name)
    # The source does not start with BOS here, so its slot 0 differs from the target's.
    _, s = prefill(m, random_prompt(ls + 1, seed)[:, 1:])
    _, t = prefill(m, random_prompt(lt, seed + 1))
    spliced = splice(t, s, layers, "left")
    n = min(lt, ls)
    chosen = set(resolve_layers(layers, N_LAYERS))
    for i in range(N_LAYERS):
        pairs = ((spliced.keys[i], t.keys[i], s.keys[i]), (spliced.values[i], t.values[i], s.values[i]))
        for got, tgt, src in pairs:
            if i in chosen:
                assert torch.equal(got[:, :, :n], src[:, :, :n])
                assert torch.equal(got[:, :, n:], tgt[:, :, n:])
            else:
                assert torch.equal(got, tgt)


# ---------------------------------------------------------------- refusals


def test_splice_refusals() -> None:
    m = model("qwen2")
    _, a = prefill(m, random_prompt(5, 1))
    _, b = prefill(m, random_prompt(6, 2))
    with pytest.raises(HarnessLookupError, match="Did you mean 'right'"):
        splice(a, b, "all", "rigth")
    with pytest.raises(HarnessLookupError, match="right, left, right-rerotated"):
        splice(a, b, "all", "centre")
    with pytest.raises(HarnessValueError, match="rotary_emb"):
        splice(a, b, "all", "right-rerotated")
    with pytest.raises(HarnessValueError, match="n_layers=4.*n_layers=3"):
        splice(a, KVSnapshot(b.keys[:3], b.values[:3]), "all", "left")
    two = doubled(b)
    with pytest.raises(HarnessValueError, match="batch=1.*batch=2"):
        splice(a, two, "all", "right")
    with pytest.raises(HarnessValueError, match=r"0\.\.3"):
        splice(a, b, [4], "right")
