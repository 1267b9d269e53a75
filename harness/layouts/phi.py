"""Phi-3: fused ``qkv_proj`` with grouped-query attention, partial rotary."""

from __future__ import annotations

from harness.layouts.base import Layout
from harness.sites import FusedPart

class Phi3Layout(Layout):
    """``model.layers[L].self_attn.qkv_proj`` (output ``[q (heads * hd) | k (kv_heads * hd) |
    v (kv_heads * hd)]``), ``self_attn.o_proj``, ``mlp``; rotary, possibly partial
    (``partial_rotary_factor``: cos/sin cover the first part of each head)."""

    family = "Phi-3"
    blocks = "model.layers"
    rotary = "model.rotary_emb"
    fused = "self_attn.qkv_proj"
    output_proj = "self_attn.o_proj"

    def _value_part(self) -> FusedPart:
        hd, heads, kv = self.head_dim, int(self.config.num_attention_heads), self.num_kv_heads
        return FusedPart(groups=1, start=(heads + kv) * hd, stop=(heads + 2 * kv) * hd)
