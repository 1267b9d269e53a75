"""Row groups of a patched batch: which rows share a source, and the batch-wide edit.

A batch of left-padded pairs is patched pair by pair: each pair's rows form a
:class:`RowGroup` with its padding, prompt length and source. :class:`_Group` checks one
group against its patch and keeps its counts; :class:`_Packed` applies every group of a
patch in a few tensor operations on the activation's device, counting the values it
changed per group and phase on the device (read out on demand), so a GPU never waits
for the host between decoding steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from harness.errors import HarnessValueError

if TYPE_CHECKING:  # typing only: patches imports this module
    from harness.patches import PatchSpec

__all__ = ["RowGroup", "PHASES", "PhaseTally"]

PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class RowGroup:
    """The rows of a batch that share one source prompt: typically one pair's seeds.

    ``rows`` selects them in the batch; they carry ``pad`` left-padding slots, then
    ``prompt_len`` prompt positions (P), then generated ones. ``source`` is the
    recorded activation at :func:`source_site` of the source prompt, (T, d), or
    (n_rows, T, d) for one source per row; its first ``source_prompt_len`` positions
    (S, default all) are the source's prompt, the rest its continuation (for
    ``decode_source="aligned"``).
    """

    rows: slice
    pad: int
    prompt_len: int
    source: torch.Tensor
    source_prompt_len: int | None = None


def _same_rows(prompt: torch.Tensor) -> bool:
    """Whether every row of ``prompt`` (rows, S, d) is row 0's, to the rounding of its dtype.

    Equal bits for most models; a mixture-of-experts layer (Mixtral, Qwen3-MoE) gathers each
    expert's tokens across the batch, so the same prompt in another row can differ in its last
    bits (a few ulps): still one prompt."""
    if bool((prompt == prompt[:1]).all()):
        return True
    if not prompt.is_floating_point():
        return False
    scale = float(prompt[:1].abs().max()) or 1.0
    return bool(((prompt - prompt[:1]).abs() <= 64 * torch.finfo(prompt.dtype).eps * scale).all())


class _Group:
    """A row group checked against its patch, with its own counts."""

    def __init__(self, spec: PatchSpec, group: RowGroup) -> None:
        source, window = group.source, spec.window
        if source.dim() not in (2, 3):
            raise HarnessValueError(
                f"patch source must be (positions, d) or (batch, positions, d), got {tuple(source.shape)}")
        S = source.shape[-2] if group.source_prompt_len is None else int(group.source_prompt_len)
        if not 0 < S <= source.shape[-2]:
            raise HarnessValueError(
                f"source_prompt_len {group.source_prompt_len}; expected 1..{source.shape[-2]} (the source's positions)")
        if spec.mode == "corrected" and "prefill" in spec.phases and group.prompt_len < window:
            raise HarnessValueError(f"prompt of {group.prompt_len} tokens is shorter than the patch window "
                                    f"{window}; use longer prompts or a smaller window")
        if S < window:
            raise HarnessValueError(f"source prompt of {S} tokens is shorter than the patch window {window}; "
                                    "use a longer champion prompt or a smaller window")
        if spec.decode_source == "aligned" and S == source.shape[-2] and "decode" in spec.phases:
            raise HarnessValueError("decode_source 'aligned' needs a source that covers a continuation: pass "
                                    "source_prompt_len shorter than the source")
        prompt = source[..., :S, :]
        if prompt.dim() == 3 and _same_rows(prompt):
            # One prompt under every row (only the continuations differ): a prefill run
            # once at batch 1, before the rows are expanded, takes it as it is.
            prompt = prompt[0]
        self.g, self.S, self.prompt = group, S, prompt
        self.per_row = source.dim() == 3
        full = source[..., :S, :]
        self.decode_row = full[..., -1, :] if spec.decode_source == "last" else full[..., -window:, :].mean(-2)
        self.calls = dict.fromkeys(PHASES, 0)
        self.changed = dict.fromkeys(PHASES, 0)


class _Packed:
    """Every group of a patch as batch tensors on the activation's device.

    ``window`` holds each group's last W source prompt positions (W = the patch window),
    ``decode`` its decoding row; ``group`` maps each batch row to its group (-1: none).
    Values changed are counted on the device per group and phase, read out on demand.
    """

    def __init__(self, spec: PatchSpec, groups: Sequence[_Group], x: torch.Tensor) -> None:
        batch, device, W = x.shape[0], x.device, spec.window
        self.spec, self.batch, self.device, self.dtype = spec, batch, device, x.dtype
        group = torch.full((batch,), -1, dtype=torch.long)
        pad, prompt = torch.zeros(batch, dtype=torch.long), torch.zeros(batch, dtype=torch.long)
        for i, g in enumerate(groups):
            rows = range(batch)[g.g.rows]
            if len(rows) == 0 or bool((group[list(rows)] >= 0).any()):
                raise HarnessValueError(f"patch at {spec.site}: row groups must be disjoint and non-empty")
            group[list(rows)], pad[list(rows)], prompt[list(rows)] = i, g.g.pad, g.g.prompt_len
        self.group, self.pad, self.prompt = group.to(device), pad.to(device), prompt.to(device)
        self.window = torch.stack([g.prompt[g.S - W:g.S] for g in groups]).to(device, x.dtype)  # (G, W, d)
        self.decode = torch.stack([g.decode_row for g in groups]).to(device, x.dtype)  # (G, d)
        self.tally = PhaseTally(group, len(groups), device)

    def fits(self, x: torch.Tensor) -> bool:
        return (x.shape[0], x.device, x.dtype) == (self.batch, self.device, self.dtype)

    def edit(self, x: torch.Tensor, start: int | torch.Tensor) -> torch.Tensor:
        """``start``: the first cache slot of this call, a host integer or a 0-d tensor on the
        device (a static cache's length: read without a host round trip)."""
        W, T = self.spec.window, x.shape[1]
        ingroup = self.group >= 0
        g = self.group.clamp(min=0)
        pos = start + torch.arange(T, device=x.device)[None, :] - self.pad[:, None]  # (B, T) row positions
        P = self.prompt[:, None]
        new = x
        if self.spec.mode == "original":
            if T >= W:
                tail = torch.where(ingroup[:, None, None], self.window[g], x[:, -W:])
                new = torch.cat([x[:, : T - W], tail], dim=1)
        else:
            if "prefill" in self.spec.phases:
                sel = ingroup[:, None] & (pos >= P - W) & (pos < P)
                idx = (W - (P - pos)).clamp(0, W - 1)
                new = torch.where(sel[..., None], self.window[g[:, None], idx], new)
            if "decode" in self.spec.phases:
                sel = ingroup[:, None] & (pos >= P)
                new = torch.where(sel[..., None], self.decode[g][:, None, :], new)
        self.tally.add(x, new, pos, P)
        return new

    def flush_into(self, groups: Sequence[_Group]) -> None:
        self.tally.drain_into([g.calls for g in groups], [g.changed for g in groups])


class PhaseTally:
    """Per row group and phase, the calls that reached it and the values a hook changed, kept
    on the activation's device and read out on demand: no host round trip per call.

    ``group`` maps each batch row to its group (-1: none). A call reaches a group's phase when
    one of its positions is in it (prefill: 0 <= pos < P; decode: pos >= P); the rows of a
    group share their positions, so its first row stands for it.
    """

    def __init__(self, group: torch.Tensor, n_groups: int, device: torch.device) -> None:
        first = [int((group == i).nonzero()[0]) for i in range(n_groups)]
        # Per row, laid out once: the group index (rows outside any group add to group 0 times 0).
        self.index = group.clamp(min=0).to(device)
        self.ingroup = (group >= 0).to(device)[:, None]
        self.first = torch.tensor(first, dtype=torch.long, device=device)
        self.calls = torch.zeros(n_groups, 2, dtype=torch.long, device=device)
        self.changed = torch.zeros(n_groups, 2, dtype=torch.long, device=device)

    def add(self, old: torch.Tensor, new: torch.Tensor, pos: torch.Tensor, P: torch.Tensor) -> None:
        """One call: ``pos`` (B, T) each row's positions, ``P`` (B, 1) its prompt length."""
        reached = torch.stack([((pos >= 0) & (pos < P)).any(1), (pos >= P).any(1)], dim=1)  # (B, 2)
        self.calls += reached[self.first].long()
        diff = _differs(old, new).sum(-1)  # (B, T) values changed per row and position
        by_phase = torch.stack([(diff * (pos < P)).sum(1), (diff * (pos >= P)).sum(1)], dim=1)  # (B, 2)
        self.changed.index_add_(0, self.index, by_phase * self.ingroup)

    def drain_into(self, calls: Sequence[dict[str, int]], changed: Sequence[dict[str, int]]) -> None:
        """Add the calls and changed values since the last drain to each group's counts by phase
        (``calls[i]``, ``changed[i]``: group i's), then start again from zero."""
        for counts, tally in ((calls, self.calls), (changed, self.changed)):
            for by_phase, row in zip(counts, tally.tolist()):
                for phase, value in zip(PHASES, row):
                    by_phase[phase] += value
            tally.zero_()


def _differs(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Elements the patch changed beyond rounding: a write of a value the model computes
    anyway (e.g. the same token in the same context) counts as no change, whatever the
    batch shape's rounding made of it."""
    tol = 1e-4 if old.dtype == torch.float32 else 1e-2
    return ~torch.isclose(new.float(), old.float(), rtol=tol, atol=tol)
