"""Seeded sampling on the device, and how many rows go in one batch.

:class:`SeededSampler` is a logits processor for the library's ``generate``: row i
draws its uniforms up front from its own generator seeded by ``seeds[i]`` (on the
CPU, so a seed draws the same numbers on any device) and samples each step by
inverse CDF on the model's device, with no host round trip per step. Row i of any
batch therefore equals a run of row i alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from harness.errors import HarnessValueError

__all__ = ["SeededSampler", "batch_rows", "CPU_MAX_BATCH"]

#: Rows per generate call on the CPU: a dispatch-bound small model gains little beyond this.
CPU_MAX_BATCH = 512


class SeededSampler:
    """Samples row i from softmax(logits / temperature) (top-k if given) with seed ``seeds[i]``.

    Returns scores that are 0 at the sampled token and -inf elsewhere, so the
    library's greedy search picks exactly the sampled token. ``steps`` is the most
    tokens a row will draw (one uniform per step).
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_k: int | None, steps: int) -> None:
        if temperature <= 0:
            raise HarnessValueError(f"temperature {temperature}; expected > 0 (use greedy for 0)")
        if steps < 1:
            raise HarnessValueError(f"steps {steps}; expected at least 1")
        # 1 - U(0, 1) lies in (0, 1]: the scaled uniform never selects a zero-probability token.
        self.uniforms = torch.stack([
            1.0 - torch.rand(steps, generator=torch.Generator(device="cpu").manual_seed(int(s)),
                             dtype=torch.float64)
            for s in seeds
        ])  # (rows, steps)
        self.temperature = temperature
        self.top_k = top_k
        self.step = 0
        self._on: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.step >= self.uniforms.shape[1]:
            raise HarnessValueError(f"sampler asked for step {self.step + 1} of {self.uniforms.shape[1]}")
        if self._on is None:
            self._on = self.uniforms.to(device=scores.device, dtype=torch.float32)
        logits = scores.float() / self.temperature
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        cdf = torch.softmax(logits, dim=-1).cumsum(-1)  # (rows, vocab)
        target = self._on[:, self.step : self.step + 1] * cdf[:, -1:]
        chosen = torch.searchsorted(cdf, target).clamp_(max=cdf.shape[-1] - 1)
        self.step += 1
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen, 0.0)


def batch_rows(model: Any, longest: int, max_batch: int | None = None) -> int:
    """How many rows of sequences up to ``longest`` positions one generate call may take.

    ``max_batch`` wins when given. On a GPU: half the free memory over one row's KV cache
    (2 x layers x KV heads x head dim x positions x bytes) times 4 for activations and
    logits; on other devices :data:`CPU_MAX_BATCH`.
    """
    if max_batch is not None:
        if max_batch < 1:
            raise HarnessValueError(f"--max-batch {max_batch}; expected a positive integer")
        return max_batch
    from harness.model import input_device

    param = next(model.parameters())
    device = input_device(model)  # a device map's execution device (offloaded weights sit on 'meta')
    if device.type != "cuda":
        return CPU_MAX_BATCH
    cfg = model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_row = 2 * cfg.num_hidden_layers * heads * head_dim * longest * param.element_size() * 4
    per_row += cfg.vocab_size * 4 * 3  # logits, probabilities and their cumulative sum, float32
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(4096, int(0.5 * free // per_row)))
