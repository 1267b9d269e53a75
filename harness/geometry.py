"""Geometry of V-space: participation ratios per layer, and R_V over token sequences.

The finding's geometry: the participation ratio (PR) of the v_proj output over the
last 16 positions of a sequence, per layer, and R_V = PR(late) / PR(early). Here it
is measured on prompts (one pass per prompt, every layer at once) and on whole
generated sequences (prompt + continuation, teacher-forced through the clean model,
many sequences per batch). Activations are read with the harness's own hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from harness.metrics import participation_ratio
from harness.patches import record
from harness.sites import Site

__all__ = ["Geometry"]


class Geometry:
    """PR and R_V measurements on one runner's model (memoised per prompt)."""

    def __init__(self, runner: Any, window: int = 16, batch: int = 64) -> None:
        self.runner, self.window, self.batch = runner, window, batch
        self._profiles: dict[str, np.ndarray] = {}

    def pr_profile(self, text: str) -> np.ndarray:
        """PR of V at every layer (as written for 32 layers: 0..31), last ``window`` prompt
        positions; shape (32,). One forward pass records all layers."""
        return self.pr_profiles([text])[0]

    def pr_profiles(self, texts: Sequence[str]) -> list[np.ndarray]:
        """:meth:`pr_profile` of many prompts, the missing ones right-padded in batched passes
        (padding after a prompt cannot reach its positions under causal attention)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._profiles]
        sites = [Site("v_proj", layer) for layer in range(32)]
        for start in range(0, len(todo), self.batch):
            chunk = todo[start : start + self.batch]
            rows = [self.runner.ids(t)[0].tolist() for t in chunk]
            lengths, length = [len(r) for r in rows], max(len(r) for r in rows)
            pad = self.runner.tokenizer.pad_token_id or 0
            ids = torch.tensor([r + [pad] * (length - len(r)) for r in rows], device=self.runner.device)
            acts = record(self.runner.model, self.runner.layout, ids, sites, keep_batch=True)
            for i, (text, n) in enumerate(zip(chunk, lengths)):
                self._profiles[text] = np.array([participation_ratio(acts[s][i, n - self.window : n]) for s in sites])
        return [self._profiles[t] for t in texts]

    def sequence_rv(self, sequences: Sequence[Sequence[int]], late: int, early: int) -> list[float]:
        """R_V over the last ``window`` positions of each token sequence (prompt + continuation).

        Sequences are right-padded into batches: under causal attention the padding after
        a sequence cannot change its own positions, so no mask is needed.
        """
        sites = (Site("v_proj", late), Site("v_proj", early))
        pad = self.runner.tokenizer.pad_token_id or 0
        out: list[float] = []
        for start in range(0, len(sequences), self.batch):
            chunk = [list(s) for s in sequences[start : start + self.batch]]
            length = max(len(s) for s in chunk)
            ids = torch.tensor([s + [pad] * (length - len(s)) for s in chunk], device=self.runner.device)
            acts = record(self.runner.model, self.runner.layout, ids, list(sites), keep_batch=True)
            for i, seq in enumerate(chunk):
                pr = [participation_ratio(acts[s][i, len(seq) - self.window : len(seq)]) for s in sites]
                out.append(pr[0] / pr[1] if pr[1] and np.isfinite(pr[1]) else float("nan"))
        return out
