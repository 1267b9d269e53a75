"""Run the arms of a pair: prefill, splice, persistent patches, seeded batched sampling.

Every arm of a pair is sampled with the same seed list, one batch row per seed,
so arm differences are not sampling noise. Sampling is done by
:class:`SeededSampler`, a logits processor with one random generator per row:
row i of a batched run equals a run with seed i alone.

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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from harness.errors import HarnessLookupError, HarnessValueError
from harness.kv import cache_kwarg, check_fits_window, output_cache, prefill, splice
from harness.patches import PatchSpec, install, norm_matched_random, record, source_site
from harness.records import CORRECTED, ORIGINAL, PROTOCOLS, ArmResult, Intervention, Protocol, get_protocol
from harness.sites import parse_site

__all__ = ["SeededSampler", "Runner",
           # re-exported records, for code that imports them from here
           "Protocol", "ORIGINAL", "CORRECTED", "PROTOCOLS", "Intervention", "ArmResult", "get_protocol"]


class SeededSampler:
    """A logits processor that samples row i with its own generator seeded by ``seeds[i]``.

    Returns scores that are 0 at the sampled token and -inf elsewhere, so the
    library's greedy search picks exactly the sampled token.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_k: int | None) -> None:
        if temperature <= 0:
            raise HarnessValueError(f"temperature {temperature}; expected > 0 (use greedy for 0)")
        # CPU generators: the same seed draws the same numbers whatever device the model is on.
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        self.temperature = temperature
        self.top_k = top_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.temperature
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1).cpu()
        chosen = [int(torch.multinomial(probs[i], 1, generator=g)) for i, g in enumerate(self.generators)]
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(chosen)), torch.tensor(chosen, device=scores.device)] = 0.0
        return out


def _encode(tokenizer: Any, text: str, device: Any) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt").input_ids
    if tokenizer.bos_token_id is not None and ids[0, 0].item() != tokenizer.bos_token_id:
        ids = torch.cat([torch.tensor([[tokenizer.bos_token_id]]), ids], dim=1)
    return ids.to(device)


class Runner:
    """Runs arms for one subject; caches per-prompt champion data (never mutated)."""

    def __init__(self, subject: Any) -> None:
        self.subject = subject
        self.model = subject.model
        self.layout = subject.layout
        self.tokenizer = subject.tokenizer
        self.device = next(self.model.parameters()).device
        self._ids: dict[str, torch.Tensor] = {}
        self._caches: dict[tuple[str, bool], Any] = {}
        self._acts: dict[tuple[str, Any], torch.Tensor] = {}
        self._greedy: dict[tuple[str, int], tuple[int, ...]] = {}
        self._generations: dict[tuple[str, Protocol, tuple[int, ...]], torch.Tensor] = {}
        # The one memo of arm results and scores: keyed by what determines them (the pair's
        # prompts, the intervention itself, the protocol, the seeds), never by names.
        self._runs: dict[tuple, ArmResult] = {}
        self._scores: dict[tuple, float] = {}

    # -- per-prompt data, computed once ---------------------------------------
    def ids(self, text: str) -> torch.Tensor:
        if text not in self._ids:
            self._ids[text] = _encode(self.tokenizer, text, self.device)
        return self._ids[text]

    def cache(self, text: str, *, without_last: bool = False) -> Any:
        """The clean (unpatched) cache of a prompt, or of the prompt without its last token."""
        key = (text, without_last)
        if key not in self._caches:
            ids = self.ids(text)
            with torch.no_grad():
                self._caches[key] = prefill(self.model, ids[:, :-1] if without_last else ids)[1]
        return self._caches[key]

    def activation(self, text: str, site: Any) -> torch.Tensor:
        key = (text, site)
        if key not in self._acts:
            self._acts.update({(text, s): a for s, a in record(self.model, self.layout, self.ids(text), [site]).items()})
        return self._acts[key]

    # -- arms -----------------------------------------------------------------
    def run(self, pair: Any, arm: str | Intervention, protocol: Protocol, seeds: Sequence[int]) -> ArmResult:
        """Generate ``protocol.gen_tokens`` tokens for every seed in one batch (memoised)."""
        seeds = tuple(int(s) for s in seeds)
        if not seeds:
            raise HarnessValueError("no seeds given; pass at least one seed")
        key = (pair.baseline, pair.champion, pair.id, arm, protocol, seeds)
        if key not in self._runs:
            self._runs[key] = self._run(pair, arm, protocol, seeds)
        return self._runs[key]

    def score(self, pair: Any, arm: str | Intervention, protocol: Protocol) -> float:
        """Mean log-probability under ``arm`` of the champion's greedy continuation (memoised)."""
        key = (pair.baseline, pair.champion, arm, protocol)
        if key not in self._scores:
            self._scores[key] = self.continuation_logprob(pair, arm, protocol,
                                                          self.champion_continuation(pair, protocol))
        return self._scores[key]

    def _run(self, pair: Any, arm: str | Intervention, protocol: Protocol, seeds: tuple[int, ...]) -> ArmResult:
        with self._armed(pair, arm, protocol, seeds) as state:
            raw = self._generate(state.input_ids, state.snapshot, protocol, seeds, state.top_k)
        rows = self._until_eos(raw, protocol)
        texts = tuple(self.tokenizer.decode(r, skip_special_tokens=True) for r in rows)
        counts = tuple(c for h in state.handles for c in h.counts)
        return ArmResult(pair.id, state.name, protocol.name, seeds, tuple(tuple(r) for r in rows), texts,
                         patch_counts=counts, kv_layers=state.kv_layers,
                         declared_phases=protocol.patch_phases if state.handles else ())

    def continuation_logprob(self, pair: Any, arm: str | Intervention, protocol: Protocol,
                             continuation: Sequence[int]) -> float:
        """Mean log-probability, teacher-forced under ``arm``, of the tokens ``continuation``.

        The tokens go through the KV cache after the arm's prefill and splice, so
        decode-phase patches act on them as when sampling (an ``aligned`` decode
        source is the champion's activations over this same continuation). Under
        the corrected protocol they go in one forward pass (its patches treat every
        slot alike however many arrive at once: tested against step-by-step decoding);
        under the original one step at a time, since its hook fires only on calls of
        at least ``window`` positions, which decoding never makes.
        """
        if not continuation:
            raise HarnessValueError("empty continuation: nothing to score")
        kw = cache_kwarg(self.model)
        total = 0.0
        with self._armed(pair, arm, protocol, None, continuation=tuple(continuation)) as state, torch.no_grad():
            snap = state.snapshot
            if snap is None:
                snap = prefill(self.model, state.input_ids[:, :-1])[1]
            cache, step = snap.to_cache(), state.input_ids[:, snap.seq_len:]
            if not protocol.refeed_last:
                feed = torch.cat([step, torch.tensor([list(continuation[:-1])], device=self.device,
                                                     dtype=step.dtype)], dim=1)
                logits = self.model(input_ids=feed, use_cache=True, **{kw: cache}).logits[0, -len(continuation):]
                logp = torch.log_softmax(logits.float(), -1)
                targets = torch.tensor(continuation, device=logp.device)
                return float(logp.gather(1, targets[:, None]).mean())
            for token in continuation:
                out = self.model(input_ids=step, use_cache=True, **{kw: cache})
                total += float(torch.log_softmax(out.logits[0, -1].float(), -1)[token])
                cache, step = output_cache(out), torch.tensor([[token]], device=self.device)
        return total / len(continuation)

    def champion_continuation(self, pair: Any, protocol: Protocol) -> tuple[int, ...]:
        """The champion's own greedy continuation of ``protocol.gen_tokens`` tokens."""
        key = (pair.champion, protocol.gen_tokens)
        if key not in self._greedy:
            greedy = protocol.with_(greedy=True, refeed_last=False)
            self._greedy[key] = self.run(pair, "champion", greedy, (0,)).tokens[0]
        return self._greedy[key]

    @contextmanager
    def _armed(self, pair: Any, arm: str | Intervention, protocol: Protocol, seeds: tuple[int, ...] | None,
               continuation: tuple[int, ...] | None = None) -> Iterator[_ArmState]:
        """Set an arm up: prefill, splice, patches installed; removed on exit.

        Yields the ids to continue from and the cache snapshot that covers all
        but their uncached tail (None: start from the bare prompt). ``seeds`` (or,
        for scoring, ``continuation``) select the champion generation an
        ``aligned`` decode source is recorded from.
        """
        if arm in ("baseline", "champion"):
            text = pair.baseline if arm == "baseline" else pair.champion
            snap = None if protocol.refeed_last else self.cache(text, without_last=True)
            yield _ArmState(str(arm), self.ids(text), snap, protocol.reference_top_k)
            return
        if not isinstance(arm, Intervention):
            raise HarnessLookupError(f"unknown arm {arm!r}; expected 'baseline', 'champion' or an Intervention")
        specs = [
            PatchSpec(parse_site(p), phases=protocol.patch_phases, window=protocol.window,
                      decode_source=protocol.decode_source, mode=protocol.patch_mode)
            for p in arm.patches
        ]
        sources, source_len = self._sources(pair, specs, arm, protocol, seeds, continuation)
        kv_layers = arm.mapped_kv_layers(self.layout.n_layers)
        ids_b = self.ids(pair.baseline)

        # Clean passes, computed (and memoised) before any hook is installed: the
        # champion's cache, and under the original protocol the baseline's full prefill.
        # The corrected protocol splices like with like: both caches end before the last
        # prompt token, which is then fed once at its own position.
        champion_cache = (self.cache(pair.champion, without_last=not protocol.refeed_last)
                          if kv_layers else None)
        baseline_cache = self.cache(pair.baseline) if protocol.refeed_last else None
        keep_first = 1 if self.tokenizer.bos_token_id is not None else 0

        def spliced(target: Any) -> Any:
            if not kv_layers:
                return target
            return splice(target, champion_cache, kv_layers, protocol.align,
                          rotary_emb=self.layout.rotary_emb, keep_first=keep_first)

        with install(self.model, self.layout, specs, sources, prompt_len=ids_b.shape[1],
                     source_prompt_len=source_len) as handles:
            if protocol.refeed_last:
                # The original: the full prefill ran before the hooks existed, then the
                # splice, then the last prompt token is fed again.
                snap = spliced(baseline_cache)
                ids = torch.cat([ids_b, ids_b[:, -1:]], dim=1)
            else:
                # Under the prefill patches: not memoised.
                snap, ids = spliced(prefill(self.model, ids_b[:, :-1])[1]), ids_b
            yield _ArmState(arm.name, ids, snap, protocol.top_k, tuple(handles), kv_layers)

    def _generate(self, input_ids: torch.Tensor, cache: Any, protocol: Protocol, seeds: tuple[int, ...],
                  top_k: int | None) -> torch.Tensor:
        """The generated ids (len(seeds), gen_tokens), one row per seed, padded after EOS."""
        n = len(seeds)
        check_fits_window(self.model.config, int(input_ids.shape[1]) + protocol.gen_tokens)
        batch = input_ids.expand(n, -1)
        pad = self.tokenizer.pad_token_id
        kwargs: dict[str, Any] = {
            "input_ids": batch,
            "attention_mask": torch.ones_like(batch),
            "max_new_tokens": protocol.gen_tokens,
            "min_new_tokens": 0 if protocol.stop_at_eos else protocol.gen_tokens,
            "do_sample": False,
            "num_beams": 1,
            "pad_token_id": pad if pad is not None else self.tokenizer.eos_token_id,
            "eos_token_id": self.tokenizer.eos_token_id if protocol.stop_at_eos else None,
        }
        if cache is not None:
            kwargs[cache_kwarg(self.model)] = cache.to_cache(batch=n)
        if not protocol.greedy:
            kwargs["logits_processor"] = [SeededSampler(seeds, protocol.temperature, top_k)]
        with torch.no_grad():
            out = self.model.generate(**kwargs)
        return out[:, input_ids.shape[1]:]

    def _until_eos(self, raw: torch.Tensor, protocol: Protocol) -> list[list[int]]:
        rows = raw.tolist()
        eos = self.tokenizer.eos_token_id
        if protocol.stop_at_eos and eos is not None:
            rows = [r[: r.index(eos) + 1] if eos in r else r for r in rows]
        return rows

    def _champion_generation(self, pair: Any, protocol: Protocol, seeds: tuple[int, ...]) -> torch.Tensor:
        """The champion arm's raw generated ids for ``seeds`` (memoised; no hooks run)."""
        key = (pair.champion, protocol, seeds)
        if key not in self._generations:
            with self._armed(pair, "champion", protocol, seeds) as state:
                self._generations[key] = self._generate(state.input_ids, state.snapshot, protocol, seeds,
                                                        state.top_k)
        return self._generations[key]

    def _sources(self, pair: Any, specs: list[PatchSpec], intervention: Intervention, protocol: Protocol,
                 seeds: tuple[int, ...] | None, continuation: tuple[int, ...] | None,
                 ) -> tuple[dict[PatchSpec, torch.Tensor], dict[PatchSpec, int]]:
        """Each patch's source activations, and how many of their positions are the champion's prompt.

        With an ``aligned`` decode source the champion's activations cover its own
        generation too: per seed (one source per batch row) when sampling, or the
        scored continuation when teacher-forcing.
        """
        ids_c = self.ids(pair.champion)
        aligned = protocol.decode_source == "aligned" and protocol.patch_mode == "corrected"
        if aligned and specs:
            if continuation is not None:
                tail = torch.tensor([continuation], device=self.device)
            else:
                tail = self._champion_generation(pair, protocol, seeds or (0,))
            sequence = torch.cat([ids_c.expand(tail.shape[0], -1), tail], dim=1)
            acts = record(self.model, self.layout, sequence, [source_site(s) for s in specs])
        sources, lengths = {}, {}
        for i, spec in enumerate(specs):
            act = acts[source_site(spec)] if aligned else self.activation(pair.champion, source_site(spec))
            if intervention.source == "random":
                act = norm_matched_random(act, seed=1000 + i)
            sources[spec], lengths[spec] = act, ids_c.shape[1]
        return sources, lengths


@dataclass(frozen=True)
class _ArmState:
    name: str
    input_ids: torch.Tensor
    snapshot: Any
    top_k: int | None
    handles: tuple[Any, ...] = ()
    kv_layers: tuple[int, ...] = ()
