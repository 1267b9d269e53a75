"""GPT-2: fused ``c_attn`` (Conv1D), absolute learned positions."""

from __future__ import annotations

from harness.layouts.base import Layout
from harness.sites import FusedPart

class GPT2Layout(Layout):
    """``transformer.h[L].attn.c_attn`` (Conv1D, output ``[q | k | v]`` of ``n_embd`` each),
    ``attn.c_proj``, ``mlp``; absolute learned positions (``transformer.wpe``), no rotary."""

    family = "GPT-2"
    blocks = "transformer.h"
    fused = "attn.c_attn"
    output_proj = "attn.c_proj"

    @property
    def num_kv_heads(self) -> int:
        return int(self.config.n_head)

    @property
    def head_dim(self) -> int:
        return int(self.config.n_embd) // int(self.config.n_head)

    def _value_part(self) -> FusedPart:
        d = int(self.config.n_embd)
        return FusedPart(groups=1, start=2 * d, stop=3 * d)
