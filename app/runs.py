"""The runs folder the dashboard serves: discovery, status, safe lookup, per-run problems and loaded records.

Run identifiers are paths relative to the runs folder. `RunIndex.resolve` is the only way from an
identifier to a path, and it refuses anything that leaves the folder (``..``, absolute paths,
symlinks pointing outside) or that no file system would take (over-long names, NUL bytes), so no
request can make the app read another file.

Every file of a run is read through `trainers.run_folder.RunFolder` confined to the runs folder: its
readers check types and keys, and a file that is broken, or a symlink leading out of the runs folder,
raises `RunFileError`. The index turns each such error into a `RunProblem` of *that* run (a badge on
the Runs page naming the file and the problem) and reads the rest of the run as if the file were
absent, so one bad file never breaks another run or a page. A gradient record that cannot be loaded,
or that loaded with skipped frames or a missing end, is a problem of its run too.

Files are parsed again only when they change (size, modification time, inode), so listing a hundred
runs on every refresh costs a ``stat`` per file.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import gradscope
from gradscope import GradscopeError, Record, RecordWarning
from gradscope.lock import holder_is_running
from gradscope.store import FRAMES_FILE
from trainers.run_folder import CONFIG_FILE, RESULTS_FILE, RunFileError, RunFolder

from .errors import AppError
from .warmup import RecordWarmer

LIVE_SECONDS = 120.0  # a run without results is "live" if its files changed this recently or its writer runs
MAX_DEPTH = 6
MAX_RUN_ID = 1024  # characters of a run id; each part must also fit a file name (NAME_MAX bytes)
NAME_MAX = 255


class RunAccessError(AppError):
    """A run identifier that is malformed or points outside the runs folder."""


@dataclass(frozen=True)
class RunProblem:
    """One thing wrong with a run: the file (relative to the run folder) and what is wrong with it."""

    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


@dataclass
class RunInfo:
    """What the dashboard knows about one run folder (see `app.shared.RunLike`).

    A file listed in ``problems`` is read as absent (``config`` ``{}``, ``results`` None, ...);
    ``problem`` is the one-line summary shown in the runs table. Pages read any other file of the run
    through ``files`` (``run.files.within(run.files.attribution_arrays)``), never from ``path`` directly.
    """

    id: str
    label: str
    path: Path = Path(".")
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] | None = None
    evaluation: dict[str, Any] = field(default_factory=lambda: {"results": {}, "sweeps": {}, "flags": []})
    status: str = "finished"
    problem: str | None = None
    has_record: bool = False
    problems: list[RunProblem] = field(default_factory=list)
    files: RunFolder | None = None  # the run's files, every read confined to the runs folder


def _label(run_id: str, config: dict[str, Any]) -> str:
    extras = config.get("extras") or {}
    name = extras.get("run") or config.get("method") or PurePosixPath(run_id).name
    seed = config.get("seed")
    return f"{name} s{seed}" if seed is not None else str(name)


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or appended to; None when it is absent."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns, info.st_ino


def _appended(before: tuple[Any, ...], now: tuple[Any, ...]) -> bool:
    """Whether a record only grew between two signatures: same meta.json, same frames file, longer."""
    frames_before, frames_now = before[1], now[1]
    return (before[0] == now[0] and frames_before is not None and frames_now is not None
            and frames_now[2] == frames_before[2] and frames_now[0] >= frames_before[0])


def _writer_runs(folder: RunFolder) -> bool:
    """Whether the process holding the run's writer lock still runs (a long evaluation writes nothing for minutes)."""
    try:
        return holder_is_running(folder.within(folder.lock))
    except RunFileError:
        return False


def _last_change(folder: RunFolder) -> float:
    times = []
    for path in (folder.metrics, folder.record_frames, folder.config):
        try:
            times.append(os.stat(path).st_mtime)
        except OSError:
            continue
    return max(times, default=0.0)


def _short(message: str, folder: Path) -> str:
    """A gradscope message without the absolute path of the run folder (the badge names the run)."""
    return message.replace(f"{folder}{os.sep}", "").replace(str(folder), ".")


class RunIndex:
    """The runs under one folder, re-scanned on demand; parsed files and loaded records are cached.

    With ``warm`` (the default), each finished run's record is aggregated into its ``cache/`` by a
    background thread as soon as the index sees it (`app.warmup`), so its first view is fast.
    """

    def __init__(self, root: str | Path, warm: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self._files: dict[tuple[str, str], tuple[Any, Any]] = {}  # (run id, reader) -> (signature, value)
        self._records: dict[str, tuple[Any, Record | None, list[RunProblem]]] = {}
        self._lock = threading.Lock()
        self._warmer = RecordWarmer() if warm else None

    # -- ids ---------------------------------------------------------------------------------------

    def resolve(self, run_id: str) -> Path:
        """The folder of ``run_id``, or `RunAccessError` if the id is malformed or leaves the runs folder."""
        if not isinstance(run_id, str) or not run_id or "\\" in run_id or "\x00" in run_id:
            raise RunAccessError(f"bad run id {str(run_id)[:60]!r}")
        shown = run_id if len(run_id) <= 60 else f"{run_id[:60]}... ({len(run_id)} characters)"
        pure = PurePosixPath(run_id)
        if len(run_id) > MAX_RUN_ID or any(len(part.encode("utf-8", "replace")) > NAME_MAX for part in pure.parts):
            raise RunAccessError(f"run id {shown!r} is too long for a run folder path")
        if pure.is_absolute() or ".." in pure.parts or run_id.startswith("~"):
            raise RunAccessError(f"run id {shown!r} must be a path inside the runs folder")
        try:
            path = (self.root / pure).resolve()
            inside = path.is_relative_to(self.root)
            is_dir = inside and path.is_dir()
        except (OSError, ValueError) as exc:
            raise RunAccessError(f"run id {shown!r} cannot be looked up ({type(exc).__name__})") from None
        if not inside:
            raise RunAccessError(f"run id {shown!r} leads outside the runs folder")
        if not is_dir:
            raise RunAccessError(f"no run {shown!r} in {self.root}")
        return path

    def folder(self, run_id: str) -> RunFolder:
        """The run's files, every read confined to the runs folder (after checking the id)."""
        return RunFolder(self.resolve(run_id), confine=self.root)

    def ids(self) -> list[str]:
        """Identifiers of every run folder (one holding config.json or a gradscope record), sorted."""
        found: list[str] = []
        if not self.root.is_dir():
            return found
        stack = [(self.root, 0)]
        while stack:
            folder, depth = stack.pop()
            run = RunFolder(folder)
            if run.config.exists() or run.config.is_symlink() or run.has_record():
                found.append(folder.relative_to(self.root).as_posix())
                continue
            if depth >= MAX_DEPTH:
                continue
            try:
                children = [c for c in folder.iterdir() if not c.name.startswith(".") and c.is_dir()]
            except OSError:
                continue
            for child in children:
                if child.resolve().is_relative_to(self.root):  # a symlink out of the folder is not followed
                    stack.append((child, depth + 1))
        return sorted(found)

    # -- runs --------------------------------------------------------------------------------------

    def scan(self) -> list[RunInfo]:
        """Every run, with its status and problems; runs deleted since the last scan simply are not there."""
        return [self._load(run_id, RunFolder(self.root / run_id, confine=self.root)) for run_id in self.ids()]

    def run(self, run_id: str) -> RunInfo:
        """One run, after checking its id."""
        return self._load(run_id, self.folder(run_id))

    def _read(self, run_id: str, name: str, path: Path, reader: Callable[[], Any],
              problems: list[RunProblem], absent: Any) -> Any:
        """``reader()``, parsed again only when ``path`` changed; a `RunFileError` becomes a problem."""
        key = (run_id, name)
        signature = (_signature(path), path.is_symlink())
        cached = self._files.get(key)
        if cached is None or cached[0] != signature:
            try:
                value: Any = reader()
            except RunFileError as exc:
                value = RunProblem(exc.file, exc.problem)
            cached = (signature, value)
            self._files[key] = cached
        if isinstance(cached[1], RunProblem):
            problems.append(cached[1])
            return absent
        return cached[1]

    def _load(self, run_id: str, folder: RunFolder) -> RunInfo:
        info = RunInfo(run_id, run_id, folder.root, files=folder)
        problems: list[RunProblem] = []
        config_there = folder.config.exists() or folder.config.is_symlink()
        if config_there:
            info.config = self._read(run_id, "config", folder.config, folder.read_config, problems, {})
        info.label = _label(run_id, info.config)
        info.metrics = self._read(run_id, "metrics", folder.metrics, folder.read_metrics, problems, [])
        info.results = self._read(run_id, "results", folder.results, folder.read_results, problems, None)
        info.evaluation = self._read(run_id, "evaluation", folder.evaluation, folder.read_evaluation, problems,
                                     {"results": {}, "sweeps": {}, "flags": []})
        self._read(run_id, "attribution", folder.attribution_meta, folder.read_attribution, problems, None)
        self._read(run_id, "attribution arrays", folder.attribution_arrays,
                   lambda: folder.within(folder.attribution_arrays), problems, None)
        info.has_record = folder.record.exists() or folder.record.is_symlink()
        if info.has_record:
            problems += self._record_entry(run_id, folder)[2]
            warming = self._warmer.failure(run_id) if self._warmer is not None else None
            if warming is not None:
                problems.append(RunProblem(folder.name_of(folder.record), warming))
        info.problems = problems
        blamed = {p.file for p in problems}
        if CONFIG_FILE in blamed or RESULTS_FILE in blamed:
            info.status = "corrupt"
        elif info.results is not None:
            info.status = "finished"
        elif time.time() - _last_change(folder) < LIVE_SECONDS or _writer_runs(folder):
            info.status = "live"
        else:
            info.status = "failed"
        if problems:
            info.problem = "; ".join(map(str, problems))
        elif info.status == "failed":
            info.problem = "stopped before it finished (no results.json); --resume continues it"
        return info

    # -- records -----------------------------------------------------------------------------------

    def _record_entry(self, run_id: str, folder: RunFolder) -> tuple[Any, Record | None, list[RunProblem]]:
        """The run's record (None if it cannot be loaded) and its problems, reloaded only when its files change."""
        signature = (_signature(folder.record_meta), _signature(folder.record_frames),
                     folder.record.is_symlink(), folder.record.is_file())
        with self._lock:
            cached = self._records.get(run_id)
            if cached is not None and cached[0] == signature:
                return cached
            record = None
            try:
                path = folder.record_path()
                if cached is not None and cached[1] is not None and _appended(cached[0], signature):
                    record = cached[1]  # same meta.json, more frames: read only what was appended
                    record.refresh()
                else:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RecordWarning)
                        record = gradscope.load(path)
                problems = [RunProblem(f"{folder.record.name}/{FRAMES_FILE}", _short(p, folder.root))
                            for p in record.problems]
            except RunFileError as exc:
                record, problems = None, [RunProblem(exc.file, exc.problem)]
            except (GradscopeError, OSError, ValueError) as exc:
                message = _short(str(exc), folder.root)
                names = (folder.name_of(folder.record_meta), folder.name_of(folder.record_frames))
                blamed = next((name for name in names if message.startswith(name)), folder.name_of(folder.record))
                record, problems = None, [RunProblem(blamed, message.removeprefix(blamed).lstrip(": "))]
            entry = (signature, record, problems)
            self._records[run_id] = entry
            if record is not None and record.closed and self._warmer is not None:
                self._warmer.submit(run_id, path, signature)
            return entry

    def record(self, run_id: str) -> Record:
        """The gradscope record of a run, loaded once and refreshed when its files change (live runs).

        Raises `RunAccessError` for a bad id and `GradscopeError` (naming the problem) when the run has
        no loadable record.
        """
        folder = self.folder(run_id)
        _, record, problems = self._record_entry(run_id, folder)
        if record is None:
            raise GradscopeError("; ".join(map(str, problems)) or f"run {run_id!r} has no gradscope record")
        return record

    def records(self, run_ids: list[str]) -> tuple[dict[str, Record], dict[str, str]]:
        """Records of the runs that have one, by label, and the problems of each run, by id.

        A record that loaded with skipped frames is both returned and listed with its problems, so a
        page can draw it and say which steps are missing.
        """
        loaded: dict[str, Record] = {}
        problems: dict[str, str] = {}
        for run_id in run_ids:
            try:
                info = self.run(run_id)
                if not info.has_record:
                    continue
                _, record, record_problems = self._record_entry(run_id, RunFolder(info.path, confine=self.root))
            except RunAccessError as exc:
                problems[run_id] = str(exc)
                continue
            if record_problems:
                problems[run_id] = "; ".join(map(str, record_problems))
            if record is not None:
                loaded[info.label if info.label not in loaded else run_id] = record
        return loaded, problems

    def version(self, run_ids: list[str]) -> str:
        """A digest of the runs' ids, statuses and the signatures of every file a page reads.

        Cheap (a few ``stat`` calls per run, parsed files come from the cache), so live pages can ask
        on every tick whether anything they show has changed.
        """
        parts: list[Any] = []
        for run_id in run_ids:
            try:
                info = self.run(run_id)
            except RunAccessError:
                parts.append((run_id, None))
                continue
            folder = info.files or RunFolder(info.path, confine=self.root)
            files = (folder.config, folder.metrics, folder.results, folder.evaluation, folder.attribution_meta,
                     folder.attribution_arrays, folder.record_meta, folder.record_frames)
            parts.append((run_id, info.status, [_signature(path) for path in files]))
        return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]

    def forget(self, run_ids: set[str]) -> None:
        """Drop what is cached of runs that are gone."""
        with self._lock:
            for run_id in list(self._records):
                if run_id not in run_ids:
                    del self._records[run_id]
            for key in list(self._files):
                if key[0] not in run_ids:
                    del self._files[key]


__all__ = ["LIVE_SECONDS", "MAX_RUN_ID", "RunAccessError", "RunIndex", "RunInfo", "RunProblem"]
