"""The layout interface: where the sites of one model family live (see :mod:`harness.layouts`)."""

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
    map_layer,
    parse_site,
)

__all__ = ["Layout", "get", "out_features"]


def get(root: Any, path: str) -> Any:
    """``root.a.b.c`` for ``path="a.b.c"``; None when a link is missing."""
    for name in path.split("."):
        root = getattr(root, name, None)
        if root is None:
            return None
    return root


def out_features(module: Any) -> int | None:
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
    rotary_style = "half"
    stack = ""

    def __init__(self, model: Any, source_depth: int = SOURCE_DEPTH) -> None:
        self.model = model
        self.config = model.config
        self.source_depth = source_depth
        model_type = _config_get(self.config, "model_type")
        layers = get(model, self.blocks)
        if layers is None or len(layers) == 0 or (self.rotary and get(model, self.rotary) is None):
            where = f"{self.blocks}" + (f" / {self.rotary}" if self.rotary else "")
            raise UnsupportedModelError(
                f"model (model_type {model_type!r}) has no {self._qualified(where)} for the "
                f"{self.family} layout; {_LAYOUT_TEXT}"
            )
        self.layers = layers
        wanted = [p for p in (self.value, self.fused, self.output_proj, self.mlp) if p]
        for i, block in enumerate(layers):
            missing = [p for p in wanted if get(block, p) is None]
            if missing:
                raise UnsupportedModelError(
                    f"model (model_type {model_type!r}) layer {i} lacks {', '.join(missing)} for the "
                    f"{self.family} layout; {_LAYOUT_TEXT}"
                )
        if self.fused:
            part = self._value_part()
            width = out_features(get(layers[0], self.fused))
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
        return get(self.model, self.rotary) if self.rotary else None

    @property
    def stack_module(self) -> Any:
        """The decoder stack the causal LM calls with ids and cache, where it is not the base model
        (``stack`` names it; None: the base model, see :class:`harness.patches.PositionTracker`)."""
        return get(self.model, self.stack) if self.stack else None

    @property
    def rope(self) -> Any:
        """The rotary embedding per layer as :mod:`harness.rope` moves keys with it
        (:class:`harness.rope.Rope`: modules, layer types, pair style); None for absolute positions."""
        if not self.rotary:
            return None
        from harness.rope import Rope  # torch: only once a model is loaded

        return Rope.single(self.rotary_emb, self.n_layers, style=self.rotary_style)

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
            module = get(block, self.fused or self.value)
            part = self._value_part() if self.fused else None
        else:
            module = {
                "attn_out": get(block, self.output_proj),
                "mlp_out": get(block, self.mlp),
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
