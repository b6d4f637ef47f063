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
from .record import NORMALIZATIONS, Record, load
from .stats import STATS

if TYPE_CHECKING:
    import plotly.graph_objects as go

RecordLike = Union[Record, str, "os.PathLike[str]"]
Records = Union[RecordLike, Sequence[RecordLike], Mapping[str, RecordLike]]
COLUMN_LEVELS = ("block", "stage")
STAT_LABELS = {"l2": "‖g‖₂", "mean_abs": "mean |g|", "max_abs": "max |g|", "nonfinite": "non-finite"}
NORMALIZED_LABELS = {"none": "{}", "global": "{} / global ‖g‖₂"}  # the quantity a normalised view shows


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
    title: str = "", normalize: str = "none",
) -> HeatmapGrid:
    """The numbers behind one heatmap panel: layer means over ``window`` placed by column and row.

    ``normalize="global"`` divides each layer's statistic at every step by the run's global gradient
    norm at that step (L2 over all recorded parameters) before the window mean (`Record.matrix`).
    """
    if columns not in COLUMN_LEVELS:
        raise one_of("column level", columns, COLUMN_LEVELS)
    means = record.window_mean("layer", stat, window, normalize=normalize)
    column_of = {p["layer"]: p[columns] for p in reversed(record.meta["params"])}
    column_names = list(dict.fromkeys(column_of[layer] for layer in means))
    cells = {(column_of[layer], relative_name(layer, column_of[layer])): v for layer, v in means.items()}
    rows = list(dict.fromkeys(row for _, row in cells))
    values = np.full((len(rows), len(column_names)), np.nan)
    for (col, row), v in cells.items():
        values[rows.index(row), column_names.index(col)] = v
    return HeatmapGrid(title, column_names, rows, values)


def heatmap_grids(
    records: Records, stat: str = "mean_abs", columns: str = "stage", window: tuple[float, float] = (0.0, 1.0),
    normalize: str = "none",
) -> list[HeatmapGrid]:
    """One `HeatmapGrid` per run, with the union of rows so that panels line up."""
    if stat not in STATS:
        raise one_of("statistic", stat, STATS)
    if normalize not in NORMALIZATIONS:
        raise one_of("normalisation", normalize, list(NORMALIZATIONS))
    grids = [heatmap_grid(r, stat, columns, window, t, normalize) for t, r in as_titled_records(records).items()]
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


HEATMAP_PANEL_GAP = 0.015  # between the panels of a heatmap, as a fraction of the figure's width


def log_ticks(lo: float, hi: float) -> list[float]:
    """Readable colour-bar ticks between 10**lo and 10**hi: decades, plus 2 and 5 when few decades."""
    mantissas = (1, 2, 5) if hi - lo < 3 else (1,)
    ticks = [m * 10.0**e for e in range(math.floor(lo), math.ceil(hi) + 1) for m in mantissas]
    inside = [t for t in ticks if lo - 1e-9 <= math.log10(t) <= hi + 1e-9]
    return inside or [10.0**lo]


@dataclass(frozen=True)
class HeatmapLabels:
    """Every text of a Figure-6 heatmap, so the library's figure and the dashboard's say the same."""

    title: str  # what is shown, over which part of training
    subtitle: str  # which view: raw or normalised, colour scale
    x: str  # the column level
    y: str
    colorbar: str
    quantity: str  # the plotted quantity, for hover texts

    @property
    def title_html(self) -> str:
        """Title and subtitle as one Plotly title text."""
        return f"{self.title}<br><sup>{self.subtitle}</sup>"


def heatmap_labels(
    stat: str = "mean_abs", columns: str = "stage", window: tuple[float, float] = (0.0, 1.0), log: bool = True,
    normalize: str = "none", robust: bool = False, quantity: str | None = None,
) -> HeatmapLabels:
    """The texts of a heatmap of ``stat`` by ``columns`` over ``window``.

    ``quantity`` replaces the statistic's own label, e.g. ``log₁₀(mean |g| / baseline)`` for a
    difference view; the colour bar then shows it as given.
    """
    if stat not in STATS:
        raise one_of("statistic", stat, STATS)
    if normalize not in NORMALIZATIONS:
        raise one_of("normalisation", normalize, list(NORMALIZATIONS))
    shown = quantity or NORMALIZED_LABELS[normalize].format(STAT_LABELS[stat])
    logged = f"log₁₀ {shown}" if normalize == "none" else f"log₁₀({shown})"
    colorbar = quantity or (logged if log else shown)
    lo, hi = window
    view = "raw statistic" if normalize == "none" else f"normalised: {NORMALIZATIONS[normalize].subtitle}"
    scale = "" if quantity else "log₁₀ colour scale" if log else "linear colour scale"
    parts = [view, scale, "colours clipped to the 2nd–98th percentile" if robust else ""]
    return HeatmapLabels(
        title=f"{shown} per layer, averaged over {lo:.0%}–{hi:.0%} of training",
        subtitle="; ".join(p for p in parts if p), x=columns, y=f"layer (named within its {columns})",
        colorbar=colorbar, quantity=shown,
    )


def axis_suffix(panel: int) -> str:
    """Plotly's name suffix of the ``panel``-th subplot's axes (0-based): ``""``, ``"2"``, ``"3"``, ..."""
    return "" if panel == 0 else str(panel + 1)


def panel_axes(panel: int) -> dict[str, str]:
    """A trace's ``xaxis``/``yaxis`` keys placing it in the ``panel``-th subplot."""
    return {"xaxis": f"x{axis_suffix(panel)}", "yaxis": f"y{axis_suffix(panel)}"}


def heatmap_layout(labels: HeatmapLabels, titles: Sequence[str], rows: int) -> dict[str, Any]:
    """The layout every Figure-6 heatmap shares, as plain JSON: one panel per run on one y axis.

    Panels sit side by side with their titles above them; only the first shows the layer names.
    Written out rather than built with ``make_subplots`` and ``update_layout``: plotly's validation of
    a dozen panels cost more than the dashboard's whole answer (docs/performance.md).
    """
    panels = len(titles)
    gap = HEATMAP_PANEL_GAP if panels > 1 else 0.0
    width = (1.0 - gap * (panels - 1)) / panels
    layout: dict[str, Any] = {
        "title": {"text": labels.title_html}, "template": "plotly_white", "height": max(380, 22 * rows + 190),
        "width": max(640, 260 * panels + 200), "margin": {"l": 110, "r": 40, "t": 100, "b": 100}, "annotations": [],
    }
    for i, title in enumerate(titles):
        suffix, left = axis_suffix(i), i * (width + gap)
        layout[f"xaxis{suffix}"] = {"domain": [left, left + width], "anchor": f"y{suffix}", "type": "category",
                                    "tickangle": -45, "title": {"text": labels.x}}
        shared = {"matches": "y", "showticklabels": False} if i else {"title": {"text": labels.y}}
        layout[f"yaxis{suffix}"] = {"domain": [0.0, 1.0], "anchor": f"x{suffix}", "type": "category",
                                    "autorange": "reversed", **shared}
        layout["annotations"].append({"text": title, "x": left + width / 2, "y": 1.0, "xref": "paper", "yref": "paper",
                                      "xanchor": "center", "yanchor": "bottom", "showarrow": False,
                                      "font": {"size": 16}})
    return layout


def heatmap(
    records: Records,
    stat: str = "mean_abs",
    columns: str = "stage",
    window: tuple[float, float] = (0.0, 1.0),
    log: bool = True,
    robust: bool = False,
    colorscale: str = "Viridis",
    title: str | None = None,
    normalize: str = "none",
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
        title: figure title; a description of the view by default (`heatmap_labels`).
        normalize: ``"none"`` (the statistic) or ``"global"``: at every step each layer's statistic
            divided by the run's global gradient norm at that step, then averaged over ``window``,
            so that a loss weight (which scales every gradient alike) does not change the picture.
    """
    import plotly.graph_objects as go

    return go.Figure(heatmap_spec(records, stat, columns, window, log, robust, colorscale, title, normalize))


def heatmap_spec(
    records: Records, stat: str = "mean_abs", columns: str = "stage", window: tuple[float, float] = (0.0, 1.0),
    log: bool = True, robust: bool = False, colorscale: str = "Viridis", title: str | None = None,
    normalize: str = "none",
) -> dict[str, Any]:
    """`heatmap` as plain plotly JSON (``data`` and ``layout``), for servers that send it as it is."""
    grids = heatmap_grids(records, stat, columns, window, normalize)
    labels = heatmap_labels(stat, columns, window, log, normalize, robust)
    if title:
        labels = HeatmapLabels(title, labels.subtitle, labels.x, labels.y, labels.colorbar, labels.quantity)
    cmin, cmax = colour_range(grids, log, robust)
    data = []
    for i, g in enumerate(grids):
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(g.values > 0, np.log10(g.values), np.nan) if log else g.values
        hover = f"{g.title}<br>%{{x}} · %{{y}}<br>{labels.quantity} = %{{customdata:.3e}}<extra></extra>"
        data.append({
            "type": "heatmap", "x": g.columns, "y": g.rows, "z": _json_cells(z), "customdata": _json_cells(g.values),
            "coloraxis": "coloraxis", "xgap": 1, "ygap": 1, "name": g.title, "hoverongaps": False,
            "hovertemplate": hover, **panel_axes(i),
        })
    colorbar: dict[str, Any] = {"title": {"text": labels.colorbar}}
    if log:
        ticks = log_ticks(cmin, cmax)
        colorbar.update(tickvals=[math.log10(t) for t in ticks], ticktext=[f"{t:.0e}" for t in ticks])
    layout = heatmap_layout(labels, [g.title for g in grids], len(grids[0].rows))
    layout["coloraxis"] = {"colorscale": colorscale, "cmin": cmin, "cmax": cmax, "colorbar": colorbar}
    return {"data": data, "layout": layout}


def _json_cells(values: np.ndarray) -> list[list[float | None]]:
    """Cells as JSON-ready rows, NaN and inf as None (gaps), which plain JSON encoders cannot write."""
    cells = values.astype(object)
    cells[~np.isfinite(values)] = None
    return cells.tolist()


def heatmap_rows(
    grids: Sequence[HeatmapGrid], stat: str, window: tuple[float, float], normalize: str = "none",
) -> list[dict[str, Any]]:
    """The heatmap as long-format rows (run, column, row, value), for CSV export."""
    return [
        {"run": g.title, "column": col, "row": row, "stat": stat, "normalize": normalize, "window_start": window[0],
         "window_stop": window[1], "value": float(g.values[i, j])}
        for g in grids for i, row in enumerate(g.rows) for j, col in enumerate(g.columns)
        if not math.isnan(g.values[i, j])
    ]
