"""A pytest-driven harness that re-verifies claims about language models.

The public API is listed in ``__all__``. Names are imported lazily so that
importing the package (as the pytest plugin does) loads neither torch nor
transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

from harness.errors import (
    HarnessError,
    HarnessLookupError,
    HarnessValueError,
    PromptFileError,
    UnsupportedModelError,
)

_LAZY = {
    "Subject": "harness.model",
    "load_subject": "harness.model",
    "TOY_MODEL_DIR": "harness.toy",
    "Pair": "harness.prompts",
    "load_pairs": "harness.prompts",
    "default_pairs": "harness.prompts",
    "Site": "harness.sites",
    "parse_site": "harness.sites",
    "map_layer": "harness.sites",
    "KVSnapshot": "harness.kv",
    "splice": "harness.kv",
    "PatchSpec": "harness.patches",
    "Intervention": "harness.generate",
    "Protocol": "harness.generate",
    "ORIGINAL": "harness.generate",
    "CORRECTED": "harness.generate",
    "Runner": "harness.generate",
    "Claim": "harness.claims",
    "Source": "harness.claims",
    "evaluate": "harness.claims",
    "Ledger": "harness.ledger",
}

__all__ = [
    "HarnessError",
    "HarnessLookupError",
    "HarnessValueError",
    "PromptFileError",
    "UnsupportedModelError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
