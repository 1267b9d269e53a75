"""Throughput of the runner: pairs one at a time vs batched, and the harness vs bare generate.

``python -m harness.bench`` runs one arm (default: full KV plus the layer-27 V patch,
corrected protocol) on N pairs x S seeds x T tokens three ways and prints the times
and their ratios:

- one pair at a time (one ``generate`` call per pair, as before batching);
- all pairs batched (the harness's path: one call, left-padded, stacked caches);
- the library's bare ``generate(do_sample=True)`` for the same number of rows and tokens
  (no splice, no patch, no seeded sampler): the floor the harness is measured against.

It also checks that the batched rows equal the one-at-a-time rows token for token, and sets
the harness's decoding step time (the median time between successive decoding steps, timed
from the harness's stopping criterion, so forward, sampler and patches included) against the
bandwidth bound: every weight and the whole KV cache read once per step, over the device's
memory bandwidth (``--bandwidth-gbs``; nominal figures for known GPUs, a rough guess on the
CPU, labelled as such).
``--random-config mistral-7b`` builds a random-weight Mistral-7B-shaped model on the
device (no download) to time the real size on a GPU. It is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch

from harness import progress
from harness.cli import one_line_errors
from harness.errors import HarnessValueError
from harness.generate import CORRECTED, DECODINGS, Runner
from harness.progress import Progress
from harness.prompts import default_pairs, spread
from harness.records import Intervention

ARM = Intervention("kv+v_proj@27", kv_layers="all", patches=("v_proj@27",))
#: Mistral-7B-Instruct-v0.2's shape (random weights: for timing only).
MISTRAL_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                  rope_theta=1e6, sliding_window=None, bos_token_id=1, eos_token_id=2, pad_token_id=3)


#: Nominal memory bandwidth (GB/s) by a substring of the device's name (the first match wins).
BANDWIDTH_GBS = {"H200": 4800.0, "H100 PCIe": 2000.0, "H100": 3350.0, "A100-SXM4-80GB": 2039.0,
                 "A100": 1555.0, "L40S": 864.0, "L4": 300.0, "A10": 600.0, "RTX 4090": 1008.0,
                 "V100": 900.0, "T4": 320.0}
#: A guess for a CPU's memory bandwidth (one socket, dual-channel DDR4/5): pass --bandwidth-gbs.
CPU_GUESS_GBS = 40.0


def device_bandwidth(device: str, given: float | None) -> tuple[float, str]:
    """The bandwidth (GB/s) the bound uses, and where it comes from."""
    if given is not None:
        if not given > 0:
            raise HarnessValueError(f"--bandwidth-gbs {given}; expected a positive number of GB/s")
        return given, "given"
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device if ":" in device else "cuda:0"))
        for key, gbs in BANDWIDTH_GBS.items():
            if key in name:
                return gbs, f"nominal for {name}"
        raise HarnessValueError(f"no nominal bandwidth known for {name!r}; pass --bandwidth-gbs (its memory "
                                "bandwidth in GB/s)")
    return CPU_GUESS_GBS, "a CPU guess, not measured: pass --bandwidth-gbs for this machine"


def bytes_per_step(model: Any, rows: int, cached: float) -> tuple[int, float]:
    """Bytes a decoding step must read at least: every parameter once (weights bytes), and each
    row's keys and values at ``cached`` positions (2 x layers x KV heads x head dim x bytes)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    cfg = model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    size = next(model.parameters()).element_size()
    return weights, 2 * cfg.num_hidden_layers * heads * head_dim * size * rows * cached


class StepTimer(Progress):
    """Times between successive decoding steps of the harness's generate calls.

    It is the engine's progress hook (:mod:`harness.progress`), told after every step by the
    harness's stopping criterion: outside the model's forward, so a compiled step is timed
    without a hook inside it. Each step is synchronised on a GPU before it is timed.
    """

    def __init__(self) -> None:
        self.starts: list[float] = []
        self._previous: Progress | None = None

    def advance(self, rows: int = 0, tokens: int = 0) -> None:
        if tokens:  # one call per decoding step (rows advance once per chunk)
            _sync()
            self.starts.append(time.perf_counter())

    def __enter__(self) -> StepTimer:
        self._previous = progress.install(self)
        return self

    def __exit__(self, *exc: object) -> None:
        progress.install(self._previous)

    def median(self) -> float:
        gaps = sorted(b - a for a, b in zip(self.starts, self.starts[1:]))
        return gaps[len(gaps) // 2] if gaps else math.nan


def compile_report(device: str, graph_breaks: int, cudagraph_skips: int) -> str:
    """One line on how the compiled decoding ran: graph breaks while compiling (a hook's host
    read would show here) and, on a GPU, whether the step ran as captured CUDA graphs."""
    breaks = f"{graph_breaks} graph break(s) while compiling"
    if not device.startswith("cuda"):
        return f"compiled step: {breaks}; no CUDA graphs on {device}"
    if cudagraph_skips:
        return (f"compiled step: {breaks}; CUDA graphs skipped {cudagraph_skips} time(s): the step ran "
                "compiled but not captured (the reasons are in the warnings above)")
    return f"compiled step: {breaks}; captured as CUDA graphs"


def _random_subject(device: str, dtype: str) -> Any:
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from harness.model import Subject
    from harness.sites import layout_for
    from harness.toy import TOY_MODEL_DIR

    torch.manual_seed(0)
    with torch.device(device):
        model = MistralForCausalLM(MistralConfig(**MISTRAL_7B)).to(getattr(torch, dtype)).eval()
    return Subject("random-mistral-7b", model, AutoTokenizer.from_pretrained(TOY_MODEL_DIR), layout_for(model),
                   "0" * 64, "0" * 64, device, dtype)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn: Any) -> tuple[float, Any]:
    _sync()
    start = time.perf_counter()
    out = fn()
    _sync()
    return time.perf_counter() - start, out


def _bare(runner: Runner, pairs: list, seeds: int, tokens: int) -> None:
    """The library alone: left-padded prompts, do_sample, the same rows and tokens."""
    tok = runner.tokenizer
    ids = [runner.ids(p.baseline)[0] for p in pairs for _ in range(seeds)]
    length = max(len(i) for i in ids)
    batch = torch.stack([torch.cat([i.new_full((length - len(i),), tok.pad_token_id), i]) for i in ids])
    mask = (torch.arange(length, device=batch.device)[None] >= (length - torch.tensor([len(i) for i in ids],
            device=batch.device))[:, None]).long()
    with torch.no_grad():
        runner.model.generate(input_ids=batch, attention_mask=mask, do_sample=True, temperature=0.8, top_k=0,
                              max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=tok.pad_token_id)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench",
                                     description="Time the runner: pairs one at a time vs batched, and the "
                                                 "harness vs the library's bare generate.")
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the toy)")
    parser.add_argument("--random-config", choices=("mistral-7b",), default=None,
                        help="a random-weight model of this shape, built on the device (timing only)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="weights dtype (default: float32)")
    parser.add_argument("--pairs", type=int, default=12, help="pairs spread over the bank (default 12)")
    parser.add_argument("--seeds", type=int, default=6, help="seeds per pair, one row each (default 6)")
    parser.add_argument("--tokens", type=int, default=24, help="tokens generated per row (default 24)")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    parser.add_argument("--skip-single", action="store_true",
                        help="skip the one-pair-at-a-time run (long at the full profile's size)")
    parser.add_argument("--decoding", choices=DECODINGS, default="dynamic",
                        help="the harness's decoding: dynamic (the reference cache), static (preallocated) or "
                             "compiled (static, the step compiled with the patches inside it: CUDA graphs on a "
                             "GPU; its graphs are built before timing) (default: dynamic)")
    parser.add_argument("--bandwidth-gbs", type=float, default=None,
                        help="the device's memory bandwidth in GB/s for the bound (default: nominal for known "
                             "GPUs, a guess on the CPU)")
    args = parser.parse_args(argv)
    bandwidth, where = device_bandwidth(args.device, args.bandwidth_gbs)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random_config:
        subject = _random_subject(args.device, args.dtype)
    else:
        from harness.model import load_subject

        subject = load_subject(args.model, device=args.device, dtype=args.dtype)
    pairs = spread(default_pairs(), args.pairs)
    seeds = {p.id: p.seeds(args.seeds) for p in pairs}
    protocol = CORRECTED.with_(gen_tokens=args.tokens, stop_at_eos=False)
    Runner(subject).run_many(pairs[:2], ARM, protocol.with_(gen_tokens=2), seeds)  # warm-up
    if args.decoding == "compiled":  # the step's graphs are built at the first call of this shape: not timed
        Runner(subject, decoding="compiled").run_many(pairs, ARM, protocol, seeds)

    single = Runner(subject, decoding=args.decoding)
    t_single, one = (math.nan, None) if args.skip_single else _timed(
        lambda: [single.run(p, ARM, protocol, seeds[p.id]) for p in pairs])
    batched = Runner(subject, decoding=args.decoding)
    with StepTimer() as steps:
        t_batched, many = _timed(lambda: batched.run_many(pairs, ARM, protocol, seeds))
    t_bare, _ = _timed(lambda: _bare(batched, pairs, args.seeds, args.tokens))
    rows = len(pairs) * args.seeds
    # the cache a step reads: the longest prompt (rows are left-padded to it) plus the mean
    # number of tokens generated before the step
    longest = max(batched.ids(p.baseline).shape[1] for p in pairs)
    weights, kv = bytes_per_step(subject.model, rows, longest + (args.tokens - 1) / 2)
    bound = (weights + kv) / (bandwidth * 1e9)
    step = steps.median()
    same = one is None or [a.tokens for a in one] == [b.tokens for b in many]
    print(f"model {subject.name} on {args.device} ({args.dtype}); arm {ARM.name}, corrected; "
          f"{len(pairs)} pairs x {args.seeds} seeds x {args.tokens} tokens = {rows * args.tokens} tokens")
    print(f"one pair at a time: {t_single:8.2f} s  ({single.calls} generate calls)")
    print(f"pairs batched:      {t_batched:8.2f} s  ({batched.calls} generate call(s))")
    print(f"bare generate:      {t_bare:8.2f} s  (same rows and tokens; no splice, patch or seeded sampler)")
    print(f"batched speed-up:   {t_single / t_batched:.2f}x; harness / bare generate: {t_batched / t_bare:.2f}x")
    print(f"batched rows equal one-at-a-time rows: {'not compared' if one is None else same}")
    print(f"decoding step ({args.decoding}): {step * 1e3:.2f} ms measured (median); bandwidth bound "
          f"{bound * 1e3:.4g} ms = ({weights / 1e9:.4g} GB weights + {kv / 1e9:.4g} GB KV cache) / "
          f"{bandwidth:g} GB/s ({where}); the step runs at {bound / step:.1%} of the bound")
    if args.decoding == "compiled":
        from torch._dynamo.utils import counters

        print(compile_report(args.device, sum(counters["graph_break"].values()),
                             counters["inductor"].get("cudagraph_skips", 0)))
    if torch.cuda.is_available():
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
