"""OPT: unfused q, k, v, ``out_proj`` under ``model.decoder.layers``; the MLP is ``fc1`` then ``fc2``
(no module of its own, and the block flattens batch and positions into one dim before them,
so ``mlp_out`` has no (batch, T, d) tensor on OPT and is refused; every other site works).
Positions are learned, with an offset of 2 (``OPTLearnedPositionalEmbedding``), so they are
absolute: the corrected splice is ``left`` (every slot at the position it was computed at)."""

from __future__ import annotations

from harness.errors import HarnessValueError
from harness.layouts.base import Layout
from harness.sites import ResolvedSite, Site, parse_site

__all__ = ["OPTLayout"]


class OPTLayout(Layout):
    """``model.decoder.layers[L].self_attn.{v,out}_proj``, ``fc2``; absolute learned positions."""

    family = "OPT"
    blocks = "model.decoder.layers"
    value = "self_attn.v_proj"
    output_proj = "self_attn.out_proj"
    mlp = "fc2"
    stack = "model.decoder"  # OPTForCausalLM calls the decoder itself, not model.model

    def resolve(self, site: Site | str) -> ResolvedSite:
        site = parse_site(site) if isinstance(site, str) else site
        if site.kind == "mlp_out":
            raise HarnessValueError(
                f"site {site}: OPT has no MLP module (fc1 and fc2 act on batch and positions flattened "
                "into one dim), so mlp_out cannot be read or patched; use resid_post or attn_out"
            )
        return super().resolve(site)
