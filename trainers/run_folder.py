"""The layout of a run folder, its validated readers, and the rule that a folder has one writer.

`RunFolder` is the one place that knows where a run keeps each file; every reader (trainers, the
dashboard, summaries) asks it for paths and reads the JSON files through it, so a file name is written
once. Each reader checks types and keys and raises `RunFileError` naming the file and the problem in
one line, so one broken file is reported against its run instead of breaking whoever reads it.

    run/
      config.json          the resolved TrainConfig
      metrics.jsonl        one JSON object per finished epoch
      results.json         final test accuracies, once the run finished
      evaluation.json      `python -m trainers evaluate` results, merged over calls
      .autoattack-*.json   AutoAttack resume state (per checkpoint, ε, n)
      attribution/         Captum maps: attributions.npz, grid.png, meta.json
      checkpoints/         best.pt, last.pt (atomic)
      gradscope/           the gradient record (meta.json, grads.gsr)
      .run.lock            held by the one process writing the folder

With ``confine=runs_dir`` every file read must resolve, symlinks included, inside ``runs_dir``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradscope.errors import GradscopeError
from gradscope.lock import FolderLock
from gradscope.record import RECORD_SUBFOLDER
from gradscope.store import FRAMES_FILE, META_FILE

from .config import TrainConfig, config_shape
from .errors import TrainersError
from .shapes import ANY, ANY_JSON, INTEGER, NUMBER, STRING, ListOf, MapOf, Maybe, Obj, Shape

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
EVALUATION_FILE = "evaluation.json"
ATTRIBUTION_FOLDER = "attribution"
ATTRIBUTION_META = "meta.json"
ATTRIBUTION_ARRAYS = "attributions.npz"
ATTRIBUTION_GRID = "grid.png"
CHECKPOINT_FOLDER = "checkpoints"
CHECKPOINTS = ("best", "last")  # the names a run's checkpoints take, in the order evaluation prefers them
AUTOATTACK_STATE_PREFIX = ".autoattack-"
LOCK_FILE = ".run.lock"  # one lock for every writer of the folder: train, resume, evaluate, attribute
MAX_JSON_BYTES = 64 << 20  # a run's JSON files are small; anything larger is not one of ours


class RunFileError(TrainersError):
    """A file of a run folder that is missing, unreadable or not of the expected shape.

    Attributes:
        file: the file's path inside the run folder (``results.json``, ``gradscope/meta.json``).
        problem: what is wrong, one line (``'epochs' must be an integer, got 'many'``).
    """

    def __init__(self, file: str, problem: str) -> None:
        self.file, self.problem = file, problem
        super().__init__(f"{file}: {problem}")


SCORES = MapOf(Maybe(NUMBER))
RESULTS = Obj({
    "method": STRING, "model": STRING, "dataset": STRING, "seed": INTEGER, "epochs": INTEGER, "steps": INTEGER,
    "best_epoch": INTEGER, "select_on": STRING, "parameters": INTEGER, "parameters_without_biases": INTEGER,
    "last": SCORES, "best": SCORES,
}, required=("best",), rest=ANY_JSON)
METRICS_ROW = Obj({"epoch": INTEGER, "step": INTEGER}, required=("epoch",), rest=ANY)
EVALUATION_ENTRY = Obj({
    "checkpoint": STRING, "attack": STRING, "accuracy": NUMBER, "eps": NUMBER, "eps_label": STRING, "n": INTEGER,
    "breakdown": MapOf(NUMBER), "attacks_to_run": ListOf(STRING), "version": STRING, "time_s": NUMBER,
}, required=("checkpoint", "attack", "accuracy", "eps", "n"), rest=ANY_JSON)
SWEEP = Obj({
    "checkpoint": STRING, "n": INTEGER, "attack": STRING, "eps": ListOf(NUMBER), "eps_labels": ListOf(STRING),
    "accuracy": ListOf(NUMBER), "num_classes": INTEGER,
}, required=("eps_labels", "accuracy"), rest=ANY_JSON)
EVALUATION = Obj({
    "results": MapOf(EVALUATION_ENTRY), "sweeps": MapOf(SWEEP),
    "flags": ListOf(Obj({"flag": STRING, "message": STRING}, required=("flag", "message"), rest=ANY_JSON)),
}, required=("results",), rest=ANY_JSON)
ATTRIBUTION = Obj({
    "methods": ListOf(STRING), "requested": ListOf(STRING), "skipped": MapOf(STRING),
    "labels": ListOf(INTEGER), "predictions": ListOf(INTEGER), "checkpoint": STRING, "model": STRING,
    "dataset": STRING, "images": Obj({"indices": ListOf(INTEGER)}, rest=ANY_JSON),
}, required=("methods",), rest=ANY_JSON)


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run's folder, its validated readers and its writer's lock.

    Args:
        root: the run folder.
        confine: if given, every file read must resolve (symlinks followed) inside this folder,
            else `RunFileError`; the dashboard passes its runs folder.
    """

    root: Path
    confine: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.confine is not None:
            object.__setattr__(self, "confine", Path(self.confine))

    # -- layout ------------------------------------------------------------------------------------

    @property
    def config(self) -> Path:
        """The fully resolved `TrainConfig`, JSON."""
        return self.root / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        """One JSON object per finished epoch."""
        return self.root / METRICS_FILE

    @property
    def results(self) -> Path:
        """Final test accuracies; present once the run finished."""
        return self.root / RESULTS_FILE

    @property
    def evaluation(self) -> Path:
        """Results of ``python -m trainers evaluate``, merged over calls."""
        return self.root / EVALUATION_FILE

    @property
    def evaluation_tmp(self) -> Path:
        """Where `evaluation` is written before its atomic rename."""
        return self.evaluation.with_suffix(".tmp")

    def autoattack_state(self, checkpoint: str, eps_label: str, n: int) -> Path:
        """AutoAttack's resume state for one checkpoint, ε (``8/255``) and number of images."""
        return self.root / f"{AUTOATTACK_STATE_PREFIX}{checkpoint}-{eps_label.replace('/', '_')}-{n}.json"

    def autoattack_states(self) -> list[Path]:
        """Every AutoAttack resume state file the folder holds."""
        return sorted(self.root.glob(f"{AUTOATTACK_STATE_PREFIX}*.json")) if self.root.is_dir() else []

    @property
    def attribution(self) -> Path:
        """Folder of Captum maps (``attribution_arrays``, ``attribution_grid``, ``attribution_meta``)."""
        return self.root / ATTRIBUTION_FOLDER

    @property
    def attribution_meta(self) -> Path:
        """What the attribution maps are: methods, images, checkpoint, settings."""
        return self.attribution / ATTRIBUTION_META

    @property
    def attribution_arrays(self) -> Path:
        """The raw maps, images, labels and predictions (``numpy.savez``)."""
        return self.attribution / ATTRIBUTION_ARRAYS

    @property
    def attribution_grid(self) -> Path:
        """The PNG grid of inputs and maps."""
        return self.attribution / ATTRIBUTION_GRID

    @property
    def checkpoints(self) -> Path:
        """Folder of the run's checkpoints."""
        return self.root / CHECKPOINT_FOLDER

    def checkpoint(self, which: str) -> Path:
        """``best`` or ``last`` checkpoint file."""
        if which not in CHECKPOINTS:
            raise TrainersError(f"unknown checkpoint {which!r}; expected one of: {', '.join(CHECKPOINTS)}")
        return self.checkpoints / f"{which}.pt"

    @property
    def best(self) -> Path:
        """Checkpoint of the epoch chosen by ``select_on``."""
        return self.checkpoint("best")

    @property
    def last(self) -> Path:
        """Checkpoint after the last finished epoch (what ``--resume`` continues)."""
        return self.checkpoint("last")

    def preferred_checkpoint(self) -> Path | None:
        """The checkpoint evaluation reads: ``best`` if it exists, else ``last``; None without either."""
        return next((p for p in (self.best, self.last) if p.is_file()), None)

    @property
    def record(self) -> Path:
        """The gradscope record of the run's gradients."""
        return self.root / RECORD_SUBFOLDER

    @property
    def record_meta(self) -> Path:
        """The record's ``meta.json``."""
        return self.record / META_FILE

    @property
    def record_frames(self) -> Path:
        """The record's append-only frames file."""
        return self.record / FRAMES_FILE

    @property
    def lock(self) -> Path:
        """The lock file its writer holds (an OS lock; the content names the holder)."""
        return self.root / LOCK_FILE

    # -- state -------------------------------------------------------------------------------------

    def holds_run(self) -> bool:
        """Whether a run was started here."""
        return self.config.exists()

    def finished(self) -> bool:
        """Whether the run wrote its results."""
        return self.results.exists()

    def has_record(self) -> bool:
        """Whether a gradscope record was started here."""
        return self.record_meta.exists()

    # -- confinement -------------------------------------------------------------------------------

    def name_of(self, path: Path) -> str:
        """``path`` relative to the run folder, for messages (``gradscope/meta.json``)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def within(self, path: Path) -> Path:
        """``path`` resolved (symlinks followed); `RunFileError` if it leaves ``confine``."""
        real = path.resolve()
        if self.confine is not None and not real.is_relative_to(self.confine.resolve()):
            raise RunFileError(self.name_of(path), "is a link that leads outside the runs folder")
        return real

    def record_path(self) -> Path:
        """The record folder, checked: it and the files in it resolve inside ``confine``."""
        folder = self.within(self.record)
        for path in (self.record_meta, self.record_frames):
            if path.exists() or path.is_symlink():
                self.within(path)
        return folder

    # -- readers -----------------------------------------------------------------------------------

    def _read_text(self, path: Path) -> str:
        name = self.name_of(path)
        real = self.within(path)
        try:
            if real.stat().st_size > MAX_JSON_BYTES:
                raise RunFileError(name, f"is larger than {MAX_JSON_BYTES >> 20} MiB")
            return real.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RunFileError(name, "is missing") from None
        except IsADirectoryError:
            raise RunFileError(name, "is a folder, not a file") from None
        except UnicodeDecodeError:
            raise RunFileError(name, "is not UTF-8 text") from None
        except OSError as exc:
            raise RunFileError(name, f"cannot be read ({exc.strerror or type(exc).__name__})") from None

    def read_json(self, path: Path, shape: Shape) -> Any:
        """Parse one JSON file of the run and check it against ``shape``."""
        name = self.name_of(path)
        text = self._read_text(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunFileError(name, f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        except RecursionError:
            raise RunFileError(name, "is nested too deeply") from None
        problem = shape.problem(data, "")
        if problem:
            raise RunFileError(name, problem)
        return data

    def read_config(self) -> dict[str, Any]:
        """The stored config as a dict: every `TrainConfig` field typed, ``method`` present."""
        return self.read_json(self.config, config_shape(required=("method",)))

    def read_train_config(self) -> TrainConfig:
        """The stored config as a `TrainConfig` (``method``, ``model`` and ``dataset`` present)."""
        return TrainConfig(**self.read_json(self.config, config_shape()))

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every epoch's metrics written so far ([] before the first epoch).

        A last line without its newline is one being written and is left out; any other line that is
        not a JSON object with an integer ``epoch`` is a `RunFileError` naming its line number.
        """
        if not (self.metrics.exists() or self.metrics.is_symlink()):
            return []
        text = self._read_text(self.metrics)
        lines = text.split("\n")
        if lines and lines[-1] and not text.endswith("\n"):
            lines = lines[:-1]
        rows = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                raise RunFileError(METRICS_FILE, f"line {number} is not valid JSON") from None
            problem = METRICS_ROW.problem(row, "")
            if problem:
                raise RunFileError(METRICS_FILE, f"line {number}: {problem}")
            rows.append(row)
        return rows

    def read_results(self) -> dict[str, Any] | None:
        """The final results, or None while the run has not finished."""
        if not (self.results.exists() or self.results.is_symlink()):
            return None
        return self.read_json(self.results, RESULTS)

    def read_evaluation(self) -> dict[str, Any]:
        """The stored evaluation (empty results, sweeps and flags when there is none)."""
        if not (self.evaluation.exists() or self.evaluation.is_symlink()):
            return {"results": {}, "sweeps": {}, "flags": []}
        data = self.read_json(self.evaluation, EVALUATION)
        data.setdefault("sweeps", {})
        data.setdefault("flags", [])
        for key, sweep in data["sweeps"].items():
            if len(sweep["accuracy"]) != len(sweep["eps_labels"]):
                raise RunFileError(EVALUATION_FILE, f"sweep '{key}' has {len(sweep['accuracy'])} accuracies for "
                                                    f"{len(sweep['eps_labels'])} ε values")
        return data

    def read_attribution(self) -> dict[str, Any] | None:
        """The attribution folder's ``meta.json``, or None when the run was not attributed."""
        if not (self.attribution_meta.exists() or self.attribution_meta.is_symlink()):
            return None
        return self.read_json(self.attribution_meta, ATTRIBUTION)

    def problems(self) -> list[RunFileError]:
        """Every problem the run's JSON files have (empty for a sound run), for a badge or a report."""
        found = []
        readers = (self.read_config if self.holds_run() else None, self.read_metrics, self.read_results,
                   self.read_evaluation, self.read_attribution)
        for reader in readers:
            if reader is None:
                continue
            try:
                reader()
            except RunFileError as exc:
                found.append(exc)
        return found

    # -- writing -----------------------------------------------------------------------------------

    def check_writable(self) -> None:
        """Refuse, before anything is created, a root that is a file or lies under one."""
        if self.root.exists() and not self.root.is_dir():
            raise TrainersError(f"output path {self.root} is a file; give a folder")
        for parent in self.root.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise TrainersError(f"output path {self.root} lies under {parent}, which is a file")
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise TrainersError(f"output path {self.root}: cannot create folders in {parent}")
                break

    def writer_lock(self) -> FolderLock:
        """The lock (not yet taken) that makes this process the folder's one writer."""
        return FolderLock(self.root, what="run", name=LOCK_FILE)

    def take_lock(self) -> FolderLock:
        """Take the writer's lock (creating the folder); a second writer is a one-line `TrainersError`."""
        lock = self.writer_lock()
        try:
            return lock.acquire()
        except GradscopeError as exc:
            raise TrainersError(str(exc)) from None

    @contextmanager
    def writing(self) -> Iterator[RunFolder]:
        """Hold the writer's lock for the ``with`` block (evaluation and attribution use this)."""
        lock = self.take_lock()
        try:
            yield self
        finally:
            lock.release()

    def clear(self) -> None:
        """Remove all of the run's state (under its writer's lock); files that are not a run's stay."""
        for path in (self.config, self.metrics, self.results, self.evaluation, self.evaluation_tmp,
                     *self.autoattack_states()):
            path.unlink(missing_ok=True)
        for folder in (self.record, self.checkpoints, self.attribution):
            if folder.is_symlink():
                folder.unlink()
            else:
                shutil.rmtree(folder, ignore_errors=True)

    def check_claimable(self, *, resume: bool, overwrite: bool) -> None:
        """Refuse, before anything is created, what `claim` would refuse (it checks again under the lock)."""
        if resume and overwrite:
            raise TrainersError("--resume and --overwrite exclude each other")
        self.check_writable()
        if resume and not self.last.exists():
            raise TrainersError(f"nothing to resume in {self.root}: no {self.name_of(self.last)}")
        if not resume and not overwrite and self.holds_run():
            raise TrainersError(f"{self.root} holds another run ({self.describe()}); "
                                "pass --resume to continue it or --overwrite to replace it")

    def claim(self, *, resume: bool, overwrite: bool) -> FolderLock:
        """Lock the folder for a training and make it ready: a new run, a resumed one, or a replaced one.

        A folder that holds another run is refused unless ``resume`` (continue it) or ``overwrite``
        (delete all of that run's state first) is given. Returns the held lock; the caller releases it.
        """
        self.check_claimable(resume=resume, overwrite=overwrite)
        lock = self.take_lock()
        try:
            self.check_claimable(resume=resume, overwrite=overwrite)  # another writer may have finished
            if not resume and self.holds_run():
                self.clear()
        except BaseException:
            lock.release()
            raise
        return lock

    def describe(self) -> str:
        """``method model on dataset`` of the stored run, or the problem reading its config."""
        try:
            old = self.read_config()
        except RunFileError as exc:
            return f"unreadable config: {exc.problem}"
        return f"{old.get('method')} {old.get('model')} on {old.get('dataset')}"

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one epoch's metrics (one line, one write)."""
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the first ``epochs`` rows: a resumed run rewrites epochs after its last checkpoint."""
        rows = [r for r in self.read_metrics() if r["epoch"] <= epochs]
        tmp = self.metrics.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, self.metrics)
