"""Rotary position embeddings as a layout declares them, and moving cached keys between positions.

A cached key at position p is R(p) k: the model's rotation of the unrotated key k. Moving it
to position q is R(q) R(p)^-1, computed with the angle tables the model itself produced:
R(p) from a call over the sequence the keys came from (positions 0 .. len_s - 1), R(q) from
one over the sequence they go to (0 .. len_t - 1). For rope types whose frequencies are fixed
(default, linear, llama3, YaRN) both tables come from one frequency set and this is the plain
rotation by q - p. For LongRoPE the set depends on the sequence (long factors once it is
longer than ``original_max_position_embeddings``): keys prefilled beyond it carry the long
set, and only a move through both tables is exact. An attention factor (YaRN, LongRoPE)
scales cos and sin alike; dividing each table by its value at position 0 (cos 0 = factor)
leaves pure rotations, so the factor already in the cached keys is kept.

Dynamic NTK is stateful (a call over a longer sequence changes the module's frequencies for
later calls): its keys are moved only while every sequence stays within the original context,
where it is the default rope; beyond, :class:`Rope` refuses.

Pair conventions: ``half`` (Llama, GPT-NeoX, Phi: dims i and i + w/2 of the rotated width w
form a pair) or ``interleaved`` (Cohere: dims 2i and 2i + 1). Under a partial rotary
embedding only the first w dims of a head rotate; the rest carry no position and stay.
Tensor shapes: keys ``(batch, heads, seq, head_dim)``; tables ``(seq, w)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from harness.errors import HarnessValueError

__all__ = ["Rope", "as_rope", "rotate"]

STYLES = ("half", "interleaved")


def _rotate_pairs(x: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """The 90-degree turn of each pair: (a, b) -> (-b, a), in the layout's pair convention."""
    if interleaved:
        return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool = False) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` dims of ``x`` (..., seq, head_dim) by the tables (seq, w)."""
    width = cos.shape[-1]
    rot, rest = x[..., :width], x[..., width:]
    return torch.cat((rot * cos + _rotate_pairs(rot, interleaved) * sin, rest), dim=-1)


def _rope_type(module: Any, layer_type: str | None) -> str:
    kind = getattr(module, "rope_type", "default")
    if isinstance(kind, dict):
        kind = kind.get(layer_type, "default")
    return str(kind or "default")


@dataclass(frozen=True)
class Rope:
    """A model's rotary embedding per layer, as its layout declares it.

    ``modules[i]`` is layer i's rotary module (``module(x, position_ids[, layer_type]) ->
    (cos, sin)``, each ``(batch, seq, w)``), None where the layer has no rotary embedding (its
    keys carry no position: Cohere 2's global layers) and keys move unchanged; ``layer_types[i]`` the argument that selects
    layer i's frequencies in a module shared by layer types (None: the module takes none);
    ``style`` the pair convention (:data:`STYLES`).
    """

    modules: tuple[Any, ...]
    layer_types: tuple[str | None, ...]
    style: str = "half"

    def __post_init__(self) -> None:
        if len(self.modules) != len(self.layer_types) or not self.modules:
            raise HarnessValueError("a Rope needs one module and one layer type per layer, at least one layer")
        if self.style not in STYLES:
            raise HarnessValueError(f"rotary style {self.style!r}; expected one of {', '.join(STYLES)}")

    @classmethod
    def single(cls, module: Any, n_layers: int, style: str = "half") -> Rope:
        """One rotary module for every layer."""
        return cls(modules=(module,) * n_layers, layer_types=(None,) * n_layers, style=style)

    def _check_stateless(self, layer: int, length: int) -> None:
        module, layer_type = self.modules[layer], self.layer_types[layer]
        if module is not None and "dynamic" in _rope_type(module, layer_type):
            limit = int(getattr(module, "original_max_seq_len", 0) or 0)
            if length > limit:
                raise HarnessValueError(
                    f"rope_type 'dynamic': a sequence of {length} positions exceeds the original context "
                    f"of {limit}, where dynamic NTK recomputes its frequencies from the longest sequence "
                    "seen so far (stateful): keys cannot be moved exactly; keep sequences within it"
                )

    def tables(self, layer: int, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (length, w) in float32 of a call over positions 0 .. length - 1, as pure rotations."""
        self._check_stateless(layer, length)
        module, layer_type = self.modules[layer], self.layer_types[layer]
        inv_freq = getattr(module, "inv_freq", None)
        rope_device = inv_freq.device if isinstance(inv_freq, torch.Tensor) else device
        probe = torch.zeros(1, dtype=torch.float32, device=rope_device)
        positions = torch.arange(length, device=rope_device)[None]
        with torch.no_grad():
            cos, sin = module(probe, positions) if layer_type is None else module(probe, positions, layer_type)
        cos, sin = cos[0].float(), sin[0].float()
        width = cos.shape[-1]
        if width % 2:
            raise HarnessValueError(f"rotary embedding covers {width} dims; expected an even number")
        scale = cos[0]  # position 0: cos = attention factor, sin = 0
        return (cos / scale).to(device), (sin / scale).to(device)

    def move(self, keys: torch.Tensor, layer: int, len_s: int, len_t: int) -> torch.Tensor:
        """Keys of the last n slots of a ``len_s`` sequence, (batch, heads, n, head_dim), moved to the
        last n slots of a ``len_t`` one (a shift of ``len_t - len_s``). float32 math, keys' dtype out."""
        n = keys.shape[-2]
        if n == 0 or len_s == len_t or self.modules[layer] is None:  # the same tables, or no position
            return keys.clone()
        cos_s, sin_s = self.tables(layer, len_s, keys.device)
        cos_t, sin_t = self.tables(layer, len_t, keys.device)
        if cos_s.shape[-1] > keys.shape[-1]:
            raise HarnessValueError(
                f"rotary embedding covers {cos_s.shape[-1]} dims of a {keys.shape[-1]}-dim head; expected at "
                "most the head's"
            )
        interleaved = self.style == "interleaved"
        k32 = keys.float()
        # R(p)^-1 = R(-p): same cos, negated sin
        unrotated = rotate(k32, cos_s[len_s - n :], -sin_s[len_s - n :], interleaved)
        return rotate(unrotated, cos_t[len_t - n :], sin_t[len_t - n :], interleaved).to(keys.dtype)


def as_rope(rotary: Any, n_layers: int) -> Rope:
    """A :class:`Rope` from a layout's ``rope`` or a bare rotary module (half-split, one for all layers)."""
    if isinstance(rotary, Rope):
        if len(rotary.modules) != n_layers:
            raise HarnessValueError(f"the Rope covers {len(rotary.modules)} layers; the cache has {n_layers}")
        return rotary
    if isinstance(rotary, Sequence):
        raise HarnessValueError("rotary_emb must be a rotary module or a harness.rope.Rope")
    return Rope.single(rotary, n_layers)
