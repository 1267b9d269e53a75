"""Load a subject: a causal LM, its tokenizer and the layout adapter that hooks it.

Everything that can be checked before weights load is checked first: the
device and dtype strings, the folder, the weight files (safetensors only unless
pickle is allowed) and the architecture named in ``config.json``. The network
is reached only when the user names a hub id and offline mode is not set.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.compat import dtype_kwarg
from harness.errors import HarnessLookupError, HarnessValueError

__all__ = ["Subject", "load_subject", "check_device", "check_dtype", "check_auto_available", "input_device",
           "device_map", "DTYPES", "AUTO_INSTALL"]

DTYPES = ("float32", "bfloat16", "float16")
_DEVICE_RE = re.compile(r"^(cpu|auto|cuda|cuda:\d+|mps)$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
#: The name a device map gives the whole model ("" in accelerate's maps), readable in a report.
WHOLE_MODEL = "(whole model)"
#: How to get accelerate, which ``--device auto`` (a device map) needs.
AUTO_INSTALL = "pip install 'claims-harness[auto]' (or: pip install accelerate)"


@dataclass(frozen=True)
class Subject:
    """A loaded model under study.

    ``identity`` (name plus the first 12 hex digits of the weights hash) is the
    key the ledger records verdicts under.
    """

    name: str
    model: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    layout: Any = field(repr=False)
    weights_hash: str
    tokenizer_hash: str
    device: str
    dtype: str
    path: str | None = None

    @property
    def identity(self) -> str:
        return f"{self.name}@{self.weights_hash[:12]}"

    @property
    def n_layers(self) -> int:
        return self.layout.n_layers


def check_device(device: str) -> str:
    """Refuse a device string the harness cannot use; return it unchanged."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise HarnessValueError(
            f"--device {device!r} is not a device; expected cpu, cuda, cuda:N, mps or auto "
            "(auto spreads the model over the visible GPUs with device_map)"
        )
    return device


def check_auto_available() -> None:
    """Refuse ``--device auto`` when accelerate, which places the model by a device map, cannot
    be imported (checked before any weights load)."""
    from harness.errors import PreflightError

    try:
        import accelerate  # noqa: F401
    except ImportError as exc:
        raise PreflightError(
            f"--device auto: spreading the model with a device map needs the accelerate package, which "
            f"cannot be imported here ({exc}); install it with {AUTO_INSTALL}, or use --device cpu or cuda"
        ) from None


def input_device(model: Any) -> Any:
    """The device the model's inputs go to: its input embedding's, which is where a device map
    (or accelerate's offload hooks: weights kept on the CPU or disk, moved in per call) runs it."""
    embed = model.get_input_embeddings()
    hook = getattr(embed, "_hf_hook", None)
    execution = getattr(hook, "execution_device", None)
    if execution is not None:
        import torch

        return torch.device(execution)
    return embed.weight.device


def device_map(model: Any) -> dict[str, str]:
    """Where each part of the model lives (module name -> device, ``cpu`` or ``disk`` for
    offloaded weights), as loading with a device map placed it; the whole model (the map's
    empty name, shown as ``WHOLE_MODEL``) on its device otherwise."""
    placed = getattr(model, "hf_device_map", None)
    if placed:
        return {str(name) or WHOLE_MODEL: str(where) for name, where in placed.items()}
    return {WHOLE_MODEL: str(input_device(model))}


def check_dtype(dtype: str) -> str:
    """Refuse a dtype name other than float32, bfloat16 or float16."""
    if dtype not in DTYPES:
        raise HarnessValueError(
            f"--dtype {dtype!r} is not supported; expected one of {', '.join(DTYPES)}"
        )
    return dtype


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or (os.sep in spec and not _HUB_ID_RE.match(spec))


def is_local_spec(spec: str) -> bool:
    """Whether ``--model`` names a local folder (existing or path-like) rather than a hub id."""
    return Path(spec).expanduser().exists() or _looks_like_path(spec) or not _HUB_ID_RE.match(spec)


def _weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    safe = [p for p in files if p.suffix == ".safetensors"]
    pickle = [p for p in files if p.suffix in _PICKLE_SUFFIXES and "training_args" not in p.name]
    return safe, pickle


def _read_config(folder: Path) -> dict:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise HarnessLookupError(
            f"model folder {str(folder)!r} has no config.json; point --model at a folder "
            "saved with save_pretrained (config.json plus *.safetensors)"
        )
    try:
        return json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HarnessValueError(f"{config_file}: unreadable config.json ({exc})") from exc


def check_local_folder(folder: Path, *, allow_pickle: bool = False) -> dict:
    """Validate a local model folder before any weights load; return its config dict."""
    from harness.sites import check_architecture

    if not folder.is_dir():
        raise HarnessLookupError(
            f"--model {str(folder)!r}: no such folder; give a folder saved with "
            "save_pretrained, a hub id such as mistralai/Mistral-7B-Instruct-v0.2, "
            "or leave --model unset for the embedded toy model"
        )
    config = _read_config(folder)
    safe, pickle = _weight_files(folder)
    if not safe:
        if pickle and not allow_pickle:
            names = ", ".join(p.name for p in pickle)
            raise HarnessValueError(
                f"model folder {str(folder)!r} has only pickle weights ({names}); loading pickle "
                "runs code from the file. Convert them to safetensors, or pass --allow-pickle "
                "if you trust the source"
            )
        if not pickle:
            raise HarnessLookupError(
                f"model folder {str(folder)!r} has no weights (no *.safetensors file); "
                "save the model with save_pretrained(safe_serialization=True) into it"
            )
    check_architecture(config)  # first: a layout the harness cannot hook is the more basic refusal
    for path in safe:
        check_safetensors(path)
    return config


def check_safetensors(path: Path) -> None:
    """Refuse a safetensors file whose header is unreadable or whose tensors run past its end
    (a cut download, a full disk): read the header only (8-byte length, JSON), no tensor."""
    def refuse(why: str) -> HarnessValueError:
        return HarnessValueError(
            f"{path}: not a whole safetensors file ({why}); download or save the weights again")

    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise refuse(f"{size} bytes, shorter than a header")
            n = int.from_bytes(head, "little")
            if n > size - 8:
                raise refuse(f"header of {n} bytes in a file of {size}")
            header = json.loads(handle.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise refuse(f"unreadable header: {exc}") from None
    if not isinstance(header, dict):
        raise refuse("the header is not a JSON object")
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)]
    if ends and 8 + n + max(ends) > size:
        raise refuse(f"its tensors need {8 + n + max(ends)} bytes, the file has {size}")


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 23), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _hash_tokenizer(tokenizer: Any) -> str:
    vocab = tokenizer.get_vocab()
    payload = json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()
    return hashlib.sha256(payload).hexdigest()


def _torch_dtype(dtype: str) -> Any:
    import torch

    return getattr(torch, dtype)


def load_subject(
    spec: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> Subject:
    """Load a model folder or hub id as a :class:`Subject` in eval mode.

    ``spec`` None loads the embedded toy model. A hub id reaches the network
    unless ``HF_HUB_OFFLINE`` is set, in which case only the local cache is used.
    ``device="auto"`` places the model with accelerate's device map over the visible
    GPUs and the CPU; ``max_memory`` (per device, as accelerate takes it) and
    ``offload_folder`` (where weights that fit nowhere go, on disk) shape that map.
    """
    check_device(device)
    check_dtype(dtype)
    if device == "auto":
        check_auto_available()
    elif max_memory is not None or offload_folder is not None:
        raise HarnessValueError(
            f"max_memory / offload_folder shape a device map; they need device='auto', not {device!r}")
    from harness.toy import TOY_MODEL_DIR

    if spec is None:
        spec = TOY_MODEL_DIR
    text = os.fspath(spec)
    folder = Path(text).expanduser()
    local = is_local_spec(text)
    if local:
        check_local_folder(folder, allow_pickle=allow_pickle)
        # The toy by any path to it (harness/toy/model, a link) is the toy: one ledger identity.
        source, name = str(folder), folder.name if folder.resolve() != TOY_MODEL_DIR.resolve() else "toy"
    else:
        source, name = text, text

    import transformers

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    common = {"trust_remote_code": trust_remote_code, "local_files_only": local or offline}
    if not local:
        from harness.sites import check_architecture

        try:
            config = transformers.AutoConfig.from_pretrained(source, **common)
        except OSError as exc:
            hint = " (offline mode is set: download it first)" if offline else ""
            raise HarnessLookupError(
                f"--model {text!r}: not a local folder and not loadable as a hub id{hint}: "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        check_architecture(config)
    load_kwargs = dict(common, use_safetensors=None if allow_pickle else True)
    load_kwargs[dtype_kwarg()] = _torch_dtype(dtype)
    if device == "auto":
        load_kwargs["device_map"] = "auto"
        if max_memory is not None:
            load_kwargs["max_memory"] = max_memory
        if offload_folder is not None:
            load_kwargs["offload_folder"] = os.fspath(offload_folder)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(source, **load_kwargs)
    except (OSError, ValueError, RuntimeError) as exc:  # damaged weights, shapes that disagree with config
        raise HarnessValueError(f"--model {text}: cannot load its weights: {' '.join(str(exc).split())[:300]}; "
                                "check the folder (or hub id) holds the model's own weights and config") from None
    if device != "auto":
        model = model.to(device)
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, **common)

    from harness.layouts import layout_for

    layout = layout_for(model)
    weights_dir = Path(source) if local else _hub_snapshot_dir(model)
    files: list[Path] = []
    if weights_dir is not None:
        safe, pickle = _weight_files(weights_dir)
        files = safe or pickle
    weights_hash = _hash_files(files) if files else _hash_state(model)
    return Subject(
        name=name,
        model=model,
        tokenizer=tokenizer,
        layout=layout,
        weights_hash=weights_hash,
        tokenizer_hash=_hash_tokenizer(tokenizer),
        device=device,
        dtype=dtype,
        path=source if local else None,
    )


def _hub_snapshot_dir(model: Any) -> Path | None:
    path = getattr(model.config, "_name_or_path", None)
    if path and Path(path).is_dir():
        return Path(path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, local_files_only=True))
    except Exception:  # no cached snapshot to hash: fall back to hashing parameters
        return None


def _hash_state(model: Any) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()
