"""Steering and ablation: edits of a site's activation at every position of the chosen phases.

Where a patch (:mod:`harness.patches`) copies the champion's activations into a window,
an edit acts on every position of a phase, with one vector per pair:

``steer``
    adds ``coefficient x v`` to the activation, v the pair's steering vector (the mean
    champion activation at the site minus the mean baseline activation: activation
    addition / contrastive activation addition). Coefficient 0 is the baseline arm.
``zero``
    replaces the activation with zeros (zero ablation).
``mean``
    replaces it with the pair's mean baseline activation at the site (mean ablation).

Positions are counted per row group from its first prompt slot, as for patches: the
``prefill`` phase is the prompt (positions < P), ``decode`` every generated position.
Each edit counts, per group and phase, the forward calls it saw and the values it
changed beyond rounding (:class:`harness.records.PatchCount`, labelled ``kind:site``), so
an edit that changed nothing makes its claim invalid, like a patch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from harness.errors import HarnessValueError
from harness.patch_rows import PHASES, PhaseTally
from harness.patches import PATCHABLE, HookHandle, PositionTracker
from harness.records import PatchCount
from harness.sites import Site, parse_site

__all__ = ["EDIT_KINDS", "EditSpec", "EditGroup", "EditHandle", "install_edits", "prompt_mean", "edit_specs",
           "edit_vector", "steering_vector"]

EDIT_KINDS = ("steer", "zero", "mean")


@dataclass(frozen=True)
class EditSpec:
    """What to edit: a site (layer as written in the claim), the kind, a coefficient (steering
    only) and the phases it acts in."""

    site: Site
    kind: str
    coefficient: float = 1.0
    phases: tuple[str, ...] = PHASES

    def __post_init__(self) -> None:
        if isinstance(self.site, str):
            object.__setattr__(self, "site", parse_site(self.site))
        if self.site.kind not in PATCHABLE:
            raise HarnessValueError(f"site {self.site} cannot be edited; editable kinds are {', '.join(PATCHABLE)}")
        if self.kind not in EDIT_KINDS:
            raise HarnessValueError(f"edit kind {self.kind!r}; expected one of {', '.join(EDIT_KINDS)}")
        if isinstance(self.coefficient, bool) or not isinstance(self.coefficient, (int, float)) \
                or not math.isfinite(self.coefficient):
            raise HarnessValueError(f"steering coefficient {self.coefficient!r}; expected a finite number")
        for phase in self.phases:
            if phase not in PHASES:
                raise HarnessValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")

    @property
    def label(self) -> str:
        """How the edit is named in patch counts and reports, e.g. ``steer:v_proj@27``."""
        return f"{self.kind}:{self.site}"


@dataclass(frozen=True)
class EditGroup:
    """The rows of a batch that share one pair: ``pad`` left-padding slots, then
    ``prompt_len`` prompt positions, then generated ones. ``vector`` (d,): the steering
    vector (steer) or the mean activation (mean); None for zero ablation."""

    rows: slice
    pad: int
    prompt_len: int
    vector: torch.Tensor | None = None


def edit_specs(arm: Any, phases: tuple[str, ...]) -> list[EditSpec]:
    """The edits of an arm (an :class:`~harness.records.Intervention`; none for a reference
    arm), acting in ``phases`` (the protocol's patch phases)."""
    if isinstance(arm, str):
        return []
    return [EditSpec(parse_site(site), kind, float(arm.coefficient), tuple(phases)) for kind, site in arm.edits]


def steering_vector(runner: Any, pair: Any, site: Site | str) -> torch.Tensor:
    """The pair's steering vector at ``site`` (d,), float32: the mean champion activation minus
    the mean baseline activation over the prompts' positions (BOS left out), from the runner's
    clean (unhooked, memoised) prompt passes."""
    site = parse_site(site) if isinstance(site, str) else site
    skip = runner.tokenizer.bos_token_id is not None
    return (prompt_mean(runner.activation(pair.champion, site), skip)
            - prompt_mean(runner.activation(pair.baseline, site), skip))


def edit_vector(runner: Any, pair: Any, kind: str, site: Site | str) -> torch.Tensor | None:
    """What an edit of ``kind`` needs for one pair: the steering vector, the baseline prompt's
    mean activation (mean ablation), or nothing (zero ablation)."""
    site = parse_site(site) if isinstance(site, str) else site
    if kind == "steer":
        return steering_vector(runner, pair, site)
    if kind == "mean":
        return prompt_mean(runner.activation(pair.baseline, site), runner.tokenizer.bos_token_id is not None)
    return None


def prompt_mean(activation: torch.Tensor, skip_first: bool) -> torch.Tensor:
    """Mean over a prompt's positions of its activation (T, d) -> (d,), in float32.

    ``skip_first``: leave out position 0 (a BOS token, whose activations are outliers in
    many models and carry nothing of the prompt), unless it is the only position.
    """
    if activation.dim() != 2:
        raise HarnessValueError(f"prompt activation must be (positions, d), got {tuple(activation.shape)}")
    rows = activation[1:] if skip_first and activation.shape[0] > 1 else activation
    return rows.float().mean(0)


class EditHandle(HookHandle):
    """One installed edit; counts per group via :meth:`group_counts`."""

    def __init__(self, layout: Any, spec: EditSpec, groups: Sequence[EditGroup], tracker: PositionTracker) -> None:
        self.spec = spec
        self.resolved = layout.resolve(spec.site)
        if not groups:
            raise HarnessValueError(f"edit at {spec.site}: no rows to edit")
        for g in groups:
            if spec.kind != "zero" and (g.vector is None or g.vector.dim() != 1):
                raise HarnessValueError(f"{spec.label}: each group needs a (d,) vector, got "
                                        f"{None if g.vector is None else tuple(g.vector.shape)}")
        self.groups = list(groups)
        self.tracker = tracker
        self.calls = [dict.fromkeys(PHASES, 0) for _ in groups]
        self.changed = [dict.fromkeys(PHASES, 0) for _ in groups]
        self._tally: PhaseTally | None = None  # this batch shape's counts, on the activation's device
        self._handle: Any = None
        self._layout: tuple | None = None

    def _rows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per batch row: its group (-1: none), padding, prompt length; the groups' vectors."""
        key = (x.shape[0], x.device, x.dtype)
        if self._layout is None or self._layout[0] != key:
            group = torch.full((x.shape[0],), -1, dtype=torch.long)
            pad, prompt = torch.zeros_like(group), torch.zeros_like(group)
            for i, g in enumerate(self.groups):
                rows = list(range(x.shape[0])[g.rows])
                if not rows or bool((group[rows] >= 0).any()):
                    raise HarnessValueError(f"{self.spec.label}: row groups must be disjoint and non-empty")
                group[rows], pad[rows], prompt[rows] = i, g.pad, g.prompt_len
            d = x.shape[-1]
            vectors = torch.stack([g.vector.float() if g.vector is not None else torch.zeros(d)
                                   for g in self.groups]).to(x.device)
            if vectors.shape[-1] != d:
                raise HarnessValueError(f"{self.spec.label}: vectors of size {vectors.shape[-1]} for an "
                                        f"activation of size {d}")
            self._flush()
            self._tally = PhaseTally(group, len(self.groups), x.device)
            self._layout = (key, group.to(x.device), pad.to(x.device), prompt.to(x.device), vectors)
        return self._layout[1:]

    def _flush(self) -> None:
        if self._tally is not None:
            self._tally.drain_into(self.calls, self.changed)

    def _edit(self, x: torch.Tensor) -> torch.Tensor:
        """The edited copy of the hooked activation x, shape (batch, T, d)."""
        group, pad, prompt, vectors = self._rows(x)
        start, T = self.tracker.start, x.shape[1]
        ingroup = group >= 0
        g = group.clamp(min=0)
        pos = start + torch.arange(T, device=x.device)[None, :] - pad[:, None]  # (B, T) row positions
        P = prompt[:, None]
        in_phase = torch.zeros_like(pos, dtype=torch.bool)
        if "prefill" in self.spec.phases:
            in_phase |= (pos >= 0) & (pos < P)
        if "decode" in self.spec.phases:
            in_phase |= pos >= P
        sel = ingroup[:, None] & in_phase
        row_vec = vectors[g][:, None, :]  # (B, 1, d), float32
        if self.spec.kind == "steer":
            target = (x.float() + self.spec.coefficient * row_vec).to(x.dtype)
        elif self.spec.kind == "zero":
            target = torch.zeros_like(x)
        else:
            target = row_vec.to(x.dtype).expand_as(x)
        new = torch.where(sel[..., None], target, x)
        self._tally.add(x, new, pos, P)
        return new

    def group_counts(self, index: int) -> tuple[PatchCount, ...]:
        self._flush()
        return tuple(PatchCount(self.spec.label, self.resolved.layer, p, self.calls[index][p], self.changed[index][p])
                     for p in PHASES)

    @property
    def counts(self) -> tuple[PatchCount, ...]:
        per_group = [self.group_counts(i) for i in range(len(self.groups))]
        return tuple(PatchCount(self.spec.label, self.resolved.layer, p, sum(c[k].calls for c in per_group),
                                sum(c[k].changed for c in per_group)) for k, p in enumerate(PHASES))


@contextmanager
def install_edits(model: Any, layout: Any, groups: dict[EditSpec, Sequence[EditGroup]]) -> Iterator[list[EditHandle]]:
    """Install every edit (and one position tracker) for a ``with`` block; all hooks are
    removed when it exits, also on an exception."""
    with ExitStack() as stack:
        if not groups:
            yield []
            return
        tracker = stack.enter_context(PositionTracker(model))
        yield [stack.enter_context(EditHandle(layout, spec, g, tracker)) for spec, g in groups.items()]
