"""Version-agnostic KV-cache access, immutable snapshots, and the splice.

The harness works with :class:`KVSnapshot`, an immutable per-layer copy of a
cache, and turns it back into a fresh cache with :meth:`KVSnapshot.to_cache` for
each forward pass, so a pass that extends the cache never changes a snapshot. What
differs between transformers 4.x and 5.x (the forward argument and output field
of the cache, its layer objects) is in :mod:`harness.compat`.

Tensor shapes: keys and values per layer are ``(batch, n_kv_heads, seq, head_dim)``;
keys are stored *after* the rotary embedding, i.e. already rotated to their position.
Splices assume unpadded rows (or rows padded identically in target and source).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from harness.compat import cache_from_kwargs, cache_kwarg, cache_layers, new_cache, output_cache
from harness.errors import HarnessLookupError, HarnessValueError, did_you_mean
from harness.rope import as_rope
from harness.sites import rope_switch_text

__all__ = [
    "ALIGNMENTS",
    "KVSnapshot",
    "cache_kwarg",
    "output_cache",
    "cache_from_kwargs",
    "snapshot",
    "prefill",
    "check_rope_switch",
    "unpad",
    "resolve_layers",
    "splice",
    "rerotate_keys",
    "stack_left_padded",
]

ALIGNMENTS: tuple[str, ...] = ("right", "left", "right-rerotated")


@dataclass(frozen=True, eq=False)
class KVSnapshot:
    """An immutable copy of a KV cache.

    ``keys[i]`` and ``values[i]`` are layer i's tensors, shape
    ``(batch, n_kv_heads, seq, head_dim)``. Nothing in the harness writes into
    them: every consumer gets clones (see :meth:`to_cache`, :func:`splice`).
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.values) or not self.keys:
            raise HarnessValueError(
                f"a snapshot needs the same non-zero number of key and value layers, "
                f"got {len(self.keys)} and {len(self.values)}"
            )
        shape = tuple(self.keys[0].shape)
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            if k.dim() != 4 or tuple(k.shape[:3]) != shape[:3] or tuple(v.shape[:3]) != shape[:3]:
                raise HarnessValueError(
                    f"layer {i}: key {tuple(k.shape)} / value {tuple(v.shape)} do not match "
                    f"layer 0's (batch, n_kv_heads, seq, head_dim) = {shape}; sliding-window "
                    "or otherwise ragged caches are not supported"
                )

    @property
    def n_layers(self) -> int:
        return len(self.keys)

    @property
    def batch(self) -> int:
        return int(self.keys[0].shape[0])

    @property
    def n_kv_heads(self) -> int:
        return int(self.keys[0].shape[1])

    @property
    def seq_len(self) -> int:
        return int(self.keys[0].shape[2])

    @property
    def head_dim(self) -> int:
        return int(self.keys[0].shape[3])

    def to_cache(self, batch: int | None = None) -> Any:
        """A fresh DynamicCache holding clones of this snapshot.

        With ``batch`` given and a batch-1 snapshot, rows are repeated to ``batch``.
        The cache's layers are plain (full-attention) dynamic layers.
        """
        if batch is not None and batch != self.batch:
            if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
                raise HarnessValueError(f"batch must be a positive integer, got {batch!r}")
            if self.batch != 1:
                raise HarnessValueError(
                    f"cannot expand a snapshot of batch {self.batch} to batch {batch}; "
                    "only batch-1 snapshots are repeated"
                )
        rows = batch or self.batch

        def fresh(t: torch.Tensor) -> torch.Tensor:
            # expand() is a view; clone() makes contiguous storage the cache may own.
            return t.expand(rows, *t.shape[1:]).clone()

        cache = new_cache()
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            cache.update(fresh(k), fresh(v), i)
        return cache


def snapshot(cache: Any) -> KVSnapshot:
    """Clone a DynamicCache (either library version) or a legacy tuple into a snapshot."""
    if isinstance(cache, KVSnapshot):
        return cache
    pairs = cache_layers(cache)
    for i, (k, v) in enumerate(pairs):
        if not isinstance(k, torch.Tensor) or not isinstance(v, torch.Tensor):
            raise HarnessValueError(f"cache layer {i} is empty (no keys/values yet)")
    return KVSnapshot(
        keys=tuple(k.detach().clone() for k, _ in pairs),
        values=tuple(v.detach().clone() for _, v in pairs),
    )


def check_rope_switch(config: Any, length: int) -> None:
    """Refuse a run whose sequences reach ``length`` positions beyond a LongRoPE model's switch to
    its long factors: one prefill of one sequence is consistent on either side, but a batch of
    prompts on both sides, or a generation that crosses it, is not (see
    :func:`harness.sites.rope_switch_text`)."""
    text = rope_switch_text(config, length)
    if text is not None:
        raise HarnessValueError(text)


def prefill(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, KVSnapshot]:
    """One forward pass over a prompt.

    ``input_ids``: (batch, seq). Returns logits ``(batch, seq, vocab)`` and the
    snapshot of the cache it built. No gradients are recorded. The cache is a plain
    full-attention one, so a sliding-window model's cache is never cut to its window: the
    model's own sliding mask (built from the config for every forward pass) hides what lies
    beyond it, so attention is exactly that of the model's own windowed cache. Left-padded
    rows need their ``attention_mask`` and ``position_ids`` (see :func:`unpad`).
    """
    with torch.no_grad():
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=True, **{cache_kwarg(model): new_cache()})
    return outputs.logits, snapshot(output_cache(outputs))


def unpad(snap: KVSnapshot, row: int, start: int, stop: int | None = None) -> KVSnapshot:
    """Row ``row`` of a batched snapshot, slots ``start:stop`` only (its padding cut away)."""
    return KVSnapshot(keys=tuple(k[row : row + 1, :, start:stop].clone() for k in snap.keys),
                      values=tuple(v[row : row + 1, :, start:stop].clone() for v in snap.values))


def resolve_layers(layers: Any, n_layers: int) -> tuple[int, ...]:
    """Normalize a layer set: "all", a range, or ints (already mapped indices).

    Returns the sorted, de-duplicated indices. Raises HarnessValueError for an
    index outside ``0 .. n_layers - 1`` or a malformed value.
    """
    if isinstance(layers, str):
        if layers == "all":
            return tuple(range(n_layers))
        raise HarnessValueError(f"layers must be 'all', a range or a list of ints, got {layers!r}")
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = (layers,)
    if not isinstance(layers, (range, Sequence, set, frozenset)):
        raise HarnessValueError(f"layers must be 'all', a range or a list of ints, got {layers!r}")
    out = set()
    for layer in layers:
        if isinstance(layer, bool) or not hasattr(layer, "__index__"):
            raise HarnessValueError(f"layer {layer!r} is not an integer")
        index = int(layer.__index__())
        if not 0 <= index < n_layers:
            raise HarnessValueError(
                f"layer {index} is out of range: valid layers are 0..{n_layers - 1}"
            )
        out.add(index)
    return tuple(sorted(out))


def rerotate_keys(keys: torch.Tensor, shift: int, rotary_emb: Any, layer: int = 0, len_s: int | None = None,
                  n_layers: int | None = None) -> torch.Tensor:
    """Move rotated keys (batch, heads, seq, head_dim), the last slots of a ``len_s``-slot sequence
    (default: ``seq``), by ``shift`` positions.

    A key cached at position p is R(p) k; it becomes R(p + shift) k, with the angle tables of
    the sequence it came from and of the one it goes to (see :mod:`harness.rope`: exact for
    LongRoPE's sequence-dependent factor set, YaRN's attention factor, partial and interleaved
    rotary). ``rotary_emb``: a layout's ``rope`` (:class:`harness.rope.Rope`) or a bare rotary module.
    """
    len_s = keys.shape[-2] if len_s is None else len_s
    if shift == 0:
        return keys.clone()
    rope = as_rope(rotary_emb, n_layers if n_layers is not None else layer + 1)
    return rope.move(keys, layer, len_s, len_s + shift)


def splice(
    target: KVSnapshot,
    source: KVSnapshot,
    layers: Any,
    align: str,
    *,
    rotary_emb: Any = None,
    keep_first: int = 1,
) -> KVSnapshot:
    """Write the source's KV into the target's, for the given layers; return a new snapshot.

    The result has the target's length ``len_t``; layers outside ``layers`` (see
    :func:`resolve_layers`) are the target's tensors themselves (snapshots are never written
    into), and neither input is modified.
    Alignments, with ``len_s`` the source's length:

    - ``"right"`` (the original protocol's): ``n = min(len_t, len_s)``; the
      source's last n positions overwrite the target's last n slots. Neither BOS
      nor RoPE positions are handled: keys keep the rotation of their source
      positions, and when the source is longer, every target slot including BOS
      is overwritten.
    - ``"left"``: position-consistent for the overlapping prefix: the first
      ``n = min(len_t, len_s)`` slots come from the source (same positions, the
      source's BOS). When the target is longer, its slots n.. stay the target's.
    - ``"right-rerotated"``: right-aligned over the slots after the first
      ``keep_first`` (1: BOS; 0 for a model whose prompts start without BOS):
      ``n = min(len_t, len_s) - keep_first``; the source's last n positions go to the
      target's last n slots, keys re-rotated from their source positions to the
      new ones with the model's own rotary embedding (a rotation by
      ``len_t - len_s``), values copied; the target's first ``keep_first`` slots
      (BOS) are kept. With equal lengths the result is the source, but for
      those first slots.
      Needs ``rotary_emb`` (``Layout.rope``, or a bare rotary module; partial rotary
      embeddings move only the rotated dims; see :mod:`harness.rope`). Not for absolute positions (GPT-2): there a position is in
      the hidden states of every layer, not a rotation of the keys, so no key can be
      moved; use ``"left"``, which keeps every slot at its own position. Distances among the
      moved tokens, and from them to new tokens, are exact; their distance to
      BOS is not: beyond layer 0 their KV were computed with the source's own
      distance to BOS, so this is not a prefill of the source at shifted
      positions (it is, exactly, when BOS is masked out or the model has one layer).
    """
    if align not in ALIGNMENTS:
        raise HarnessLookupError(
            f"unknown alignment {align!r}; expected one of {', '.join(ALIGNMENTS)}."
            + did_you_mean(str(align), ALIGNMENTS)
        )
    if align == "right-rerotated" and rotary_emb is None:
        raise HarnessValueError(
            "alignment 'right-rerotated' needs the model's rotary embedding (pass "
            "rotary_emb=layout.rope); a model with absolute positions has none: use 'left'"
        )
    for name in ("n_layers", "batch", "n_kv_heads", "head_dim"):
        t, s = getattr(target, name), getattr(source, name)
        if t != s:
            raise HarnessValueError(f"cannot splice: target has {name}={t}, source has {name}={s}")
    if isinstance(keep_first, bool) or keep_first not in (0, 1):
        raise HarnessValueError(f"keep_first {keep_first!r}; expected 1 (keep BOS) or 0 (no BOS)")
    chosen = set(resolve_layers(layers, target.n_layers))
    rope = as_rope(rotary_emb, target.n_layers) if align == "right-rerotated" else None
    len_t, len_s = target.seq_len, source.seq_len
    n = min(len_t, len_s) - (keep_first if align == "right-rerotated" else 0)
    keys, values = [], []
    for i in range(target.n_layers):
        if i not in chosen or n <= 0:  # snapshots are never written into: share the target's
            keys.append(target.keys[i])
            values.append(target.values[i])
            continue
        k, v = target.keys[i].clone(), target.values[i].clone()
        sk, sv = source.keys[i], source.values[i]
        if align == "left":
            k[:, :, :n] = sk[:, :, :n].to(k.device, k.dtype)
            v[:, :, :n] = sv[:, :, :n].to(v.device, v.dtype)
        else:
            if align == "right-rerotated":
                sk = rope.move(sk[:, :, len_s - n :], i, len_s, len_t)
            k[:, :, len_t - n :] = sk[:, :, -n:].to(k.device, k.dtype)
            v[:, :, len_t - n :] = sv[:, :, len_s - n :].to(v.device, v.dtype)
        keys.append(k)
        values.append(v)
    return KVSnapshot(keys=tuple(keys), values=tuple(values))


def changed_values(before: KVSnapshot, after: KVSnapshot) -> int:
    """Key and value elements ``after`` holds that differ from ``before`` beyond rounding.

    Both snapshots have the same shapes (a splice keeps the target's). The tolerance is the
    patches' (harness/patch_rows.py): a splice that writes what the target already held (a
    prompt spliced into itself, or layers whose KV both prompts share) counts as no change.
    """
    total = 0
    for old, new in zip((*before.keys, *before.values), (*after.keys, *after.values)):
        if new is old:  # a layer the splice left alone shares the target's tensor
            continue
        tol = 1e-4 if old.dtype == torch.float32 else 1e-2
        total += int((~torch.isclose(new.float(), old.float(), rtol=tol, atol=tol)).sum())
    return total


def stack_left_padded(snapshots: Sequence[KVSnapshot], repeats: Sequence[int], length: int) -> KVSnapshot:
    """One snapshot of many: batch-1 snapshot i repeated ``repeats[i]`` times, each left-padded
    with zeros to ``length`` slots (the padded slots are masked out by the attention mask).

    Keys keep the rotation of their own positions, so with position ids counted from the
    attention mask each row computes what it would alone.
    """
    if len(snapshots) != len(repeats) or not snapshots:
        raise HarnessValueError("stack_left_padded: one repeat count per snapshot, at least one snapshot")
    first = snapshots[0]
    for snap in snapshots:
        if snap.batch != 1 or (snap.n_layers, snap.n_kv_heads, snap.head_dim) != (
                first.n_layers, first.n_kv_heads, first.head_dim):
            raise HarnessValueError("stack_left_padded: batch-1 snapshots of one model are needed")
        if snap.seq_len > length:
            raise HarnessValueError(f"stack_left_padded: a snapshot of {snap.seq_len} slots exceeds {length}")

    def stacked(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        rows = []
        for t, n in zip(tensors, repeats):
            pad = t.new_zeros(1, t.shape[1], length - t.shape[2], t.shape[3])
            rows.append(torch.cat([pad, t], dim=2).expand(n, -1, -1, -1))
        return torch.cat(rows, dim=0)

    return KVSnapshot(
        keys=tuple(stacked([s.keys[i] for s in snapshots]) for i in range(first.n_layers)),
        values=tuple(stacked([s.values[i] for s in snapshots]) for i in range(first.n_layers)),
    )
