"""Progress of long work: which claim, which arm, rows done of total, tokens per second, ETA.

The engine reports through the process's current :class:`Progress` (a no-op unless a
run installed a reporter), so it needs no knowledge of pytest or terminals::

    bar = progress.current()
    bar.start("kv-only", rows_total=144, tokens_per_row=24)   # before an arm's pairs run
    bar.advance(tokens=144)                                    # after each decoding step of 144 rows
    bar.advance(rows=144)                                      # after the rows are finished
    bar.done()                                                 # the arm is over (also on error)

The plugin wraps each claim in :func:`claim`, which names the work and tallies it
(:class:`Work`: seconds, rows, tokens), and installs a :class:`Reporter` that writes
progress lines to a :class:`Sink` once a claim has run longer than a delay. Nothing
here imports torch, transformers or pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Progress", "Reporter", "Sink", "Work", "claim", "current", "install", "format_line", "token_ticker"]


@dataclass(frozen=True)
class Work:
    """What one claim cost: wall seconds, rows generated, tokens decoded, arms run."""

    label: str
    seconds: float
    rows: int
    tokens: int
    arms: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "seconds": round(self.seconds, 3), "rows": self.rows,
                "tokens": self.tokens, "arms": self.arms}

    def describe(self) -> str:
        """One line, e.g. ``12.3 s, 3 arms, 864 rows, 1,686 tok/s``."""
        parts = [f"{self.seconds:.1f} s"]
        if self.arms:
            parts.append(f"{self.arms} arm{'s' if self.arms != 1 else ''}")
        if self.rows:
            parts.append(f"{self.rows:,} rows")
        if self.tokens:
            parts.append(f"{self.tokens_per_second:,.0f} tok/s")
        return ", ".join(parts)


class Progress:
    """The engine's progress hook. This base class does nothing and costs nothing."""

    def start(self, arm: str, rows_total: int, tokens_per_row: int) -> None:
        """An arm begins: ``rows_total`` rows (pairs x seeds) of up to ``tokens_per_row`` tokens."""

    def advance(self, rows: int = 0, tokens: int = 0) -> None:
        """``rows`` more rows finished and/or ``tokens`` more tokens decoded (all rows together)."""

    def done(self) -> None:
        """The arm started last is over (finished, memoised or failed)."""

    def begin_claim(self, label: str) -> None:
        """A claim cell begins (called by :func:`claim`)."""

    def end_claim(self) -> Work | None:
        """The claim cell is over; what it cost, when this progress keeps count."""
        return None


_CURRENT: Progress = Progress()


def current() -> Progress:
    """The progress reporter of this process (a no-op unless the run installed one)."""
    return _CURRENT


def install(progress: Progress) -> Progress:
    """Make ``progress`` the process's reporter; returns the one it replaces."""
    global _CURRENT
    previous, _CURRENT = _CURRENT, progress
    return previous


class _Holder:
    """Filled with the claim's :class:`Work` when the ``with claim(...)`` block ends."""

    work: Work | None = None


@contextmanager
def claim(label: str) -> Iterator[_Holder]:
    """Run a claim cell under ``label``; ``holder.work`` says what it cost afterwards."""
    holder = _Holder()
    bar = current()
    bar.begin_claim(label)
    try:
        yield holder
    finally:
        holder.work = bar.end_claim()


def token_ticker() -> Any:
    """A ``transformers`` stopping criterion that never stops and reports each decoding step.

    Pass it to ``model.generate(..., stopping_criteria=StoppingCriteriaList([token_ticker()]))``:
    after every step it calls ``current().advance(tokens=rows)``, so a long generation
    shows tokens per second and an ETA while it runs. It reads only the batch's shape
    (no device synchronisation). Imports torch and transformers when called, not before.
    """
    import torch
    from transformers import StoppingCriteria

    class _Ticker(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            rows = int(input_ids.shape[0])
            current().advance(tokens=rows)
            return torch.zeros(rows, dtype=torch.bool, device=input_ids.device)

    return _Ticker()


class Sink(Protocol):
    """Where a :class:`Reporter` writes: one live line (rewritten on a terminal, appended in a log)."""

    live: bool  # True when a shown line can be rewritten in place (a terminal)

    def show(self, text: str) -> None: ...


def format_line(label: str, arm: str, rows_done: int, rows_total: int, rate: float,
                eta: float | None) -> str:
    """``l27-v-full-kv[corrected] · kv+v_proj@27 · rows 48/144 · 1,234 tok/s · ETA 0:42``."""
    parts = [label or "(no claim)", arm, f"rows {rows_done}/{rows_total}"]
    if rate > 0:
        parts.append(f"{rate:,.0f} tok/s")
    if eta is not None:
        parts.append(f"ETA {_clock(eta)}")
    return " · ".join(parts)


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Reporter(Progress):
    """Counts every claim's work and, once a claim has run ``delay`` seconds, shows its progress.

    On a live sink (a terminal) the line is refreshed at most every ``refresh`` seconds;
    on a log it is appended every ``interval`` seconds, so a CI log gets plain periodic
    lines. ``sink=None`` only counts (xdist workers, whose output nobody sees).
    """

    def __init__(self, sink: Sink | None = None, delay: float = 10.0, interval: float = 30.0,
                 refresh: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        self.sink, self.delay, self.interval, self.refresh, self.clock = sink, delay, interval, refresh, clock
        self.shown = False  # whether this claim printed anything (its last line is then open)
        self._reset("")

    def _reset(self, label: str) -> None:
        now = self.clock()
        self.label, self.claim_start, self.last_shown = label, now, None
        self.rows = self.tokens = self.arms = 0
        self._arm("", 0, 0)

    def _arm(self, arm: str, rows_total: int, tokens_per_row: int) -> None:
        self.arm, self.arm_start = arm, self.clock()
        self.arm_rows_total, self.arm_tokens_total = rows_total, rows_total * tokens_per_row
        self.arm_rows = self.arm_tokens = 0

    # -- the engine's calls -------------------------------------------------------
    def start(self, arm: str, rows_total: int, tokens_per_row: int) -> None:
        self.arms += 1
        self._arm(arm, max(int(rows_total), 0), max(int(tokens_per_row), 0))
        self._tick()

    def advance(self, rows: int = 0, tokens: int = 0) -> None:
        self.arm_rows += rows
        self.arm_tokens += tokens
        self.rows += rows
        self.tokens += tokens
        self._tick()

    def done(self) -> None:
        self._tick()

    # -- claims ----------------------------------------------------------------
    def begin_claim(self, label: str) -> None:
        self.shown = False
        self._reset(label)

    def end_claim(self) -> Work:
        return Work(self.label, self.clock() - self.claim_start, self.rows, self.tokens, self.arms)

    # -- display ---------------------------------------------------------------
    def eta(self) -> float | None:
        """Seconds left in the current arm, from its own pace (tokens if counted, else rows)."""
        spent = self.clock() - self.arm_start
        done, total = ((self.arm_tokens, self.arm_tokens_total) if self.arm_tokens
                       else (self.arm_rows, self.arm_rows_total))
        if done <= 0 or total <= 0 or spent <= 0:
            return None
        return max(total - done, 0) * spent / done

    def line(self) -> str:
        spent = self.clock() - self.claim_start
        rate = self.tokens / spent if spent > 0 else 0.0
        return format_line(self.label, self.arm or "-", self.arm_rows, self.arm_rows_total, rate, self.eta())

    def _tick(self) -> None:
        if self.sink is None:
            return
        now = self.clock()
        if now - self.claim_start < self.delay:
            return
        if not self.sink.live and not (self.arm_tokens or self.arm_rows):
            return  # a log line says how fast and how long: wait until there is a pace to tell
        gap = self.refresh if self.sink.live else self.interval
        if self.last_shown is not None and now - self.last_shown < gap:
            return
        self.last_shown = now
        self.shown = True
        self.sink.show(self.line())
