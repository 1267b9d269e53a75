"""The harness's error classes.

Every error the harness raises on purpose derives from :class:`HarnessError`.
Subclasses also inherit the built-in exception they refine, so callers can
catch ``ValueError`` or ``LookupError`` as usual.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "HarnessError",
    "HarnessValueError",
    "HarnessLookupError",
    "UnsupportedModelError",
    "PromptFileError",
    "PreflightError",
    "did_you_mean",
]


class HarnessError(Exception):
    """Root of every error the harness raises deliberately."""


class HarnessValueError(HarnessError, ValueError):
    """A value given by the user (option, prompt, layer, window) is not acceptable."""


class HarnessLookupError(HarnessError, LookupError):
    """A named thing (site, claim, layer, file) does not exist."""


class UnsupportedModelError(HarnessError, ValueError):
    """The model's module layout is not one the harness can hook."""


class PromptFileError(HarnessValueError):
    """A prompts file is unreadable or has a malformed line."""


class PreflightError(HarnessValueError):
    """A run's settings cannot work (found before any weights load); the message is one line."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""
