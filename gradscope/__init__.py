"""gradscope: per-layer, per-block and per-stage gradient statistics of PyTorch models, recorded cheaply.

    recorder = gradscope.record(model, "runs/baseline", optimizer=optimizer)
    ...train as usual...
    recorder.close()
    gradscope.heatmap({"baseline": gradscope.load("runs/baseline")}).show()

``import gradscope`` loads torch and numpy only; plotly is imported when a figure is made.
"""

from typing import Any

from ._version import __version__
from .errors import GradscopeError
from .grouping import LEVELS, Groups
from .record import Matrix, Record, RecordWarning, load
from .recorder import Recorder, record
from .stats import STATS

__all__ = [
    "LEVELS", "STATS", "GradscopeError", "Groups", "Matrix", "Record", "RecordWarning", "Recorder",
    "__version__", "export", "heatmap", "load", "record",
]


def heatmap(records: Any, **options: Any) -> Any:
    """Figure-6 heatmap of one or more records; see `gradscope.figures.heatmap`."""
    from .figures import heatmap as _heatmap

    return _heatmap(records, **options)


def export(figure: Any, path: Any, **options: Any) -> Any:
    """Write a figure to PNG/SVG/PDF/HTML (by extension); see `gradscope.exporting.write_figure`."""
    from .exporting import write_figure

    return write_figure(figure, path, **options)
