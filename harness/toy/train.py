"""Build and train the embedded toy model.

Usage::

    python -m harness.toy.train [--steps N] [--out DIR] [--seed S] [--tiny]

Trains a 32-layer, 64-wide Mistral-architecture causal LM on the two-register
corpus of :mod:`harness.toy.corpus` and writes weights (safetensors), config,
generation config and a word-level tokenizer to ``DIR`` (default: the package's
own ``harness/toy/model``). The run is deterministic given the seed: the corpus,
the initial weights and the batch order all derive from it. ``--tiny`` uses a
small corpus and short batches so that a smoke run takes seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    GenerationConfig,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)

from harness.cli import one_line_errors
from harness.toy import TOY_MODEL_DIR
from harness.toy.corpus import documents, vocabulary

__all__ = [
    "SPECIAL_TOKENS",
    "TrainSettings",
    "build_tokenizer",
    "build_config",
    "encode_corpus",
    "train",
    "save",
    "continuation_rates",
    "main",
]

#: Special tokens, in id order: unk 0, BOS 1, EOS 2, pad 3.
SPECIAL_TOKENS: tuple[str, ...] = ("<unk>", "<s>", "</s>", "<pad>")


@dataclass(frozen=True)
class TrainSettings:
    """Everything that determines a training run besides the seed and step count."""

    n_docs: int = 12_000
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 4e-3
    warmup_frac: float = 0.06
    min_lr_frac: float = 0.05
    weight_decay: float = 0.01
    threads: int = 2


#: Settings for a smoke run (used by the test suite): tiny corpus, short batches.
TINY = TrainSettings(n_docs=64, batch_size=2, seq_len=32)


def build_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` that prepends BOS.

    Lower-cases, splits on whitespace and punctuation; decoding joins words
    with spaces and re-attaches punctuation (" ." -> ".") so that whitespace
    word counts match the corpus's words.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    bos = SPECIAL_TOKENS[1]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
    )
    # The WordPiece decoder joins tokens with spaces and, with cleanup, removes
    # the space before punctuation; no vocabulary word starts with its "##".
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )


def build_config(vocab_size: int) -> MistralConfig:
    """The toy's architecture: 32 layers like Mistral-7B, but 64 wide."""
    return MistralConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        sliding_window=None,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        tie_word_embeddings=True,
        unk_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )


def encode_corpus(tokenizer: PreTrainedTokenizerFast, seed: int, n_docs: int) -> torch.Tensor:
    """The corpus as one token stream: ``<s> doc </s> <s> doc </s> ...``."""
    texts = [text for _, text in documents(seed, n_docs)]
    ids: list[int] = []
    for enc in tokenizer(texts)["input_ids"]:  # BOS comes from the post-processor
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    stream = torch.tensor(ids, dtype=torch.long)
    if (stream == tokenizer.unk_token_id).any():
        raise RuntimeError("corpus produced <unk>: corpus.vocabulary() misses a word")
    return stream


def _lr_factor(step: int, steps: int, s: TrainSettings) -> float:
    """Linear warmup, then cosine decay to ``min_lr_frac`` of the peak."""
    warmup = max(1, int(steps * s.warmup_frac))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return s.min_lr_frac + (1 - s.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))


def train(
    steps: int,
    seed: int = 0,
    settings: TrainSettings = TrainSettings(),
    log_every: int = 0,
    on_log: Callable[[int, MistralForCausalLM, PreTrainedTokenizerFast], None] | None = None,
) -> tuple[MistralForCausalLM, PreTrainedTokenizerFast, float]:
    """Train from scratch; return (model in eval mode, tokenizer, last smoothed loss).

    ``on_log(step, model, tokenizer)``, if given, is called at every progress
    line (with the model in train mode), e.g. to measure behaviour mid-run.
    """
    torch.set_num_threads(settings.threads)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(vocabulary())
    stream = encode_corpus(tokenizer, seed, settings.n_docs)
    model = MistralForCausalLM(build_config(len(tokenizer)))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr, betas=(0.9, 0.95),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: _lr_factor(i, steps, settings))
    # A separate generator for batch positions keeps the data order a function
    # of the seed alone, whatever else draws from the global RNG.
    gen = torch.Generator().manual_seed(seed)
    n_windows = len(stream) - settings.seq_len
    log_every = log_every or max(1, steps // 25)
    smoothed, start = float("nan"), time.monotonic()
    for step in range(steps):
        starts = torch.randint(0, n_windows, (settings.batch_size,), generator=gen)
        batch = torch.stack([stream[i : i + settings.seq_len] for i in starts.tolist()])
        # EOS is never a target: the toy then never ends a text by itself, so
        # every sampled continuation has its full length (an early EOS would
        # give empty, zero-marker samples and blur the two modes).
        labels = batch.masked_fill(batch == tokenizer.eos_token_id, -100)
        loss = model(input_ids=batch, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        value = loss.item()
        smoothed = value if math.isnan(smoothed) else 0.9 * smoothed + 0.1 * value
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(f"step {step + 1:5d}/{steps}  loss {value:.4f}  smoothed {smoothed:.4f}  "
                  f"lr {sched.get_last_lr()[0]:.2e}  {time.monotonic() - start:6.1f}s", flush=True)
            if on_log is not None:
                on_log(step + 1, model, tokenizer)
    model.eval()
    return model, tokenizer, smoothed


def save(model: MistralForCausalLM, tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """Write model + tokenizer so that both transformers 4.57 and 5.x load them offline."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "model.safetensors").chmod(0o644)  # written private; a package needs it readable
    cfg = model.config
    GenerationConfig(
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id
    ).save_pretrained(out)
    _portable_config(out / "config.json")
    _portable_tokenizer_config(out / "tokenizer_config.json")


def _portable_config(path: Path) -> None:
    """Make config.json readable by both major versions.

    5.x writes the rotary settings as ``rope_parameters`` and the dtype as
    ``dtype``; 4.57 reads ``rope_theta`` and ``torch_dtype``. Writing both
    spellings with equal values gives the same model in either.
    """
    cfg = json.loads(path.read_text())
    rope = cfg.get("rope_parameters") or {}
    cfg["rope_theta"] = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    cfg.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": cfg["rope_theta"]})
    dtype = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    cfg["dtype"] = cfg["torch_dtype"] = dtype
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _portable_tokenizer_config(path: Path) -> None:
    """Name a tokenizer class that both versions resolve (5.x may write its own alias)."""
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


@torch.no_grad()
def continuation_rates(
    model: MistralForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    prompts: Sequence[str],
    score: Callable[[str], float],
    seed: int = 0,
    samples: int = 2,
    max_new_tokens: int = 32,
) -> list[float]:
    """``score`` (e.g. the claims finding's marker rate) of sampled continuations, ``samples``
    values per prompt, in prompt order.

    Sampling is plain: temperature 1 over the full vocabulary (``top_k=0``),
    after ``torch.manual_seed(seed)``. The prompts go in one left-padded batch
    (one generate call instead of one per prompt keeps this fast on a CPU);
    only the new tokens are decoded and scored with ``score`` (the engine has no
    behaviour metric of its own: the finding that studies the toy gives it).
    """
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, do_sample=True, top_k=0, top_p=1.0,
        temperature=1.0, max_new_tokens=max_new_tokens, num_return_sequences=samples,
        pad_token_id=pad,
    )
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return [score(t) for t in texts]


@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    ap = argparse.ArgumentParser(prog="python -m harness.toy.train", description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=800, help="optimizer steps (default 800)")
    ap.add_argument("--out", type=Path, default=TOY_MODEL_DIR, help="output folder (default: the shipped model)")
    ap.add_argument("--seed", type=int, default=0, help="seed for corpus, weights and batch order")
    ap.add_argument("--tiny", action="store_true", help="tiny corpus and batches, for smoke tests")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch CPU threads (default 2; the result does not depend on it)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    settings = dataclasses.replace(TINY if args.tiny else TrainSettings(), threads=args.threads)
    start = time.monotonic()
    model, tokenizer, loss = train(args.steps, args.seed, settings)
    save(model, tokenizer, args.out)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"saved {n_params:,} parameters to {args.out} after {time.monotonic() - start:.0f}s; "
          f"final smoothed loss {loss:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
