"""What every ``python -m harness...`` entry point shares: a HarnessError is one line, exit code 2.

A deliberate refusal (a missing folder, runs that cannot be merged, a model the harness
cannot hook) is a message for the user, not a bug: it is printed as one line on stderr,
``error: ...``, and the command exits with 2 (argparse's own code for a usage error).
Any other exception keeps its traceback, since it is one. Imports nothing heavy.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from harness.errors import HarnessError

__all__ = ["EXIT_REFUSED", "one_line_errors", "error_line"]

EXIT_REFUSED = 2
Main = TypeVar("Main", bound=Callable[..., int])


def error_line(exc: BaseException) -> str:
    """``error: <message>`` on one line, however many lines the message had."""
    return "error: " + " ".join(str(exc).split())


def one_line_errors(main: Main) -> Main:
    """Wrap a ``main(argv) -> int``: a HarnessError becomes one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None, *args: object, **kwargs: object) -> int:
        try:
            return main(argv, *args, **kwargs)
        except HarnessError as exc:
            print(error_line(exc), file=sys.stderr)
            return EXIT_REFUSED

    return wrapper  # type: ignore[return-value]
