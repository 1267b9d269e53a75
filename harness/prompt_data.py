"""A runner's per-prompt data, computed once: ids, clean caches, activations, and the padding
that batches them.

Mixed into :class:`harness.generate.Runner`, which owns the memos (``_ids``, ``_caches``,
``_acts``): the missing prompts of a request go in one padded pass, so a batch of pairs
never costs one forward pass per prompt. Nothing returned here is ever mutated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from harness.kv import prefill, unpad
from harness.patches import record

__all__ = ["PromptData"]


def _encode(tokenizer: Any, text: str, device: Any) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt").input_ids
    if tokenizer.bos_token_id is not None and ids[0, 0].item() != tokenizer.bos_token_id:
        ids = torch.cat([torch.tensor([[tokenizer.bos_token_id]]), ids], dim=1)
    return ids.to(device)


class PromptData:
    """Ids, clean caches and activations per prompt (memoised), and left/right padding."""

    def ids(self, text: str) -> torch.Tensor:
        if text not in self._ids:
            self._ids[text] = _encode(self.tokenizer, text, self.device)
        return self._ids[text]

    def cache(self, text: str, *, without_last: bool = False) -> Any:
        """The clean (unpatched) cache of a prompt, or of the prompt without its last token."""
        return self.caches([text], without_last=without_last)[0]

    def caches(self, texts: Sequence[str], *, without_last: bool = False) -> list[Any]:
        """Clean caches of many prompts, the missing ones in one right-padded pass (memoised).

        Under causal attention a row's padding after its last token cannot reach its own
        positions, which are kept; the padded slots are cut away.
        """
        todo = [t for t in dict.fromkeys(texts) if (t, without_last) not in self._caches]
        if todo:
            rows = [self.ids(t)[:, :-1] if without_last else self.ids(t) for t in todo]
            batch, lengths = self._right_padded(rows)
            snap = prefill(self.model, batch)[1]
            for i, (text, n) in enumerate(zip(todo, lengths)):
                self._caches[(text, without_last)] = unpad(snap, i, 0, n)
        return [self._caches[(t, without_last)] for t in texts]

    def activation(self, text: str, site: Any) -> torch.Tensor:
        return self.activations([text], site)[0]

    def activations(self, texts: Sequence[str], site: Any) -> list[torch.Tensor]:
        """Each prompt's activation (T, d) at ``site``, the missing ones in one pass (memoised)."""
        todo = [t for t in dict.fromkeys(texts) if (t, site) not in self._acts]
        if todo:
            batch, lengths = self._right_padded([self.ids(t) for t in todo])
            found = record(self.model, self.layout, batch, [site], keep_batch=True)[site]
            for i, (text, n) in enumerate(zip(todo, lengths)):
                self._acts[(text, site)] = found[i, :n].clone()
        return [self._acts[(t, site)] for t in texts]

    @property
    def pad_id(self) -> int:
        """The id padding slots hold (their content is masked or cut away, never read)."""
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _right_padded(self, rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        """Ids (k_i, n_i) right-padded to one length and stacked; each block's length."""
        length = max(r.shape[1] for r in rows)
        return torch.cat([torch.cat([r, r.new_full((r.shape[0], length - r.shape[1]), self.pad_id)], 1)
                          for r in rows]), [r.shape[1] for r in rows]

    def _left_padded(self, rows: Sequence[torch.Tensor], repeats: Sequence[int]
                     ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Ids (1, n_i) left-padded to one length, row i repeated ``repeats[i]`` times; the
        attention mask (0 on padding, on the model's device) and each row's padding."""
        length = max(r.shape[1] for r in rows)
        pads = [length - r.shape[1] for r in rows]
        ids = torch.cat([torch.cat([r.new_full((1, pad), self.pad_id), r], 1).expand(n, -1)
                         for r, pad, n in zip(rows, pads, repeats)])
        mask = torch.cat([(torch.arange(length) >= pad).long()[None].expand(n, -1) for pad, n in zip(pads, repeats)])
        return ids, mask.to(self.device), pads
