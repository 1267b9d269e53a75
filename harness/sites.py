"""Site names, layer mapping and the module-layout adapter.

A *site* is a named place in a model, written ``kind@layer`` (``v_proj@27``,
``resid_pre@18``). Layers are written as in the source finding, which was made
on a 32-layer model, and are mapped to the subject's depth by :func:`map_layer`.

This module must not import torch at module level: :func:`parse_site`,
:func:`map_layer` and :func:`check_architecture` validate user input (and a
model's ``config.json``) before any weights are loaded. The model-family tables and
the config checks are in :mod:`harness.families`, the adapters that bind sites to a
loaded model's modules in :mod:`harness.layouts` (both re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessLookupError, HarnessValueError, did_you_mean

# The model-family tables and the config checks, re-exported from their own module.
from harness.families import (
    _LAYOUT_TEXT,
    FUSED_MODEL_TYPES,
    SUPPORTED_MODEL_TYPES,
    _config_get,
    check_architecture,
    rope_switch_of,
    rope_switch_text,
    sliding_window_of,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = [
    "SITE_KINDS",
    "SOURCE_DEPTH",
    "SUPPORTED_MODEL_TYPES",
    "FUSED_MODEL_TYPES",
    "Site",
    "FusedPart",
    "ResolvedSite",
    "Layout",
    "LlamaLayout",
    "parse_site",
    "map_layer",
    "check_architecture",
    "sliding_window_of",
    "rope_switch_of",
    "rope_switch_text",
    "layout_for",
    "hooked_tensor",
    "with_replaced",
]

SITE_KINDS: tuple[str, ...] = ("v_proj", "resid_pre", "resid_post", "attn_out", "mlp_out", "kv")
#: Kinds with one slice per attention head (``v_proj@27.h3``: KV head 3's values).
HEAD_KINDS: tuple[str, ...] = ("v_proj",)

#: Depth of the model the findings were written for (Mistral-7B: 32 layers).
SOURCE_DEPTH = 32


# Where a site's tensor is read/written: a forward hook on the module ("output"),
# a forward pre-hook with kwargs on the decoder layer ("input"), or the KV cache ("cache").
_WHERE = {
    "v_proj": "output",
    "attn_out": "output",
    "mlp_out": "output",
    "resid_post": "output",
    "resid_pre": "input",
    "kv": "cache",
}


@dataclass(frozen=True)
class Site:
    """A named place in a model; ``layer`` is in source-finding (32-layer) numbering."""

    kind: str
    layer: int
    #: One attention head's slice of the site (``v_proj@27.h3``: head 3's values); None: all.
    head: int | None = None

    def __post_init__(self) -> None:
        if self.head is not None and (isinstance(self.head, bool) or not isinstance(self.head, int)
                                      or self.head < 0 or self.kind not in HEAD_KINDS):
            raise HarnessValueError(f"site {self.kind}@{self.layer} head {self.head!r}: a head is an integer "
                                    f">= 0, on {', '.join(HEAD_KINDS)} sites only (e.g. 'v_proj@27.h3')")
        if self.kind not in SITE_KINDS:
            raise HarnessLookupError(
                f"unknown site kind {self.kind!r}; expected one of {', '.join(SITE_KINDS)}."
                + did_you_mean(str(self.kind), SITE_KINDS)
            )
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise HarnessValueError(f"site layer must be an integer >= 0, got {self.layer!r}")

    def __str__(self) -> str:
        return f"{self.kind}@{self.layer}" + (f".h{self.head}" if self.head is not None else "")


def parse_site(text: str) -> Site:
    """Parse ``"kind@layer"`` (e.g. ``"v_proj@27"``, case-insensitive kind) into a :class:`Site`.

    Raises HarnessLookupError for an unknown kind (with a did-you-mean hint) and
    HarnessValueError for malformed text. The layer's range against the source
    depth is checked by :func:`map_layer`, not here.
    """
    if isinstance(text, Site):
        return text
    if not isinstance(text, str):
        raise HarnessValueError(f"a site must be a string like 'v_proj@27', got {text!r}")
    kind, sep, layer_text = text.strip().partition("@")
    # Findings write sites in capitals ("V_PROJ at layer 27"): kinds are case-insensitive.
    kind, layer_text = kind.strip().lower(), layer_text.strip()
    if not sep or not kind or not layer_text:
        raise HarnessValueError(f"malformed site {text!r}; expected 'kind@layer', e.g. 'v_proj@27'")
    if kind not in SITE_KINDS:
        raise HarnessLookupError(
            f"unknown site kind {kind!r} in {text!r}; expected one of {', '.join(SITE_KINDS)}."
            + did_you_mean(kind, SITE_KINDS)
        )
    layer_text, dot, head_text = layer_text.partition(".")
    head = None
    if dot:  # "27.h3": one head of the site
        if not head_text.lower().startswith("h") or not head_text[1:].isdigit():
            raise HarnessValueError(f"malformed head {head_text!r} in site {text!r}; expected e.g. 'v_proj@27.h3'")
        head = int(head_text[1:])
    if not layer_text.isdigit():
        raise HarnessValueError(
            f"malformed layer {layer_text!r} in site {text!r}; expected a non-negative integer"
        )
    return Site(kind, int(layer_text), head)


def map_layer(layer: int, n_layers: int, source_depth: int = SOURCE_DEPTH) -> int:
    """Map a layer index of a ``source_depth``-layer model onto an ``n_layers`` model.

    Identity when ``n_layers == source_depth``. Otherwise relative depth:
    ``round(layer * (n_layers - 1) / (source_depth - 1))``, so the first layer maps
    to 0 and the last (31 of 32) to ``n_layers - 1``; e.g. 27 of 32 on a 16-layer
    model -> 13, 18 of 32 -> 9. Halves round up (computed exactly in integers);
    with ``source_depth == 32`` no halves occur, so this equals Python's ``round``.

    Raises HarnessValueError for a layer outside ``0 .. source_depth - 1``.
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise HarnessValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    if isinstance(source_depth, bool) or not isinstance(source_depth, int) or source_depth < 1:
        raise HarnessValueError(f"source_depth must be a positive integer, got {source_depth!r}")
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < source_depth:
        raise HarnessValueError(
            f"layer {layer!r} is out of range: valid layers are 0..{source_depth - 1} "
            f"(written for a {source_depth}-layer model)"
        )
    if n_layers == source_depth:
        return layer
    if source_depth == 1:
        return 0
    num, den = layer * (n_layers - 1), source_depth - 1
    return (2 * num + den) // (2 * den)  # floor(num/den + 1/2), exact



@dataclass(frozen=True)
class FusedPart:
    """One part (e.g. the values) of a fused projection's output, as a view of its last dim.

    The fused output's last dim is read as ``(groups, width)`` and the part is
    ``[start, stop)`` of each group, concatenated over groups: GPT-2's ``c_attn``
    (``[q | k | v]``) is one group of ``3d`` with v at ``[2d, 3d)``; GPT-NeoX's
    ``query_key_value`` is one group per head, ``[q_h | k_h | v_h]`` of ``3 * head_dim``
    each; Phi-3's ``qkv_proj`` is one group ``[q | k | v]`` with grouped-query k and v.
    So the part of an output (batch, T, groups * width) is (batch, T, groups * (stop - start)),
    head h's values at ``[h * head_dim, (h + 1) * head_dim)`` as from an unfused ``v_proj``.
    """

    groups: int
    start: int
    stop: int

    def read(self, fused: torch.Tensor) -> torch.Tensor:
        """The part of ``fused`` (..., groups * width): (..., groups * (stop - start)); may be a view."""
        lead = fused.shape[:-1]
        grouped = fused.reshape(*lead, self.groups, fused.shape[-1] // self.groups)
        return grouped[..., self.start : self.stop].reshape(*lead, self.groups * (self.stop - self.start))

    def write(self, fused: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        """A copy of ``fused`` with the part replaced by ``part`` (shape as :meth:`read` gives)."""
        lead = fused.shape[:-1]
        new = fused.clone()
        grouped = new.view(*lead, self.groups, fused.shape[-1] // self.groups)
        grouped[..., self.start : self.stop] = part.reshape(*lead, self.groups, self.stop - self.start)
        return new


@dataclass(frozen=True)
class ResolvedSite:
    """A site bound to a loaded model.

    ``layer`` is the mapped index in the subject. ``where`` says how to reach the
    tensor: "output" (forward hook on ``module``; the output is a tensor, or a
    tuple whose [0] is the hidden states), "input" (forward pre-hook with kwargs on
    the decoder layer; hidden states are ``args[0]`` or ``kwargs["hidden_states"]``),
    or "cache" (the layer's KV cache entry; ``module`` is None).

    ``part``, for an "output" site on a fused projection, is the slice of the module's
    output that is the site (the values of a fused QKV); None: the whole output.
    """

    site: Site
    layer: int
    module: Any  # torch.nn.Module | None; typed loosely so torch is not imported
    where: str
    part: FusedPart | None = None
    #: ``[start, stop)`` of one head in the site's features (after ``part``); None: every feature.
    head: tuple[int, int] | None = None

    def __str__(self) -> str:
        return f"{self.site} (layer {self.layer})"

    def tensor(self, args: tuple, kwargs: dict, output: Any) -> torch.Tensor:
        """The site's tensor inside a hook on ``module``, (batch, T, features)."""
        x = hooked_tensor(self.where, args, kwargs, output)
        x = x if self.part is None else self.part.read(x)
        return x if self.head is None else x[..., self.head[0] : self.head[1]]

    def replaced(self, args: tuple, kwargs: dict, output: Any, new: torch.Tensor) -> Any:
        """What the hook returns to replace the site's tensor with ``new`` (see :func:`with_replaced`);
        on a fused projection only the part changes, the rest of its output is kept."""
        if self.head is not None:  # the head's slice into the site's features, the other heads kept
            whole = hooked_tensor(self.where, args, kwargs, output)
            whole = (whole if self.part is None else self.part.read(whole)).clone()
            whole[..., self.head[0] : self.head[1]] = new
            new = whole
        if self.part is not None:
            new = self.part.write(hooked_tensor(self.where, args, kwargs, output), new)
        return with_replaced(self.where, args, kwargs, output, new)


def _check_where(where: str) -> None:
    if where == "cache":
        raise HarnessValueError("a 'cache' site (kv@L) has no hooked tensor; use harness.kv")
    if where not in ("output", "input"):
        raise HarnessLookupError(
            f"unknown hook position {where!r}; expected 'output' or 'input'."
            + did_you_mean(str(where), ("output", "input"))
        )


def hooked_tensor(where: str, args: tuple, kwargs: dict, output: Any) -> torch.Tensor:
    """The site's tensor inside a hook, shape (batch, seq, features).

    ``where="output"``: ``output`` itself, or ``output[0]`` when the module returns
    a tuple (older decoder layers). ``where="input"``: ``kwargs["hidden_states"]``
    when passed by keyword, else ``args[0]``. ``output`` is ignored for "input".
    """
    _check_where(where)
    if where == "output":
        return output if not isinstance(output, (tuple, list)) else output[0]
    if kwargs and "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    return args[0]


def with_replaced(where: str, args: tuple, kwargs: dict, output: Any, new_tensor: Any) -> Any:
    """What a hook returns to replace the site's tensor with ``new_tensor``.

    ``where="output"`` -> the new output (same container type as ``output``: a
    tensor, or a tuple/list with [0] replaced), for a forward hook to return.
    ``where="input"`` -> ``(args, kwargs)``, for a forward pre-hook registered
    with ``with_kwargs=True`` to return. Inputs are not mutated.
    """
    _check_where(where)
    if where == "output":
        if isinstance(output, tuple):
            return (new_tensor, *output[1:])
        if isinstance(output, list):
            return [new_tensor, *output[1:]]
        return new_tensor
    kwargs = dict(kwargs or {})
    if "hidden_states" in kwargs:
        kwargs["hidden_states"] = new_tensor
        return tuple(args), kwargs
    return (new_tensor, *tuple(args)[1:]), kwargs


def __getattr__(name: str) -> Any:
    # The adapters live in harness.layouts (which imports this module); they are
    # re-exported lazily so ``from harness.sites import LlamaLayout`` keeps working.
    if name in ("Layout", "LlamaLayout", "GPT2Layout", "GPTNeoXLayout", "Phi3Layout", "layout_for"):
        from harness import layouts

        return getattr(layouts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
