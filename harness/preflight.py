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

__all__ = ["RunOptions", "preflight", "MAX_GEN_TOKENS"]

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
    seed_offset: int = 0

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.seeds))


def preflight(options: RunOptions) -> None:
    """Refuse settings the run cannot honour; return quietly when all is well.

    Order: what needs no file first (device, token budget), then the ledger and the
    report folder, then the prompts measured in the subject's own tokens.
    """
    check_device_available(options.device)
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


def check_device_available(device: str) -> None:
    """Refuse a device this machine does not have (``cuda``, ``cuda:N``, ``mps``)."""
    from harness.model import check_device

    check_device(device)
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
    try:
        config = transformers.AutoConfig.from_pretrained(source, **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        hint = " (offline mode is set: download it first)" if offline and not local else ""
        raise PreflightError(
            f"--model {model}: cannot read its config and tokenizer{hint}: {str(exc).splitlines()[0]}"
        ) from None
    return tokenizer, config


def _n_tokens(tokenizer: Any, text: str) -> int:
    """Length as the runner encodes it: the tokenizer's ids, BOS prepended when it has one."""
    ids = tokenizer(text, verbose=False).input_ids
    bos = tokenizer.bos_token_id
    return len(ids) + (1 if bos is not None and (not ids or ids[0] != bos) else 0)


def _check_prompt_lengths(options: RunOptions) -> None:
    from harness.sites import sliding_window_of
    from harness.prompts import default_pairs, load_pairs

    pairs = load_pairs(options.prompts) if options.prompts else default_pairs()
    tokenizer, config = _tokenizer_and_config(options.model, options.trust_remote_code)
    where = f"--prompts {options.prompts}" if options.prompts else "the bundled bank"
    longest, longest_id = 0, ""
    for pair in pairs:
        for role in ("baseline", "champion"):
            n = _n_tokens(tokenizer, getattr(pair, role))
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
    window = sliding_window_of(config)
    if window is not None and total > window:
        raise PreflightError(
            f"sliding_window {window}: pair {longest_id!r} has a prompt of {longest} tokens, plus "
            f"{options.gen_tokens} generated, {total} positions beyond the model's attention window; "
            f"splicing the whole cache is only defined within it; use prompts and --gen-tokens that "
            f"total at most {window} positions"
        )
