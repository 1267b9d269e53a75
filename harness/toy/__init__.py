"""The embedded toy model: a small Mistral-architecture causal LM shipped with the package.

:data:`TOY_MODEL_DIR` is the folder holding its weights (safetensors), config and
word-level tokenizer; ``AutoModelForCausalLM.from_pretrained(TOY_MODEL_DIR)`` and
``AutoTokenizer.from_pretrained(TOY_MODEL_DIR)`` load it offline. The corpus it was
trained on is :mod:`harness.toy.corpus`, the trainer :mod:`harness.toy.train`
(see ``README.md`` beside this file). Importing this package loads neither torch
nor transformers.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TOY_MODEL_DIR"]

#: Folder of the shipped toy model, resolved from this file so that it also works
#: from a regular (non-editable) install, where it lies inside site-packages.
TOY_MODEL_DIR: Path = Path(__file__).resolve().parent / "model"
