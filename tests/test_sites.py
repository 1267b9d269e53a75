"""Site names, layer mapping, the architecture check and the Llama layout adapter."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tiny import VOCAB, random_prompt, tiny_gpt2, tiny_llama_gqa, tiny_mistral, tiny_neox, tiny_phi3, tiny_qwen2
from transformers import AutoConfig, GPT2Config, GPT2LMHeadModel

from harness.errors import HarnessLookupError, HarnessValueError, UnsupportedModelError
from harness.layouts import GPT2Layout, GPTNeoXLayout, LlamaLayout, Phi3Layout, layout_for
from harness.sites import (
    SITE_KINDS,
    SOURCE_DEPTH,
    Site,
    check_architecture,
    hooked_tensor,
    map_layer,
    parse_site,
    with_replaced,
)

BUILDERS = {"mistral": tiny_mistral, "llama": tiny_llama_gqa, "qwen2": tiny_qwen2}
FUSED = {"gpt2": tiny_gpt2, "gpt_neox": tiny_neox, "phi3": tiny_phi3}


@functools.lru_cache(maxsize=None)
def model(name: str):
    return BUILDERS[name]()[0]


@functools.lru_cache(maxsize=None)
def fused_model(name: str):
    return FUSED[name]()[0]


# ---------------------------------------------------------------- names


@given(st.sampled_from(SITE_KINDS), st.integers(0, 200))
def test_parse_site_round_trips(kind: str, layer: int) -> None:
    site = parse_site(f"{kind}@{layer}")
    assert site == Site(kind, layer)
    assert str(site) == f"{kind}@{layer}"
    assert parse_site(f"  {kind} @ {layer} ") == site
    assert parse_site(f"{kind.upper()}@{layer}") == site


def test_unknown_site_kind_suggests_the_closest() -> None:
    with pytest.raises(HarnessLookupError) as err:
        parse_site("vproj@27")
    message = str(err.value)
    assert "'vproj'" in message and "'vproj@27'" in message
    assert "v_proj, resid_pre, resid_post, attn_out, mlp_out, kv" in message
    assert message.endswith("Did you mean 'v_proj'?")
    with pytest.raises(LookupError):
        Site("residual", 3)


@pytest.mark.parametrize(
    "text", ["v_proj", "v_proj@", "@27", "v_proj@x", "v_proj@-1", "v_proj@2.5", "v_proj@2@3", ""]
)
def test_malformed_site_is_refused(text: str) -> None:
    with pytest.raises(HarnessValueError, match="v_proj@27|layer"):
        parse_site(text)


@pytest.mark.parametrize("layer", [-1, 1.5, True, "3"])
def test_site_refuses_non_integer_layers(layer: object) -> None:
    with pytest.raises(HarnessValueError):
        Site("v_proj", layer)  # type: ignore[arg-type]


# ---------------------------------------------------------------- layer mapping


def test_map_layer_documented_examples() -> None:
    assert map_layer(27, 16) == 13
    assert map_layer(18, 16) == 9
    assert map_layer(0, 16) == 0 and map_layer(31, 16) == 15
    assert map_layer(27, 4) == 3 and map_layer(5, 4) == 0
    assert map_layer(27, 80) == 69


@given(st.integers(0, SOURCE_DEPTH - 1), st.integers(1, 200))
def test_map_layer_is_relative_depth(layer: int, n_layers: int) -> None:
    mapped = map_layer(layer, n_layers)
    if n_layers == SOURCE_DEPTH:
        assert mapped == layer
    else:
        # Independent computation with floats; no ties occur for a 32-layer source.
        assert mapped == round(layer * (n_layers - 1) / (SOURCE_DEPTH - 1))
    assert 0 <= mapped < n_layers
    if layer > 0:
        assert map_layer(layer - 1, n_layers) <= mapped  # monotone


@given(st.integers(1, 60), st.integers(1, 60), st.data())
def test_map_layer_other_source_depths(n_layers: int, depth: int, data: st.DataObject) -> None:
    layer = data.draw(st.integers(0, depth - 1))
    mapped = map_layer(layer, n_layers, source_depth=depth)
    assert 0 <= mapped < n_layers
    if depth > 1 and n_layers != depth:
        assert abs(mapped - layer * (n_layers - 1) / (depth - 1)) <= 0.5


@pytest.mark.parametrize("layer", [-1, 32, 100])
def test_map_layer_refuses_out_of_range(layer: int) -> None:
    with pytest.raises(HarnessValueError, match=r"0\.\.31"):
        map_layer(layer, 16)
    with pytest.raises(HarnessValueError):
        map_layer(3, 0)


# ---------------------------------------------------------------- architecture check


def test_sites_module_does_not_import_torch() -> None:
    code = "import sys, harness.sites; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("name", ["mistral", "llama", "qwen2", "qwen3", "gemma", "gemma2", "olmo2", "granite",
                                  "mixtral", "qwen3_moe", "stablelm", "phi", "cohere", "cohere2", "opt"])
def test_supported_configs_pass(name: str) -> None:
    check_architecture({"model_type": name})
    check_architecture(AutoConfig.for_model(name))


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox", "phi3", "gpt_bigcode"])
def test_fused_families_with_an_adapter_pass(name: str) -> None:
    check_architecture({"model_type": name})
    check_architecture(AutoConfig.for_model(name))


@pytest.mark.parametrize(
    "config, fused",
    [
        ({"model_type": "falcon", "hidden_size": 4544}, "query_key_value"),
        ({"model_type": "bloom", "hidden_size": 1024}, "query_key_value"),
        ({"model_type": "dbrx", "d_model": 768}, "Wqkv"),
        ({"model_type": "mpt", "d_model": 768}, "Wqkv"),
    ],
)
def test_other_fused_qkv_configs_are_refused_before_loading(config: dict, fused: str) -> None:
    # Only the config.json dict is given: no weights exist at all.
    with pytest.raises(UnsupportedModelError) as err:
        check_architecture(config)
    message = str(err.value)
    assert "\n" not in message
    assert repr(config["model_type"]) in message and "fused QKV" in message and fused in message
    assert "mistral" in message and "llama" in message and "qwen2" in message
    assert "gpt2, gpt_neox, phi3" in message


@pytest.mark.parametrize("name, reason", [
    ("falcon", "comes in three layouts"), ("bloom", "forward takes no position_ids"),
    ("mpt", "forward takes no position_ids"), ("gptj", "rotary on interleaved pairs applied inside"),
    ("codegen", "rotary on interleaved pairs applied inside"),
])
def test_refused_families_name_what_is_missing_in_one_line(name: str, reason: str) -> None:
    with pytest.raises(UnsupportedModelError) as err:
        check_architecture({"model_type": name})
    assert "\n" not in str(err.value) and reason in str(err.value) and repr(name) in str(err.value)


def test_gpt2_with_cross_attention_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="'gpt2' with add_cross_attention"):
        check_architecture({"model_type": "gpt2", "add_cross_attention": True})


@pytest.mark.parametrize("config", [{"model_type": "bert"}, {}, {"model_type": None}])
def test_other_configs_are_refused(config: dict) -> None:
    with pytest.raises(UnsupportedModelError, match="supported: Llama-family"):
        check_architecture(config)


def test_a_layout_refuses_a_model_of_another_family() -> None:
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=VOCAB, n_positions=32)
    with pytest.raises(UnsupportedModelError, match="model.model.layers"):
        LlamaLayout(GPT2LMHeadModel(config))  # the structural check refuses it
    with pytest.raises(UnsupportedModelError, match=r"no model.gpt_neox.layers .*GPT-NeoX"):
        GPTNeoXLayout(GPT2LMHeadModel(config))
    with pytest.raises(UnsupportedModelError, match=r"lacks self_attn.qkv_proj for the Phi-3 layout"):
        Phi3Layout(model("llama"))
    with pytest.raises(UnsupportedModelError, match="lacks self_attn.v_proj for the Llama-family"):
        LlamaLayout(fused_model("phi3"))  # a fused model does not pass as Llama
    assert isinstance(layout_for(GPT2LMHeadModel(config)), GPT2Layout)


# ---------------------------------------------------------------- the layout adapter


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_layout_resolves_modules(name: str) -> None:
    m = model(name)
    layout = layout_for(m)
    assert layout.n_layers == 4 and layout.num_kv_heads == 2 and layout.head_dim == 8
    assert layout.rotary_emb is m.model.rotary_emb
    r = layout.resolve("v_proj@27")  # 27 of 32 on 4 layers -> 3
    assert r.layer == 3 and r.module is m.model.layers[3].self_attn.v_proj and r.where == "output"
    assert str(r) == "v_proj@27 (layer 3)"
    direct = LlamaLayout(m, source_depth=4)  # layers written for this model itself
    expected = {
        "v_proj": (m.model.layers[2].self_attn.v_proj, "output"),
        "attn_out": (m.model.layers[2].self_attn.o_proj, "output"),
        "mlp_out": (m.model.layers[2].mlp, "output"),
        "resid_post": (m.model.layers[2], "output"),
        "resid_pre": (m.model.layers[2], "input"),
        "kv": (None, "cache"),
    }
    for kind, (module, where) in expected.items():
        r = direct.resolve(Site(kind, 2))
        assert (r.module, r.where, r.layer) == (module, where, 2)
    with pytest.raises(HarnessValueError, match=r"0\.\.3"):
        direct.resolve("v_proj@4")


# ---------------------------------------------------------------- hook helpers


def _capture(m, ids, resolved) -> torch.Tensor:
    """Run ``ids`` and return the hooked tensor at ``resolved``, read with hooked_tensor."""
    found: list[torch.Tensor] = []
    if resolved.where == "input":

        def pre(module, args, kwargs):
            found.append(hooked_tensor("input", args, kwargs, None).clone())

        handle = resolved.module.register_forward_pre_hook(pre, with_kwargs=True)
    else:

        def post(module, args, output):
            found.append(hooked_tensor("output", args, {}, output).clone())

        handle = resolved.module.register_forward_hook(post)
    try:
        with torch.no_grad():
            m(ids)
    finally:
        handle.remove()
    return found[0]


def _run_replacing(m, ids, resolved, fn) -> torch.Tensor:
    """Logits of ``ids`` with the site's tensor x replaced by fn(x), via with_replaced."""
    if resolved.where == "input":

        def pre(module, args, kwargs):
            x = hooked_tensor("input", args, kwargs, None)
            return with_replaced("input", args, kwargs, None, fn(x))

        handle = resolved.module.register_forward_pre_hook(pre, with_kwargs=True)
    else:

        def post(module, args, output):
            x = hooked_tensor("output", args, {}, output)
            return with_replaced("output", args, {}, output, fn(x))

        handle = resolved.module.register_forward_hook(post)
    try:
        with torch.no_grad():
            return m(ids).logits
    finally:
        handle.remove()


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("layer", [0, 2])
def test_hooked_tensors_match_independent_values(name: str, layer: int) -> None:
    m = model(name)
    layout = LlamaLayout(m, source_depth=4)
    ids = random_prompt(9, 1)
    with torch.no_grad():
        hidden = m(ids, output_hidden_states=True).hidden_states
        block = m.model.layers[layer]
        v_expected = block.self_attn.v_proj(block.input_layernorm(hidden[layer]))
    got = {kind: _capture(m, ids, layout.resolve(Site(kind, layer))) for kind in SITE_KINDS[:5]}
    # hidden_states[L] is layer L's input; [L + 1] its output (for L below the last layer).
    torch.testing.assert_close(got["resid_pre"], hidden[layer], rtol=0, atol=0)
    torch.testing.assert_close(got["resid_post"], hidden[layer + 1], rtol=0, atol=0)
    torch.testing.assert_close(got["v_proj"], v_expected, rtol=1e-6, atol=1e-6)
    recomposed = got["resid_pre"] + got["attn_out"] + got["mlp_out"]
    torch.testing.assert_close(recomposed, got["resid_post"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("kind", SITE_KINDS[:5])
def test_with_replaced_replaces_the_tensor(name: str, kind: str) -> None:
    m = model(name)
    layout = LlamaLayout(m, source_depth=4)
    ids = random_prompt(8, 2)
    resolved = layout.resolve(Site(kind, 1))
    with torch.no_grad():
        plain = m(ids).logits
    same = _run_replacing(m, ids, resolved, lambda x: x.clone())
    torch.testing.assert_close(same, plain, rtol=0, atol=0)
    scaled = _run_replacing(m, ids, resolved, lambda x: x * 3.0)
    assert (scaled - plain).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["resid_pre", "resid_post"])
def test_replacing_the_residual_stream_gives_the_other_prompts_logits(kind: str) -> None:
    # Every position of the stream replaced by prompt B's: the rest of the model runs B.
    m = model("llama")
    layout = LlamaLayout(m, source_depth=4)
    a, b = random_prompt(7, 3), random_prompt(7, 4)
    with torch.no_grad():
        hidden_b = m(b, output_hidden_states=True).hidden_states
        logits_b = m(b).logits
    index = 2 if kind == "resid_pre" else 3
    patched = _run_replacing(m, a, layout.resolve(Site(kind, 2)), lambda x: hidden_b[index])
    torch.testing.assert_close(patched, logits_b, rtol=1e-5, atol=1e-5)


def test_hook_helpers_on_both_call_conventions() -> None:
    h, other = torch.ones(1, 2, 3), torch.zeros(1, 2, 3)
    assert hooked_tensor("input", (h, 5), {"x": 1}, None) is h
    assert hooked_tensor("input", (), {"hidden_states": h}, None) is h
    args, kwargs = with_replaced("input", (h, 5), {"x": 1}, None, other)
    assert args[0] is other and args[1] == 5 and kwargs == {"x": 1}
    args, kwargs = with_replaced("input", (), {"hidden_states": h, "x": 1}, None, other)
    assert args == () and kwargs["hidden_states"] is other and kwargs["x"] == 1
    assert hooked_tensor("output", (), {}, (h, "attn")) is h  # older decoder layers: a tuple
    assert with_replaced("output", (), {}, (h, "attn"), other) == (other, "attn")
    assert with_replaced("output", (), {}, h, other) is other
    with pytest.raises(HarnessValueError, match="harness.kv"):
        hooked_tensor("cache", (), {}, None)
    with pytest.raises(HarnessLookupError, match="Did you mean 'output'"):
        with_replaced("outptu", (), {}, h, other)


# ---------------------------------------------------------------- fused-QKV layouts


def _fused_parts(name: str, m):
    """(decoder blocks, layer-input norm of block, V weight (out, in), V bias or None), computed
    here from the library's own modules, independently of harness.sites.FusedPart."""
    cfg = m.config
    if name == "gpt2":
        d = cfg.n_embd
        # Conv1D: y = x @ W + b with W (d, 3d); v is the last third of the outputs.
        return (m.transformer.h, lambda blk: blk.ln_1,
                lambda blk: (blk.attn.c_attn.weight[:, 2 * d :].T, blk.attn.c_attn.bias[2 * d :]))
    if name == "gpt_neox":
        heads, hd = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads

        def neox(blk):
            # Rows laid out per head: head h owns rows [3 hd h, 3 hd (h + 1)) as [q_h | k_h | v_h].
            lin = blk.attention.query_key_value
            w = lin.weight.view(heads, 3 * hd, -1)[:, 2 * hd :].reshape(heads * hd, -1)
            return w, lin.bias.view(heads, 3 * hd)[:, 2 * hd :].reshape(-1)

        return m.gpt_neox.layers, lambda blk: blk.input_layernorm, neox
    heads, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    return (m.model.layers, lambda blk: blk.input_layernorm,
            lambda blk: (blk.self_attn.qkv_proj.weight[(heads + kv) * hd :], None))


def _scale_v(name: str, blk, factor: float) -> None:
    """Scale, in place, the parameters of ``blk``'s fused projection that produce V (views only)."""
    if name == "gpt2":
        d = blk.attn.c_attn.weight.shape[0]
        blk.attn.c_attn.weight[:, 2 * d :] *= factor
        blk.attn.c_attn.bias[2 * d :] *= factor
    elif name == "gpt_neox":
        lin = blk.attention.query_key_value
        heads = blk.attention.config.num_attention_heads
        hd = lin.weight.shape[0] // (3 * heads)
        lin.weight.view(heads, 3 * hd, -1)[:, 2 * hd :] *= factor
        lin.bias.view(heads, 3 * hd)[:, 2 * hd :] *= factor
    else:
        cfg = blk.self_attn.config
        hd = cfg.hidden_size // cfg.num_attention_heads
        blk.self_attn.qkv_proj.weight[(cfg.num_attention_heads + cfg.num_key_value_heads) * hd :] *= factor


def _site_capture(m, ids, resolved) -> torch.Tensor:
    found: list[torch.Tensor] = []
    if resolved.where == "input":
        handle = resolved.module.register_forward_pre_hook(
            lambda mod, args, kwargs: found.append(resolved.tensor(args, kwargs, None).clone()), with_kwargs=True)
    else:
        handle = resolved.module.register_forward_hook(
            lambda mod, args, out: found.append(resolved.tensor(args, {}, out).clone()))
    try:
        with torch.no_grad():
            m(ids)
    finally:
        handle.remove()
    return found[0]


def _site_replacing(m, ids, resolved, fn) -> torch.Tensor:
    def hook(mod, args, out):
        return resolved.replaced(args, {}, out, fn(resolved.tensor(args, {}, out)))

    handle = resolved.module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return m(ids).logits
    finally:
        handle.remove()


@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_layout_resolves_modules(name: str) -> None:
    m = fused_model(name)
    layout = layout_for(m)
    blocks, _, _ = _fused_parts(name, m)
    kinds = {"gpt2": (GPT2Layout, 4, "absolute"), "gpt_neox": (GPTNeoXLayout, 4, "rotary"),
             "phi3": (Phi3Layout, 2, "rotary")}
    cls, kv_heads, positions = kinds[name]
    assert type(layout) is cls and layout.n_layers == 4
    assert (layout.num_kv_heads, layout.head_dim, layout.positions) == (kv_heads, 16, positions)
    expected_rotary = {"gpt2": lambda: None, "gpt_neox": lambda: m.gpt_neox.rotary_emb,
                       "phi3": lambda: m.model.rotary_emb}[name]()
    assert layout.rotary_emb is expected_rotary
    block = blocks[2]
    attn = {"gpt2": "attn", "gpt_neox": "attention", "phi3": "self_attn"}[name]
    out_proj = {"gpt2": "c_proj", "gpt_neox": "dense", "phi3": "o_proj"}[name]
    fused = {"gpt2": "c_attn", "gpt_neox": "query_key_value", "phi3": "qkv_proj"}[name]
    direct = layout_for(m, source_depth=4)
    expected = {
        "v_proj": (getattr(getattr(block, attn), fused), "output"),
        "attn_out": (getattr(getattr(block, attn), out_proj), "output"),
        "mlp_out": (block.mlp, "output"),
        "resid_post": (block, "output"),
        "resid_pre": (block, "input"),
        "kv": (None, "cache"),
    }
    for kind, (module, where) in expected.items():
        r = direct.resolve(Site(kind, 2))
        assert (r.module, r.where, r.layer) == (module, where, 2)
        assert (r.part is not None) == (kind == "v_proj")


@pytest.mark.parametrize("name", sorted(FUSED))
@pytest.mark.parametrize("layer", [0, 2])
def test_fused_v_proj_is_the_unfused_value_projection(name: str, layer: int) -> None:
    """The v_proj site equals the layer input's norm times the V part of the fused weight
    (plus bias), and, head by head, the values the model cached for that layer."""
    m = fused_model(name)
    layout = layout_for(m, source_depth=4)
    blocks, norm, v_weight = _fused_parts(name, m)
    ids = random_prompt(9, 1)
    with torch.no_grad():
        out = m(ids, output_hidden_states=True, use_cache=True)
        block = blocks[layer]
        w, b = v_weight(block)
        expected = torch.nn.functional.linear(norm(block)(out.hidden_states[layer]), w, b)
    got = _site_capture(m, ids, layout.resolve(Site("v_proj", layer)))
    assert got.shape == (1, 9, layout.num_kv_heads * layout.head_dim)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    from harness.kv import snapshot
    from harness.compat import output_cache

    cached = snapshot(output_cache(out)).values[layer]  # (1, kv_heads, seq, head_dim)
    per_head = got.view(1, 9, layout.num_kv_heads, layout.head_dim).transpose(1, 2)
    torch.testing.assert_close(per_head, cached, rtol=1e-5, atol=1e-5)
    other = {kind: _site_capture(m, ids, layout.resolve(Site(kind, layer)))
             for kind in ("resid_pre", "resid_post", "attn_out", "mlp_out")}
    torch.testing.assert_close(other["resid_pre"], out.hidden_states[layer], rtol=0, atol=0)
    torch.testing.assert_close(other["resid_post"], out.hidden_states[layer + 1], rtol=0, atol=0)
    recomposed = other["resid_pre"] + other["attn_out"] + other["mlp_out"]
    torch.testing.assert_close(recomposed, other["resid_post"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(FUSED))
def test_replacing_fused_v_proj_acts_as_replacing_the_value_projection(name: str) -> None:
    """Tripling the v_proj site must give the logits of the same model with the V rows of the
    fused weight and bias tripled (q and k untouched), and the identity must change nothing."""
    m = fused_model(name)
    layout = layout_for(m, source_depth=4)
    ids = random_prompt(9, 2)
    resolved = layout.resolve(Site("v_proj", 1))
    with torch.no_grad():
        plain = m(ids).logits
    torch.testing.assert_close(_site_replacing(m, ids, resolved, lambda x: x.clone()), plain, rtol=0, atol=0)
    patched = _site_replacing(m, ids, resolved, lambda x: x * 3.0)
    scaled = FUSED[name]()[0]  # same seed, same weights
    blocks, _, _ = _fused_parts(name, scaled)
    with torch.no_grad():
        _scale_v(name, blocks[1], 3.0)
        reference = scaled(ids).logits
    assert (reference - plain).abs().max() > 1e-3
    torch.testing.assert_close(patched, reference, rtol=1e-5, atol=1e-5)
