"""Teacher-forced scores: how likely an arm makes the champion's own continuation.

The model-based metric ``champion_logprob``: the champion's greedy continuation is fed,
token by token as decoding would, through the arm's prefill, splice and patches, and its
mean log-probability per token is the score. :class:`Scoring` is the part of the runner
that computes it, for one pair or many in one batched pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.compat import cache_kwarg, output_cache
from harness.errors import HarnessValueError
from harness.kv import prefill, stack_left_padded
from harness.patches import PatchCount, PatchSpec
from harness.records import Intervention, Protocol

__all__ = ["Scoring", "Prepared"]


@dataclass(frozen=True)
class Prepared:
    """One pair of an arm, prefilled and spliced, ready to decode.

    ``ids`` (1, L) continue from ``snapshot`` (covering all but the last id; None: start
    from the bare prompt). ``groups`` holds, per patch, the pair's source and its prompt
    length; ``prefill_counts`` what the prefill patches did; ``kv_changed`` the key and
    value elements the KV splice changed (-1: no splice).
    """

    pair: Any
    seeds: tuple[int, ...]
    ids: torch.Tensor
    snapshot: Any
    prompt_len: int
    sources: dict[PatchSpec, tuple[torch.Tensor, int]]
    prefill_counts: tuple[PatchCount, ...] = ()
    kv_changed: int = -1


class Scoring:
    """Scores of the champion's continuation under an arm; mixed into the runner, whose
    prefill, splice and patch steps it reuses (memoised in ``self._scores``)."""

    def score(self, pair: Any, arm: str | Intervention, protocol: Protocol) -> float:
        """Mean log-probability under ``arm`` of the champion's greedy continuation (memoised)."""
        return self.scores([pair], arm, protocol)[0]

    def scores(self, pairs: Sequence[Any], arm: str | Intervention, protocol: Protocol) -> list[float]:
        """:meth:`score` for many pairs: the missing ones teacher-forced in one batched pass,
        caches stacked left-padded, continuations right-padded (memoised)."""
        keys = {p.id: (p.baseline, p.champion, arm, protocol) for p in pairs}
        todo = [p for p in dict.fromkeys(pairs) if keys[p.id] not in self._scores]
        stepwise = protocol.refeed_last and not (protocol.patch_mode == "original" and protocol.window > 1)
        if todo and (stepwise or protocol.decode_source == "aligned"):
            for p in todo:  # per pair: their sources or hooks follow each pair's own steps
                self._scores[keys[p.id]] = self.continuation_logprob(
                    p, arm, protocol, self.champion_continuation(p, protocol))
        elif todo:
            conts = self.champion_continuations(todo, protocol)
            prepared = self._prepare_many(todo, arm, protocol, {p.id: (0,) for p in todo})
            if arm in ("baseline", "champion") and protocol.refeed_last:  # from the bare prompt: its prefix
                texts = [p.baseline if arm == "baseline" else p.champion for p in todo]
                prepared = [dataclasses.replace(p, snapshot=c)
                            for p, c in zip(prepared, self.caches(texts, without_last=True))]
            for p, value in zip(todo, self._score_batch(prepared, conts, protocol, arm)):
                self._scores[keys[p.id]] = value
        return [self._scores[keys[p.id]] for p in pairs]

    def _score_batch(self, prepared: Sequence[Prepared], conts: Sequence[tuple[int, ...]], protocol: Protocol,
                     arm: str | Intervention) -> list[float]:
        length = max(p.ids.shape[1] for p in prepared)
        pads = [length - p.ids.shape[1] for p in prepared]
        snap = stack_left_padded([p.snapshot for p in prepared], [1] * len(prepared), length - 1)
        width = max(len(c) for c in conts)
        feed = torch.tensor([[int(p.ids[0, -1]), *c[:-1]] + [self.pad_id] * (width - len(c))
                             for p, c in zip(prepared, conts)], device=self.device)
        mask = torch.tensor([[0] * pad + [1] * (length - 1 - pad) + [1] * len(c) + [0] * (width - len(c))
                             for pad, c in zip(pads, conts)], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -width:]
        specs = [] if protocol.refeed_last else self._specs(arm, protocol)  # the original's hooks are idle
        with self._installed(prepared, specs, pads), torch.no_grad():
            logits = self.model(input_ids=feed, attention_mask=mask, position_ids=positions, use_cache=True,
                                **{cache_kwarg(self.model): snap.to_cache()}).logits
        logp = torch.log_softmax(logits.float(), -1)
        return [float(logp[i, : len(c)].gather(1, torch.tensor(c, device=logp.device)[:, None]).mean())
                for i, c in enumerate(conts)]

    def continuation_logprob(self, pair: Any, arm: str | Intervention, protocol: Protocol,
                             continuation: Sequence[int]) -> float:
        """Mean log-probability, teacher-forced under ``arm``, of the tokens ``continuation``.

        The tokens go through the KV cache after the arm's prefill and splice, so
        decode-phase patches act on them as when sampling (an ``aligned`` decode
        source is the champion's activations over this same continuation). They go in
        one forward pass: the corrected patches treat every slot alike however many
        arrive at once (tested against step-by-step decoding), and the original hook
        never writes during one-token decoding steps; only an original hook with a
        window of 1 is scored one step at a time.
        """
        if not continuation:
            raise HarnessValueError("empty continuation: nothing to score")
        continuation = tuple(int(t) for t in continuation)
        kw = cache_kwarg(self.model)
        p = self._prepare(pair, arm, protocol, (0,), continuation=continuation)
        snap = p.snapshot if p.snapshot is not None else prefill(self.model, p.ids[:, :-1])[1]
        cache, step = snap.to_cache(), p.ids[:, snap.seq_len:]
        specs = self._specs(arm, protocol)
        # The original hook writes only into calls of at least `window` positions, which
        # one-token decoding never makes: with a window above 1 its decoding steps are the
        # model alone, so they can be scored in one pass without it.
        original_idle = protocol.patch_mode == "original" and protocol.window > 1
        one_pass = not protocol.refeed_last or original_idle
        hooked = [] if protocol.refeed_last and original_idle else specs
        with self._installed([p], hooked, [0]), torch.no_grad():
            if one_pass:
                feed = torch.cat([step, torch.tensor([continuation[:-1]], device=self.device, dtype=step.dtype)], 1)
                logits = self.model(input_ids=feed, use_cache=True, **{kw: cache}).logits[0, -len(continuation):]
                logp = torch.log_softmax(logits.float(), -1)
                return float(logp.gather(1, torch.tensor(continuation, device=logp.device)[:, None]).mean())
            total = 0.0
            for token in continuation:
                out = self.model(input_ids=step, use_cache=True, **{kw: cache})
                total += float(torch.log_softmax(out.logits[0, -1].float(), -1)[token])
                cache, step = output_cache(out), torch.tensor([[token]], device=self.device)
        return total / len(continuation)

    def champion_continuation(self, pair: Any, protocol: Protocol) -> tuple[int, ...]:
        """The champion's own greedy continuation of ``protocol.gen_tokens`` tokens."""
        return self.champion_continuations([pair], protocol)[0]

    def champion_continuations(self, pairs: Sequence[Any], protocol: Protocol) -> list[tuple[int, ...]]:
        """Greedy continuations of many champions, in one batched call (memoised)."""
        todo = [p for p in pairs if (p.champion, protocol.gen_tokens) not in self._greedy]
        if todo:
            greedy = protocol.with_(greedy=True, refeed_last=False)
            for p, res in zip(todo, self.run_many(todo, "champion", greedy, {p.id: (0,) for p in todo})):
                self._greedy[(p.champion, protocol.gen_tokens)] = res.tokens[0]
        return [self._greedy[(p.champion, protocol.gen_tokens)] for p in pairs]

