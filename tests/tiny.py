"""Tiny random-weight causal LMs for the harness's own tests (no weights downloaded).

Each builder returns ``(model, config)`` in eval mode, float32, eager attention,
with a fixed seed, so two calls give identical weights. Token id ``BOS`` (1) is
the beginning-of-sequence token; prompts in tests start with it.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

BOS = 1
VOCAB = 96

# Grouped-query attention (4 query heads share 2 KV heads), big enough to make
# wrong splices visible, small enough for a forward pass in milliseconds.
_COMMON: dict[str, Any] = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    bos_token_id=BOS,
    eos_token_id=2,
    pad_token_id=0,
    # Larger than the library default (0.02) so activations and logits differ
    # clearly between prompts: a wrong splice must move the logits past tolerance.
    initializer_range=0.1,
    tie_word_embeddings=False,
    attn_implementation="eager",
)


def _build(config_cls: type, model_cls: type, seed: int, _common: bool = True, **overrides: Any) -> tuple[Any, Any]:
    config = config_cls(**({**_COMMON, **overrides} if _common else overrides))
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32).eval()
    return model, config


def tiny_mistral(seed: int = 0, **overrides: Any) -> tuple[MistralForCausalLM, MistralConfig]:
    """A 4-layer Mistral with grouped-query attention."""
    return _build(MistralConfig, MistralForCausalLM, seed, **overrides)


def tiny_llama_gqa(seed: int = 0, **overrides: Any) -> tuple[LlamaForCausalLM, LlamaConfig]:
    """A 4-layer Llama with grouped-query attention (4 heads, 2 KV heads)."""
    return _build(LlamaConfig, LlamaForCausalLM, seed, **overrides)


def tiny_qwen2(seed: int = 0, **overrides: Any) -> tuple[Qwen2ForCausalLM, Qwen2Config]:
    """A 4-layer Qwen2 (biased QKV projections) with grouped-query attention."""
    return _build(Qwen2Config, Qwen2ForCausalLM, seed, **overrides)


# Fused-QKV families, each in its own config vocabulary (GPT-2 has no KV heads of its own;
# a stray num_key_value_heads would only confuse). 4 heads of 16 dims, so a partial rotary
# embedding still rotates two frequency pairs.
_FUSED_COMMON: dict[str, Any] = dict(vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=2, pad_token_id=0,
                                     initializer_range=0.1, tie_word_embeddings=False,
                                     attn_implementation="eager")


def tiny_gpt2(seed: int = 0, **overrides: Any) -> tuple[GPT2LMHeadModel, GPT2Config]:
    """A 4-layer GPT-2: fused ``c_attn`` (Conv1D), absolute learned positions."""
    sizes = dict(n_embd=64, n_inner=128, n_layer=4, n_head=4, n_positions=128)
    return _build(GPT2Config, GPT2LMHeadModel, seed, **{**_FUSED_COMMON, **sizes, **overrides}, _common=False)


def tiny_neox(seed: int = 0, **overrides: Any) -> tuple[GPTNeoXForCausalLM, GPTNeoXConfig]:
    """A 4-layer GPT-NeoX: per-head fused ``query_key_value``, rotary on a quarter of each head."""
    sizes = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 max_position_embeddings=128, rotary_pct=0.25, use_parallel_residual=True)
    return _build(GPTNeoXConfig, GPTNeoXForCausalLM, seed, **{**_FUSED_COMMON, **sizes, **overrides},
                  _common=False)


def tiny_phi3(seed: int = 0, **overrides: Any) -> tuple[Phi3ForCausalLM, Phi3Config]:
    """A 4-layer Phi-3: fused ``qkv_proj`` with grouped-query attention (4 heads, 2 KV heads),
    rotary on three quarters of each head (``partial_rotary_factor``, as Phi-4-mini)."""
    sizes = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128, partial_rotary_factor=0.75)
    return _build(Phi3Config, Phi3ForCausalLM, seed, **{**_FUSED_COMMON, **sizes, **overrides}, _common=False)


# --------------------------------------------------------------------------- subjects
# Tiny random models that speak the toy's vocabulary, so the runner can drive them with
# the bundled bank: the machinery's identities must hold on more than one architecture.

TOY_IDS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=3)


@functools.lru_cache(maxsize=None)
def toy_tokenizer(bos: bool = True) -> Any:
    """The toy's tokenizer; with ``bos=False`` one that adds no BOS and has none."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from harness.toy import TOY_MODEL_DIR

    if bos:
        return AutoTokenizer.from_pretrained(TOY_MODEL_DIR)
    backend = Tokenizer.from_file(str(TOY_MODEL_DIR / "tokenizer.json"))
    backend.post_processor = None
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def tiny_subject(builder: Any, *, bos: bool = True, seed: int = 0, **overrides: Any) -> Any:
    """A :class:`harness.model.Subject` around a tiny random model with the toy's vocabulary."""
    from harness.model import Subject
    from harness.layouts import layout_for

    tokenizer = toy_tokenizer(bos)
    ids = dict(TOY_IDS, bos_token_id=TOY_IDS["bos_token_id"] if bos else None)
    model, _ = builder(seed=seed, vocab_size=len(tokenizer), **{**ids, **overrides})
    return Subject(name=f"tiny-{builder.__name__}", model=model, tokenizer=tokenizer,
                   layout=layout_for(model), weights_hash="0" * 64, tokenizer_hash="0" * 64,
                   device="cpu", dtype="float32")


def save_tiny(builder: Any, folder: Any, **overrides: Any) -> Any:
    """A tiny random model speaking the toy's vocabulary, saved with the toy's tokenizer as a
    user's ``--model`` folder (safetensors). Returns the folder."""
    tokenizer = toy_tokenizer(True)
    model, _ = builder(vocab_size=len(tokenizer), **{**TOY_IDS, **overrides})
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


#: Llama 3's RoPE frequency scaling (rope_type "llama3"), on a short original context so it acts.
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}


# --------------------------------------------------------------------------- arms
# The finding's arms as the harness's own tests use them (the claims suite has its own copy
# in claims/finding.py: the library does not know the finding).
from harness.records import Intervention  # noqa: E402

KV_ONLY = Intervention("kv-only", kv_layers="all")
L27_V = Intervention("kv+v_proj@27", kv_layers="all", patches=("v_proj@27",))
RELAY = Intervention("kv+resid_pre@18+v_proj@27", kv_layers="all", patches=("resid_pre@18", "v_proj@27"))
WRONG_LAYER_V = Intervention("kv+v_proj@5", kv_layers="all", patches=("v_proj@5",))
NOTHING = Intervention("no intervention")


def random_prompt(length: int, seed: int) -> torch.Tensor:
    """(1, length) token ids starting with BOS; other tokens avoid the special ids 0..2."""
    gen = torch.Generator().manual_seed(seed)
    body = torch.randint(3, VOCAB, (1, length - 1), generator=gen)
    return torch.cat([torch.tensor([[BOS]]), body], dim=1)


def claims_finding() -> Any:
    """The claims suite's finding module (claims/finding.py: markers, metrics, FINDING), imported
    as pytest's collection of claims/ imports it (its folder on the path, module ``finding``)."""
    import importlib
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parent.parent / "claims")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("finding")


# --------------------------------------------------------------------------- runs in a subprocess
#: The harness's plugin is opt-in: a pytest started outside this repository's rootdir names it.
OPT_IN = ("-p", "harness.plugin")


def opt_in(folder: Any) -> Any:
    """Make ``folder`` a project that opts in to the plugin as the README says: a rootdir
    ``conftest.py`` declaring it. Returns the folder."""
    from pathlib import Path

    (Path(folder) / "conftest.py").write_text('pytest_plugins = ["harness.plugin"]\n')
    return folder


#: A claim test module for pytester runs: KV alone "moves R_V by more than -100" (always supported
#: when the experiment is sound), under both protocols. A geometry shift is judged by the t
#: interval, which decides at 2 pairs; no claim judged by the bounded rule can be decided there.
CLAIM_FILE = """
import pytest
from harness.claims import Claim, GeometryShift, Source
from harness.records import Intervention

CLAIM = Claim(id="kv-only-transfers", statement="KV alone transfers.", source=Source("test", "quote"),
              measure=GeometryShift(Intervention("kv-only", kv_layers="all")), threshold=-100.0,
              direction="above")

@pytest.mark.parametrize("protocol", ["original", "corrected"])
def test_claim(verify, protocol):
    verify(CLAIM, protocol)
"""
#: The smallest run that still measures something: 2 pairs x 2 seeds x 5 tokens.
SMALL = ("-p", "no:cacheprovider", "--pairs", "2", "--seeds", "2", "--gen-tokens", "5")


# --------------------------------------------------------------------------- more families
# One tiny model per family of the Llama layout's relatives, in _COMMON's sizes (4 heads of 8,
# 2 KV heads) plus what makes the family itself: its MoE router, multipliers, partial or
# interleaved rotary, layer types. Built by name from transformers, so a family missing from an
# older library line is skipped by the test that asks for it.
_HEAD_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
FAMILY_CONFIGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),
    # linear scaling reaches only the full-attention layers (sliding ones keep the default rope), so
    # a layer given the other type's rotary module moves its keys wrongly, under both library lines
    "olmo3": ("Olmo3Config", "Olmo3ForCausalLM", dict(layer_types=_HEAD_TYPES, sliding_window=4096,
                                                       rope_scaling={"rope_type": "linear", "factor": 4.0})),
    "granite": ("GraniteConfig", "GraniteForCausalLM",
                dict(embedding_multiplier=6.0, residual_multiplier=0.5, attention_multiplier=0.2, logits_scaling=2.0)),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(num_local_experts=4, num_experts_per_tok=2)),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM",
                  dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1,
                       mlp_only_layers=[], head_dim=8)),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", dict(partial_rotary_factor=0.5)),
    "phi": ("PhiConfig", "PhiForCausalLM", dict(partial_rotary_factor=0.5)),
    "cohere": ("CohereConfig", "CohereForCausalLM", dict(logit_scale=1.0)),
    "cohere2": ("Cohere2Config", "Cohere2ForCausalLM",
                dict(logit_scale=1.0, layer_types=_HEAD_TYPES, sliding_window=4096)),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM",
                    dict(head_dim=8, layer_types=_HEAD_TYPES, sliding_window=4096, query_pre_attn_scalar=8)),
}


#: Families with absolute positions, in their own config vocabulary (no stray KV-head count).
ABSOLUTE_CONFIGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "opt": ("OPTConfig", "OPTForCausalLM",
            dict(hidden_size=32, word_embed_proj_dim=32, ffn_dim=64, num_hidden_layers=4, num_attention_heads=4,
                 max_position_embeddings=128, init_std=0.1)),
    "gpt_bigcode": ("GPTBigCodeConfig", "GPTBigCodeForCausalLM",
                    dict(n_embd=64, n_inner=128, n_layer=4, n_head=4, n_positions=128, multi_query=True)),
}


def family_builder(name: str) -> Any:
    """The tiny builder of one family of :data:`FAMILY_CONFIGS` or :data:`ABSOLUTE_CONFIGS` (same call
    as :func:`tiny_mistral`)."""
    import transformers

    absolute = name in ABSOLUTE_CONFIGS
    config_name, model_name, extra = (ABSOLUTE_CONFIGS if absolute else FAMILY_CONFIGS)[name]

    def build(seed: int = 0, **overrides: Any) -> tuple[Any, Any]:
        if absolute:
            return _build(getattr(transformers, config_name), getattr(transformers, model_name), seed,
                          _common=False, **{**_FUSED_COMMON, **extra, **overrides})
        return _build(getattr(transformers, config_name), getattr(transformers, model_name), seed,
                      **{**extra, **overrides})

    build.__name__ = f"tiny_{name}"
    return build


class HostReads:
    """Counts the tensor values read back to the host inside a ``with`` block (``.item()``,
    ``int()``, ``bool()`` of a tensor: each is one ``aten._local_scalar_dense``), the round trips
    that make a GPU wait and that a captured or compiled step cannot hold."""

    def __enter__(self) -> "HostReads":
        from torch.utils._python_dispatch import TorchDispatchMode

        outer = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default:
                    outer.count += 1
                return func(*args, **(kwargs or {}))

        self.count = 0
        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)


def changed_by_group(x: torch.Tensor, out: torch.Tensor, start: int, groups: Any) -> list[dict[str, int]]:
    """Values a hook changed in one call, per row group and phase, recomputed from its input ``x``
    and output ``out`` (batch, T, d): ``groups`` have ``rows``, ``pad`` and ``prompt_len``; an
    element counts when it moved beyond float32 rounding (1e-4), as the hooks count."""
    moved = ~torch.isclose(out, x, rtol=1e-4, atol=1e-4)
    counts = []
    for g in groups:
        by_phase = {"prefill": 0, "decode": 0}
        for row in range(x.shape[0])[g.rows]:
            for t in range(x.shape[1]):
                phase = "prefill" if start + t - g.pad < g.prompt_len else "decode"
                by_phase[phase] += int(moved[row, t].sum())
        counts.append(by_phase)
    return counts
