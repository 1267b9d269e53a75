"""GPT-NeoX / Pythia: per-head fused ``query_key_value``, partial rotary."""

from __future__ import annotations

from harness.layouts.base import Layout
from harness.sites import FusedPart

class GPTNeoXLayout(Layout):
    """``gpt_neox.layers[L].attention.query_key_value`` (per head ``[q_h | k_h | v_h]``),
    ``attention.dense``, ``mlp``; rotary on the first ``rotary_pct`` of each head
    (``gpt_neox.rotary_emb`` returns cos/sin of that width)."""

    family = "GPT-NeoX"
    blocks = "gpt_neox.layers"
    rotary = "gpt_neox.rotary_emb"
    fused = "attention.query_key_value"
    output_proj = "attention.dense"

    @property
    def num_kv_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def head_dim(self) -> int:
        return int(self.config.hidden_size) // int(self.config.num_attention_heads)

    def _value_part(self) -> FusedPart:
        hd = self.head_dim
        return FusedPart(groups=self.num_kv_heads, start=2 * hd, stop=3 * hd)
