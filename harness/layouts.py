"""Layout adapters: where each site lives in a loaded model, behind one interface.

The rest of the harness talks to a :class:`Layout` only: ``n_layers``, ``map``,
``resolve(site) -> ResolvedSite``, ``num_kv_heads``, ``head_dim``, ``positions``
and ``rotary_emb`` (None where positions are absolute). A subclass names the
modules of one family:

====================  =====================================  ====================================
family                v_proj site                            positions
====================  =====================================  ====================================
Llama family          ``self_attn.v_proj`` output            rotary, ``model.model.rotary_emb``
GPT-2                 V third of ``attn.c_attn`` (Conv1D)    absolute (learned ``wpe``)
GPT-NeoX / Pythia     V of each head in ``query_key_value``  rotary, partial (``rotary_pct``)
Phi-3                 V part of ``self_attn.qkv_proj``       rotary (``partial_rotary_factor``)
====================  =====================================  ====================================

On a fused projection the ``v_proj`` site is the value slice of the fused output
(:class:`harness.sites.FusedPart`), laid out as an unfused ``v_proj`` output
(batch, T, kv_heads * head_dim), head-major; hooks read and replace only that slice.
The attention output (``attn_out``) is the output projection, ``mlp_out`` the MLP,
``resid_pre`` / ``resid_post`` the decoder block's input / output. No torch at module level.
"""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessValueError, UnsupportedModelError
from harness.sites import (
    _LAYOUT_TEXT,
    _WHERE,
    SOURCE_DEPTH,
    FusedPart,
    ResolvedSite,
    Site,
    _config_get,
    check_architecture,
    map_layer,
    parse_site,
)

__all__ = ["Layout", "LlamaLayout", "GPT2Layout", "GPTNeoXLayout", "Phi3Layout", "LAYOUTS", "layout_for"]


def _get(root: Any, path: str) -> Any:
    """``root.a.b.c`` for ``path="a.b.c"``; None when a link is missing."""
    for name in path.split("."):
        root = getattr(root, name, None)
        if root is None:
            return None
    return root


def _out_features(module: Any) -> int | None:
    """Output width of a Linear (``out_features``) or a GPT-2 Conv1D (``nf``)."""
    width = getattr(module, "out_features", None) or getattr(module, "nf", None)
    return int(width) if width is not None else None


class Layout:
    """Where the sites of one model family live. Subclasses set the class attributes.

    ``blocks``: dotted path from the causal LM to its decoder blocks; ``rotary``: path to
    the rotary embedding module (``rotary_emb(x, position_ids) -> (cos, sin)``), or ""
    for absolute positions. Inside a block: ``value`` (an unfused V projection) or
    ``fused`` (the fused QKV projection, with :meth:`_value_part`), ``output_proj`` (the
    attention output projection) and ``mlp``.
    """

    family = ""
    blocks = ""
    rotary = ""
    value = ""
    fused = ""
    output_proj = ""
    mlp = "mlp"

    def __init__(self, model: Any, source_depth: int = SOURCE_DEPTH) -> None:
        self.model = model
        self.config = model.config
        self.source_depth = source_depth
        model_type = _config_get(self.config, "model_type")
        layers = _get(model, self.blocks)
        if layers is None or len(layers) == 0 or (self.rotary and _get(model, self.rotary) is None):
            where = f"{self.blocks}" + (f" / {self.rotary}" if self.rotary else "")
            raise UnsupportedModelError(
                f"model (model_type {model_type!r}) has no {self._qualified(where)} for the "
                f"{self.family} layout; {_LAYOUT_TEXT}"
            )
        self.layers = layers
        wanted = [p for p in (self.value, self.fused, self.output_proj, self.mlp) if p]
        for i, block in enumerate(layers):
            missing = [p for p in wanted if _get(block, p) is None]
            if missing:
                raise UnsupportedModelError(
                    f"model (model_type {model_type!r}) layer {i} lacks {', '.join(missing)} for the "
                    f"{self.family} layout; {_LAYOUT_TEXT}"
                )
        if self.fused:
            part = self._value_part()
            width = _out_features(_get(layers[0], self.fused))
            # V is the last part of each group in every fused layout here: the width is exact.
            if width != part.groups * part.stop:
                raise UnsupportedModelError(
                    f"model (model_type {model_type!r}): {self.fused} has {width} outputs, not the "
                    f"{self.family} fused q, k, v of {self.num_kv_heads} KV heads of {self.head_dim}"
                )

    @staticmethod
    def _qualified(path: str) -> str:
        return "model." + path.replace(" / ", " / model.")

    # -- what the harness asks --------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def positions(self) -> str:
        """``"rotary"`` (keys rotated to their position, see :mod:`harness.kv`) or ``"absolute"``."""
        return "rotary" if self.rotary else "absolute"

    @property
    def rotary_emb(self) -> Any:
        """The rotary embedding, ``rotary_emb(x, position_ids) -> (cos, sin)``; None for absolute positions."""
        return _get(self.model, self.rotary) if self.rotary else None

    @property
    def num_kv_heads(self) -> int:
        cfg = self.config
        return int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)

    @property
    def head_dim(self) -> int:
        cfg = self.config
        return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)

    def map(self, layer: int) -> int:
        """Map a source-numbered layer to this model (see :func:`harness.sites.map_layer`)."""
        return map_layer(layer, self.n_layers, self.source_depth)

    def resolve(self, site: Site | str) -> ResolvedSite:
        """Bind ``site`` (a Site or ``"kind@layer"``) to this model's module."""
        site = parse_site(site) if isinstance(site, str) else site
        layer = self.map(site.layer)
        if not 0 <= layer < self.n_layers:  # map_layer guarantees this; keep the check cheap
            raise HarnessValueError(f"{site} maps to layer {layer}, outside 0..{self.n_layers - 1}")
        block = self.layers[layer]
        part = None
        if site.kind == "v_proj":
            module = _get(block, self.fused or self.value)
            part = self._value_part() if self.fused else None
        else:
            module = {
                "attn_out": _get(block, self.output_proj),
                "mlp_out": _get(block, self.mlp),
                "resid_post": block,
                "resid_pre": block,
                "kv": None,
            }[site.kind]
        head = None
        if site.head is not None:  # V's heads are the KV heads, head h at [h * hd, (h + 1) * hd)
            if site.head >= self.num_kv_heads:
                raise HarnessValueError(f"site {site}: head {site.head} of a model with {self.num_kv_heads} KV heads; "
                                        f"expected a head in 0..{self.num_kv_heads - 1}")
            head = (site.head * self.head_dim, (site.head + 1) * self.head_dim)
        return ResolvedSite(site=site, layer=layer, module=module, where=_WHERE[site.kind], part=part, head=head)

    def _value_part(self) -> FusedPart:
        """Where V lies in the fused projection's output (fused layouts only)."""
        raise NotImplementedError


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
            missing = [p for p in ("q_proj", "k_proj") if _get(block, f"self_attn.{p}") is None]
            if missing:
                raise UnsupportedModelError(
                    f"model (model_type {_config_get(self.config, 'model_type')!r}) layer {i} lacks "
                    f"self_attn.{{{','.join(missing)}}}; {_LAYOUT_TEXT}"
                )


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


#: The adapter of each fused model_type; every Llama-family type uses :class:`LlamaLayout`.
LAYOUTS: dict[str, type[Layout]] = {"gpt2": GPT2Layout, "gpt_neox": GPTNeoXLayout, "phi3": Phi3Layout}


def layout_for(model: Any, source_depth: int = SOURCE_DEPTH) -> Layout:
    """The adapter for a loaded model; refuses unsupported layouts (UnsupportedModelError)."""
    config = getattr(model, "config", {}) or {}
    check_architecture(config)
    cls = LAYOUTS.get(str(_config_get(config, "model_type")), LlamaLayout)
    return cls(model, source_depth=source_depth)
