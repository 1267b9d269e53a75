"""Layout adapters: where each site lives in a loaded model, behind one interface.

The rest of the harness talks to a :class:`Layout` only: ``n_layers``, ``map``,
``resolve(site) -> ResolvedSite``, ``num_kv_heads``, ``head_dim``, ``positions``,
``rotary_emb`` and ``rope`` (None where positions are absolute; ``rope`` is the rotary
per layer with its pair style, see :mod:`harness.rope`) and ``stack_module``. One module
per family names its modules:

=========================  =====================================  ======================================
module                     v_proj site                            positions
=========================  =====================================  ======================================
``llama`` (and relatives)  ``self_attn.v_proj`` output            rotary: half-split, interleaved
                                                                  (Cohere), per layer type (Gemma 3)
``gpt2``                   V third of ``attn.c_attn`` (Conv1D)    absolute (learned ``wpe``)
``bigcode``                V part of ``attn.c_attn`` (MQA)        absolute (learned ``wpe``)
``opt``                    ``self_attn.v_proj`` output            absolute (learned, offset 2)
``neox``                   V of each head in ``query_key_value``  rotary, partial (``rotary_pct``)
``phi``                    V part of ``self_attn.qkv_proj``       rotary (``partial_rotary_factor``)
=========================  =====================================  ======================================

On a fused projection the ``v_proj`` site is the value slice of the fused output
(:class:`harness.sites.FusedPart`), laid out as an unfused ``v_proj`` output
(batch, T, kv_heads * head_dim), head-major; hooks read and replace only that slice.
The attention output (``attn_out``) is the output projection, ``mlp_out`` the MLP,
``resid_pre`` / ``resid_post`` the decoder block's input / output. No torch at module level.
"""

from __future__ import annotations

from typing import Any

from harness.layouts.base import Layout
from harness.layouts.bigcode import GPTBigCodeLayout
from harness.layouts.gpt2 import GPT2Layout
from harness.layouts.llama import Cohere2Layout, CohereLayout, LayerTypeRopeLayout, LlamaLayout, MixtralLayout, PhiLayout
from harness.layouts.neox import GPTNeoXLayout
from harness.layouts.opt import OPTLayout
from harness.layouts.phi import Phi3Layout
from harness.sites import SOURCE_DEPTH, _config_get, check_architecture

__all__ = ["Layout", "LlamaLayout", "GPT2Layout", "GPTNeoXLayout", "Phi3Layout", "LAYOUTS", "layout_for"]

#: The adapter of each model_type that differs from the plain Llama layout; every other supported
#: type uses :class:`LlamaLayout`.
LAYOUTS: dict[str, type[Layout]] = {
    "gpt2": GPT2Layout, "gpt_neox": GPTNeoXLayout, "phi3": Phi3Layout, "phi": PhiLayout,
    "cohere": CohereLayout, "cohere2": Cohere2Layout, "gemma3_text": LayerTypeRopeLayout,
    "olmo3": LayerTypeRopeLayout, "mixtral": MixtralLayout, "opt": OPTLayout, "gpt_bigcode": GPTBigCodeLayout,
}


def layout_for(model: Any, source_depth: int = SOURCE_DEPTH) -> Layout:
    """The adapter for a loaded model; refuses unsupported layouts (UnsupportedModelError)."""
    config = getattr(model, "config", {}) or {}
    check_architecture(config)
    cls = LAYOUTS.get(str(_config_get(config, "model_type")), LlamaLayout)
    return cls(model, source_depth=source_depth)
