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
    "Intervention": "harness.records",
    "Protocol": "harness.records",
    "ORIGINAL": "harness.records",
    "CORRECTED": "harness.records",
    "Runner": "harness.generate",
    "Claim": "harness.claims",
    "Source": "harness.claims",
    "Efficiency": "harness.claims",
    "Contrast": "harness.claims",
    "Interaction": "harness.claims",
    "Finding": "harness.finding",
    "Metric": "harness.metrics",
    "RvDifference": "harness.claims",
    "Evaluator": "harness.evaluate",
    "Ledger": "harness.ledger",
    "ClaimRow": "harness.report",
    "SampleRow": "harness.report",
    "load_run": "harness.report",
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
