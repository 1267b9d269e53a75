"""A runner's patch sources: what each patch of an arm writes, and the champions' activations
over their own generations that an ``aligned`` decode source needs.

Mixed into :class:`harness.generate.Runner` (like :class:`harness.prompt_data.PromptData`),
which provides the per-prompt data (``ids``, ``activation``, ``_right_padded``), ``run_many``
and the subject's ``model``, ``layout`` and ``device``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from harness.edits import edit_specs, edit_vector
from harness.patches import PatchSpec, norm_matched_random, record, source_site
from harness.records import Intervention, Protocol

__all__ = ["PatchSources"]


class PatchSources:
    """Each patch's source activations for a pair, and the aligned recordings of many pairs."""

    def _sources(self, pair: Any, specs: list[PatchSpec], intervention: Intervention, protocol: Protocol,
                 seeds: tuple[int, ...], continuation: tuple[int, ...] | None,
                 aligned_acts: dict[Any, torch.Tensor] | None = None,
                 ) -> dict[PatchSpec, tuple[torch.Tensor, int]]:
        """Each patch's source activations, and how many of their positions are the champion's prompt.

        With an ``aligned`` decode source the champion's activations cover its own
        generation too: per seed (one source per batch row) when sampling, or the
        scored continuation when teacher-forcing (``aligned_acts``: those recordings when
        :meth:`_aligned_acts` made them for many pairs at once).
        """
        ids_c = self.ids(pair.champion)
        aligned = protocol.decode_source == "aligned" and protocol.patch_mode == "corrected"
        if aligned and specs:
            acts = aligned_acts if aligned_acts is not None else self._aligned_acts(
                [pair], specs, protocol, {pair.id: seeds}, None if continuation is None else [continuation])[0]
        sources = {}
        for i, spec in enumerate(specs):
            act = acts[source_site(spec)] if aligned else self.activation(pair.champion, source_site(spec))
            if intervention.source == "random":
                act = norm_matched_random(act, seed=1000 + i)
            sources[spec] = (act, ids_c.shape[1])
        for edit in edit_specs(intervention, protocol.patch_phases):  # one vector per pair, or None
            sources[edit] = (edit_vector(self, pair, edit.kind, edit.site), 0)
        return sources

    def _aligned_acts(self, pairs: Sequence[Any], specs: list[PatchSpec], protocol: Protocol,
                      seeds: Mapping[str, tuple[int, ...]], continuations: Sequence[tuple[int, ...]] | None,
                      ) -> list[dict[Any, torch.Tensor]]:
        """The champions' activations over prompt + continuation (their own sampled rows, or
        ``continuations``), every pair in one right-padded pass: per pair and source site,
        (rows, T, d), or (T, d) for one row (the shape a recording of the pair alone has)."""
        if continuations is not None:
            tails = [torch.tensor([c], device=self.device) for c in continuations]
        else:
            runs = self.run_many(pairs, "champion", protocol.with_(stop_at_eos=False), seeds)
            tails = [torch.tensor(r.tokens, device=self.device) for r in runs]
        sequences = [torch.cat([self.ids(p.champion).expand(t.shape[0], -1), t], dim=1) for p, t in zip(pairs, tails)]
        sites = list(dict.fromkeys(source_site(s) for s in specs))
        batch, lengths = self._right_padded(sequences)
        found = record(self.model, self.layout, batch, sites, keep_batch=True)
        out, row = [], 0
        for seq, n in zip(sequences, lengths):
            out.append({site: found[site][row : row + seq.shape[0], :n].clone().squeeze(0) for site in sites})
            row += seq.shape[0]
        return out
