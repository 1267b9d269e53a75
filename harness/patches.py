"""Persistent activation patches as handles that count what they change.

A patch overwrites the activation at one site with activations recorded from a
source prompt (the champion). It is a context manager: the hook is registered
on ``__enter__`` and removed in ``finally`` on ``__exit__``. Each handle counts,
per phase, the calls it saw and the number of values it actually changed, so a
patch that never modified anything is visible in its counts.

Phases are told apart by cache slot, not by call shape: the prompt occupies
slots ``[0, prompt_len)`` (``prefill``), generated tokens come after
(``decode``). A :class:`PositionTracker` on the base model records the slots of
each forward call, so the same patch behaves identically whether the model runs
with a KV cache (one slot per decoding call) or recomputes the whole sequence.

Two modes:

``corrected``
    In ``prefill``, prompt slot ``s`` in ``[P - W, P)`` receives the source's
    position ``len_src - (P - s)`` (the last W positions, aligned from the
    right). In ``decode``, each new slot receives the source's last prompt position
    (``decode_source="last"``), the mean of its last W prompt positions (``"mean"``),
    or, when the source also covers a continuation (``source_prompt_len`` shorter
    than the source), the source's activation at the same decoding step
    (``"aligned"``: the k-th generated slot receives source position
    ``source_prompt_len + k``).

A source is ``(positions, d)``, shared by every batch row, or ``(batch, positions, d)``,
one source per row.
``original``
    The original scripts' hook, reproduced exactly: if the hooked tensor has at
    least W positions, its last W positions are overwritten with the source's
    last W; otherwise nothing is written. The runner installs it after the
    prefill, so during one-token decoding steps it never writes. The residual
    variant is recorded from layer L's *output* (``resid_post``) and written
    into layer L's *input* (``resid_pre``): see :func:`source_site`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from harness.errors import HarnessLookupError, HarnessValueError, did_you_mean
from harness.compat import cache_from_kwargs
from harness.patch_rows import PHASES, RowGroup, _differs, _Group, _Packed
from harness.records import PatchCount
from harness.sites import Site, parse_site

__all__ = [
    "PHASES",
    "MODES",
    "PatchSpec",
    "PatchCount",
    "PatchHandle",
    "RowGroup",
    "PositionTracker",
    "install",
    "record",
    "source_site",
    "norm_matched_random",
]

MODES = ("corrected", "original")
DECODE_SOURCES = ("last", "mean", "aligned")
PATCHABLE = ("v_proj", "resid_pre", "resid_post", "attn_out", "mlp_out")


@dataclass(frozen=True)
class PatchSpec:
    """What to patch: a site (layer as written in the claim), phases, window, mode."""

    site: Site
    phases: tuple[str, ...] = PHASES
    window: int = 16
    decode_source: str = "last"
    mode: str = "corrected"

    def __post_init__(self) -> None:
        if isinstance(self.site, str):
            object.__setattr__(self, "site", parse_site(self.site))
        if self.site.kind not in PATCHABLE:
            raise HarnessValueError(
                f"site {self.site} cannot be patched; patchable kinds are {', '.join(PATCHABLE)} "
                "(kv@L is a splice layer, not a patch)"
            )
        for phase in self.phases:
            if phase not in PHASES:
                raise HarnessLookupError(
                    f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}."
                    + did_you_mean(phase, PHASES)
                )
        if self.mode not in MODES:
            raise HarnessLookupError(
                f"unknown patch mode {self.mode!r}; expected one of {', '.join(MODES)}."
                + did_you_mean(self.mode, MODES)
            )
        if self.decode_source not in DECODE_SOURCES:
            raise HarnessValueError(
                f"decode_source {self.decode_source!r}; expected one of {', '.join(DECODE_SOURCES)}"
            )
        if not isinstance(self.window, int) or self.window < 1:
            raise HarnessValueError(f"patch window {self.window!r}; expected a positive integer")


def source_site(spec: PatchSpec) -> Site:
    """The site whose recorded activation feeds ``spec``.

    Under the original mode a ``resid_pre@L`` patch is fed from ``resid_post@L``,
    the off-by-one of the original scripts.
    """
    if spec.mode == "original" and spec.site.kind == "resid_pre":
        return Site("resid_post", spec.site.layer)
    return spec.site


class PositionTracker:
    """Records the cache slots ``[start, start + T)`` of the current forward call: ``start`` a host
    integer, or a 0-d tensor on the device where the cache keeps its length there (static)."""

    def __init__(self, model: Any, stack: Any = None) -> None:
        # The decoder stack (model.model, transformer, gpt_neox): called with ids and cache. A
        # layout names it where the causal LM calls an inner module instead (OPT: model.decoder).
        self._base = stack or getattr(model, "base_model", None) or getattr(model, "model", model)
        self.start = 0
        self.length = 0
        self._handle: Any = None

    def _pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        cache = cache_from_kwargs(kwargs)
        seen = cache.get_seq_length() if cache is not None else 0
        # A static cache counts its length in a tensor on the device, which its layers advance in
        # place: a copy of it, so the patches compute positions without a host round trip.
        self.start = seen.clone() if isinstance(seen, torch.Tensor) else int(seen)
        self.length = int(ids.shape[1])

    def __enter__(self) -> PositionTracker:
        self._handle = self._base.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


_H = TypeVar("_H", bound="HookHandle")


class HookHandle:
    """The hook lifecycle every activation edit shares: ``with handle:`` installs its
    ``_edit`` on ``resolved`` (set by the subclass) and removes it on exit, also on an exception."""

    resolved: Any
    _handle: Any = None

    def _edit(self, x: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def __enter__(self: _H) -> _H:
        self._handle = _hook_activation(self.resolved, self._edit)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class PatchHandle(HookHandle):
    """One installed patch. Use as a context manager; counts live in :attr:`counts`.

    ``groups`` are the :class:`RowGroup` s of the batch (rows not in a group are left
    alone); positions are counted per group from its first prompt slot, so a batch of
    left-padded pairs behaves row for row as each pair run alone. Counts are kept per
    group (:meth:`group_counts`) and summed (:attr:`counts`).
    """

    def __init__(self, model: Any, layout: Any, spec: PatchSpec, groups: Sequence[RowGroup],
                 tracker: PositionTracker) -> None:
        self.spec = spec
        self.resolved = layout.resolve(spec.site)
        if self.resolved.where not in ("output", "input"):
            raise HarnessValueError(f"site {spec.site} has no activation to patch")
        if not groups:
            raise HarnessValueError(f"patch at {spec.site}: no rows to patch")
        self.groups = [_Group(spec, g) for g in groups]
        self.tracker = tracker
        self._handle: Any = None
        # One source prompt per group and a fixed decode row: the whole batch is patched
        # in a few tensor operations, with no host round trip (what a GPU needs).
        self._packable = spec.decode_source != "aligned" and all(not g.per_row for g in self.groups)
        self._packed: _Packed | None = None

    # -- counting -------------------------------------------------------------
    def _flush(self) -> None:
        if self._packed is not None:
            self._packed.flush_into(self.groups)

    def group_counts(self, index: int) -> tuple[PatchCount, ...]:
        self._flush()
        g = self.groups[index]
        return tuple(PatchCount(str(self.spec.site), self.resolved.layer, p, g.calls[p], g.changed[p])
                     for p in PHASES)

    @property
    def counts(self) -> tuple[PatchCount, ...]:
        self._flush()
        return tuple(
            PatchCount(str(self.spec.site), self.resolved.layer, p, sum(g.calls[p] for g in self.groups),
                       sum(g.changed[p] for g in self.groups))
            for p in PHASES
        )

    def changed(self, phase: str) -> int:
        self._flush()
        return sum(g.changed[phase] for g in self.groups)

    # -- the edit -------------------------------------------------------------
    def _edit(self, x: torch.Tensor) -> torch.Tensor:
        """Return the patched copy of the hooked tensor x, shape (batch, T, d)."""
        if self._packable:
            if self._packed is None or not self._packed.fits(x):
                self._flush()
                self._packed = _Packed(self.spec, self.groups, x)
            return self._packed.edit(x, self.tracker.start)
        new = x.clone()
        for g in self.groups:
            rows = g.g.rows
            new[rows] = self._edit_group(g, x[rows])
        return new

    def _edit_group(self, g: _Group, x: torch.Tensor) -> torch.Tensor:
        """One group at a time: for per-row and step-aligned sources (tests, small runs)."""
        window, P, S = self.spec.window, g.g.prompt_len, g.S
        start = int(self.tracker.start)  # this path reads positions on the host
        positions = torch.arange(start, start + x.shape[1]) - g.g.pad
        real = positions >= 0
        if bool((real & (positions < P)).any()):
            g.calls["prefill"] += 1
        if bool((positions >= P).any()):
            g.calls["decode"] += 1
        new = x.clone()
        prompt_src = self._on(g.prompt, x, per_row=g.prompt.dim() == 3)
        if self.spec.mode == "original":
            if x.shape[1] >= window:
                new[:, -window:] = prompt_src[..., S - window:S, :]
        else:
            if "prefill" in self.spec.phases:
                sel = real & (positions >= P - window) & (positions < P)
                if sel.any():
                    idx = (S - (P - positions[sel])).to(x.device)
                    new[:, sel.to(x.device)] = prompt_src[..., idx, :]
            if "decode" in self.spec.phases:
                sel = positions >= P
                if sel.any():
                    self._decode(g, x, new, sel, positions)
        diff = _differs(x, new).sum(dim=(0, 2)).cpu()  # per position
        g.changed["prefill"] += int(diff[positions < P].sum())
        g.changed["decode"] += int(diff[positions >= P].sum())
        return new

    def _decode(self, g: _Group, x: torch.Tensor, new: torch.Tensor, sel: torch.Tensor,
                positions: torch.Tensor) -> None:
        if self.spec.decode_source == "aligned":
            idx = g.S + (positions[sel] - g.g.prompt_len)
            src = self._on(g.g.source, x, per_row=g.per_row)
            if int(idx.max()) >= src.shape[-2]:
                raise HarnessValueError(
                    f"patch at {self.spec.site}: decoding position {int(positions[sel].max())} has no aligned "
                    f"source position (the source covers {src.shape[-2] - g.S} generated tokens)")
            new[:, sel.to(x.device)] = src[..., idx.to(x.device), :]
        else:
            row = self._on(g.decode_row, x, per_row=g.per_row)  # (d,) or (rows, d)
            new[:, sel.to(x.device)] = row.unsqueeze(-2) if g.per_row else row

    def _on(self, source: torch.Tensor, x: torch.Tensor, *, per_row: bool) -> torch.Tensor:
        """``source`` on x's device and dtype; a per-row source must match the group's rows."""
        if per_row and source.shape[0] != x.shape[0]:
            raise HarnessValueError(
                f"patch at {self.spec.site}: {source.shape[0]} per-row sources for {x.shape[0]} rows")
        return source.to(device=x.device, dtype=x.dtype)


@contextmanager
def install(
    model: Any,
    layout: Any,
    specs: Sequence[PatchSpec],
    sources: Mapping[PatchSpec, torch.Tensor | Sequence[RowGroup]],
    prompt_len: int | None = None,
    source_prompt_len: Mapping[PatchSpec, int] | None = None,
) -> Iterator[list[PatchHandle]]:
    """Install every patch in ``specs`` (and one position tracker) for a ``with`` block.

    ``sources[spec]`` is either a list of :class:`RowGroup` (a batch of pairs), or one
    source tensor for every row, with ``prompt_len`` and, per spec, ``source_prompt_len``
    (how many of the source's positions are its prompt; default all). All hooks are
    removed when the block exits, also on an exception.
    """
    lengths = source_prompt_len or {}

    def groups(spec: PatchSpec) -> Sequence[RowGroup]:
        given = sources[spec]
        if isinstance(given, torch.Tensor):
            if prompt_len is None:
                raise HarnessValueError("install: a single source tensor needs prompt_len")
            return [RowGroup(slice(None), 0, prompt_len, given, lengths.get(spec))]
        return given

    with ExitStack() as stack:
        tracker = stack.enter_context(PositionTracker(model, getattr(layout, "stack_module", None)))
        yield [stack.enter_context(PatchHandle(model, layout, s, groups(s), tracker)) for s in specs]


def record(model: Any, layout: Any, input_ids: torch.Tensor, sites: Sequence[Site], *,
           keep_batch: bool = False) -> dict[Site, torch.Tensor]:
    """Run one forward pass over ``input_ids`` and return each site's activation.

    ``input_ids`` (1, T) gives activations (T, d), one source for every row of
    :func:`install`; (B, T) with B > 1, or any B with ``keep_batch``, gives (B, T, d).
    Keys are the sites as given (layers as written); layers are mapped by the layout.
    """
    if input_ids.dim() != 2 or input_ids.shape[0] < 1:
        raise HarnessValueError(f"record expects input_ids of shape (B, T), got {tuple(input_ids.shape)}")
    batched = keep_batch or input_ids.shape[0] > 1
    found: dict[Site, torch.Tensor] = {}
    with ExitStack() as stack:
        for site in dict.fromkeys(sites):
            resolved = layout.resolve(site)

            if resolved.where not in ("input", "output"):
                raise HarnessValueError(f"site {site} has no activation to record")

            def grab(x: torch.Tensor, _site: Site = site) -> None:
                found[_site] = (x if batched else x[0]).detach().clone()

            handle = _hook_activation(resolved, grab)
            stack.callback(handle.remove)
        with torch.no_grad():
            model(input_ids=input_ids, use_cache=False)
    return found


def _hook_activation(resolved: Any, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Any:
    """Register the hook that shows ``fn`` the site's activation (batch, T, d); return its handle.

    A tensor returned by ``fn`` replaces the activation; None leaves it as it is. On a fused
    projection ``fn`` sees, and a replacement changes, only the site's slice (``resolved.part``).
    """
    if resolved.where == "input":

        def pre_hook(module: Any, args: tuple, kwargs: dict) -> Any:
            new = fn(resolved.tensor(args, kwargs, None))
            return None if new is None else resolved.replaced(args, kwargs, None, new)

        return resolved.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(module: Any, args: tuple, output: Any) -> Any:
        new = fn(resolved.tensor(args, {}, output))
        return None if new is None else resolved.replaced(args, {}, output, new)

    return resolved.module.register_forward_hook(hook)


def norm_matched_random(source: torch.Tensor, seed: int) -> torch.Tensor:
    """Gaussian activations with each position's L2 norm equal to the source's, shape (T, d)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(source.shape, generator=gen, dtype=torch.float32)
    noise = noise / noise.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (noise * source.float().norm(dim=-1, keepdim=True)).to(source.dtype)
