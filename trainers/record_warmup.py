"""Aggregating a finished run's gradient record once, so that the dashboard's first view of it is fast.

A record of 80,000 steps takes seconds per statistic and level to aggregate; `gradscope.Record.prepare`
does every view once and keeps it in the record's ``cache/`` (`gradscope.cache`). The training loop
calls `warm_after_training` when a run (first or resumed) finishes, and the dashboard's run index
does the same in the background for finished runs it finds without a cache (`app.warmup`).
"""

from __future__ import annotations

import os
import warnings

from gradscope import Record
from gradscope.record import NORMALIZATIONS, find_record
from gradscope.store import read_meta

from .run_folder import RunFolder

WARM_VIEWS: tuple[str, ...] = tuple(NORMALIZATIONS)  # every view the dashboard offers


class RecordCacheWarning(UserWarning):
    """A finished run's record could not be aggregated into its cache (the run itself is fine)."""


def warm_record(path: str | os.PathLike[str]) -> Record:
    """Load the record at ``path`` (a record or run folder) and compute every view of it.

    A settled record in a writable folder keeps them in its ``cache/``; otherwise they are only
    computed (``record.cached`` says which). The raw views come first, being the dashboard's default
    (``global`` ones cost about twice as much: each recomputes the global norm). Raises what
    `gradscope.load` and the reads raise; a record's problems (skipped frames) are not warned
    about here, its readers name them.
    """
    folder = find_record(path)
    record = Record(read_meta(folder), folder=folder)
    for view in WARM_VIEWS:
        record.prepare(normalize=(view,))
    return record


def warm_after_training(folder: RunFolder) -> None:
    """Prepare the cache of a run that just finished; a failure is a warning, never a failed run.

    The run's results are already written when this runs: the cache only saves the dashboard time.
    """
    if not folder.has_record():
        return
    try:
        warm_record(folder.record)
    except Exception as exc:  # noqa: BLE001 - any failure here must leave the finished run intact
        warnings.warn(f"{folder.record}: its views could not be cached ({type(exc).__name__}: {exc}); "
                      "the dashboard computes them on first view instead", RecordCacheWarning, stacklevel=2)


__all__ = ["WARM_VIEWS", "RecordCacheWarning", "warm_after_training", "warm_record"]
