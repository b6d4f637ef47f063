"""The runs folder the dashboard serves: discovery, status, safe lookup and a cache of loaded records.

Run identifiers are paths relative to the runs folder. `RunIndex.resolve` is the only way from an
identifier to a path, and it refuses anything that leaves the folder (``..``, absolute paths,
symlinks pointing outside), so no request can make the app read another file.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import gradscope
from gradscope import GradscopeError, Record, RecordWarning

from .errors import AppError

LIVE_SECONDS = 120.0  # a run whose files changed this recently and that has no results is "live"
MAX_DEPTH = 6


class RunAccessError(AppError):
    """A run identifier that is malformed or points outside the runs folder."""


@dataclass
class RunInfo:
    """What the dashboard knows about one run folder (see `app.data.RunLike`)."""

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


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _label(run_id: str, config: dict[str, Any]) -> str:
    extras = config.get("extras") or {}
    name = extras.get("run") or config.get("method") or PurePosixPath(run_id).name
    seed = config.get("seed")
    return f"{name} s{seed}" if seed is not None else str(name)


def load_run(root: Path, run_id: str) -> RunInfo:
    """Read a run folder's small files; a broken one comes back with status ``corrupt`` and the reason."""
    path = root / run_id
    info = RunInfo(run_id, run_id, path)
    try:
        if (path / "config.json").exists():
            info.config = _read_json(path / "config.json")
        info.label = _label(run_id, info.config)
        if (path / "metrics.jsonl").exists():
            lines = (path / "metrics.jsonl").read_text().splitlines()
            info.metrics = [json.loads(line) for line in lines if line.strip()]
        if (path / "results.json").exists():
            info.results = _read_json(path / "results.json")
        if (path / "evaluation.json").exists():
            info.evaluation = _read_json(path / "evaluation.json")
    except (OSError, ValueError) as exc:
        info.status, info.problem = "corrupt", f"unreadable run files: {exc}"
        return info
    info.has_record = (path / "gradscope" / "meta.json").exists() or (path / "meta.json").exists()
    if info.results is not None:
        info.status = "finished"
    elif time.time() - _last_change(path) < LIVE_SECONDS:
        info.status = "live"
    else:
        info.status, info.problem = "failed", "stopped before it finished (no results.json); --resume continues it"
    return info


def _last_change(path: Path) -> float:
    files = [path / "metrics.jsonl", path / "gradscope" / "grads.gsr", path / "config.json"]
    return max((f.stat().st_mtime for f in files if f.exists()), default=0.0)


class RunIndex:
    """The runs under one folder, re-scanned on demand, with loaded records cached."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self._records: dict[str, tuple[float, Record]] = {}
        self._lock = threading.Lock()

    def resolve(self, run_id: str) -> Path:
        """The folder of ``run_id``, or `RunAccessError` if the id is malformed or leaves the runs folder."""
        if not isinstance(run_id, str) or not run_id or "\\" in run_id or "\x00" in run_id:
            raise RunAccessError(f"bad run id {run_id!r}")
        pure = PurePosixPath(run_id)
        if pure.is_absolute() or ".." in pure.parts or run_id.startswith("~"):
            raise RunAccessError(f"run id {run_id!r} must be a path inside the runs folder")
        path = (self.root / pure).resolve()
        if not path.is_relative_to(self.root):
            raise RunAccessError(f"run id {run_id!r} leads outside the runs folder")
        if not path.is_dir():
            raise RunAccessError(f"no run {run_id!r} in {self.root}")
        return path

    def ids(self) -> list[str]:
        """Identifiers of every run folder (one holding config.json or a gradscope record), sorted."""
        found = []
        if not self.root.is_dir():
            return found
        stack = [(self.root, 0)]
        while stack:
            folder, depth = stack.pop()
            if (folder / "config.json").exists() or (folder / "gradscope" / "meta.json").exists():
                found.append(folder.relative_to(self.root).as_posix())
                continue
            if depth >= MAX_DEPTH:
                continue
            try:
                children = [c for c in folder.iterdir() if c.is_dir() and not c.name.startswith(".")]
            except OSError:
                continue
            for child in children:
                if child.resolve().is_relative_to(self.root):  # a symlink out of the folder is not followed
                    stack.append((child, depth + 1))
        return sorted(found)

    def scan(self) -> list[RunInfo]:
        """Every run, with its status; runs deleted since the last scan simply are not there."""
        return [load_run(self.root, run_id) for run_id in self.ids()]

    def run(self, run_id: str) -> RunInfo:
        """One run, after checking its id."""
        self.resolve(run_id)
        return load_run(self.root, run_id)

    def record(self, run_id: str) -> Record:
        """The gradscope record of a run, loaded once and refreshed when its file grew (live runs)."""
        path = self.resolve(run_id)
        frames = path / "gradscope" / "grads.gsr"
        size = frames.stat().st_size if frames.exists() else 0.0
        with self._lock:
            cached = self._records.get(run_id)
            if cached is not None and cached[0] == size:
                return cached[1]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RecordWarning)
                if cached is not None:
                    cached[1].refresh()
                    record = cached[1]
                else:
                    record = gradscope.load(path)
            self._records[run_id] = (size, record)
            return record

    def records(self, run_ids: list[str]) -> tuple[dict[str, Record], dict[str, str]]:
        """Records of the runs that have one, by label, and the problems of those that failed to load."""
        loaded, problems = {}, {}
        for run_id in run_ids:
            try:
                info = self.run(run_id)
                if info.has_record:
                    loaded[info.label if info.label not in loaded else run_id] = self.record(run_id)
            except (RunAccessError, GradscopeError, OSError, ValueError) as exc:
                problems[run_id] = str(exc)
        return loaded, problems

    def forget(self, run_ids: set[str]) -> None:
        """Drop cached records of runs that are gone."""
        with self._lock:
            for run_id in list(self._records):
                if run_id not in run_ids:
                    del self._records[run_id]
