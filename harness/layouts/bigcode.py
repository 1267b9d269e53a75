"""GPT-BigCode (SantaCoder, StarCoder 1): fused ``attn.c_attn`` (a Linear), absolute learned positions.

With multi-query attention (``multi_query``, the usual case) the fused output is
``[q (heads * hd) | k (hd) | v (hd)]``, one KV head; without it, one group ``[q_h | k_h | v_h]``
per head, as GPT-NeoX lays it out."""

from __future__ import annotations

from harness.layouts.base import Layout
from harness.sites import FusedPart

__all__ = ["GPTBigCodeLayout"]


class GPTBigCodeLayout(Layout):
    """``transformer.h[L].attn.c_attn``, ``attn.c_proj``, ``mlp``; absolute learned positions (``wpe``)."""

    family = "GPT-BigCode"
    blocks = "transformer.h"
    fused = "attn.c_attn"
    output_proj = "attn.c_proj"

    @property
    def num_kv_heads(self) -> int:
        return 1 if self.config.multi_query else int(self.config.n_head)

    @property
    def head_dim(self) -> int:
        return int(self.config.n_embd) // int(self.config.n_head)

    def _value_part(self) -> FusedPart:
        hd, d = self.head_dim, int(self.config.n_embd)
        if self.config.multi_query:
            return FusedPart(groups=1, start=d + hd, stop=d + 2 * hd)
        return FusedPart(groups=int(self.config.n_head), start=2 * hd, stop=3 * hd)
