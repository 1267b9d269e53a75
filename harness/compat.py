"""Every difference between the transformers 4.x and 5.x lines the harness meets, in one place.

- The forward argument that takes a cache: ``past_key_values=`` (4.x) or ``cache=`` (5.x),
  and the output field that returns it (``.past_key_values`` / ``.cache``).
- A cache's per-layer tensors: ``cache.layers[i].keys`` (4.56+ and 5.x; legacy tuples
  ``((k, v), ...)`` are still read).
- The loading argument for the weights dtype: ``torch_dtype=`` (4.x) or ``dtype=`` (5.x).
- A config's rope settings: ``rope_scaling`` (4.x, ``type`` or ``rope_type``) or
  ``rope_parameters`` (5.x, possibly one dict per layer type).
- A static (preallocated) cache for decoding, and its compiled decoding step: 5.x only (4.x's
  static layers find their length by counting non-zero slots, which left padding makes wrong).

Nothing else in the harness checks the library's version.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from harness.errors import HarnessValueError

__all__ = ["cache_kwarg", "output_cache", "cache_from_kwargs", "cache_layers", "new_cache", "dtype_kwarg",
           "transformers_major", "rope_settings", "static_cache", "STATIC_GENERATE_KWARGS", "compiled_generate_kwargs"]


def transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def dtype_kwarg() -> str:
    """The ``from_pretrained`` argument naming the weights dtype."""
    return "dtype" if transformers_major() >= 5 else "torch_dtype"


def new_cache() -> Any:
    """An empty full-attention dynamic cache (no sliding-window layers, whatever the config says)."""
    from transformers import DynamicCache

    return DynamicCache()


def static_cache(n_layers: int, max_len: int, keys: Any = (), values: Any = ()) -> Any:
    """A full-attention static cache of ``max_len`` slots per layer, holding copies of ``keys``
    and ``values`` (per layer (batch, kv_heads, seq, head_dim); empty: filled by the first call).

    Its tensors keep one address for the whole generation (what a captured or compiled decoding
    step needs). Needs transformers 5: refused on 4.x, whose static layers would miscount.
    """
    if transformers_major() < 5:
        import transformers

        raise HarnessValueError(
            f"static-cache decoding needs transformers 5 (installed: {transformers.__version__}); "
            "use the default dynamic cache, or upgrade transformers")
    from transformers.cache_utils import Cache, StaticLayer

    cache = Cache(layers=[StaticLayer(max_cache_len=max_len) for _ in range(n_layers)])
    for i, (k, v) in enumerate(zip(keys, values)):
        cache.update(k.clone(), v.clone(), i)
    return cache


#: ``generate`` arguments that keep a static cache's decoding eager (the library would compile
#: it on a GPU by itself, hooks and all): compilation is the caller's explicit choice.
STATIC_GENERATE_KWARGS = {"disable_compile": True}


def compiled_generate_kwargs(device_type: str) -> dict[str, Any]:
    """``generate`` arguments that compile the decoding step over a static cache, hooks included
    (the prefill stays eager): captured CUDA graphs on a GPU (``reduce-overhead``), inductor's
    default elsewhere, where the library would not compile by itself. Graphs are built at the
    first call of each shape; the library marks a length dynamic once a second one is seen."""
    from transformers.generation.configuration_utils import CompileConfig

    config = CompileConfig(fullgraph=False, dynamic=None,
                           mode="reduce-overhead" if device_type == "cuda" else "default")
    config._compile_all_devices = device_type != "cuda"
    return {"compile_config": config}


@functools.lru_cache(maxsize=None)
def _cache_kwarg_for(forward: Any) -> str:
    params = inspect.signature(forward).parameters
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    # forward(**kwargs) wrappers: fall back on the library version
    return "cache" if transformers_major() >= 5 else "past_key_values"


def cache_kwarg(model: Any) -> str:
    """The name of the forward argument that takes a cache: "cache" or "past_key_values"."""
    return _cache_kwarg_for(type(model).forward)


def output_cache(outputs: Any) -> Any:
    """The cache object of a model output (``.cache`` in 5.x, ``.past_key_values`` in 4.x)."""
    for name in ("cache", "past_key_values"):
        value = getattr(outputs, name, None)
        if value is not None:
            return value
    raise HarnessValueError("model output carries no cache; call the model with use_cache=True")


def cache_from_kwargs(kwargs: dict[str, Any]) -> Any:
    """The cache passed to a forward call (e.g. seen by a pre-hook with kwargs), or None."""
    for name in ("cache", "past_key_values"):
        value = kwargs.get(name)
        if value is not None:
            return value
    return None


def cache_layers(cache: Any) -> list[tuple[Any, Any]]:
    """(keys, values) per layer of a cache object or a legacy tuple; None where a layer is empty."""
    if isinstance(cache, (tuple, list)):
        return [(layer[0], layer[1]) for layer in cache]
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise HarnessValueError(f"unsupported cache type {type(cache).__name__}")
    return [(getattr(layer, "keys", None), getattr(layer, "values", None)) for layer in layers]


def rope_settings(config: Any) -> list[dict[str, Any]]:
    """Every rope parameter dict of a config (object or ``config.json`` dict), each with ``rope_type``.

    4.x keeps them in ``rope_scaling`` (None for the default rope; older files say ``type``), 5.x in
    ``rope_parameters``, one dict per layer type where layer types differ (Gemma 3). Empty when
    the config names none (the default rope)."""
    from collections.abc import Mapping

    def get(key: str) -> Any:
        return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)

    found = []
    for key in ("rope_parameters", "rope_scaling"):
        value = get(key)
        if not isinstance(value, Mapping):
            continue
        dicts = [v for v in value.values() if isinstance(v, Mapping)] or [value]
        for d in dicts:
            kind = d.get("rope_type") or d.get("type") or "default"
            found.append({**d, "rope_type": str(kind)})
        break
    return found
