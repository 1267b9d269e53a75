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

__all__ = [
    "HarnessError",
    "HarnessLookupError",
    "HarnessValueError",
    "PromptFileError",
    "UnsupportedModelError",
    "Subject",
    "load_subject",
    "TOY_MODEL_DIR",
    "Pair",
    "load_pairs",
    "default_pairs",
]

_LAZY = {
    "Subject": "harness.model",
    "load_subject": "harness.model",
    "TOY_MODEL_DIR": "harness.toy",
    "Pair": "harness.prompts",
    "load_pairs": "harness.prompts",
    "default_pairs": "harness.prompts",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
