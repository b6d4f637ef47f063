"""`FolderLock`: one writer per folder, by an OS lock that dies with its process.

A writer (the recorder on a record folder, a training on its run folder) takes an exclusive
``fcntl.flock`` on a lock file inside the folder and keeps the file open for as long as it writes.
The kernel drops the lock when the process ends for any reason, ``kill -9`` included, so a resume
after a crash finds the folder free, while a second live writer (in this process or another) is
refused with a one-line `GradscopeError` naming the holder: its pid, host and start time, which the
holder writes into the lock file (``.<what>.lock``, so a run folder and a record inside it never
share one). The lock file is left in place when released; its content is only information, the lock
itself lives in the kernel.

    with FolderLock("runs/baseline", what="run"):
        ...write into runs/baseline...

The lock is advisory: it stops writers that take it, not other programs. On systems without
``fcntl`` (Windows) it is a no-op beyond writing the holder's description.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import GradscopeError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]



class FolderLock:
    """An exclusive, process-lifetime lock on a folder, held through ``<folder>/.<what>.lock``.

    Two `FolderLock` objects on one folder and ``what`` exclude each other even inside one process
    (``flock`` locks belong to an open file, not to a process).

    Args:
        folder: the folder to lock; created (with its parents) when the lock is taken.
        what: what the folder is, for messages and the lock file's name ("record", "run").
        name: the lock file's name inside ``folder``; ``.<what>.lock`` by default.
    """

    def __init__(self, folder: str | os.PathLike[str], what: str = "folder", name: str | None = None) -> None:
        self.folder = Path(folder)
        self.what = what
        self.path = self.folder / (name or f".{what}.lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock, or raise `GradscopeError` naming the writer that holds it. Returns self."""
        if self._fd is not None:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise GradscopeError(f"cannot lock {self.what} folder {self.folder}: {exc.strerror or exc}") from None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = describe_holder(fd)
            os.close(fd)
            raise GradscopeError(
                f"{self.what} folder {self.folder} is being written by another writer ({holder}); "
                "stop that one first or choose another folder"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_holder_facts()).encode(), 0)
        except OSError:
            pass  # the kernel lock is what counts; the description is a courtesy
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the file releases it). Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def holder(self) -> str:
        """The description the current (or last) holder wrote: 'pid P on HOST since TIME', or 'unknown'."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return "unknown"
        try:
            return describe_holder(fd)
        finally:
            os.close(fd)

    def __del__(self) -> None:  # an abandoned writer must not keep its folder locked
        self.release()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"FolderLock({str(self.folder)!r}, what={self.what!r}, held={self.held})"


def _holder_facts() -> dict[str, Any]:
    return {
        "pid": os.getpid(), "host": socket.gethostname(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def describe_holder(fd: int) -> str:
    """Read the holder's description from an open lock file, in words."""
    try:
        facts = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return "unknown"
    if not isinstance(facts, dict):
        return "unknown"
    mine = facts.get("pid") == os.getpid() and facts.get("host") == socket.gethostname()
    return (f"pid {facts.get('pid', '?')} on {facts.get('host', '?')} since {facts.get('since', '?')}"
            + (", this very process" if mine else ""))


def holder_is_running(lock_file: str | os.PathLike[str]) -> bool:
    """Whether the process named in ``lock_file`` runs on this host: a reader's test that a folder is written.

    Readers never take the lock themselves (even a shared lock held for an instant could make a
    writer starting at that moment fail), so they read the holder's pid instead. The file outlives
    its holder, so a dead pid means a finished or killed writer; a reused pid can make a stale file
    look held, which only costs a reader a "live" label until the next change.
    """
    try:
        facts = json.loads(Path(lock_file).read_text() or "{}")
    except (OSError, ValueError):
        return False
    pid = facts.get("pid") if isinstance(facts, dict) else None
    if not isinstance(pid, int) or pid <= 0 or facts.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, alive
        return True
    except OSError:
        return False
    return True

