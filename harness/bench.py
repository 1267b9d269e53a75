"""Throughput of batched seeded sampling against sequential batch-1 runs.

``python -m harness.bench`` runs, on the toy model, 16 seeds x 64 tokens as one
batch and as 16 runs of one seed each (as the original scripts did), for the
KV-only arm under the original protocol, and prints tokens per second and the
ratio. It is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import time

import torch

from harness.cli import one_line_errors
from harness.generate import ORIGINAL, Runner
from harness.records import Intervention
from harness.model import load_subject
from harness.prompts import default_pairs

KV_ONLY = Intervention("kv-only", kv_layers="all")


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the toy)")
    parser.add_argument("--seeds", type=int, default=16, help="seeds, one batch row each (default 16)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per seed (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runner = Runner(load_subject(args.model))
    pair = default_pairs()[0]
    protocol = ORIGINAL.with_(gen_tokens=args.tokens, stop_at_eos=False)
    seeds = tuple(range(args.seeds))
    runner.run(pair, KV_ONLY, protocol.with_(gen_tokens=2), (0,))  # warm-up: caches, allocator

    start = time.perf_counter()
    batched = runner.run(pair, KV_ONLY, protocol, seeds)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    single = [runner.run(pair, KV_ONLY, protocol, (s,)) for s in seeds]
    t_single = time.perf_counter() - start

    n_tokens = sum(len(t) for t in batched.tokens)
    same = all(b == s.tokens[0] for b, s in zip(batched.tokens, single))
    print(f"batched:    {n_tokens} tokens in {t_batched:.2f} s = {n_tokens / t_batched:.0f} tokens/s")
    print(f"sequential: {n_tokens} tokens in {t_single:.2f} s = {n_tokens / t_single:.0f} tokens/s")
    print(f"speed-up:   {t_single / t_batched:.1f}x; rows equal to single-seed runs: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
