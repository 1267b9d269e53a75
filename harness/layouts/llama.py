"""The Llama-family layout: unfused q, k, v, o projections under ``model.layers``, and the
families that share it with a difference the layout declares:

- rotary on interleaved pairs (Cohere, Cohere 2; Cohere 2's global layers have none),
- one rotary module with per-layer-type frequencies (Gemma 3 and OLMo 3 under transformers 5:
  ``rotary_emb(x, positions, layer_type)``; Gemma 3 under 4.x: ``rotary_emb_local`` for its
  sliding layers),
- the MLP under another name (Mixtral's ``block_sparse_moe`` under 4.x), the attention output
  named ``dense`` (Phi-2).

Everything else these families do differently (OLMo's q/k norms, Granite's multipliers,
StableLM's and Phi-2's partial rotary, mixture-of-experts MLPs) happens inside modules whose
outputs are the sites, or before the keys are cached, and needs nothing here.
"""

from __future__ import annotations

import inspect
from typing import Any

from harness.errors import UnsupportedModelError
from harness.layouts.base import Layout, get
from harness.sites import _LAYOUT_TEXT, SOURCE_DEPTH, _config_get

__all__ = ["LlamaLayout", "CohereLayout", "Cohere2Layout", "LayerTypeRopeLayout", "MixtralLayout", "PhiLayout"]


class LlamaLayout(Layout):
    """``model.model.layers[L].self_attn.{v,o}_proj``, ``.mlp``, ``model.model.rotary_emb``."""

    family = "Llama-family"
    blocks = "model.layers"
    rotary = "model.rotary_emb"
    value = "self_attn.v_proj"
    output_proj = "self_attn.o_proj"

    def __init__(self, model: Any, source_depth: int = SOURCE_DEPTH) -> None:
        super().__init__(model, source_depth)
        for i, block in enumerate(self.layers):  # q and k too: a fused model must not pass as Llama
            missing = [p for p in ("q_proj", "k_proj") if get(block, f"self_attn.{p}") is None]
            if missing:
                raise UnsupportedModelError(
                    f"model (model_type {_config_get(self.config, 'model_type')!r}) layer {i} lacks "
                    f"self_attn.{{{','.join(missing)}}}; {_LAYOUT_TEXT}"
                )


class CohereLayout(LlamaLayout):
    """Cohere (Command R): rotary on interleaved pairs (dims 2i, 2i + 1)."""

    family = "Cohere"
    rotary_style = "interleaved"


class Cohere2Layout(CohereLayout):
    """Cohere 2 (Command R7B, Command A): interleaved rotary on its sliding-window layers only;
    its global layers use no positions (their keys move unchanged)."""

    family = "Cohere 2"

    @property
    def rope(self) -> Any:
        from harness.rope import Rope

        types = list(_config_get(self.config, "layer_types") or [])
        if len(types) != self.n_layers:
            raise UnsupportedModelError(
                f"model (model_type 'cohere2'): config.layer_types names {len(types)} layers, not "
                f"{self.n_layers}; the layout cannot tell which layers are rotated"
            )
        modules = tuple(self.rotary_emb if t == "sliding_attention" else None for t in types)
        return Rope(modules=modules, layer_types=(None,) * self.n_layers, style=self.rotary_style)


def _takes_layer_type(module: Any) -> bool:
    try:
        return "layer_type" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # a forward without a signature: treat as a plain module
        return False


class LayerTypeRopeLayout(LlamaLayout):
    """Gemma 3 and OLMo 3: each layer's type (``config.layer_types``: ``sliding_attention`` or
    ``full_attention``) has its own rope frequencies (Gemma 3: base 10k local, 1M global)."""

    family = "per-layer-type rope"

    def __init__(self, model: Any, source_depth: int = SOURCE_DEPTH) -> None:
        # OLMo 3 under transformers 4.x: one rotary module per layer type, ``model.rotary_embs``.
        if get(model, self.rotary) is None and get(model, "model.rotary_embs") is not None:
            self.rotary = "model.rotary_embs"
        super().__init__(model, source_depth)

    @property
    def rope(self) -> Any:
        from harness.rope import Rope

        types = tuple(_config_get(self.config, "layer_types") or ())
        module = self.rotary_emb
        if self.rotary == "model.rotary_embs":  # a module per layer type, keyed by the type
            if len(types) != self.n_layers or any(t not in module for t in types):
                raise UnsupportedModelError(
                    f"model (model_type {_config_get(self.config, 'model_type')!r}): config.layer_types "
                    f"{list(types)} do not name one rotary module per layer (it has {list(module)})")
            return Rope(modules=tuple(module[t] for t in types), layer_types=(None,) * self.n_layers,
                        style=self.rotary_style)
        if len(types) != self.n_layers:
            return Rope.single(module, self.n_layers, style=self.rotary_style)
        if _takes_layer_type(module):  # one module, frequencies chosen per call by layer type
            return Rope(modules=(module,) * self.n_layers, layer_types=types, style=self.rotary_style)
        local = get(self.model, "model.rotary_emb_local")  # Gemma 3 under transformers 4.x
        modules = tuple(local if (local is not None and t == "sliding_attention") else module for t in types)
        return Rope(modules=modules, layer_types=(None,) * self.n_layers, style=self.rotary_style)


class MixtralLayout(LlamaLayout):
    """Mixtral: the MoE block is ``mlp`` (transformers 5) or ``block_sparse_moe`` (4.x)."""

    family = "Mixtral"

    def __init__(self, model: Any, source_depth: int = SOURCE_DEPTH) -> None:
        first = get(model, f"{self.blocks}.0")
        if first is not None and get(first, "mlp") is None and get(first, "block_sparse_moe") is not None:
            self.mlp = "block_sparse_moe"
        super().__init__(model, source_depth)


class PhiLayout(LlamaLayout):
    """Phi-1/1.5/2 (model_type ``phi``): unfused q, k, v, the attention output is ``self_attn.dense``,
    partial rotary (``partial_rotary_factor``)."""

    family = "Phi-2"
    output_proj = "self_attn.dense"
