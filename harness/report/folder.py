"""A report folder belongs to one run: refused when it holds another run, locked while one writes.

Two runs into one folder would mix silently: the writer appends samples, and the reader
keeps the first row of each key, so a second run's report would show the old run's texts
under the new run's settings. So a run claims its folder at its start, before any weights
load:

- a lock file (``.run.lock``, created with ``O_EXCL``, holding the writer's pid and host)
  keeps a second run out while the first writes; a lock whose process is gone (same host,
  no such pid) is stale and is taken over;
- a folder that already holds a run's files is refused, unless the caller asks for a fresh
  start (``--report-fresh``), which removes the previous run's files (and only those).

A default folder (``reports/<time>``) that is taken gets a suffix instead of a refusal.
Imports nothing heavy.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessValueError

__all__ = ["LOCK_NAME", "RUN_FILES", "FolderTakenError", "FolderLock", "claim_folder", "holds_run"]

LOCK_NAME = ".run.lock"
#: What a run writes into its folder (the data files first): what --report-fresh removes.
RUN_FILES = ("results.jsonl", "claims.csv", "summary.json", "summary.md", "report.html",
             "efficiency.png", "layer_sweep.png", "pr_profile.png")
#: Files that mark a folder as holding a run.
_DATA_FILES = RUN_FILES[:3]


class FolderTakenError(HarnessValueError):
    """The report folder holds another run, or another run is writing there."""


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` has the data files of a run."""
    return any((Path(folder) / name).exists() for name in _DATA_FILES)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _read_lock(path: Path) -> tuple[int | None, str]:
    """(pid, host) written in a lock file; (None, "") when unreadable or cut short."""
    try:
        words = path.read_text(encoding="utf-8").split()
        return int(words[0]), words[1] if len(words) > 1 else ""
    except (OSError, ValueError, IndexError):
        return None, ""


@dataclass(frozen=True)
class FolderLock:
    """A held claim on a report folder. ``made`` lists the folders the claim created
    (deepest first): :meth:`release` removes them again if the run wrote nothing."""

    directory: Path
    made: tuple[Path, ...] = ()

    @property
    def path(self) -> Path:
        return self.directory / LOCK_NAME

    def release(self) -> None:
        """Remove the lock (if it is still ours), and folders this claim made that stayed empty."""
        pid, _ = _read_lock(self.path)
        if pid == os.getpid():
            try:
                self.path.unlink()
            except OSError:
                pass
        for folder in self.made:
            try:
                folder.rmdir()
            except OSError:  # not empty (the run wrote there) or gone: keep going up no further
                break


def _take_lock(directory: Path) -> bool:
    """Create the lock file exclusively; False if another live run holds it."""
    path = directory / LOCK_NAME
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, host = _read_lock(path)
            if pid is not None and host == socket.gethostname() and not _alive(pid):
                try:  # stale: its run died without releasing it
                    path.unlink()
                except FileNotFoundError:
                    pass
                continue
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        return True
    return False


def _refusal(directory: Path, option: str) -> FolderTakenError:
    pid, host = _read_lock(directory / LOCK_NAME)
    who = f"pid {pid} on {host}" if pid is not None else "a run whose lock file is unreadable"
    return FolderTakenError(
        f"{option} {directory}: another run ({who}) is writing there (lock file {directory / LOCK_NAME}); "
        f"wait for it to finish, pass another {option}, or remove the lock file if that run is gone")


def claim_folder(directory: Path, *, fresh: bool = False, default: bool = False,
                 option: str = "--report-dir") -> FolderLock:
    """Lock ``directory`` for one run, creating it if needed.

    Refused (:class:`FolderTakenError`, one line naming ``option``) when another live run
    holds the lock, or when the folder holds a run's files and ``fresh`` is false. With
    ``fresh``, the previous run's files are removed. With ``default`` (a folder the user
    did not name), a taken folder is replaced by the first free ``<name>-2``, ``<name>-3``...
    """
    directory = Path(directory)
    candidates = [directory] + ([directory.with_name(f"{directory.name}-{i}") for i in range(2, 100)]
                                if default else [])
    for candidate in candidates:
        made, probe = [], candidate
        while not probe.exists() and probe != probe.parent:
            made.append(probe)
            probe = probe.parent
        candidate.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(candidate, tuple(made))
        if not _take_lock(candidate):
            if default:
                continue
            raise _refusal(candidate, option)
        if holds_run(candidate):
            if default:
                lock.release()
                continue
            if not fresh:
                lock.release()
                raise FolderTakenError(
                    f"{option} {candidate}: holds another run's report ({_what(candidate)}); expected an "
                    f"empty or new folder; pass another {option}, or add --report-fresh to replace that run")
            _clear(candidate)
        return lock
    raise FolderTakenError(f"{option} {directory}: it and its 98 numbered siblings are taken; "
                           f"pass a --report-dir of your own")


def _what(folder: Path) -> str:
    names = [n for n in _DATA_FILES if (folder / n).exists()]
    return ", ".join(names)


def _clear(folder: Path) -> None:
    """Remove a previous run's files (and its interrupted writes' ``.tmp`` files), nothing else."""
    for name in RUN_FILES:
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise FolderTakenError(
                    f"--report-fresh: cannot remove {folder / name} ({exc.strerror}); remove it by hand "
                    "or pass another --report-dir") from None
    for tmp in folder.glob("*.tmp"):
        tmp.unlink(missing_ok=True)
