"""The Llama-family layout: unfused q, k, v, o projections under ``model.layers``."""

from __future__ import annotations

from typing import Any

from harness.errors import UnsupportedModelError
from harness.layouts.base import Layout, get
from harness.sites import _LAYOUT_TEXT, SOURCE_DEPTH, _config_get

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
