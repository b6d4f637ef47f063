"""Finished runs get their record's views aggregated ahead of time: by the training loop when a run
(first or resumed) ends, and by the dashboard's run index in the background for a finished run found
without them. Checked against the same views computed from the frames held in memory (no cache)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest

import gradscope
from app.runs import RunIndex
from app.warmup import RecordWarmer
from gradscope import LEVELS, STATS, Record
from gradscope.cache import CACHE_FOLDER
from gradscope.store import FRAMES_FILE, META_FILE, read_meta
from trainers.config import TrainConfig
from trainers.loop import train
from trainers.record_warmup import WARM_VIEWS
from trainers.run_folder import RunFolder

QUICK = {"dataset": "synthetic-mnist", "epochs": 2, "batch_size": 64, "train_subset": 256, "test_subset": 64,
         "progress": False}
VIEWS = [(level, statistic, view) for level in LEVELS for statistic in STATS for view in WARM_VIEWS
         if view == "none" or statistic != "nonfinite"]


def config(folder: Path, **options: object) -> TrainConfig:
    return TrainConfig(**{"method": "baseline", "model": "mlp-student", "out": str(folder), **QUICK, **options})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("warm") / "run"
    train(config(run))
    return run


def cached_views(record_folder: Path) -> set[tuple[str, str, str]]:
    """The views kept in a record's cache, from the file names (reading them would compute missing ones)."""
    folder = record_folder / CACHE_FOLDER
    names = {p.name.rsplit("-", 3)[0] for p in folder.glob("*.npy")} if folder.is_dir() else set()
    return {v for v in VIEWS if ".".join(v) in names and ".".join(v) + ".blocks" in names}


def uncached(record_folder: Path) -> Record:
    """The record read from its frames in memory: every view is computed, nothing is cached."""
    return Record(read_meta(record_folder), data=(record_folder / FRAMES_FILE).read_bytes())


def assert_first_views_come_from_the_cache(record_folder: Path) -> None:
    record, reference = gradscope.load(record_folder), uncached(record_folder)
    assert record.closed and len(record) == len(reference)
    for level, statistic, view in VIEWS:
        values = record.matrix(level, statistic, view).values
        assert isinstance(values, np.memmap), (level, statistic, view)  # mapped from cache/, not computed
        np.testing.assert_array_equal(values, reference.matrix(level, statistic, view).values)


def without_cache(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns(CACHE_FOLDER))
    return to


def wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_finished_run_has_every_view_cached(trained: Path) -> None:
    record_folder = RunFolder(trained).record
    assert cached_views(record_folder) == set(VIEWS)
    assert_first_views_come_from_the_cache(record_folder)


def test_a_resumed_run_is_cached_when_it_finishes_and_not_when_interrupted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(config(run), stop_after=1) == {"interrupted_at_epoch": 1}
    record_folder = RunFolder(run).record
    assert not cached_views(record_folder)
    train(TrainConfig(method="", model="", dataset="", out=str(run), progress=False), resume=True)
    assert cached_views(record_folder) == set(VIEWS)
    assert len(gradscope.load(run)) == 2 * 256 // 64
    assert_first_views_come_from_the_cache(record_folder)


def test_the_index_caches_a_finished_run_in_the_background(trained: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    finished = RunFolder(without_cache(trained, runs / "finished")).record
    live = RunFolder(without_cache(trained, runs / "live")).record
    meta = json.loads((live / META_FILE).read_text())
    del meta["closed_at"]  # the recorder has not closed it: frames may still arrive
    (live / META_FILE).write_text(json.dumps(meta))
    os.utime(live / FRAMES_FILE)
    assert not cached_views(finished)
    started = time.monotonic()
    runs_seen = {r.id: r for r in RunIndex(runs).scan()}  # no page, no view asked for
    assert time.monotonic() - started < 2.0  # the scan did not wait for the aggregation
    assert runs_seen["finished"].status == "finished" and not runs_seen["finished"].problems
    assert wait_for(lambda: cached_views(finished) == set(VIEWS))
    assert_first_views_come_from_the_cache(finished)
    assert not (live / CACHE_FOLDER).exists()


def served_without_a_cache(runs: Path, record_folder: Path) -> None:
    """The index lists the run without a problem and draws it; no thread writes or fails meanwhile."""
    index = RunIndex(runs)
    (info,) = index.scan()
    assert info.status == "finished" and not info.problems
    values = index.record("run").matrix("stage", "l2").values
    np.testing.assert_array_equal(values, uncached(record_folder).matrix("stage", "l2").values)
    time.sleep(0.5)
    (info,) = index.scan()
    assert not info.problems and not cached_views(record_folder)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_runs_folder_is_served_without_a_cache(trained: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    record_folder = RunFolder(without_cache(trained, runs / "run")).record
    folders = [runs, runs / "run", record_folder]
    for folder in folders:
        os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
    try:
        served_without_a_cache(runs, record_folder)
        assert not (record_folder / CACHE_FOLDER).exists()
    finally:
        for folder in reversed(folders):
            os.chmod(folder, stat.S_IRWXU)


def test_a_record_whose_cache_cannot_be_made_is_served_without_one(trained: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    record_folder = RunFolder(without_cache(trained, runs / "run")).record
    (record_folder / CACHE_FOLDER).write_text("a file where the cache folder would go")
    served_without_a_cache(runs, record_folder)
    assert (record_folder / CACHE_FOLDER).is_file()


def test_a_failed_warming_is_named_and_the_next_run_is_still_warmed(trained: Path, tmp_path: Path) -> None:
    broken = RunFolder(without_cache(trained, tmp_path / "broken")).record
    (broken / META_FILE).write_text("{not json")
    good = RunFolder(without_cache(trained, tmp_path / "good")).record
    warmer = RecordWarmer()
    warmer.submit("broken", broken, 1)
    warmer.submit("good", good, 1)
    assert wait_for(lambda: cached_views(good) == set(VIEWS))
    failure = warmer.failure("broken")
    assert failure is not None and META_FILE in failure and warmer.failure("good") is None
