"""Aggregates kept beside a record, so that a cold reader never decodes a long record twice.

A record folder may hold a ``cache/`` folder written by readers (never by the recorder)::

    cache/index-KEY.json              the intact frames found by the last full scan, and its problems
    cache/LEVEL.STAT.VIEW-KEY.npy     one statistic at one level: (n_steps, n_groups) float64
    cache/LEVEL.STAT.VIEW.sums-KEY.npy   per block of `BLOCK` steps: sum and count of the finite
                                      values, (2, n_blocks, n_groups) float64, for window means

``KEY`` is the frames file's size and modification time (ns) and a CRC of the ``params`` of
``meta.json``: appending frames, rewriting bytes in place or editing the parameter list gives another
key, so a stale entry is never read (it is deleted when the new one is written). Entries are written
to a temporary name and renamed, so a reader sees a whole file or none. Arrays are opened with
``numpy.load(mmap_mode="r")``: a view reads only the pages it touches. Entries are written only for a
settled record (closed, or its frames file unchanged for `SETTLED_SECS`), and a folder that cannot be
written (a read-only runs folder) simply gets no cache. Deleting ``cache/`` is always safe.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FOLDER = "cache"
BLOCK = 32  # steps per block summary: a window mean reads n/32 block rows and < 64 rows of values
SETTLED_SECS = 60.0  # an open record whose frames file is older than this is not being written


def cache_key(frames_bytes: int, frames_mtime_ns: int, params: list[dict[str, Any]]) -> str:
    """The key of a record's frames and parameter list (see the module docstring)."""
    crc = zlib.crc32(json.dumps(params, sort_keys=True).encode())
    return f"{frames_bytes}-{frames_mtime_ns}-{crc:08x}"


class RecordCache:
    """The ``cache/`` folder of one record, read and written under one key.

    Every method fails soft: a missing, unreadable or unwritable cache means "compute it again",
    never an error, since the frames file is the truth and the cache only saves time.
    """

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = folder / CACHE_FOLDER
        self.key = key
        self.writable = True

    def _path(self, name: str, suffix: str) -> Path:
        return self.folder / f"{name}-{self.key}{suffix}"

    def load_array(self, name: str) -> np.ndarray | None:
        """The array saved under ``name`` for this key, memory-mapped read-only; None if absent."""
        try:
            return np.load(self._path(name, ".npy"), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None

    def save_array(self, name: str, array: np.ndarray) -> None:
        """Save ``array`` under ``name`` (atomically), dropping the entries of older keys."""
        self._write(name, ".npy", lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))

    def load_json(self, name: str) -> Any:
        """The JSON saved under ``name`` for this key; None if absent or unreadable."""
        try:
            return json.loads(self._path(name, ".json").read_text())
        except (OSError, ValueError):
            return None

    def save_json(self, name: str, data: Any) -> None:
        """Save ``data`` as JSON under ``name`` (atomically), dropping the entries of older keys."""
        self._write(name, ".json", lambda f: f.write(json.dumps(data).encode()))

    def _write(self, name: str, suffix: str, write: Any) -> None:
        if not self.writable:
            return
        target = self._path(name, suffix)
        tmp = self.folder / f".{target.name}.{os.getpid()}.tmp"
        try:
            self.folder.mkdir(exist_ok=True)
            with open(tmp, "wb") as f:
                write(f)
            os.replace(tmp, target)
        except OSError:
            self.writable = False  # read-only folder, full disk: go on without a cache
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return
        for old in self.folder.glob(f"{name}-*{suffix}"):
            if old != target and old.name[len(name) + 1:].count("-") == 2:  # same entry, another key
                old.unlink(missing_ok=True)


def settled(closed: bool, frames_mtime_ns: int) -> bool:
    """Whether a record's frames may be cached: its recorder closed, or nothing written for a while."""
    return closed or time.time() - frames_mtime_ns / 1e9 > SETTLED_SECS
