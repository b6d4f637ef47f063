"""Plotly figures of records: the Figure-6 heatmap (layer x block or stage, one panel per run).

Data and drawing are separate: `heatmap_grid` returns the numbers (used by the CSV export and the
dashboard), `heatmap` draws them. plotly is imported only when a figure is drawn.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .errors import GradscopeError, one_of
from .grouping import relative_name
from .record import Record, load
from .stats import STATS

if TYPE_CHECKING:
    import plotly.graph_objects as go

RecordLike = Union[Record, str, "os.PathLike[str]"]
Records = Union[RecordLike, Sequence[RecordLike], Mapping[str, RecordLike]]
COLUMN_LEVELS = ("block", "stage")
STAT_LABELS = {"l2": "‖g‖₂", "mean_abs": "mean |g|", "max_abs": "max |g|", "nonfinite": "non-finite"}


@dataclass(frozen=True)
class HeatmapGrid:
    """Time-averaged layer statistics of one run, laid out as ``values[row, column]``.

    Columns are blocks or stages in model order; rows are layers named relative to their column
    (``0.conv1`` in stage ``layer2`` is ``layer2.0.conv1``). Cells with no such layer are NaN.
    """

    title: str
    columns: list[str]
    rows: list[str]
    values: np.ndarray


def as_titled_records(records: Records) -> dict[str, Record]:
    """Normalise a record, a path, a list of either, or a title->record mapping to title->Record."""
    items: list[tuple[str | None, RecordLike]]
    if isinstance(records, Mapping):
        items = list(records.items())
    elif isinstance(records, (Record, str, os.PathLike)):
        items = [(None, records)]
    else:
        items = [(None, r) for r in records]
    if not items:
        raise GradscopeError("no records given")
    titled: dict[str, Record] = {}
    for title, item in items:
        record = item if isinstance(item, Record) else load(item)
        name = title or _default_title(record, item)
        while name in titled:
            name += "'"
        titled[name] = record
    return titled


def _default_title(record: Record, item: RecordLike) -> str:
    tags = record.tags
    if "title" in tags:
        return str(tags["title"])
    if record.folder is not None:
        folder = record.folder.parent if record.folder.name == "gradscope" else record.folder
        return folder.name
    return str(item) if not isinstance(item, Record) else "run"


def heatmap_grid(
    record: Record, stat: str = "mean_abs", columns: str = "stage", window: tuple[float, float] = (0.0, 1.0),
    title: str = "",
) -> HeatmapGrid:
    """The numbers behind one heatmap panel: layer means over ``window`` placed by column and row."""
    if columns not in COLUMN_LEVELS:
        raise one_of("column level", columns, COLUMN_LEVELS)
    means = record.window_mean("layer", stat, window)
    column_of = {p["layer"]: p[columns] for p in reversed(record.meta["params"])}
    column_names = list(dict.fromkeys(column_of[layer] for layer in means))
    cells = {(column_of[layer], relative_name(layer, column_of[layer])): v for layer, v in means.items()}
    rows = list(dict.fromkeys(row for _, row in cells))
    values = np.full((len(rows), len(column_names)), np.nan)
    for (col, row), v in cells.items():
        values[rows.index(row), column_names.index(col)] = v
    return HeatmapGrid(title, column_names, rows, values)


def heatmap_grids(
    records: Records, stat: str = "mean_abs", columns: str = "stage", window: tuple[float, float] = (0.0, 1.0)
) -> list[HeatmapGrid]:
    """One `HeatmapGrid` per run, with the union of rows so that panels line up."""
    if stat not in STATS:
        raise one_of("statistic", stat, STATS)
    grids = [heatmap_grid(r, stat, columns, window, t) for t, r in as_titled_records(records).items()]
    rows = list(dict.fromkeys(row for g in grids for row in g.rows))
    aligned = []
    for g in grids:
        values = np.full((len(rows), len(g.columns)), np.nan)
        values[[rows.index(r) for r in g.rows]] = g.values
        aligned.append(HeatmapGrid(g.title, g.columns, rows, values))
    return aligned


def colour_range(grids: Sequence[HeatmapGrid], log: bool, robust: bool) -> tuple[float, float]:
    """One colour range for all panels (so they compare); ``robust`` clips to the 2nd-98th percentile."""
    cells = np.concatenate([g.values.ravel() for g in grids])
    cells = cells[np.isfinite(cells) & ((cells > 0) if log else True)]
    if cells.size == 0:
        return (0.0, 1.0)
    if log:
        cells = np.log10(cells)
    lo, hi = np.percentile(cells, [2, 98]) if robust else (cells.min(), cells.max())
    return (float(lo), float(hi if hi > lo else lo + 1e-12))


def log_ticks(lo: float, hi: float) -> list[float]:
    """Readable colour-bar ticks between 10**lo and 10**hi: decades, plus 2 and 5 when few decades."""
    mantissas = (1, 2, 5) if hi - lo < 3 else (1,)
    ticks = [m * 10.0**e for e in range(math.floor(lo), math.ceil(hi) + 1) for m in mantissas]
    inside = [t for t in ticks if lo - 1e-9 <= math.log10(t) <= hi + 1e-9]
    return inside or [10.0**lo]


def heatmap(
    records: Records,
    stat: str = "mean_abs",
    columns: str = "stage",
    window: tuple[float, float] = (0.0, 1.0),
    log: bool = True,
    robust: bool = False,
    colorscale: str = "Viridis",
    title: str | None = None,
) -> go.Figure:
    """Figure 6 of the poster: average gradient per layer (rows) and stage or block (columns).

    Args:
        records: records or their paths; a mapping gives each panel its title.
        stat: one of `gradscope.STATS`.
        columns: ``"stage"`` or ``"block"`` along x.
        window: the part of training to average over, as fractions of the recorded steps.
        log: log10 colour scale (gradients span orders of magnitude).
        robust: clip the colour range to the 2nd-98th percentile of all cells.
        colorscale: any Plotly colour scale name.
        title: figure title; a description of the view by default.
    """
    from plotly.subplots import make_subplots

    grids = heatmap_grids(records, stat, columns, window)
    cmin, cmax = colour_range(grids, log, robust)
    label = STAT_LABELS[stat]
    fig = make_subplots(
        rows=1, cols=len(grids), shared_yaxes=True, horizontal_spacing=0.015,
        subplot_titles=[g.title for g in grids],
    )
    for i, g in enumerate(grids, start=1):
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(g.values > 0, np.log10(g.values), np.nan) if log else g.values
        fig.add_trace(
            {
                "type": "heatmap", "x": g.columns, "y": g.rows, "z": z.tolist(),
                "customdata": g.values.tolist(), "coloraxis": "coloraxis", "xgap": 1, "ygap": 1,
                "name": g.title, "hoverongaps": False,
                "hovertemplate": f"{g.title}<br>%{{x}} · %{{y}}<br>{label} = %{{customdata:.3e}}<extra></extra>",
            },
            row=1, col=i,
        )
    colorbar: dict[str, Any] = {"title": {"text": f"log₁₀ {label}" if log else label}}
    if log:
        ticks = log_ticks(cmin, cmax)
        colorbar.update(tickvals=[math.log10(t) for t in ticks], ticktext=[f"{t:.0e}" for t in ticks])
    lo, hi = window
    fig.update_layout(
        title={"text": title or f"{label} per layer, averaged over {lo:.0%}–{hi:.0%} of training"},
        coloraxis={"colorscale": colorscale, "cmin": cmin, "cmax": cmax, "colorbar": colorbar},
        template="plotly_white", height=max(360, 22 * len(grids[0].rows) + 160),
        width=max(640, 260 * len(grids) + 200), margin={"l": 110, "r": 40, "t": 80, "b": 80},
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", tickangle=-45)
    return fig


def heatmap_rows(grids: Sequence[HeatmapGrid], stat: str, window: tuple[float, float]) -> list[dict[str, Any]]:
    """The heatmap as long-format rows (run, column, row, value), for CSV export."""
    return [
        {"run": g.title, "column": col, "row": row, "stat": stat, "window_start": window[0],
         "window_stop": window[1], "value": float(g.values[i, j])}
        for g in grids for i, row in enumerate(g.rows) for j, col in enumerate(g.columns)
        if not math.isnan(g.values[i, j])
    ]
