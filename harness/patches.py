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
    right). In ``decode``, each new slot receives the source's last position
    (``decode_source="last"``) or the mean of its last W positions (``"mean"``).
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
from typing import Any

import torch

from harness.errors import HarnessLookupError, HarnessValueError, did_you_mean
from harness.kv import cache_from_kwargs
from harness.sites import Site, hooked_tensor, parse_site, with_replaced

__all__ = [
    "PHASES",
    "MODES",
    "PatchSpec",
    "PatchCount",
    "PatchHandle",
    "PositionTracker",
    "install",
    "record",
    "source_site",
    "norm_matched_random",
]

PHASES = ("prefill", "decode")
MODES = ("corrected", "original")
DECODE_SOURCES = ("last", "mean")
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
                f"decode_source {self.decode_source!r}; expected 'last' or 'mean'"
            )
        if not isinstance(self.window, int) or self.window < 1:
            raise HarnessValueError(f"patch window {self.window!r}; expected a positive integer")


@dataclass(frozen=True)
class PatchCount:
    """What one patch did in one phase: calls seen and values actually changed."""

    site: str
    layer: int
    phase: str
    calls: int
    changed: int


def source_site(spec: PatchSpec) -> Site:
    """The site whose recorded activation feeds ``spec``.

    Under the original mode a ``resid_pre@L`` patch is fed from ``resid_post@L``,
    the off-by-one of the original scripts.
    """
    if spec.mode == "original" and spec.site.kind == "resid_pre":
        return Site("resid_post", spec.site.layer)
    return spec.site


class PositionTracker:
    """Records the cache slots ``[start, start + T)`` of the current forward call."""

    def __init__(self, model: Any) -> None:
        self._base = getattr(model, "model", model)
        self.start = 0
        self.length = 0
        self._handle: Any = None

    def _pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        cache = cache_from_kwargs(kwargs)
        self.start = int(cache.get_seq_length()) if cache is not None else 0
        self.length = int(ids.shape[1])

    def __enter__(self) -> PositionTracker:
        self._handle = self._base.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class PatchHandle:
    """One installed patch. Use as a context manager; counts live in :attr:`counts`.

    ``source`` is the recorded activation at :func:`source_site` of the source
    prompt, shape (len_src, d). ``prompt_len`` is the number of prompt slots P
    of the patched run.
    """

    def __init__(
        self,
        model: Any,
        layout: Any,
        spec: PatchSpec,
        source: torch.Tensor,
        prompt_len: int,
        tracker: PositionTracker,
    ) -> None:
        self.spec = spec
        self.resolved = layout.resolve(spec.site)
        if self.resolved.where not in ("output", "input"):
            raise HarnessValueError(f"site {spec.site} has no activation to patch")
        if source.dim() != 2:
            raise HarnessValueError(f"patch source must be (positions, d), got {tuple(source.shape)}")
        window = spec.window
        if spec.mode == "corrected" and "prefill" in spec.phases and prompt_len < window:
            raise HarnessValueError(
                f"prompt of {prompt_len} tokens is shorter than the patch window {window}; "
                "use longer prompts or a smaller window"
            )
        if source.shape[0] < window:
            raise HarnessValueError(
                f"source prompt of {source.shape[0]} tokens is shorter than the patch window "
                f"{window}; use a longer champion prompt or a smaller window"
            )
        self.source = source
        self.prompt_len = prompt_len
        self.tracker = tracker
        self._decode_row = source[-1] if spec.decode_source == "last" else source[-window:].mean(0)
        self._calls = dict.fromkeys(PHASES, 0)
        self._changed = dict.fromkeys(PHASES, 0)
        self._handle: Any = None

    # -- counting -------------------------------------------------------------
    @property
    def counts(self) -> tuple[PatchCount, ...]:
        return tuple(
            PatchCount(str(self.spec.site), self.resolved.layer, p, self._calls[p], self._changed[p])
            for p in PHASES
        )

    def changed(self, phase: str) -> int:
        return self._changed[phase]

    def _count_call(self, start: int, length: int) -> None:
        if start < self.prompt_len:
            self._calls["prefill"] += 1
        if start + length > self.prompt_len:
            self._calls["decode"] += 1

    # -- the edit -------------------------------------------------------------
    def _edit(self, x: torch.Tensor) -> torch.Tensor:
        """Return the patched copy of the hooked tensor x, shape (batch, T, d)."""
        start, length = self.tracker.start, x.shape[1]
        self._count_call(start, length)
        src = self.source.to(device=x.device, dtype=x.dtype)
        new = x.clone()
        window, P = self.spec.window, self.prompt_len
        if self.spec.mode == "original":
            if length >= window:
                new[:, -window:] = src[-window:]
        else:
            slots = torch.arange(start, start + length)
            if "prefill" in self.spec.phases:
                sel = (slots >= P - window) & (slots < P)
                if sel.any():
                    idx = (src.shape[0] - (P - slots[sel])).to(x.device)
                    new[:, sel.to(x.device)] = src[idx]
            if "decode" in self.spec.phases:
                sel = slots >= P
                if sel.any():
                    new[:, sel.to(x.device)] = self._decode_row.to(device=x.device, dtype=x.dtype)
        self._tally(x, new, start)
        return new

    def _tally(self, old: torch.Tensor, new: torch.Tensor, start: int) -> None:
        diff = (old != new).sum(dim=(0, 2))  # per position
        cut = max(0, min(old.shape[1], self.prompt_len - start))
        self._changed["prefill"] += int(diff[:cut].sum())
        self._changed["decode"] += int(diff[cut:].sum())

    def __enter__(self) -> PatchHandle:
        self._handle = _hook_activation(self.resolved, self._edit)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


@contextmanager
def install(
    model: Any,
    layout: Any,
    specs: Sequence[PatchSpec],
    sources: Mapping[PatchSpec, torch.Tensor],
    prompt_len: int,
) -> Iterator[list[PatchHandle]]:
    """Install every patch in ``specs`` (and one position tracker) for a ``with`` block.

    All hooks are removed when the block exits, also on an exception.
    """
    with ExitStack() as stack:
        tracker = stack.enter_context(PositionTracker(model))
        handles = [
            stack.enter_context(PatchHandle(model, layout, s, sources[s], prompt_len, tracker))
            for s in specs
        ]
        yield handles


def record(model: Any, layout: Any, input_ids: torch.Tensor, sites: Sequence[Site]) -> dict[Site, torch.Tensor]:
    """Run one forward pass over ``input_ids`` (1, T) and return each site's activation (T, d).

    Keys are the sites as given (layers as written); layers are mapped by the layout.
    """
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise HarnessValueError(f"record expects input_ids of shape (1, T), got {tuple(input_ids.shape)}")
    found: dict[Site, torch.Tensor] = {}
    with ExitStack() as stack:
        for site in dict.fromkeys(sites):
            resolved = layout.resolve(site)

            if resolved.where not in ("input", "output"):
                raise HarnessValueError(f"site {site} has no activation to record")

            def grab(x: torch.Tensor, _site: Site = site) -> None:
                found[_site] = x[0].detach().clone()

            handle = _hook_activation(resolved, grab)
            stack.callback(handle.remove)
        with torch.no_grad():
            model(input_ids=input_ids, use_cache=False)
    return found


def _hook_activation(resolved: Any, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Any:
    """Register the hook that shows ``fn`` the site's activation (batch, T, d); return its handle.

    A tensor returned by ``fn`` replaces the activation; None leaves it as it is.
    """
    where = resolved.where
    if where == "input":

        def pre_hook(module: Any, args: tuple, kwargs: dict) -> Any:
            new = fn(hooked_tensor(where, args, kwargs, None))
            return None if new is None else with_replaced(where, args, kwargs, None, new)

        return resolved.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(module: Any, args: tuple, output: Any) -> Any:
        new = fn(hooked_tensor(where, args, {}, output))
        return None if new is None else with_replaced(where, args, {}, output, new)

    return resolved.module.register_forward_hook(hook)


def norm_matched_random(source: torch.Tensor, seed: int) -> torch.Tensor:
    """Gaussian activations with each position's L2 norm equal to the source's, shape (T, d)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(source.shape, generator=gen, dtype=torch.float32)
    noise = noise / noise.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (noise * source.float().norm(dim=-1, keepdim=True)).to(source.dtype)
