"""Attention-head sites (``v_proj@27.h3``: one KV head's values) on every family, fused included.

The oracle is each family's own weight layout, written out here: which output features of
the (fused) projection are head h's values. Recording a head site must give those features of
the projection's output; zero-ablating it through the runner must equal the model with those
output rows of the weight (and bias) zeroed.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import pytest
import torch
from tiny import tiny_gpt2, tiny_neox, tiny_phi3, tiny_subject

from harness.errors import HarnessValueError
from harness.generate import CORRECTED, Intervention, Runner
from harness.model import load_subject
from harness.patches import record
from harness.prompts import default_pairs, spread
from harness.sites import Site, parse_site

SUBJECTS = {
    "toy": lambda: load_subject(),
    "gpt2": lambda: tiny_subject(tiny_gpt2),
    "neox": lambda: tiny_subject(tiny_neox),
    "phi3": lambda: tiny_subject(tiny_phi3),
}
PAIRS = spread(default_pairs(), 2)
PROTOCOL = CORRECTED.with_(gen_tokens=8)
SEEDS = (0, 1, 2)


@functools.lru_cache(maxsize=None)
def runner(name: str) -> Runner:
    return Runner(SUBJECTS[name]())


def head_features(name: str, layout, head: int) -> range:
    """Head ``head``'s value features in the output of the module ``v_proj`` resolves to."""
    hd, cfg = layout.head_dim, layout.config
    if name == "gpt2":  # c_attn: [q | k | v], each n_embd wide
        return range(2 * cfg.n_embd + head * hd, 2 * cfg.n_embd + (head + 1) * hd)
    if name == "neox":  # query_key_value: per head [q_h | k_h | v_h]
        return range(head * 3 * hd + 2 * hd, head * 3 * hd + 3 * hd)
    if name == "phi3":  # qkv_proj: [q (heads * hd) | k (kv * hd) | v (kv * hd)]
        start = (cfg.num_attention_heads + layout.num_kv_heads) * hd
        return range(start + head * hd, start + (head + 1) * hd)
    return range(head * hd, (head + 1) * hd)  # an unfused v_proj


@pytest.mark.parametrize("name", list(SUBJECTS))
def test_a_head_site_records_that_heads_value_features(name):
    r = runner(name)
    head = r.layout.num_kv_heads - 1  # the last head: an offset error shows
    module = r.layout.resolve("v_proj@27").module
    seen = {}
    handle = module.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out.detach().clone()))
    try:
        got = record(r.model, r.layout, r.ids(PAIRS[0].champion), [parse_site(f"v_proj@27.h{head}")])
    finally:
        handle.remove()
    expected = seen["out"][0][:, list(head_features(name, r.layout, head))]
    assert torch.equal(got[parse_site(f"v_proj@27.h{head}")], expected)


def _zero_rows(name: str, layout, head: int):
    cols = list(head_features(name, layout, head))

    def change(module: torch.nn.Module) -> None:
        if name == "gpt2":  # Conv1D: weight (in, out)
            module.weight.data[:, cols] = 0
        else:  # Linear: weight (out, in)
            module.weight.data[cols] = 0
        if getattr(module, "bias", None) is not None:
            module.bias.data[cols] = 0

    return change


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SUBJECTS))
def test_zero_ablating_a_head_is_that_heads_weight_rows_zeroed(name):
    r = runner(name)
    head = 1
    arm = Intervention(f"zero v_proj@27.h{head}", ablate=(f"v_proj@27.h{head}",))
    model = copy.deepcopy(r.model)
    subject = dataclasses.replace(r.subject, model=model, layout=type(r.layout)(model))
    _zero_rows(name, subject.layout, head)(subject.layout.resolve("v_proj@27").module)
    oracle = Runner(subject)
    for pair in PAIRS:
        edited = r.run(pair, arm, PROTOCOL, SEEDS)
        assert edited.tokens == oracle.run(pair, "baseline", PROTOCOL, SEEDS).tokens, pair.id
        counts = {c.phase: c for c in edited.patch_counts}
        assert counts["prefill"].changed > 0 and counts["decode"].changed > 0
        assert counts["prefill"].site == f"zero:v_proj@27.h{head}"


def test_a_head_patch_writes_only_that_head():
    """Patching V of one head from the champion leaves the other heads' values as computed."""
    r = runner("toy")
    pair = PAIRS[0]
    hd = r.layout.head_dim
    arm = Intervention("kv+v_proj@27.h0", kv_layers="all", patches=("v_proj@27.h0",))
    res = r.run(pair, arm, PROTOCOL, SEEDS)
    counts = {c.phase: c for c in res.patch_counts}
    # At most one head's features per patched position: the window's 16 prompt positions, and
    # one decoding row per generated position of every seed.
    assert 0 < counts["prefill"].changed <= 16 * hd
    assert 0 < counts["decode"].changed <= hd * len(SEEDS) * PROTOCOL.gen_tokens


@pytest.mark.parametrize("text, match", [
    ("v_proj@27.h", "malformed head"),
    ("v_proj@27.3", "malformed head"),
    ("mlp_out@27.h1", "on v_proj sites only"),
])
def test_malformed_head_sites_are_refused_in_one_line(text, match):
    with pytest.raises(HarnessValueError, match=match):
        parse_site(text)


def test_a_head_beyond_the_models_kv_heads_is_refused():
    r = runner("gpt2")
    with pytest.raises(HarnessValueError, match="expected a head in 0..3"):
        r.layout.resolve("v_proj@27.h4")
    assert str(Site("v_proj", 27, 3)) == "v_proj@27.h3" and parse_site("V_PROJ@27.H3") == Site("v_proj", 27, 3)
