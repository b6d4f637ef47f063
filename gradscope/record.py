"""`Record`: a recorded run loaded back, with its statistics viewable at every level.

Reading is lazy and by statistic. Loading a record checks ``meta.json`` (`gradscope.store.check_meta`)
and indexes the frames: their steps, times and flags, never their values. `Record.matrix` then reads
one statistic's block of each frame (plus ``nonfinite``, which says where a gradient was absent),
aggregates it to the level asked for, and keeps the result in memory and, for a settled record, in
``cache/`` beside it (`gradscope.cache`), where the next process maps it instead of computing it.
Window means (`Record.window_mean`) and binned series (`Record.binned`) are answered from that view
and its block sums, without copying the whole matrix.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any

import numpy as np

from .cache import BLOCK, RecordCache, cache_key, settled
from .errors import GradscopeError, one_of
from .grouping import LEVELS
from .stats import STATS, aggregate
from .store import (
    FLAG_SKIPPED,
    FRAMES_FILE,
    META_FILE,
    FrameInfo,
    Reader,
    buffer_reader,
    check_meta,
    file_reader,
    read_meta,
    scan_frames,
)

RECORD_SUBFOLDER = "gradscope"  # where trainers put the record inside a run folder


class RecordWarning(UserWarning):
    """A record loaded with problems (corrupt frames were skipped, or its end is missing)."""


@dataclass(frozen=True)
class Matrix:
    """One statistic at one level: ``values[i, j]`` is group ``names[j]`` at step ``steps[i]``.

    ``values`` may be a read-only memory map of the record's cache: copy it before writing into it.
    """

    steps: np.ndarray
    names: list[str]
    values: np.ndarray

    def __iter__(self) -> Iterator[Any]:  # so that ``steps, names, values = record.matrix(...)`` works
        return iter((self.steps, self.names, self.values))


@dataclass(frozen=True)
class Binned:
    """A statistic over training in at most ``max_points`` bins of ``bin_size`` consecutive recorded steps.

    Per bin and group: ``mean`` of the finite values, and their ``low`` (min) and ``high`` (max), so
    spikes the mean hides stay visible; ``steps`` is the mean step of each bin. NaN (no gradient) is
    left out; a bin of NaNs only is NaN. With ``bin_size == 1`` the values come back exactly.
    """

    steps: np.ndarray  # (bins,) float64
    names: list[str]
    mean: np.ndarray  # (bins, groups) float64
    low: np.ndarray
    high: np.ndarray
    bin_size: int


@dataclass(frozen=True)
class Normalization:
    """A view of a statistic: what each step's value is divided by before any averaging."""

    subtitle: str  # says which view a figure shows
    divisor: Callable[[Record, list[FrameInfo]], np.ndarray] | None  # per-step divisor (rows,), None: raw


def _global_l2(record: Record, frames: list[FrameInfo]) -> np.ndarray:
    return record._aggregate(frames, "l2", np.zeros(len(record.param_names), np.int64), 1)[:, 0]


NORMALIZATIONS: dict[str, Normalization] = {
    "none": Normalization("raw statistic", None),
    "global": Normalization("each step divided by the global gradient norm ‖g‖₂ of all recorded parameters",
                            _global_l2),
}


@dataclass
class _View:
    """One (level, stat, normalisation) of a record: its values, their block summaries and the rows covered."""

    values: np.ndarray  # (rows, groups) float64
    blocks: np.ndarray  # (4, ceil(rows / BLOCK), groups): sum, count, min, max of the non-NaN values per block
    rows: int  # steps, each once
    raw: int  # rows of the frames it was computed from (a rewritten step adds one): how far it is current


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

    Frames that fail their checksum are skipped and named in ``record.problems`` (and warned about),
    as is a closed record's missing end; every other step loads. A ``meta.json`` that is damaged or
    does not describe the frames raises `GradscopeError`. A record still being written loads what
    has reached the disk; call `Record.refresh` to read what arrives later.
    """
    folder = find_record(path)
    record = Record(read_meta(folder), folder=folder)
    if record.problems:
        warnings.warn(f"{folder}: " + "; ".join(record.problems), RecordWarning, stacklevel=2)
    return record


def _check_normalize(normalize: str, stat: str) -> None:
    if normalize not in NORMALIZATIONS:
        raise one_of("normalisation", normalize, list(NORMALIZATIONS))
    if normalize != "none" and stat == "nonfinite":
        raise GradscopeError(f"normalize={normalize!r} applies to l2, mean_abs and max_abs, not to nonfinite (0 or 1)")


def _window_rows(window: tuple[float, float], n: int) -> tuple[int, int]:
    try:
        lo, hi = (float(x) for x in window)
    except (TypeError, ValueError):
        raise GradscopeError(f"window {window!r} must be two fractions 0 <= start < stop <= 1") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise GradscopeError(f"window {window!r} must be two fractions 0 <= start < stop <= 1")
    start = int(math.floor(lo * n))
    return start, min(n, max(int(math.ceil(hi * n)), start + 1))


def _finite_sums(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column sums of the non-NaN values and their counts (inf stays, as in ``nanmean``)."""
    missing = np.isnan(values)
    return np.where(missing, 0.0, values).sum(axis=0), (~missing).sum(axis=0).astype(np.float64)


def _summaries(values: np.ndarray, size: int) -> np.ndarray:
    """Sum, count, min and max of the non-NaN values of each bin of ``size`` consecutive rows.

    The last bin may hold fewer rows. An empty bin has count 0, min +inf and max -inf, so that bins
    combine by add / minimum / maximum (`_combine`). Whole bins are reduced as a reshaped 3-D array,
    which is several times faster than ``reduceat`` along the rows.
    """
    n, groups = values.shape
    out = np.empty((4, -(-n // size), groups))
    for at, part in ((0, values[:n - n % size]), (n // size, values[n - n % size:])):
        if len(part) == 0:
            continue
        part = np.asarray(part, dtype=np.float64).reshape(-1, min(size, len(part)), groups)
        missing = np.isnan(part)
        rows = slice(at, at + len(part))
        out[0, rows] = np.where(missing, 0.0, part).sum(axis=1)
        out[1, rows] = (~missing).sum(axis=1)
        out[2, rows] = np.where(missing, np.inf, part).min(axis=1)
        out[3, rows] = np.where(missing, -np.inf, part).max(axis=1)
    return out


def _combine(blocks: np.ndarray, k: int) -> np.ndarray:
    """Summaries of every ``k`` consecutive block summaries (the last group may hold fewer)."""
    n, groups = blocks.shape[1], blocks.shape[2]
    out = np.empty((4, -(-n // k), groups))
    for at, part in ((0, blocks[:, :n - n % k]), (n // k, blocks[:, n - n % k:])):
        if part.shape[1] == 0:
            continue
        part = np.asarray(part).reshape(4, -1, min(k, part.shape[1]), groups)
        rows = slice(at, at + part.shape[1])
        out[0, rows], out[1, rows] = part[0].sum(axis=1), part[1].sum(axis=1)
        out[2, rows], out[3, rows] = part[2].min(axis=1), part[3].max(axis=1)
    return out


class Record:
    """Per-step statistics of every recorded parameter, and their aggregates per layer, block and stage.

    ``problems`` lists, in words, what could not be read: skipped frames with their steps and bytes,
    and for a closed record a missing end (it knows what it wrote). The dashboard and
    ``gradscope info`` show them.
    """

    def __init__(self, meta: dict[str, Any], folder: Path | None = None, data: bytes | None = None) -> None:
        self.meta = check_meta(meta, folder / META_FILE if folder is not None else META_FILE)
        self.folder = folder
        params = self.meta["params"]
        self.param_names: list[str] = [p["name"] for p in params]
        self.numel = np.array([p["numel"] for p in params], dtype=np.int64)
        self._groups = {level: [p[level] for p in params] for level in LEVELS[1:]}
        self._groups["param"] = self.param_names
        self._group_of = {level: self._group_index(level) for level in LEVELS}
        self._buffer = data
        self._frames: list[FrameInfo] = []
        self._end = 0
        self._scan_problems: list[str] = []
        self.problems: list[str] = []
        self._views: dict[tuple[str, str, str], _View] = {}
        self._cache: RecordCache | None = None
        self._keep: np.ndarray | None = None  # rows kept after removing rewritten steps; None: all, in order
        self._columns: dict[str, np.ndarray] = {}
        self._add_frames([], [], 0)
        self._read()

    def _group_index(self, level: str) -> np.ndarray:
        index = {g: i for i, g in enumerate(dict.fromkeys(self._groups[level]))}
        return np.array([index[g] for g in self._groups[level]], dtype=np.int64)

    # -- reading the frame index -------------------------------------------------------------------
    def _read(self) -> int:
        """Index the frames that arrived since the last read; returns how many steps arrived."""
        if self.folder is None:
            if self._buffer is None or self._end:
                return 0
            scan = scan_frames(buffer_reader(self._buffer), len(self._buffer))
            return self._take(scan.frames, scan.problems, scan.end, len(self._buffer), None)
        try:
            fd = os.open(self.folder / FRAMES_FILE, os.O_RDONLY)
        except FileNotFoundError:
            return self._take([], [], self._end, 0, None)
        except OSError as exc:
            raise GradscopeError(f"{self.folder / FRAMES_FILE} is unreadable: {exc.strerror or exc}") from None
        try:
            info = os.fstat(fd)
            if not S_ISREG(info.st_mode):
                raise GradscopeError(f"{self.folder / FRAMES_FILE} is not a file")
            key = cache_key(info.st_size, info.st_mtime_ns, self.meta["params"])
            read = file_reader(fd)
            if not self._frames and not self._end:
                index = RecordCache(self.folder, key).load_json("index")
                if isinstance(index, dict) and self._take_index(read, index, info.st_size):
                    return self._finish_read(key, info.st_mtime_ns, size=info.st_size, from_index=True)
            scan = scan_frames(read, info.st_size, self._end)
            return self._take(scan.frames, scan.problems, scan.end, info.st_size, (key, info.st_mtime_ns))
        except OSError as exc:
            raise GradscopeError(f"{self.folder / FRAMES_FILE} could not be read: {exc.strerror or exc}") from None
        finally:
            os.close(fd)

    def _take_index(self, read: Reader, index: dict[str, Any], size: int) -> bool:
        """Use a cached index (frames already checked once): headers and step columns only, no CRC."""
        try:
            valid, problems, end = set(index["valid"]), list(index["problems"]), int(index["end"])
        except (KeyError, TypeError, ValueError):
            return False
        scan = scan_frames(read, end, 0, check=False)
        frames = [f for f in scan.frames if f.start in valid]
        if len(frames) != len(valid) or scan.end != end:
            return False
        self._add_frames(frames, [str(p) for p in problems], end)
        return True

    def _take(self, frames: list[FrameInfo], problems: list[str], end: int, size: int,
              key: tuple[str, int] | None) -> int:
        before = len(self._raw_steps)
        self._add_frames(frames, problems, end)
        name, mtime_ns = key if key is not None else (None, 0)
        self._finish_read(name, mtime_ns, size=size, from_index=False)
        return len(self._raw_steps) - before

    def _add_frames(self, frames: list[FrameInfo], problems: list[str], end: int) -> None:
        n_params, n_stats = len(self.param_names), len(STATS)
        for f in frames:
            if f.n_params != n_params or f.n_stats != n_stats:
                where = self.folder / META_FILE if self.folder is not None else META_FILE
                raise GradscopeError(
                    f"{where} describes {n_params} parameter tensors x {n_stats} statistics but the frame of "
                    f"steps {f.steps[0]}-{f.steps[-1]} holds {f.n_params} x {f.n_stats}: the metadata does not "
                    "belong to these frames"
                )
        self._frames += frames
        self._scan_problems += problems
        self._end = end
        if frames or not self._columns:
            self._raw_steps = np.concatenate([np.zeros(0, np.int64)] + [f.steps for f in self._frames])
            self._frame_rows = np.cumsum([0] + [f.n for f in self._frames])
            steps = self._raw_steps
            if len(steps) > 1 and not (np.diff(steps) > 0).all():
                # a resumed run rewrote steps: keep the last write of each, sorted by step
                _, last = np.unique(steps[::-1], return_index=True)
                self._keep = len(steps) - 1 - last
            else:
                self._keep = None
            raw = {"steps": steps, "times": np.concatenate([np.zeros(0)] + [f.times for f in self._frames]),
                   "flags": np.concatenate([np.zeros(0, np.uint8)] + [f.flags for f in self._frames])}
            self._columns = {k: v if self._keep is None else v[self._keep] for k, v in raw.items()}

    def _finish_read(self, key: str | None, mtime_ns: int, size: int, from_index: bool) -> int:
        """Name a closed record's missing or extra bytes, and decide whether the cache may be used."""
        problems = list(self._scan_problems)
        written = self.meta.get("written") if self.closed else None
        if written is not None and size < written["bytes"]:
            last = int(self._raw_steps[-1]) if len(self._raw_steps) else None
            problems.append(
                f"bytes {self._end}-{written['bytes']}: cut off after the record was closed "
                f"({written['steps'] - len(self._raw_steps)} of its {written['steps']} steps missing"
                + (f", those after step {last})" if last is not None else ")")
            )
        elif self.closed and size > self._end:
            problems.append(f"bytes {self._end}-{size}: an incomplete frame at the end of a closed record; skipped")
        if written is not None and size > written["bytes"]:
            problems.append(f"bytes {written['bytes']}-{size}: added after the record was closed")
        self.problems = problems
        cacheable = key is not None and size == self._end and settled(self.closed, mtime_ns)
        self._cache = RecordCache(self.folder, key) if cacheable and self.folder and key else None
        if self._cache is not None and not from_index:
            self._cache.save_json("index", {"valid": [f.start for f in self._frames],
                                            "problems": self._scan_problems, "end": self._end})
        return 0

    @property
    def cached(self) -> bool:
        """Whether views of this record are kept in its ``cache/`` (a settled record in a writable folder)."""
        return self._cache is not None and self._cache.writable

    @property
    def complete_bytes(self) -> int:
        """Length of the frames file up to the end of its last complete frame read so far."""
        return self._end

    def refresh(self) -> int:
        """Read frames appended since the last read; returns how many steps arrived."""
        return self._read()

    # -- reading values --------------------------------------------------------------------------
    def _read_stat(self, stat: str, frames: list[FrameInfo]) -> np.ndarray:
        """``(rows, n_params)`` float32 of one statistic over ``frames``: only that block of each is read."""
        n_params, at = len(self.param_names), STATS.index(stat)
        out = np.empty((sum(f.n for f in frames), n_params), np.float32)
        row = 0
        if self.folder is None:
            assert self._buffer is not None
            for f in frames:
                block = np.frombuffer(self._buffer, "<f4", f.n * n_params, f.values_at(at))
                out[row:row + f.n] = block.reshape(f.n, n_params)
                row += f.n
            return out
        try:
            fd = os.open(self.folder / FRAMES_FILE, os.O_RDONLY)
        except OSError as exc:
            raise GradscopeError(f"{self.folder / FRAMES_FILE} is unreadable now: {exc.strerror or exc}") from None
        try:
            for f in frames:
                target = out[row:row + f.n].data.cast("B")
                if os.preadv(fd, [target], f.values_at(at)) != len(target):
                    raise GradscopeError(f"{self.folder / FRAMES_FILE} shrank after it was loaded; load it again")
                row += f.n
        finally:
            os.close(fd)
        return out

    def _aggregate(self, frames: list[FrameInfo], stat: str, group_of: np.ndarray, n_groups: int) -> np.ndarray:
        values = {stat: self._read_stat(stat, frames)}
        if stat != "nonfinite":
            values["nonfinite"] = self._read_stat("nonfinite", frames)
        return aggregate(values, stat, group_of, self.numel, n_groups)

    def _compute(self, level: str, stat: str, normalize: str, frames: list[FrameInfo]) -> np.ndarray:
        """Rows of ``frames`` (file order) of one view, as float64."""
        if level == "param":
            values = self._read_stat(stat, frames).astype(np.float64)
        else:
            values = self._aggregate(frames, stat, self._group_of[level], len(self.names(level)))
        divisor = NORMALIZATIONS[normalize].divisor
        if divisor is not None:
            norm = divisor(self, frames)[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.where(norm > 0, values / norm, np.nan)
        return values

    def _view(self, level: str, stat: str, normalize: str = "none") -> _View:
        self._check_level(level)
        if stat not in STATS:
            raise one_of("statistic", stat, STATS)
        _check_normalize(normalize, stat)
        key, rows, raw = (level, stat, normalize), len(self._columns["steps"]), len(self._raw_steps)
        view = self._views.get(key)
        if view is not None and view.raw == raw:
            return view
        name = f"{level}.{stat}.{normalize}"
        if view is None and self._cache is not None:
            values, blocks = self._cache.load_array(name), self._cache.load_array(name + ".blocks")
            if values is not None and blocks is not None and values.shape[0] == rows \
                    and blocks.shape[:2] == (4, -(-rows // BLOCK)):
                view = self._views[key] = _View(values, blocks, rows, raw)
                return view
        if view is not None and self._keep is None and view.raw in self._frame_rows:
            first = int(np.searchsorted(self._frame_rows, view.raw))  # extend by the new frames only
            values = np.concatenate([view.values, self._compute(level, stat, normalize, self._frames[first:])])
        else:
            values = self._compute(level, stat, normalize, self._frames)
            values = values if self._keep is None else values[self._keep]
        view = self._views[key] = _View(values, _summaries(values, BLOCK), rows, raw)
        if self._cache is not None:
            self._cache.save_array(name, view.values)
            self._cache.save_array(name + ".blocks", view.blocks)
            saved = self._cache.load_array(name)  # mapped from the page cache: this process need not hold it
            if saved is not None and saved.shape == values.shape:
                view.values = saved
        return view

    def prepare(self, levels: Sequence[str] = LEVELS, stats: Sequence[str] = STATS,
                normalize: Sequence[str] = ("none",)) -> None:
        """Compute (and cache beside a settled record) every view asked for, e.g. in a background thread.

        A later process then opens them as memory maps: the first view of a long record is fast.
        """
        for level in levels:
            for stat in stats:
                for view in normalize:
                    if view == "none" or stat != "nonfinite":
                        self._view(level, stat, view)

    # -- what was recorded -----------------------------------------------------------------------
    @property
    def steps(self) -> np.ndarray:
        """Recorded step numbers, ascending (1-D int64)."""
        return self._columns["steps"]

    @property
    def times(self) -> np.ndarray:
        """Wall-clock time of each recorded step (seconds since the epoch)."""
        return self._columns["times"]

    @property
    def skipped(self) -> np.ndarray:
        """Whether each recorded step was skipped by the optimizer (AMP found inf/NaN)."""
        return (self._columns["flags"] & FLAG_SKIPPED).astype(bool)

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

    def matrix(self, level: str, stat: str, normalize: str = "none") -> Matrix:
        """``(steps, names, values)``: ``values`` is ``(n_steps, n_groups)``; see `gradscope.stats`.

        ``normalize`` picks a view from `NORMALIZATIONS`: ``"none"`` (the statistic) or ``"global"``
        (at each step, divided by the L2 norm of all recorded gradients at that step, sqrt(Σ‖gₚ‖₂²),
        so that scaling the loss by c changes nothing).
        """
        return Matrix(self.steps, self.names(level), self._view(level, stat, normalize).values)

    def window_mean(self, level: str, stat: str, window: tuple[float, float] = (0.0, 1.0),
                    normalize: str = "none") -> dict[str, float]:
        """Mean of each group's statistic over a window of training, given as fractions of the steps.

        ``(0, 0.1)`` is the first tenth of the recorded steps, ``(0.9, 1)`` the last. Steps where a
        group had no gradient are left out of its mean; skipped steps count like any other. With
        ``normalize`` (see `matrix`) each step is normalised first, then the window is averaged.
        Answered from block sums: it reads a few hundred rows, whatever the record's length.
        """
        view = self._view(level, stat, normalize)
        start, stop = _window_rows(window, view.rows)
        first, last = -(-start // BLOCK), stop // BLOCK  # whole blocks inside the window
        if first < last:
            total, count = view.blocks[0, first:last].sum(axis=0), view.blocks[1, first:last].sum(axis=0)
            for lo, hi in ((start, first * BLOCK), (last * BLOCK, stop)):
                s, c = _finite_sums(np.asarray(view.values[lo:hi]))
                total, count = total + s, count + c
        else:
            total, count = _finite_sums(np.asarray(view.values[start:stop]))
        with np.errstate(divide="ignore", invalid="ignore"):
            means = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return dict(zip(self.names(level), means.tolist()))

    def binned(self, level: str, stat: str, max_points: int = 1500, names: Sequence[str] | None = None,
               normalize: str = "none") -> Binned:
        """The statistic over training in at most ``max_points`` bins (see `Binned`), for drawing.

        Bins hold ``ceil(n / max_points)`` consecutive recorded steps (the last may hold fewer). When
        that is `BLOCK` // 2 steps or more, it is rounded up to a multiple of `BLOCK` and the bins
        are combined from the kept block summaries, so a long record is binned without reading its
        values. ``names`` picks groups (default: all, in model order).
        """
        if not isinstance(max_points, int) or isinstance(max_points, bool) or max_points < 1:
            raise GradscopeError(f"max_points must be a positive integer, got {max_points!r}")
        view, all_names = self._view(level, stat, normalize), self.names(level)
        chosen = list(all_names if names is None else names)
        missing = [n for n in chosen if n not in all_names]
        if missing:
            raise GradscopeError(f"no {level} {missing[0]!r} in this record; its {level}s are: "
                                 + ", ".join(all_names[:20]) + (", ..." if len(all_names) > 20 else ""))
        columns = [all_names.index(n) for n in chosen]
        steps, n = self.steps, view.rows
        size = max(1, math.ceil(n / max_points))
        every = columns == list(range(len(all_names)))  # then no copy of the chosen columns is needed
        if size == 1:
            values = np.array(view.values if every else view.values[:, columns], dtype=np.float64)
            return Binned(steps.astype(np.float64), chosen, values, values.copy(), values.copy(), 1)
        if size >= BLOCK // 2:
            size = -(-size // BLOCK) * BLOCK
            blocks = view.blocks if every else view.blocks[:, :, columns]
            summary = _combine(blocks, size // BLOCK)
        else:
            values = view.values if every else view.values[:, columns]
            summary = _summaries(values, size)
        starts = np.arange(0, n, size)
        total, count, low, high = summary
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = total / count
        empty = count == 0
        mean[empty], low[empty], high[empty] = np.nan, np.nan, np.nan
        bin_steps = np.add.reduceat(steps.astype(np.float64), starts) / np.diff(np.append(starts, n))
        return Binned(bin_steps, chosen, mean, low, high, size)

    def _check_level(self, level: str) -> None:
        if level not in LEVELS:
            raise one_of("level", level, LEVELS)
