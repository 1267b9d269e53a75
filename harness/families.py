"""Model families: which ``model_type`` values the harness supports, fuses or refuses, and why.

The architecture check and the rope checks read a model's config alone (a transformers
``PretrainedConfig`` or the dict of a ``config.json``), before any weights load, so this
module must not import torch at module level. :mod:`harness.sites` re-exports its names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.errors import UnsupportedModelError

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "FUSED_MODEL_TYPES",
    "check_architecture",
    "sliding_window_of",
    "rope_switch_of",
    "rope_switch_text",
]

#: model_type values whose layout is ``model.model.layers[L].self_attn.{q,k,v,o}_proj``,
#: ``.mlp`` and ``model.model.rotary_emb``.
SUPPORTED_MODEL_TYPES: tuple[str, ...] = (
    "cohere", "cohere2", "gemma", "gemma2", "gemma3_text", "granite", "llama", "mistral", "mixtral", "olmo2",
    "olmo3", "opt", "phi", "qwen2", "qwen3", "qwen3_moe", "stablelm",
)

#: model_type values with a fused QKV projection that a layout in :mod:`harness.layouts`
#: slices (``v_proj`` is the value part of the fused output), with the fused module.
FUSED_MODEL_TYPES: dict[str, str] = {
    "gpt2": "attn.c_attn",
    "gpt_neox": "attention.query_key_value",
    "phi3": "self_attn.qkv_proj",
    "gpt_bigcode": "attn.c_attn",
}

# Known fused layouts we still refuse, with the reason shown to the user: no adapter
# knows where their value slice lies (or, for some, how their caches are laid out).
_FUSED_QKV: dict[str, str] = {
    "dbrx": "attn.Wqkv",
    "chatglm": "self_attention.query_key_value",
}

_NO_POSITION_IDS = (
    "an ALiBi model whose forward takes no position_ids, which the runner passes for its "
    "left-padded batches"
)
_INTERLEAVED_INSIDE = (
    "rotary on interleaved pairs applied inside its attention, with no rotary module under "
    "transformers 4.x (and sin before cos at half width under 5.x), so no layout can move its keys "
    "on both library lines"
)
# Families refused for a reason of their own (named in the one-line refusal).
_REFUSED: dict[str, str] = {
    "falcon": (
        "its fused QKV projection (self_attention.query_key_value) comes in three layouts "
        "(multi-query, grouped new_decoder_architecture, per head) and its positions in two (rotary, "
        "ALiBi): no layout adapter knows them yet"
    ),
    "bloom": f"{_NO_POSITION_IDS} (fused QKV self_attention.query_key_value)",
    "mpt": f"{_NO_POSITION_IDS} (fused QKV attn.Wqkv)",
    "gptj": _INTERLEAVED_INSIDE,
    "codegen": f"{_INTERLEAVED_INSIDE} (and a fused QKV qkv_proj in mp_num shards)",
}

_LAYOUT_TEXT = (
    "supported: Llama-family layout model.model.layers[L].self_attn.{q,k,v,o}_proj, .mlp, "
    "model.model.rotary_emb (model_type one of " + ", ".join(SUPPORTED_MODEL_TYPES) + "), "
    "and the fused-QKV layouts of " + ", ".join(FUSED_MODEL_TYPES)
)


def _config_get(config: Any, key: str) -> Any:
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def sliding_window_of(config: Any) -> int | None:
    """The attention window of a model config (object or dict), or None when it attends to
    every position. A config that names a window but disables it (Qwen2's
    ``use_sliding_window`` false) has none."""
    window = _config_get(config, "sliding_window")
    if _config_get(config, "use_sliding_window") is False:
        return None
    return int(window) if window else None


def rope_switch_of(config: Any) -> int | None:
    """The length beyond which a LongRoPE model rotates a whole sequence with its long factor set
    (``original_max_position_embeddings``), or None when its rope does not switch."""
    from harness.compat import rope_settings

    for params in rope_settings(config):
        if params["rope_type"] in ("longrope", "su"):  # "su": the name in early Phi-3 files
            limit = params.get("original_max_position_embeddings") or _config_get(
                config, "original_max_position_embeddings") or _config_get(config, "max_position_embeddings")
            return int(limit) if limit else None
    return None


def rope_switch_text(config: Any, total: int) -> str | None:
    """Why ``total`` positions are refused on a LongRoPE model, or None when they are fine."""
    limit = rope_switch_of(config)
    if limit is None or total <= limit:
        return None
    return (
        f"rope_type 'longrope': {total} positions exceed original_max_position_embeddings {limit}, "
        "where LongRoPE rotates the whole sequence with its long factors, so batched prompts of "
        "both sides and a generation that crosses it hold keys of two frequency sets (not what a "
        f"recomputation gives); use prompts and --gen-tokens that total at most {limit} positions"
    )


def check_architecture(config: Any) -> None:
    """Refuse a model whose layout the harness cannot hook, from its config alone.

    ``config`` is a transformers ``PretrainedConfig`` or the dict of a
    ``config.json``; no weights are needed. Raises UnsupportedModelError with a
    one-line message naming the model_type, the reason, and the supported layouts.
    """
    model_type = _config_get(config, "model_type")
    if model_type in SUPPORTED_MODEL_TYPES:
        return
    if model_type in FUSED_MODEL_TYPES:
        if _config_get(config, "add_cross_attention"):
            # GPT-2 with cross-attention wraps its cache in an encoder-decoder cache: not a
            # decoder-only causal LM, and its cache is not the layout harness.kv splices.
            raise UnsupportedModelError(
                f"model_type {model_type!r} with add_cross_attention is not supported: only "
                f"decoder-only causal LMs are; {_LAYOUT_TEXT}"
            )
        return
    if not model_type:
        raise UnsupportedModelError(f"model config has no model_type; {_LAYOUT_TEXT}")
    reason = _REFUSED.get(str(model_type))
    if reason is not None:
        raise UnsupportedModelError(f"model_type {model_type!r} is not supported: {reason}; {_LAYOUT_TEXT}")
    fused = _FUSED_QKV.get(str(model_type))
    if fused is not None:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported: its attention uses a fused QKV "
            f"projection ({fused}) whose value slice no layout adapter knows; {_LAYOUT_TEXT}"
        )
    raise UnsupportedModelError(
        f"model_type {model_type!r} is not supported: its module layout is not a known "
        f"Llama-family layout; {_LAYOUT_TEXT}"
    )
