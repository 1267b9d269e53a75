"""Run arms: prefill, splice, persistent patches, seeded sampling, many pairs per batch.

Every arm of a pair is sampled with the pair's seeds, one batch row per seed, so
arm differences are not sampling noise. :meth:`Runner.run_many` prefills all pairs
of the arm in one padded pass per step (clean caches, source activations, the
patched prefill), however many pairs there are, then decodes them in one
``generate`` call: rows left-padded with the real attention mask, spliced caches
stacked, each pair's patches acting on its own rows with its own sources and counts
(:class:`harness.patches.RowGroup`). Sampling is seeded per row
(:class:`harness.sampling.SeededSampler`): a pair's rows are the same in any batch.

Two built-in protocols (see DESIGN.md):

``original``
    Reference arms (baseline, champion) are sampled from the prompt with top-k
    50; intervention arms prefill the whole baseline, splice right-aligned,
    register the patches *after* the prefill in the original mode, then re-feed
    the baseline's last prompt token as the first decoding step and sample from
    the full vocabulary.
``corrected``
    Every arm prefills its prompt without the last token (with prefill patches
    installed) and continues by feeding that last token once, at its own position;
    patches act in prefill and in every decoding step. A KV splice replaces the
    baseline's prefix cache (all but its last token) with the champion's prefix
    cache (all but *its* last token, computed without patches), right-aligned
    with keys re-rotated to their new positions, the baseline's BOS kept. So the
    first decoding step sees the champion's prompt without its last token, at
    the baseline's positions, followed by the baseline's last token, fed once.
    For pairs of equal length that is exactly a plain generation from
    ``champion[:-1] + baseline[-1:]``; a prompt spliced into itself is exactly
    the baseline arm. A tokenizer without BOS keeps no slot.

    On a model with absolute positions (GPT-2) keys cannot be re-rotated: a token's
    position is in the hidden states of every layer. There the splice uses the
    protocol's ``align_absolute_positions`` (``left``): slot j of the spliced prefix holds the
    champion's KV of its token j, computed at position j, for j < n =
    min(len_b, len_c) - 1; a longer baseline keeps its own KV in slots n..len_b-2
    (a longer champion is cut to the baseline's length). So the first decoding step
    sees ``champion[:n]`` at positions 0..n-1, then the baseline's own slots, then
    the baseline's last token at position len_b - 1, fed once: every cached KV sits
    at the position it was computed at. For pairs of equal length that is again
    exactly ``champion[:-1] + baseline[-1:]``, and a self-splice is the baseline arm.
    :meth:`Runner.alignment` says which alignment a protocol gets on the subject.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from harness import progress
from harness.decoding import DECODINGS, check_decoding, decode
from harness.edits import EditGroup, EditSpec, edit_specs, install_edits
from harness.errors import HarnessLookupError, HarnessValueError
from harness.kv import changed_values, check_rope_switch, prefill, splice, stack_left_padded, unpad
from harness.model import input_device
from harness.patches import PatchCount, PatchSpec, RowGroup, install, source_site
from harness.prompt_data import PromptData
from harness.records import CORRECTED, ORIGINAL, PROTOCOLS, ArmResult, Intervention, Protocol, get_protocol
from harness.sampling import SeededSampler, batch_rows
from harness.scoring import Prepared as _Prepared
from harness.scoring import Scoring
from harness.sites import parse_site
from harness.sources import PatchSources

__all__ = ["SeededSampler", "Runner", "DECODINGS",
           # re-exported records, for code that imports them from here
           "Protocol", "ORIGINAL", "CORRECTED", "PROTOCOLS", "Intervention", "ArmResult", "get_protocol"]


class Runner(PromptData, PatchSources, Scoring):
    """Runs arms for one subject; caches per-prompt data (never mutated) and arm results.

    Per-prompt data (ids, clean caches, activations) comes from :class:`PromptData`,
    each patch's sources from :class:`PatchSources`, teacher-forced scores of the champion's continuation from :class:`Scoring`.
    """

    def __init__(self, subject: Any, max_batch: int | None = None, decoding: str = "dynamic") -> None:
        check_decoding(decoding)
        self.subject = subject
        #: "dynamic" (the reference), "static" or "compiled": see :mod:`harness.decoding`
        self.decoding = decoding
        self.model = subject.model
        self.layout = subject.layout
        self.tokenizer = subject.tokenizer
        self.device = input_device(self.model)  # not a parameter's: offloaded ones sit on 'meta'
        self.max_batch = max_batch
        self._ids: dict[str, torch.Tensor] = {}
        self._caches: dict[tuple[str, bool], Any] = {}
        self._acts: dict[tuple[str, Any], torch.Tensor] = {}
        self._greedy: dict[tuple[str, int], tuple[int, ...]] = {}
        # The one memo of arm results and scores: keyed by what determines them (the pair's
        # prompts, the intervention itself, the protocol, the seeds), never by names.
        self._runs: dict[tuple, ArmResult] = {}
        self._scores: dict[tuple, float] = {}
        #: generate calls made, and rows generated (for the bench and the report)
        self.calls = 0
        self.rows = 0

    # -- arms -----------------------------------------------------------------
    def run(self, pair: Any, arm: str | Intervention, protocol: Protocol, seeds: Sequence[int]) -> ArmResult:
        """Generate ``protocol.gen_tokens`` tokens for every seed of one pair (memoised)."""
        return self.run_many([pair], arm, protocol, {pair.id: tuple(seeds)})[0]

    def run_many(self, pairs: Sequence[Any], arm: str | Intervention, protocol: Protocol,
                 seeds: Mapping[str, Sequence[int]]) -> list[ArmResult]:
        """One arm on many pairs, batched: ``seeds[pair.id]`` are the pair's seeds (memoised).

        Under the corrected protocol, ``no intervention`` (no splice, no patch) is the same
        computation as the baseline arm: it is run once, and reported as the same rows.
        """
        if isinstance(arm, Intervention) and arm.does_nothing and not protocol.refeed_last:
            base = self.run_many(pairs, "baseline", protocol, seeds)
            return [dataclasses.replace(r, arm=arm.name, same_as="baseline") for r in base]
        keys = {pair.id: self._key(pair, arm, protocol, seeds[pair.id]) for pair in pairs}
        todo = [p for p in dict.fromkeys(pairs) if keys[p.id] not in self._runs]
        chunks = self._chunks(todo, lambda pair: pair, seeds, protocol)
        if chunks:
            bar = progress.current()
            bar.start(arm if isinstance(arm, str) else arm.name,
                      rows_total=sum(len(seeds[p.id]) for p in todo), tokens_per_row=protocol.gen_tokens)
            try:
                for chunk in chunks:
                    self._run_chunk(chunk, arm, protocol, seeds, keys)
                    bar.advance(rows=sum(len(seeds[p.id]) for p in chunk))
            finally:
                bar.done()
        return [self._runs[keys[p.id]] for p in pairs]

    def run_kv_arms(self, pairs: Sequence[Any], arms: Sequence[Intervention], protocol: Protocol,
                    seeds: Mapping[str, Sequence[int]]) -> None:
        """Many KV-only arms (a splice, no patch or edit) on many pairs, memoised as by
        :meth:`run_many`, which then finds them: their rows differ only in their caches, so
        they share generate calls (a search over layer sets is many small arms, and a call's
        cost on a small model is mostly per step, not per row)."""
        for arm in arms:
            if not (isinstance(arm, Intervention) and arm.kv_layers and not arm.patches and not arm.edits):
                raise HarnessValueError(f"run_kv_arms: {arm!r} is not a KV-only arm; use run_many")
        chosen = {p.id: tuple(int(s) for s in seeds[p.id]) for p in pairs}
        # Arm by arm, so that each chunk's pairs prepared arm by arm keep the chunk's order.
        items = [(p, arm, self._key(p, arm, protocol, chosen[p.id]))
                 for arm in dict.fromkeys(arms) for p in dict.fromkeys(pairs)]
        items = [it for it in items if it[2] not in self._runs]
        chunks = self._chunks(items, lambda it: it[0], chosen, protocol)
        if not chunks:
            return
        bar = progress.current()
        bar.start(f"{len(dict.fromkeys(arms))} KV arms", rows_total=sum(len(chosen[p.id]) for p, _, _ in items),
                  tokens_per_row=protocol.gen_tokens)
        try:
            for chunk in chunks:
                prepared = []
                for arm in dict.fromkeys(a for _, a, _ in chunk):
                    prepared += self._prepare_many([p for p, a, _ in chunk if a == arm], arm, protocol, chosen)
                ids, mask, snap, _ = self._stack(prepared)
                check_rope_switch(self.model.config, ids.shape[1] + protocol.gen_tokens)
                raw = self._generate(ids, mask, snap, protocol, tuple(s for p in prepared for s in p.seeds),
                                     self._top_k(chunk[0][1], protocol))
                self._store(prepared, [a for _, a, _ in chunk], raw, [], protocol, [k for _, _, k in chunk])
                bar.advance(rows=sum(len(p.seeds) for p in prepared))
        finally:
            bar.done()

    @staticmethod
    def _key(pair: Any, arm: str | Intervention, protocol: Protocol, seeds: Sequence[int]) -> tuple:
        """The memo key of one pair's arm: what determines its result (never a name)."""
        chosen = tuple(int(s) for s in seeds)
        if not chosen:
            raise HarnessValueError(f"no seeds given for pair {pair.id}; pass at least one seed")
        return (pair.baseline, pair.champion, pair.id, arm, protocol, chosen)

    def _chunks(self, items: Sequence[Any], pair_of: Any, seeds: Mapping[str, Sequence[int]],
                protocol: Protocol) -> list[list[Any]]:
        """``items`` in order, cut into generate calls of at most the batch limit's rows (each
        item is the seeds of ``pair_of(item)``)."""
        longest = max((self.ids(pair_of(it).baseline).shape[1] + 1 for it in items), default=1) + protocol.gen_tokens
        limit = batch_rows(self.model, longest, self.max_batch)
        chunks: list[list[Any]] = []
        rows: list[int] = []
        for it in items:
            n = len(seeds[pair_of(it).id])
            if not chunks or rows[-1] + n > limit:
                chunks.append([])
                rows.append(0)
            chunks[-1].append(it)
            rows[-1] += n
        return chunks

    def _run_chunk(self, pairs: Sequence[Any], arm: str | Intervention, protocol: Protocol,
                   seeds: Mapping[str, Sequence[int]], keys: Mapping[str, tuple]) -> None:
        prepared = self._prepare_many(pairs, arm, protocol, {p.id: tuple(int(s) for s in seeds[p.id])
                                                             for p in pairs})
        specs = self._specs(arm, protocol)
        ids, mask, snap, pads = self._stack(prepared)
        flat = tuple(s for p in prepared for s in p.seeds)
        check_rope_switch(self.model.config, ids.shape[1] + protocol.gen_tokens)
        with self._installed(prepared, specs, pads) as handles:
            raw = self._generate(ids, mask, snap, protocol, flat, self._top_k(arm, protocol))
        self._store(prepared, [arm] * len(prepared), raw, handles, protocol, [keys[p.pair.id] for p in prepared],
                    patched=bool(specs or edit_specs(arm, protocol.patch_phases)))

    def _store(self, prepared: Sequence[_Prepared], arms: Sequence[str | Intervention], raw: torch.Tensor,
               handles: Sequence[Any], protocol: Protocol, keys: Sequence[tuple], patched: bool = False) -> None:
        """Each prepared pair's rows of ``raw`` (its seeds, in order) as its arm's memoised result."""
        offset = 0
        for i, (p, arm) in enumerate(zip(prepared, arms)):
            rows = self._until_eos(raw[offset : offset + len(p.seeds)], protocol)
            offset += len(p.seeds)
            counts = _summed(p.prefill_counts + tuple(c for h in handles for c in h.group_counts(i)))
            texts = tuple(self.tokenizer.decode(r, skip_special_tokens=True) for r in rows)
            kv_layers = arm.mapped_kv_layers(self.layout.n_layers) if isinstance(arm, Intervention) else ()
            self._runs[keys[i]] = ArmResult(
                p.pair.id, arm if isinstance(arm, str) else arm.name, protocol.name, p.seeds,
                tuple(tuple(r) for r in rows), texts, patch_counts=counts, kv_layers=kv_layers,
                declared_phases=protocol.patch_phases if patched else (), kv_changed=p.kv_changed)

    def alignment(self, protocol: Protocol) -> str:
        """The splice alignment ``protocol`` uses on this subject: ``align``, or
        ``align_absolute_positions`` when the model's positions are absolute (no rotary embedding)."""
        if self.layout.rotary_emb is None and protocol.align_absolute_positions is not None:
            return protocol.align_absolute_positions
        return protocol.align

    # -- the steps ----------------------------------------------------------------
    def _specs(self, arm: str | Intervention, protocol: Protocol) -> list[PatchSpec]:
        if not isinstance(arm, Intervention):
            return []
        return [PatchSpec(parse_site(p), phases=protocol.patch_phases, window=protocol.window,
                          decode_source=protocol.decode_source, mode=protocol.patch_mode) for p in arm.patches]

    @staticmethod
    def _top_k(arm: str | Intervention, protocol: Protocol) -> int | None:
        return protocol.reference_top_k if arm in ("baseline", "champion") else protocol.top_k

    def _prepare_many(self, pairs: Sequence[Any], arm: str | Intervention, protocol: Protocol,
                      seeds: Mapping[str, tuple[int, ...]]) -> list[_Prepared]:
        """:meth:`_prepare` for many pairs, every forward pass batched over the pairs: the
        clean caches and source activations of all missing prompts (one pass each, memoised),
        the aligned source's champion runs and recordings, and the corrected protocol's
        patched prefills (one left-padded pass, each pair's patches on its own row). What is
        left per pair is bookkeeping on memoised tensors, never a forward pass."""
        texts = [p.baseline if arm == "baseline" else p.champion for p in pairs]
        if not isinstance(arm, Intervention):
            if arm in ("baseline", "champion") and not protocol.refeed_last:
                self.caches(texts, without_last=True)  # one pass for the missing ones
            return [self._prepare(p, arm, protocol, seeds[p.id]) for p in pairs]
        if arm.kv_layers:  # clean passes first: memoised, never under a hook
            self.caches([p.champion for p in pairs], without_last=not protocol.refeed_last)
        if protocol.refeed_last:  # the original prefills whole baselines before its hooks exist
            self.caches([p.baseline for p in pairs])
        specs = self._specs(arm, protocol)
        for spec in edit_specs(arm, protocol.patch_phases):  # steering vectors and means: one pass per site
            self.activations([t for p in pairs for t in (p.champion, p.baseline)], spec.site)
        aligned: list[Any] = [None] * len(pairs)
        if protocol.decode_source == "aligned" and protocol.patch_mode == "corrected" and specs:
            aligned = self._aligned_acts(pairs, specs, protocol, seeds, None)
        else:
            for spec in specs:  # one pass per site for the missing champions
                self.activations([p.champion for p in pairs], source_site(spec))
        sources = [self._sources(p, specs, arm, protocol, seeds[p.id], None, a) for p, a in zip(pairs, aligned)]
        if protocol.refeed_last:
            return [self._prepare(p, arm, protocol, seeds[p.id], sources=src) for p, src in zip(pairs, sources)]
        return self._prefilled(pairs, arm, protocol, seeds, sources)

    def _prefilled(self, pairs: Sequence[Any], arm: Intervention, protocol: Protocol,
                   seeds: Mapping[str, tuple[int, ...]], sources: Sequence[dict[PatchSpec, tuple[torch.Tensor, int]]]
                   ) -> list[_Prepared]:
        """The corrected protocol's prefills: each baseline without its last token, all pairs in
        one left-padded pass under the arm's prefill patches (each pair's on its own row),
        then each pair's splice."""
        specs = self._specs(arm, protocol)
        prefixes = [self.ids(p.baseline)[:, :-1] for p in pairs]
        ids, mask, pads = self._left_padded(prefixes, [1] * len(pairs))
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        groups = {spec: [RowGroup(slice(i, i + 1), pads[i], prefixes[i].shape[1] + 1, *src[spec])
                         for i, src in enumerate(sources)] for spec in specs}
        edits = {spec: [EditGroup(slice(i, i + 1), pads[i], prefixes[i].shape[1] + 1, src[spec][0])
                        for i, src in enumerate(sources)] for spec in edit_specs(arm, protocol.patch_phases)}
        with install(self.model, self.layout, specs, groups) as patched, \
                install_edits(self.model, self.layout, edits) as edited:
            batch = prefill(self.model, ids, attention_mask=mask, position_ids=positions)[1]
        handles = [*patched, *edited]
        out = []
        for i, pair in enumerate(pairs):
            counts = tuple(c for h in handles for c in h.group_counts(i) if c.phase == "prefill")
            target = unpad(batch, i, pads[i])
            snap, changed = self._spliced(pair, target, arm, protocol)
            out.append(_Prepared(pair, seeds[pair.id], self.ids(pair.baseline), snap,
                                 prefixes[i].shape[1] + 1, sources[i], counts, changed))
        return out

    def _spliced(self, pair: Any, target: Any, arm: Intervention, protocol: Protocol) -> tuple[Any, int]:
        """The arm's KV splice of the champion's clean cache into ``target`` (unchanged without
        one), and the key and value elements it changed (-1 without a splice), for the guard."""
        kv_layers = arm.mapped_kv_layers(self.layout.n_layers)
        if not kv_layers:
            return target, -1
        # The corrected protocol splices like with like: both caches end before the last
        # prompt token, fed once next; the original splices whole caches.
        champion = self.cache(pair.champion, without_last=not protocol.refeed_last)
        keep_first = 1 if self.tokenizer.bos_token_id is not None else 0
        spliced = splice(target, champion, kv_layers, self.alignment(protocol), rotary_emb=self.layout.rope,
                         keep_first=keep_first)
        return spliced, changed_values(target, spliced)

    def _prepare(self, pair: Any, arm: str | Intervention, protocol: Protocol, seeds: tuple[int, ...],
                 continuation: tuple[int, ...] | None = None,
                 sources: dict[PatchSpec, tuple[torch.Tensor, int]] | None = None) -> _Prepared:
        """Prefill and splice one pair for ``arm``; the prefill runs under the arm's prefill patches
        (``sources``: the patches' sources when :meth:`_prepare_many` computed them)."""
        if arm in ("baseline", "champion"):
            text = pair.baseline if arm == "baseline" else pair.champion
            ids = self.ids(text)
            snap = None if protocol.refeed_last else self.cache(text, without_last=True)
            return _Prepared(pair, seeds, ids, snap, ids.shape[1], {})
        if not isinstance(arm, Intervention):
            raise HarnessLookupError(f"unknown arm {arm!r}; expected 'baseline', 'champion' or an Intervention")
        if sources is None:
            sources = self._sources(pair, self._specs(arm, protocol), arm, protocol, seeds, continuation)
        if arm.kv_layers:  # clean passes first: memoised, never under a hook
            self.cache(pair.champion, without_last=not protocol.refeed_last)
        if not protocol.refeed_last:
            return self._prefilled([pair], arm, protocol, {pair.id: seeds}, [sources])[0]
        # The original: the full prefill ran before the hooks existed, then the splice,
        # then the last prompt token is fed again.
        ids_b = self.ids(pair.baseline)
        ids = torch.cat([ids_b, ids_b[:, -1:]], dim=1)
        snap, changed = self._spliced(pair, self.cache(pair.baseline), arm, protocol)
        return _Prepared(pair, seeds, ids, snap, ids_b.shape[1], sources, (), changed)

    def _stack(self, prepared: Sequence[_Prepared]) -> tuple[torch.Tensor, torch.Tensor, Any, list[int]]:
        """Left-padded ids and attention mask (rows, L), the stacked cache, each pair's padding."""
        ids, mask, pads = self._left_padded([p.ids for p in prepared], [len(p.seeds) for p in prepared])
        length = ids.shape[1]
        snaps = [p.snapshot for p in prepared]
        if any(s is None for s in snaps) and not all(s is None for s in snaps):
            raise HarnessValueError("cannot batch pairs with and without a prefilled cache")
        snap = None if snaps[0] is None else stack_left_padded(snaps, [len(p.seeds) for p in prepared], length - 1)
        return ids, mask, snap, pads

    @contextmanager
    def _installed(self, prepared: Sequence[_Prepared], specs: Sequence[PatchSpec],
                   pads: Sequence[int]) -> Iterator[list[Any]]:
        """Each pair's patches on its own rows of the batch, for the decoding call."""
        groups: dict[PatchSpec, list[RowGroup]] = {s: [] for s in specs}
        # Edits act whatever the protocol's patch mode: their vectors travel with the pair.
        edits: dict[EditSpec, list[EditGroup]] = {s: [] for s in prepared[0].sources if isinstance(s, EditSpec)}
        offset = 0
        for p, pad in zip(prepared, pads):
            rows = slice(offset, offset + len(p.seeds))
            offset += len(p.seeds)
            for spec in specs:
                source, n = p.sources[spec]
                groups[spec].append(RowGroup(rows, pad, p.prompt_len, source, n))
            for spec in edits:
                edits[spec].append(EditGroup(rows, pad, p.prompt_len, p.sources[spec][0]))
        with install(self.model, self.layout, specs, groups) as handles, \
                install_edits(self.model, self.layout, edits) as edited:
            yield [*handles, *edited]

    def _generate(self, input_ids: torch.Tensor, mask: torch.Tensor, snap: Any, protocol: Protocol,
                  seeds: tuple[int, ...], top_k: int | None) -> torch.Tensor:
        """The generated ids (rows, gen_tokens), one row per seed (:func:`harness.decoding.decode`)."""
        self.calls += 1
        self.rows += len(seeds)
        return decode(self.model, self.tokenizer, self.layout.n_layers, self.decoding, input_ids, mask, snap,
                      protocol, seeds, top_k)

    def _until_eos(self, raw: torch.Tensor, protocol: Protocol) -> list[list[int]]:
        rows = raw.tolist()
        eos = self.tokenizer.eos_token_id
        if protocol.stop_at_eos and eos is not None:
            rows = [r[: r.index(eos) + 1] if eos in r else r for r in rows]
        return rows


def _summed(counts: Sequence[PatchCount]) -> tuple[PatchCount, ...]:
    """Counts of one patch in one phase added up (prefill pass plus decoding call)."""
    total: dict[tuple[str, int, str], list[int]] = {}
    for c in counts:
        slot = total.setdefault((c.site, c.layer, c.phase), [0, 0])
        slot[0] += c.calls
        slot[1] += c.changed
    return tuple(PatchCount(site, layer, phase, calls, changed) for (site, layer, phase), (calls, changed) in total.items())
