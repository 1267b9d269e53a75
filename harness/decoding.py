"""The decoding call: one ``generate`` over a batch of prepared rows, with the cache kept as
the runner's decoding mode says.

``dynamic``
    The reference: the library's cache, grown by one slot per step.
``static``
    Preallocated to the call's length (prompt plus generated tokens), the spliced snapshot
    copied into its first slots: its tensors keep one address for the whole call.
``compiled``
    Static, with the decoding step compiled by the library's own path (inductor on the CPU,
    captured CUDA graphs on a GPU); the patches and edits are hooks inside the compiled step
    and read nothing back to the host (see :mod:`harness.patch_rows`).

Sampling is seeded per row (:class:`harness.sampling.SeededSampler`), so a row's tokens are
its seed's whatever else shares the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import StoppingCriteriaList

from harness import progress
from harness.compat import STATIC_GENERATE_KWARGS, compiled_generate_kwargs, static_cache
from harness.errors import HarnessValueError
from harness.kv import cache_kwarg
from harness.preflight import DECODINGS
from harness.records import Protocol
from harness.sampling import SeededSampler

__all__ = ["DECODINGS", "check_decoding", "decode"]


def check_decoding(decoding: str) -> None:
    if decoding not in DECODINGS:
        raise HarnessValueError(f"decoding {decoding!r}; expected one of {', '.join(DECODINGS)}")


def decode(model: Any, tokenizer: Any, n_layers: int, decoding: str, input_ids: torch.Tensor,
           mask: torch.Tensor, snap: Any, protocol: Protocol, seeds: Sequence[int],
           top_k: int | None) -> torch.Tensor:
    """The generated ids (rows, gen_tokens), one row per seed, padded after EOS.

    ``input_ids`` and ``mask`` (rows, L) are left-padded; ``snap`` (a
    :class:`harness.kv.KVSnapshot` of L - 1 slots, or None) is the cache the call continues.
    """
    pad = tokenizer.pad_token_id
    kwargs: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": mask,
        "max_new_tokens": protocol.gen_tokens,
        "min_new_tokens": 0 if protocol.stop_at_eos else protocol.gen_tokens,
        "do_sample": False,
        "num_beams": 1,
        "pad_token_id": pad if pad is not None else tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id if protocol.stop_at_eos else None,
    }
    if decoding != "dynamic":
        keys, values = (snap.keys, snap.values) if snap is not None else ((), ())
        kwargs[cache_kwarg(model)] = static_cache(n_layers, input_ids.shape[1] + protocol.gen_tokens, keys, values)
        kwargs.update(STATIC_GENERATE_KWARGS if decoding == "static" else compiled_generate_kwargs(input_ids.device.type))
    elif snap is not None:
        kwargs[cache_kwarg(model)] = snap.to_cache()
    if not protocol.greedy:
        kwargs["logits_processor"] = [SeededSampler(tuple(seeds), protocol.temperature, top_k, protocol.gen_tokens)]
    # Counts decoding steps for the progress line; never stops generation, no device sync.
    kwargs["stopping_criteria"] = StoppingCriteriaList([progress.token_ticker()])
    with torch.no_grad():
        out = model.generate(**kwargs)
    return out[:, input_ids.shape[1]:]
