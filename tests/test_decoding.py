"""The decoding call (harness/decoding.py): the static cache and the compiled step against the
dynamic reference, on the toy in float32; host reads per decoding step."""

from __future__ import annotations

import shutil

import pytest
import torch
import transformers

from tiny import KV_ONLY, L27_V, RELAY
from harness.generate import CORRECTED, ORIGINAL, Intervention, Runner
from harness.model import load_subject
from harness.prompts import default_pairs, spread


def short(protocol, tokens=12):
    return protocol.with_(gen_tokens=tokens)


#: The static cache is a transformers 5 path (4.x's static layers miscount left-padded rows):
#: on 4.x it is refused (tests/test_compat.py), so its equivalence is tested on 5.x only.
_NEEDS_TF5 = pytest.mark.skipif(not transformers.__version__.startswith("5"), reason="static-cache decoding needs transformers 5")


@_NEEDS_TF5
@pytest.mark.parametrize("protocol", [ORIGINAL, CORRECTED, CORRECTED.with_(decode_source="aligned")],
                         ids=["original", "corrected", "corrected-aligned"])
@pytest.mark.parametrize("arm", ["baseline", "champion", KV_ONLY, L27_V, RELAY], ids=str)
def test_static_cache_decoding_gives_the_tokens_and_counts_of_the_dynamic_cache(protocol, arm):
    """float32 on the toy: a preallocated cache (spliced snapshot copied in, patches active in
    every decoding step) decodes exactly what the growing reference cache decodes."""
    subject = load_subject()
    pairs = spread(default_pairs(), 4)  # padding varies
    seeds = {p.id: p.seeds(3) for p in pairs}
    protocol = short(protocol, 8)
    eager = Runner(subject).run_many(pairs, arm, protocol, seeds)
    static = Runner(subject, decoding="static").run_many(pairs, arm, protocol, seeds)
    assert [r.tokens for r in static] == [r.tokens for r in eager]
    assert [r.patch_counts for r in static] == [r.patch_counts for r in eager]


@_NEEDS_TF5
@pytest.mark.parametrize("family", ["gpt2", "phi3"])
def test_static_cache_decoding_matches_on_other_layouts(family):
    """Absolute positions (GPT-2: left-aligned splice) and a fused QKV with partial rotary (Phi-3)."""
    from tiny import tiny_gpt2, tiny_phi3, tiny_subject

    subject = tiny_subject({"gpt2": tiny_gpt2, "phi3": tiny_phi3}[family])
    pairs = spread(default_pairs(), 3)
    seeds = {p.id: p.seeds(2) for p in pairs}
    for protocol in (short(ORIGINAL, 6), short(CORRECTED, 6)):
        eager = Runner(subject).run_many(pairs, L27_V, protocol, seeds)
        static = Runner(subject, decoding="static").run_many(pairs, L27_V, protocol, seeds)
        assert [r.tokens for r in static] == [r.tokens for r in eager], protocol.name


@_NEEDS_TF5
@pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                    reason="inductor compiles the CPU step with a C++ compiler; none is installed")
def test_compiled_decoding_gives_the_tokens_and_counts_of_the_eager_reference():
    """float32 on the toy: the decoding step compiled (inductor on the CPU; CUDA graphs on a GPU)
    with the relay's two persistent patches inside it, after a KV splice into the static cache,
    decodes exactly what the eager dynamic cache decodes, under both protocols, with the same
    patch counts."""
    from torch._dynamo.utils import counters

    subject = load_subject()
    pairs = spread(default_pairs(), 3)
    seeds = {p.id: p.seeds(2) for p in pairs}
    for protocol in (short(CORRECTED, 6), short(ORIGINAL, 6)):
        eager = Runner(subject).run_many(pairs, RELAY, protocol, seeds)
        breaks = sum(counters["graph_break"].values())
        compiled = Runner(subject, decoding="compiled").run_many(pairs, RELAY, protocol, seeds)
        # One graph per step: a host read in a hook would break it (and make a GPU wait)
        assert sum(counters["graph_break"].values()) == breaks, dict(counters["graph_break"])
        assert [r.tokens for r in compiled] == [r.tokens for r in eager], protocol.name
        assert [r.patch_counts for r in compiled] == [r.patch_counts for r in eager], protocol.name


@_NEEDS_TF5
def test_under_a_static_cache_patched_decoding_reads_back_per_step_only_what_generate_does():
    """A static cache keeps its length on the device; the position tracker and the patch take it
    from there. Host reads per decoding step (the reads at 8 tokens minus those at 4, over 4)
    of an arm with a splice and a persistent patch equal those of the library's bare
    ``generate`` on a static cache: the harness adds none per step (its own reads, laying the
    patch's row groups out, happen once per call)."""
    from tiny import HostReads

    from harness.compat import STATIC_GENERATE_KWARGS, static_cache

    subject = load_subject()
    pairs = spread(default_pairs(), 3)
    seeds = {p.id: p.seeds(2) for p in pairs}
    arm = Intervention("kv+v_proj@27", kv_layers="all", patches=("v_proj@27",))
    ids = torch.tensor([[1] + [5] * 9] * 6)

    def reads(tokens: int) -> tuple[int, int]:
        runner = Runner(subject, decoding="static")
        runner.run_many(pairs, arm, short(CORRECTED, 1), seeds)  # clean caches and sources: not counted
        with HostReads() as harness:
            runner.run_many(pairs, arm, short(CORRECTED, tokens), seeds)
        with torch.no_grad(), HostReads() as bare:
            subject.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                   max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=3, eos_token_id=None,
                                   cache=static_cache(subject.layout.n_layers, 10 + tokens), **STATIC_GENERATE_KWARGS)
        return harness.count, bare.count

    (harness_4, bare_4), (harness_8, bare_8) = reads(4), reads(8)
    assert bare_8 > bare_4  # the count sees the library's own per-step read
    assert (harness_8 - harness_4) == (bare_8 - bare_4)


def test_an_unknown_decoding_is_refused_naming_the_choices():
    from harness.errors import HarnessValueError

    with pytest.raises(HarnessValueError, match="decoding 'graph'; expected one of dynamic, static, compiled"):
        Runner(load_subject(), decoding="graph")
