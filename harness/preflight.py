"""Checks a run's settings before any weights load or any compute, one line per refusal.

:func:`preflight` reads what is cheap to read (the device count, the ledger, the
report folder, the prompts, the model's config and tokenizer, never its weights)
and raises :class:`~harness.errors.PreflightError` naming the field, the value,
what was expected and the fix. The pytest plugin runs it once at the start of a
run and turns the error into a usage error (exit code 4) without a traceback.
Importing this module loads neither torch nor transformers.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, PreflightError

PROFILES = {
    # name: (pairs, seeds, gen_tokens). quick: as many pairs (spread over the groups of the
    # bundled bank) as keep the toy's claims suite under 3 minutes on 2 CPU cores.
    "quick": (48, 6, 24),
    "full": (None, 16, 200),
}

#: How decoding keeps its cache, and whether its step is compiled (see harness/decoding.py).
DECODINGS = ("dynamic", "static", "compiled")

__all__ = ["RunOptions", "preflight", "check_named", "check_memory", "MAX_GEN_TOKENS"]

#: Longer generations need --allow-long: 5000 tokens on a real model is hours, not minutes.
MAX_GEN_TOKENS = 1024


@dataclass(frozen=True)
class RunOptions:
    """The settings of one run, read once from the command line."""

    model: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    prompts: Path | None = None
    profile: str = "quick"
    pairs: int | None = None
    seeds: int = 6
    gen_tokens: int = 24
    report_dir: Path | None = None
    ledger: Path | None = None
    shard: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    allow_long: bool = False
    max_batch: int | None = None
    window: int = 16
    report_fresh: bool = False  # replace the run already in report_dir
    report_dir_named: bool = True  # False: the default reports/<time>, renamed when taken
    ledger_strict: bool = False  # settings without ledger entries: fail verdicts other than supported
    seed_offset: int = 0
    until_decided: int | None = None  # add pairs to an undecided cell up to this many (sequential test)
    decoding: str = "dynamic"  # one of DECODINGS

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.seeds))


def preflight(options: RunOptions) -> None:
    """Refuse settings the run cannot honour; return quietly when all is well.

    Order: what needs no file first (device, token budget), then the ledger and the
    report folder, then the prompts measured in the subject's own tokens.
    """
    check_device_available(options.device)
    _check_decoding(options)
    if options.gen_tokens > MAX_GEN_TOKENS and not options.allow_long:
        raise PreflightError(
            f"--gen-tokens {options.gen_tokens}: expected at most {MAX_GEN_TOKENS} tokens per "
            f"sample; pass --allow-long to generate more (every arm, pair and seed pays it)"
        )
    if options.ledger is not None:
        _check_ledger(options.ledger)
    if options.report_dir is not None:
        _check_report_dir(options.report_dir)
    _check_prompt_lengths(options)
    check_memory(options)


def _check_decoding(options: RunOptions) -> None:
    """A static or compiled decoding needs transformers 5, and a compiled one on the CPU a C++
    compiler (inductor builds the step with it): refused here, before any weights load."""
    import shutil

    from harness.compat import transformers_major

    name = options.decoding
    if name not in DECODINGS:
        raise PreflightError(f"--decoding {name!r}; expected one of {', '.join(DECODINGS)}")
    if name != "dynamic" and transformers_major() < 5:
        import transformers

        raise PreflightError(f"--decoding {name} needs transformers 5 (installed: {transformers.__version__}); "
                             "use --decoding dynamic, or upgrade transformers")
    if name == "compiled" and not options.device.startswith("cuda") and not any(
            shutil.which(c) for c in ("c++", "g++", "clang++")):
        raise PreflightError(f"--decoding compiled on {options.device!r} needs a C++ compiler (inductor builds the "
                             "decoding step with it) and none is on PATH; install one (g++), or use --decoding static")


def check_named(options: RunOptions, ledger: str | None, pairs: int | None) -> None:
    """What the user named explicitly must exist as named: a ``--ledger`` file (a missing one is not
    an empty ledger), ``--pairs`` within the bank (not silently clipped to it), an
    ``--until-decided`` budget from the run's pairs to the bank's."""
    from harness.prompts import default_pairs, load_pairs

    if ledger is not None and not Path(ledger).is_file():
        what = "a folder" if Path(ledger).is_dir() else "no such file"
        raise PreflightError(
            f"--ledger {ledger!r}: {what}; expected a TOML file of known verdicts such as claims/ledger.toml; "
            "fix the path, or leave --ledger out for the rootdir's claims/ledger.toml")
    bank = load_pairs(options.prompts) if options.prompts is not None else default_pairs()
    where = f"--prompts {options.prompts}" if options.prompts is not None else "the bundled toy bank"
    if pairs is not None and pairs > len(bank):
        raise PreflightError(
            f"--pairs {pairs}: {where} has {len(bank)} pairs; expected at most {len(bank)}; "
            f"pass --pairs {len(bank)} (or fewer), or --profile full for every pair")
    budget = options.until_decided
    if budget is not None:
        start = min(options.pairs or len(bank), len(bank))
        if not start <= budget <= len(bank):
            raise PreflightError(
                f"--until-decided {budget}: expected a budget in pairs from the run's {start} pairs to the "
                f"{len(bank)} of {where}; pass --until-decided {len(bank)} to allow the whole bank")


def check_device_available(device: str) -> None:
    """Refuse a device this machine does not have (``cuda``, ``cuda:N``, ``mps``), and ``auto``
    without accelerate."""
    from harness.model import check_device

    check_device(device)
    if device == "auto":
        from harness.model import check_auto_available

        check_auto_available()
    if device in ("cpu", "auto"):
        return
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise PreflightError(
                f"--device {device}: this machine has no CUDA device (torch {torch.__version__}, "
                f"CUDA build: {torch.version.cuda or 'no'}); use --device cpu, or run on a GPU machine"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise PreflightError(
                f"--device {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}; "
                "pick one of those"
            )
    elif device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise PreflightError("--device mps: the MPS backend is not available here; use --device cpu")


def _check_ledger(path: Path) -> None:
    from harness.ledger import Ledger

    try:
        Ledger.load(path)
    except HarnessError as exc:
        raise PreflightError(f"--ledger {path}: {exc}; fix the file or point --ledger at another") from None


def _check_report_dir(path: Path) -> None:
    """The folder must be creatable and writable: probed by creating it (and a file in
    it) and removing what the probe made."""
    if path.exists() and not path.is_dir():
        raise PreflightError(
            f"--report-dir {path}: a file of that name exists; expected a folder (or a path to "
            "create one); pass another --report-dir"
        )
    made, probe = [], path
    while not probe.exists() and probe != probe.parent:
        made.append(probe)
        probe = probe.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise PreflightError(
            f"--report-dir {path}: cannot write there ({exc.strerror or exc}); pass a --report-dir "
            "you can write to"
        ) from None
    finally:
        for folder in made:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break


#: Bytes a run holds per generated sample: measured about 4 KB of Python objects per sample at 24
#: tokens (ids, text, metrics), held again as the test report's JSON and by the report writer.
SAMPLE_BYTES, SAMPLE_TOKEN_BYTES = 12_000, 40
#: The fewest samples a claims run holds: every pair x seed of baseline, champion and one intervention,
#: under both protocols (the suite's arms are several times that).
MIN_ARMS_HELD = 3 * 2


def samples_bytes(pairs: int, seeds: int, gen_tokens: int) -> int:
    """A lower bound on the memory a run holds for its samples (bytes)."""
    return pairs * seeds * MIN_ARMS_HELD * (SAMPLE_BYTES + SAMPLE_TOKEN_BYTES * gen_tokens)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(options: RunOptions, available: int | None = None) -> None:
    """Refuse a run whose samples alone would not fit in memory (the kernel would kill it later,
    with no message and no report)."""
    available = available_memory() if available is None else available
    if available is None:
        return
    from harness.prompts import default_pairs, load_pairs

    bank = len(load_pairs(options.prompts) if options.prompts else default_pairs())
    pairs = min(options.pairs or bank, bank)
    need = samples_bytes(pairs, options.seeds, options.gen_tokens)
    if need > available:
        fit = max(available // max(need // options.seeds, 1), 1)
        raise PreflightError(
            f"--seeds {options.seeds}: {pairs} pairs x {options.seeds} seeds need at least {need / 2**30:.1f} GiB "
            f"for their samples, this machine has {available / 2**30:.1f} GiB available; expected at most about "
            f"{fit} seeds here; lower --seeds (or --pairs)")


@functools.lru_cache(maxsize=8)
def _tokenizer_and_config(model: str | None, trust_remote_code: bool) -> tuple[Any, Any]:
    """The subject's tokenizer and config, without its weights (memoised per process)."""
    import transformers

    from harness.model import is_local_spec
    from harness.toy import TOY_MODEL_DIR

    source = str(TOY_MODEL_DIR if model is None else Path(model).expanduser() if is_local_spec(model) else model)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    local = model is None or is_local_spec(model)
    kwargs = {"trust_remote_code": trust_remote_code, "local_files_only": local or offline}
    if not local and not offline:
        _check_hub_reachable(model)
    try:
        config = transformers.AutoConfig.from_pretrained(source, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        hint = " (offline mode is set: download it first)" if offline and not local else ""
        raise PreflightError(
            f"--model {model}: cannot read its config and tokenizer{hint}: {str(exc).splitlines()[0]}"
        ) from None
    return tokenizer, config


def _check_hub_reachable(model: str, timeout: float = 3.0) -> None:
    """A hub id not in the local cache needs the hub: refuse at once when its host does not answer,
    rather than after the hub client's retries (about 30 s). Behind a proxy nothing is probed."""
    import socket
    from urllib.parse import urlsplit

    import transformers

    try:  # in the local cache: no network needed
        transformers.AutoConfig.from_pretrained(model, local_files_only=True)
        return
    except (OSError, ValueError):
        pass
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise PreflightError(
            f"--model {model}: not in the local hub cache, and the hub ({host}:{port}) cannot be reached "
            f"({exc.strerror or exc}); download it on a connected machine, or pass a local folder"
        ) from None


def _n_tokens(tokenizer: Any, text: str) -> int:
    """Length as the runner encodes it: the tokenizer's ids, BOS prepended when it has one."""
    ids = tokenizer(text, verbose=False).input_ids
    bos = tokenizer.bos_token_id
    return len(ids) + (1 if bos is not None and (not ids or ids[0] != bos) else 0)


def _check_prompt_lengths(options: RunOptions) -> None:
    from harness.sites import rope_switch_text
    from harness.prompts import default_pairs, load_pairs

    pairs = load_pairs(options.prompts) if options.prompts else default_pairs()
    tokenizer, config = _tokenizer_and_config(options.model, options.trust_remote_code)
    where = f"--prompts {options.prompts}" if options.prompts else "the bundled bank"
    longest, longest_id = 0, ""
    vocab = getattr(config, "vocab_size", None)
    for pair in pairs:
        for role in ("baseline", "champion"):
            n = _n_tokens(tokenizer, getattr(pair, role))
            top = max(tokenizer(getattr(pair, role), verbose=False).input_ids, default=0)
            if vocab is not None and top >= int(vocab):
                raise PreflightError(
                    f"{where}: pair {pair.id!r} has a {role} with token id {top}; the model's embedding has "
                    f"vocab_size {vocab} rows (ids 0..{int(vocab) - 1}); the tokenizer does not match the "
                    "weights: use the model's own tokenizer")
            if n < options.window:
                raise PreflightError(
                    f"{where}: pair {pair.id!r} has a {role} of {n} tokens; expected at least the "
                    f"patch window of {options.window} tokens of this model's tokenizer; lengthen it "
                    "or remove the pair"
                )
            if n > longest:
                longest, longest_id = n, pair.id
    # The original protocol feeds the last prompt token a second time: one more position.
    total = longest + 1 + options.gen_tokens
    # GPT-2 calls it n_positions (its config maps max_position_embeddings onto it): name it
    # as the model's own config.json does.
    name = getattr(config, "attribute_map", {}).get("max_position_embeddings", "max_position_embeddings")
    limit = getattr(config, name, None)
    if limit is not None and total > int(limit):
        raise PreflightError(
            f"{where}: pair {longest_id!r} has a prompt of {longest} tokens, plus {options.gen_tokens} "
            f"generated, {total} positions; the model has {name} {limit}; shorten "
            "the prompt or lower --gen-tokens"
        )
    switch = rope_switch_text(config, total)
    if switch is not None:
        raise PreflightError(f"{where}: pair {longest_id!r}: {switch}")
