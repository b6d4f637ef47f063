"""Aggregating finished runs' records in the background, so that no page waits for a first view.

The run index hands every finished run's record (its recorder closed) to a `RecordWarmer`: one daemon
thread, at a lower CPU priority, takes them from a queue one at a time and computes every view into
the record's ``cache/`` (`trainers.record_warmup.warm_record`). A callback never waits for it: a page
opened before a run is done computes what it shows itself, and reads the cache once it is there.

A live record is never warmed (each frame it gains would invalidate the cache at once), nor one in a
folder that cannot be written (nothing could be kept). A failure is logged and becomes a problem of
that run (`RecordWarmer.failure`); the thread goes on with the next run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Hashable
from pathlib import Path

from gradscope.cache import CACHE_FOLDER
from trainers.record_warmup import warm_record

log = logging.getLogger("app.warmup")
NICENESS = 10  # added to the warming thread's priority: page callbacks go first on a busy machine


def _writable(record_folder: Path) -> bool:
    """Whether a cache could be kept beside the record: its ``cache/`` folder, or the record folder to make one in."""
    cache = record_folder / CACHE_FOLDER
    if cache.is_dir():
        return os.access(cache, os.W_OK)
    return not cache.exists() and not cache.is_symlink() and os.access(record_folder, os.W_OK)


class RecordWarmer:
    """A queue of records to aggregate and the one thread that works through it, started on first use."""

    def __init__(self, warm: Callable[[Path], object] = warm_record) -> None:
        self._warm = warm
        self._queue: queue.SimpleQueue[tuple[str, Path]] = queue.SimpleQueue()
        self._seen: set[tuple[str, Hashable]] = set()  # (run id, file signature) handed over already
        self._failures: dict[str, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, run_id: str, record_folder: Path, signature: Hashable) -> None:
        """Queue a closed record, once per version of its files; returns at once."""
        with self._lock:
            if (run_id, signature) in self._seen:
                return
            self._seen.add((run_id, signature))
            self._failures.pop(run_id, None)
            if not _writable(record_folder):
                return
            self._queue.put((run_id, record_folder))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="gradscope-cache-warmer", daemon=True)
                self._thread.start()

    def failure(self, run_id: str) -> str | None:
        """Why the last warming of ``run_id`` failed; None if it did not (or has not run yet)."""
        return self._failures.get(run_id)

    def _work(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # Linux sets a thread's own niceness
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
        while True:
            run_id, record_folder = self._queue.get()
            try:
                self._warm(record_folder)
            except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the thread or the app
                message = f"its views could not be cached ({type(exc).__name__}: {exc})"
                self._failures[run_id] = message
                log.warning("run %s: %s", run_id, message)


__all__ = ["RecordWarmer"]
