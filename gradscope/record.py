"""`Record`: a recorded run loaded back, with its statistics viewable at every level."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GradscopeError, one_of
from .grouping import LEVELS
from .stats import STATS, aggregate
from .store import FLAG_SKIPPED, FRAMES_FILE, META_FILE, Chunk, decode_frames, read_meta

RECORD_SUBFOLDER = "gradscope"  # where trainers put the record inside a run folder


class RecordWarning(UserWarning):
    """A record loaded with problems (corrupt frames were skipped)."""


@dataclass(frozen=True)
class Matrix:
    """One statistic at one level: ``values[i, j]`` is group ``names[j]`` at step ``steps[i]``."""

    steps: np.ndarray
    names: list[str]
    values: np.ndarray

    def __iter__(self):  # so that ``steps, names, values = record.matrix(...)`` works
        return iter((self.steps, self.names, self.values))


def find_record(path: str | os.PathLike[str]) -> Path:
    """The record folder at ``path``: the folder itself, or the ``gradscope/`` folder of a run."""
    folder = Path(path)
    if (folder / META_FILE).is_file():
        return folder
    if (folder / RECORD_SUBFOLDER / META_FILE).is_file():
        return folder / RECORD_SUBFOLDER
    if not folder.exists():
        raise GradscopeError(f"no such record: {folder} does not exist")
    raise GradscopeError(f"{folder} holds no gradscope record (no {META_FILE} there or in {RECORD_SUBFOLDER}/)")


def load(path: str | os.PathLike[str]) -> Record:
    """Load a record written by `gradscope.record` (or the run folder that holds one).

    Frames that fail their checksum are skipped and named in ``record.problems`` (and warned about);
    every other step loads. A record still being written loads what has reached the disk; call
    `Record.refresh` to read what arrives later.
    """
    folder = find_record(path)
    record = Record(read_meta(folder), folder=folder)
    if record.problems:
        warnings.warn(f"{folder}: " + "; ".join(record.problems), RecordWarning, stacklevel=2)
    return record


class Record:
    """Per-step statistics of every recorded parameter, and their aggregates per layer, block and stage."""

    def __init__(self, meta: dict[str, Any], folder: Path | None = None, data: bytes | None = None) -> None:
        self.meta = meta
        self.folder = folder
        params = meta["params"]
        self.param_names: list[str] = [p["name"] for p in params]
        self.numel = np.array([p["numel"] for p in params], dtype=np.int64)
        self._groups = {level: [p[level] for p in params] for level in LEVELS[1:]}
        self._groups["param"] = self.param_names
        self._chunks: list[Chunk] = []
        self._end = 0
        self.problems: list[str] = []
        self._cache: dict[tuple[str, str], Matrix] = {}
        self._columns: dict[str, np.ndarray] | None = None
        self._read(data)

    # -- reading ---------------------------------------------------------------------------------
    def _read(self, data: bytes | None = None) -> int:
        if data is None:
            if self.folder is None:
                return 0
            try:
                with open(self.folder / FRAMES_FILE, "rb") as f:
                    f.seek(self._end)
                    data = f.read()
            except FileNotFoundError:
                return 0
            base = self._end
        else:
            base = 0
        scan = decode_frames(data)
        self._chunks += scan.chunks
        self.problems += scan.problems
        self._end = base + scan.end
        if scan.chunks:
            self._columns = None
            self._cache.clear()
        return sum(len(c.steps) for c in scan.chunks)

    @property
    def complete_bytes(self) -> int:
        """Length of the frames file up to the end of its last complete frame read so far."""
        return self._end

    def refresh(self) -> int:
        """Read frames appended since the last read; returns how many steps arrived."""
        return self._read()

    def _data(self) -> dict[str, np.ndarray]:
        """All steps, sorted, each step once (a resumed run's rewrite of a step wins)."""
        if self._columns is None:
            n_params = len(self.param_names)
            if self._chunks:
                steps = np.concatenate([c.steps for c in self._chunks])
                values = np.concatenate([c.values for c in self._chunks], axis=1)
                times = np.concatenate([c.times for c in self._chunks])
                flags = np.concatenate([c.flags for c in self._chunks])
            else:
                steps, times = np.zeros(0, np.int64), np.zeros(0)
                flags, values = np.zeros(0, np.uint8), np.zeros((len(STATS), 0, n_params), np.float32)
            # keep the last write of every step: unique over the reversed order, then sort by step
            _, last = np.unique(steps[::-1], return_index=True)
            keep = len(steps) - 1 - last
            cols = {"steps": steps[keep], "times": times[keep], "flags": flags[keep]}
            cols.update({stat: values[i, keep] for i, stat in enumerate(STATS)})
            self._columns = cols
        return self._columns

    # -- what was recorded -----------------------------------------------------------------------
    @property
    def steps(self) -> np.ndarray:
        """Recorded step numbers, ascending (1-D int64)."""
        return self._data()["steps"]

    @property
    def times(self) -> np.ndarray:
        """Wall-clock time of each recorded step (seconds since the epoch)."""
        return self._data()["times"]

    @property
    def skipped(self) -> np.ndarray:
        """Whether each recorded step was skipped by the optimizer (AMP found inf/NaN)."""
        return (self._data()["flags"] & FLAG_SKIPPED).astype(bool)

    @property
    def tags(self) -> dict[str, Any]:
        """The user's tags given to `gradscope.record`."""
        return dict(self.meta.get("tags", {}))

    @property
    def closed(self) -> bool:
        """Whether the recorder was closed (a record that is not may be live, or its process died)."""
        return "closed_at" in self.meta

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        where = self.folder if self.folder is not None else "memory"
        return f"Record({where}, {len(self)} steps, {len(self.param_names)} parameters)"

    def names(self, level: str) -> list[str]:
        """Group names at ``level``, in model order."""
        self._check_level(level)
        return list(dict.fromkeys(self._groups[level]))

    def members(self, level: str) -> dict[str, list[str]]:
        """For each group at ``level``, the parameter names it aggregates."""
        self._check_level(level)
        out: dict[str, list[str]] = {}
        for name, group in zip(self.param_names, self._groups[level]):
            out.setdefault(group, []).append(name)
        return out

    def matrix(self, level: str, stat: str) -> Matrix:
        """``(steps, names, values)``: ``values`` is ``(n_steps, n_groups)``; see `gradscope.stats`."""
        self._check_level(level)
        if stat not in STATS:
            raise one_of("statistic", stat, STATS)
        key = (level, stat)
        if key not in self._cache:
            data = self._data()
            if level == "param":
                names, values = list(self.param_names), data[stat].astype(np.float64)
            else:
                names = self.names(level)
                index = {g: i for i, g in enumerate(names)}
                group_of = np.array([index[g] for g in self._groups[level]])
                values = aggregate(data, stat, group_of, self.numel, len(names))
            self._cache[key] = Matrix(data["steps"], names, values)
        return self._cache[key]

    def window_mean(self, level: str, stat: str, window: tuple[float, float] = (0.0, 1.0)) -> dict[str, float]:
        """Mean of each group's statistic over a window of training, given as fractions of the steps.

        ``(0, 0.1)`` is the first tenth of the recorded steps, ``(0.9, 1)`` the last. Steps where a
        group had no gradient are left out of its mean; skipped steps count like any other.
        """
        lo, hi = window
        if not 0.0 <= lo < hi <= 1.0:
            raise GradscopeError(f"window {window!r} must be two fractions 0 <= start < stop <= 1")
        steps, names, values = self.matrix(level, stat)
        n = len(steps)
        rows = values[int(np.floor(lo * n)): max(int(np.ceil(hi * n)), int(np.floor(lo * n)) + 1)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no gradient in window
            means = np.nanmean(rows, axis=0) if len(rows) else np.full(len(names), np.nan)
        return dict(zip(names, means.tolist()))

    def _check_level(self, level: str) -> None:
        if level not in LEVELS:
            raise one_of("level", level, LEVELS)
