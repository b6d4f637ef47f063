"""Gradients page: Figure 6 heatmaps side by side (or their differences from one run) and per-group curves.

Numbers come from the runs' gradscope records (`gradscope.figures.heatmap_grids`, `Record.matrix`);
long records are binned on the server (`downsample`) so a browser draws a few hundred points per line.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from dash import Output, dcc, html

from gradscope import GradscopeError
from gradscope.figures import (
    NORMALIZED_LABELS,
    STAT_LABELS,
    HeatmapGrid,
    axis_suffix,
    heatmap_grids,
    heatmap_labels,
    heatmap_layout,
    heatmap_rows,
    panel_axes,
)
from gradscope.figures import heatmap_spec as gradscope_heatmap_spec
from gradscope.record import NORMALIZATIONS, Record

from ..components import control, figure_card, note
from ..errors import AppError
from ..shared import (
    TEMPLATE,
    Rows,
    annotate_empty,
    check_choice,
    colour,
    finite_number,
    finite_or_none,
    rgba,
    template_json,
)
from ..validate import choice, flags, number, window
from .base import Control, FigureSpec, Page, View, label_or_none

BAND_COLOUR = "rgba(90, 90, 90, 0.14)"  # every line's min-max band: the line drawn over it says whose
MAX_DEFAULT_GROUPS = 8  # lines per small panel (~400 x 190 px) that stay apart; also a third less to draw
SERIES_POINTS = 60  # per curve: a panel is a third of the card (~400 px); each bin keeps its min-max band
SERIES_COLUMNS, SERIES_PANEL_HEIGHT = 3, 230  # the series view: one small panel per run, 3 a row
STAT_OPTIONS = [{"label": "mean |g|", "value": "mean_abs"}, {"label": "L2", "value": "l2"},
                {"label": "max |g|", "value": "max_abs"}]
LEVELS = ("layer", "block", "stage")
NORMALIZE_OPTIONS = [{"label": "raw", "value": "none"}, {"label": "÷ global ‖g‖₂ (per step)", "value": "global"}]
COLUMNS = ("stage", "block")


# ---------------------------------------------------------------------------------------------------
# Gradients: Figure 6 and its difference view


@dataclass(frozen=True)
class HeatmapView:
    """The panels of the gradient heatmap as drawn: statistics, or differences from a baseline run.

    With ``baseline`` set, each panel holds ``log10(run / baseline)`` when ``log`` (a ratio reads the
    same at every depth, where gradients differ by orders of magnitude: +1 is ten times the
    baseline's gradient) or ``run - baseline`` otherwise, cell by cell (same row and column names).
    ``normalize`` is the view of the statistic (`gradscope.NORMALIZATIONS`) the panels are made of.
    """

    grids: list[HeatmapGrid]
    stat: str
    columns: str
    window: tuple[float, float]
    log: bool
    baseline: str | None
    normalize: str = "none"


def difference_grids(grids: Sequence[HeatmapGrid], baseline: str, log: bool) -> list[HeatmapGrid]:
    """Each grid minus the grid titled ``baseline`` (log10 ratio when ``log``), matched by cell names.

    Cells that either grid lacks (another architecture), and with ``log`` cells that are not
    positive, are NaN. The baseline's own panel is all zeros, which marks it as the reference.
    """
    titles = [g.title for g in grids]
    check_choice("baseline run", baseline, titles)
    base = grids[titles.index(baseline)]
    base_cells = {(row, col): base.values[i, j]
                  for i, row in enumerate(base.rows) for j, col in enumerate(base.columns)}
    out = []
    for grid in grids:
        reference = np.array([[base_cells.get((row, col), np.nan) for col in grid.columns] for row in grid.rows])
        reference = reference.reshape(grid.values.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            if log:
                positive = (grid.values > 0) & (reference > 0)
                values = np.where(positive, np.log10(np.where(positive, grid.values / reference, 1.0)), np.nan)
            else:
                values = grid.values - reference
        out.append(HeatmapGrid(grid.title, list(grid.columns), list(grid.rows), values))
    return out


def heatmap_view(
    records: Mapping[str, Record], stat: str = "mean_abs", columns: str = "stage",
    window: tuple[float, float] = (0.0, 1.0), log: bool = True, baseline: str | None = None,
    normalize: str = "none",
) -> HeatmapView:
    """Figure 6's panels (`gradscope.figures.heatmap_grids`), or their differences from ``baseline``.

    Args:
        records: display label -> record, one panel each, in this order.
        stat: one of `gradscope.STATS`.
        columns: ``"stage"`` or ``"block"`` along x.
        window: the part of training averaged over, as fractions of the recorded steps.
        log: log colour scale; with a baseline, the difference is a log10 ratio (see `HeatmapView`).
        baseline: label of the run every panel is compared with, or None for the statistic itself.
        normalize: ``"none"`` or ``"global"`` (each step over the run's global gradient norm, so a
            loss weight that scales every gradient alike does not show; `gradscope.Record.matrix`).
    """
    grids = heatmap_grids(dict(records), stat, columns, window, normalize)
    if baseline is not None:
        grids = difference_grids(grids, baseline, log)
    return HeatmapView(grids, stat, columns, (float(window[0]), float(window[1])), log, baseline, normalize)


def difference_quantity(stat: str, log: bool, normalize: str, baseline: str, plain: bool = False) -> str:
    """What a difference panel shows, in words: ``log₁₀(mean |g| / baseline)``; ``plain``: ASCII, for CSV."""
    shown = stat if plain else heatmap_labels(stat, normalize=normalize).quantity
    if plain and normalize != "none":
        shown = f"{stat} / {normalize} norm"
    if log:
        return f"log10({shown} / {baseline})" if plain else f"log₁₀({shown} / {baseline})"
    return f"{shown} - {baseline}" if plain else f"{shown} − {baseline}"


def heatmap_csv_rows(
    records: Mapping[str, Record], stat: str = "mean_abs", columns: str = "stage",
    window: tuple[float, float] = (0.0, 1.0), log: bool = True, baseline: str | None = None,
    normalize: str = "none",
) -> Rows:
    """The heatmap's cells in long format (run, column, row, value), as `heatmap_figure` shows them.

    Takes the same arguments as the figure. Without a baseline the rows are gradscope's own
    (`gradscope.figures.heatmap_rows`, the statistic itself, never logged: the same file as the
    recipes' ``fig6.csv``); with one, ``value`` is the difference and ``quantity`` says which.
    """
    view = heatmap_view(records, stat, columns, window, log, baseline, normalize)
    rows = heatmap_rows(view.grids, stat, view.window, normalize)
    if baseline is not None:
        quantity = difference_quantity(stat, log, normalize, baseline, plain=True).replace(baseline, "baseline")
        for row in rows:
            row.update(baseline=baseline, quantity=quantity)
    return rows


# ---------------------------------------------------------------------------------------------------
# Gradients: curves over training


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: a debiased exponential moving average, NaN-safe.

    ``s_k = m_k / (1 - w^k)`` with ``m_k = w m_{k-1} + (1 - w) x_k``, ``m_0 = 0``, ``k`` counting the
    finite values so far. The debiasing keeps the first points from being pulled towards 0; a
    non-finite value (no gradient, or an overflow) is passed through unchanged and skipped by the
    average, so one bad step neither poisons the rest nor disappears from view. ``weight`` 0 returns
    the values; it must be below 1 (at 1 nothing would ever move).
    """
    if not 0.0 <= weight < 1.0:
        raise AppError(f"smoothing weight must lie in [0, 1), got {weight!r}")
    raw = np.asarray(values, dtype=np.float64)
    if raw.ndim != 1:
        raise AppError(f"smooth needs a 1-D series, got shape {raw.shape}")
    if weight == 0.0:
        return raw.copy()
    out, mean, k = [], 0.0, 0
    for value in raw.tolist():
        if math.isfinite(value):
            mean = weight * mean + (1.0 - weight) * value
            k += 1
            value = mean / (1.0 - weight**k)
        out.append(value)
    return np.array(out, dtype=np.float64)


def default_groups(record: Record, level: str, stat: str, cap: int = MAX_DEFAULT_GROUPS,
                   normalize: str = "none") -> list[str]:
    """Every group of ``level``, or the ``cap`` with the largest mean ``stat`` over training, in model order.

    Largest because the curves are about where gradient is (and ResNet18 has 41 layers, too many to
    tell apart on one plot); the user can pick any others by name. The means come from the record's
    block summaries (`Record.window_mean`), so choosing reads no step values.
    """
    names = record.names(level)
    if len(names) <= cap:
        return names
    by_name = record.window_mean(level, stat, normalize=normalize)
    means = np.array([by_name[n] for n in names], dtype=np.float64)
    order = np.argsort(-np.nan_to_num(means, nan=-np.inf), kind="stable")[:cap]
    return [names[i] for i in sorted(order)]


def layer_series(
    record: Record, level: str = "layer", stat: str = "mean_abs", names: Sequence[str] | None = None,
    max_points: int = 1500, smoothing: float = 0.0, normalize: str = "none",
) -> dict[str, dict[str, Any]]:
    """Each group's statistic over training, binned for drawing (`Record.binned`) and smoothed (`smooth`).

    A browser draws a few thousand points per line smoothly and 80,000 slowly, so long records are
    binned on the server: each point is the mean of its bin, with the bin's min and max beside it so
    no spike is hidden by the averaging.

    Args:
        record: the run's gradient record.
        level: ``param``, ``layer``, ``block`` or ``stage``.
        stat: one of `gradscope.STATS`.
        names: groups to return, in this order; default `default_groups` (at most 12, the largest).
        max_points: the most points per line.
        smoothing: EMA weight in [0, 1), applied to the binned means (what is drawn), as TensorBoard
            smooths the points it draws.
        normalize: the view of the statistic (`gradscope.Record.matrix`): ``"none"`` or ``"global"``.

    Returns:
        ``name -> {"steps", "value", "low", "high", "smoothed"}`` (float arrays of one length) and
        ``"bin_size"``, the recorded steps per point (1: exact values, low == high == value).
    """
    chosen = default_groups(record, level, stat, normalize=normalize) if names is None else list(names)
    try:
        binned = record.binned(level, stat, max_points, chosen, normalize)
    except GradscopeError as exc:
        raise AppError(str(exc)) from None
    return {
        name: {"steps": binned.steps, "value": binned.mean[:, j], "low": binned.low[:, j], "high": binned.high[:, j],
               "smoothed": smooth(binned.mean[:, j], smoothing), "bin_size": binned.bin_size}
        for j, name in enumerate(chosen)
    }


def series_csv_rows(series_by_run: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Rows:
    """`layer_series` of several runs in long format: one row per run, group and drawn point."""
    rows = []
    for run, series in series_by_run.items():
        for group, s in series.items():
            columns = {key: [finite_number(v) for v in np.asarray(s[key], dtype=np.float64).tolist()]
                       for key in ("steps", "value", "low", "high", "smoothed")}
            for i in range(len(columns["steps"])):
                rows.append({"run": run, "group": group, "step": columns["steps"][i], "value": columns["value"][i],
                             "low": columns["low"][i], "high": columns["high"][i],
                             "smoothed": columns["smoothed"][i], "bin_size": s["bin_size"]})
    return rows


# ---------------------------------------------------------------------------------------------------
# Figures


def heatmap_figure(
    records: Mapping[str, Record], stat: str = "mean_abs", columns: str = "stage",
    window: tuple[float, float] = (0.0, 1.0), log: bool = True, robust: bool = False, baseline: str | None = None,
    normalize: str = "none",
) -> go.Figure:
    """Figure 6 (one panel per run, one colour scale), or each run's difference from ``baseline``.

    Without a baseline this is `gradscope.figures.heatmap`. With one, panels show
    ``log10(run / baseline)`` (``log``) or ``run - baseline`` per cell (`HeatmapView`) on a
    diverging scale centred at 0 — red where the run's gradient is larger — symmetric about 0 so
    equal and opposite changes get equal colour; ``robust`` clips it to the 98th percentile of |Δ|.
    Titles, subtitle (which view) and axis titles are `gradscope.figures.heatmap_labels`, the
    library's own, so a figure made with ``gradscope heatmap`` reads the same. The numbers are
    `heatmap_csv_rows` with the same arguments.
    """
    return go.Figure(heatmap_figure_spec(records, stat, columns, window, log, robust, baseline, normalize))


def heatmap_figure_spec(
    records: Mapping[str, Record], stat: str = "mean_abs", columns: str = "stage",
    window: tuple[float, float] = (0.0, 1.0), log: bool = True, robust: bool = False, baseline: str | None = None,
    normalize: str = "none",
) -> dict[str, Any]:
    """`heatmap_figure` as plain plotly JSON, sent to the browser as it is (no plotly validation)."""
    if not records:
        labels = heatmap_labels(stat, columns, window, log, normalize, robust)
        fig = go.Figure(layout={"title": {"text": labels.title_html}, "template": TEMPLATE,
                                "xaxis": {"title": {"text": labels.x}}, "yaxis": {"title": {"text": labels.y}}})
        return annotate_empty(fig, "Select runs with a gradient record").to_plotly_json()
    if baseline is None:
        spec = gradscope_heatmap_spec(dict(records), stat=stat, columns=columns, window=window, log=log,
                                      robust=robust, normalize=normalize)
    else:
        spec = _difference_heatmap(records, stat, columns, window, log, robust, baseline, normalize)
    spec["layout"]["template"] = template_json()
    return spec


def _difference_heatmap(records: Mapping[str, Record], stat: str, columns: str, window: tuple[float, float],
                        log: bool, robust: bool, baseline: str, normalize: str) -> dict[str, Any]:
    view = heatmap_view(records, stat, columns, window, log, baseline, normalize)
    quantity = difference_quantity(stat, log, normalize, baseline)
    labels = heatmap_labels(stat, columns, window, log, normalize, robust, quantity=quantity)
    label = heatmap_labels(stat, normalize=normalize).quantity
    cells = np.concatenate([np.abs(g.values).ravel() for g in view.grids])
    cells = cells[np.isfinite(cells)]
    top = float(np.percentile(cells, 98) if robust else cells.max()) if cells.size else 0.0
    top = top if top > 0 else 1.0  # the baseline alone: all zeros
    data = []
    for i, grid in enumerate(view.grids):
        if log:
            with np.errstate(over="ignore", invalid="ignore"):
                custom = np.power(10.0, grid.values)
            hover = f"{grid.title}<br>%{{x}} · %{{y}}<br>{label}: ×%{{customdata:.3g}} of {baseline}<extra></extra>"
        else:
            custom = grid.values
            hover = f"{grid.title}<br>%{{x}} · %{{y}}<br>{quantity} = %{{z:.3e}}<extra></extra>"
        data.append({
            "type": "heatmap", "x": grid.columns, "y": grid.rows, "z": [finite_or_none(r) for r in grid.values],
            "customdata": [finite_or_none(r) for r in custom], "coloraxis": "coloraxis", "xgap": 1, "ygap": 1,
            "name": grid.title, "hoverongaps": False, "hovertemplate": hover,
            **panel_axes(i),
        })
    layout = heatmap_layout(labels, [g.title + (" (baseline)" if g.title == baseline else "") for g in view.grids],
                            len(view.grids[0].rows))
    layout["coloraxis"] = {"colorscale": "RdBu_r", "cmin": -top, "cmax": top, "cmid": 0.0,
                           "colorbar": {"title": {"text": labels.colorbar}}}
    return {"data": data, "layout": layout}


def series_figure(
    series_by_run: Mapping[str, Mapping[str, Mapping[str, Any]]], log_y: bool = True, stat: str = "mean_abs",
    level: str = "layer", title: str | None = None, normalize: str = "none",
) -> go.Figure:
    """Gradient statistics over training: one line per (run, group) from `layer_series`.

    One small panel per run (`SERIES_COLUMNS` a row), all on one shared y axis, so 5 runs x 6 stages
    read as 5 panels of 6 lines rather than 30 overlapping ones. Per line: the smoothed curve, and
    faded behind it the raw values: where points are bins of several steps, the band from each bin's
    min to max (spikes the mean hides stay visible; the bin mean is in the hover), else the raw curve.
    Two traces per line, not three: with a dozen runs the browser's drawing is most of a redraw.
    Colour follows the group, the same in every panel, and each group is in the legend once (clicking
    it hides that group everywhere). Log y by default: gradient statistics span decades (`log_ticks`).
    """
    return go.Figure(series_figure_spec(series_by_run, log_y, stat, level, title, normalize))


def series_figure_spec(
    series_by_run: Mapping[str, Mapping[str, Mapping[str, Any]]], log_y: bool = True, stat: str = "mean_abs",
    level: str = "layer", title: str | None = None, normalize: str = "none",
) -> dict[str, Any]:
    """`series_figure` as a plain plotly JSON dict.

    With a dozen runs the figure holds hundreds of traces, and plotly's per-property validation of
    ``go.Scatter`` costs seconds; the dashboard sends this dict to the browser as it is.
    """
    label = NORMALIZED_LABELS.get(normalize, "{}").format(STAT_LABELS.get(stat, stat))
    runs = list(series_by_run)
    cols = min(SERIES_COLUMNS, max(1, len(runs)))
    rows = max(1, math.ceil(len(runs) / cols))
    layout: dict[str, Any] = {
        "title": {"text": title or f"{label} per {level} over training"}, "template": template_json(),
        "hovermode": "closest", "legend": {"title": {"text": level}},
        "height": SERIES_PANEL_HEIGHT * rows + 150, "margin": {"t": 90, "b": 60},
        "annotations": [],
    }
    values = [v for series in series_by_run.values() for s in series.values()
              for v in finite_or_none(s["smoothed"]) if v is not None and v > 0]
    y_range = shared_range(series_by_run, log_y)
    y_axis = {"type": "log" if log_y else "linear", **(log_ticks(values) if log_y else {}),
              **({"range": y_range, "autorange": False} if y_range else {})}
    gap_x, gap_y = 0.04, 40 / (SERIES_PANEL_HEIGHT * rows)  # ~40 px above and below each panel: ticks, title
    for i, run in enumerate(runs):
        row, col = divmod(i, cols)
        suffix = axis_suffix(i)
        left, width = col / cols, 1 / cols
        top, height = 1 - row / rows, 1 / rows
        x_axis = {"domain": [left + gap_x / 2, left + width - gap_x / 2], "anchor": f"y{suffix}",
                  **({"matches": "x"} if i else {}), **({"title": {"text": "step"}} if i + cols >= len(runs) else {})}
        layout[f"xaxis{suffix}"] = x_axis
        layout[f"yaxis{suffix}"] = {**y_axis, "domain": [top - height + gap_y, top - gap_y], "anchor": f"x{suffix}",
                                    **({"matches": "y"} if i and not y_range else {}),
                                    **({"title": {"text": label}} if col == 0 else {}), "showticklabels": col == 0}
        layout["annotations"].append({"text": f"<b>{run}</b>", "showarrow": False, "xref": "paper", "yref": "paper",
                                      "x": left + width / 2, "y": top - gap_y, "yanchor": "bottom",
                                      "xanchor": "center", "font": {"size": 12}})
    traces: list[dict[str, Any]] = []
    groups = list(dict.fromkeys(g for series in series_by_run.values() for g in series))
    in_legend: set[str] = set()
    for r, (run, series) in enumerate(series_by_run.items()):
        axes = panel_axes(r)
        band_x: list[float | None] = []
        band_y: list[float | None] = []
        lines = []
        for name, s in series.items():
            line_colour = colour(groups.index(name))
            key = f"{run} · {name}"
            x = np.asarray(s["steps"], dtype=np.float64).tolist()
            if s.get("bin_size", 1) > 1:  # this line's min-max polygon, into the panel's one band trace
                band_x += [*x, *x[::-1], None]
                band_y += [*finite_or_none(s["high"]), *finite_or_none(s["low"])[::-1], None]
            else:  # unbinned: the raw curve, faded behind the smoothed one (binned, the band stands for it)
                traces.append({
                    "type": "scatter", "x": x, "y": finite_or_none(s["value"]), "mode": "lines", **axes,
                    "line": {"color": rgba(line_colour, 0.3), "width": 1}, "hoverinfo": "skip",
                    "showlegend": False, "legendgroup": name, "name": f"{key} raw",
                })
            lines.append({
                "type": "scatter", "x": x, "y": finite_or_none(s["smoothed"]), "mode": "lines", **axes,
                "line": {"color": line_colour, "width": 2}, "customdata": finite_or_none(s["value"]),
                "legendgroup": name, "name": name, "showlegend": name not in in_legend,
                "hovertemplate": f"{key}<br>step %{{x:.0f}}<br>smoothed %{{y:.3e}}"
                                 "<br>raw %{customdata:.3e}<extra></extra>",
            })
            in_legend.add(name)
        if band_x:
            traces.append({"type": "scatter", "x": band_x, "y": band_y, **axes, "mode": "lines", "fill": "toself",
                           "fillcolor": BAND_COLOUR, "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False,
                           "name": f"{run} min–max per bin"})
        traces += lines
    if not traces:
        layout["annotations"] = [{"text": "Select runs with a gradient record", "showarrow": False, "x": 0.5, "y": 0.5,
                                  "xref": "paper", "yref": "paper"}]
        layout["xaxis"], layout["yaxis"] = {"title": {"text": "step"}}, {"title": {"text": label}}
    return {"data": traces, "layout": layout}


def shared_range(series_by_run: Mapping[str, Mapping[str, Mapping[str, Any]]], log_y: bool) -> list[float] | None:
    """One y range for every panel, over all they draw (curves and bands), 4 % padded; None if nothing to draw.

    Given to each panel's y axis instead of linking the axes (``matches``), the panels read alike and the
    browser skips autoranging a dozen linked axes, about a sixth of a redraw (docs/performance.md).
    In axis units: log₁₀ of the values on a log axis.
    """
    parts = [np.asarray(s[key], dtype=np.float64) for series in series_by_run.values() for s in series.values()
             for key in (("smoothed", "low", "high") if s.get("bin_size", 1) > 1 else ("smoothed", "value"))]
    values = np.concatenate(parts) if parts else np.empty(0)
    values = values[np.isfinite(values) & (values > 0)] if log_y else values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = (np.log10(values.min()), np.log10(values.max())) if log_y else (values.min(), values.max())
    pad = 0.04 * (hi - lo) if hi > lo else (0.5 if log_y else max(abs(lo), 1.0) * 0.1)
    return [float(lo - pad), float(hi + pad)]


def log_ticks(values: Sequence[float]) -> dict[str, Any]:
    """Tick settings of a log axis over ``values``: whole decades as 10ⁿ, never plotly's small 2 and 5 labels.

    Over less than two decades, ticks at 1, 2 and 5 times each decade, each labelled in full (``2e-3``)
    at the normal font size.
    """
    positive = [v for v in values if v > 0]
    if positive and math.log10(max(positive)) - math.log10(min(positive)) >= 2:
        return {"dtick": 1, "exponentformat": "power", "showexponent": "all"}
    return {"tickmode": "array", "tickvals": [m * 10.0**e for e in range(-30, 31) for m in (1, 2, 5)],
            "tickformat": ".0e", "minor": {"showgrid": False}}



# ---------------------------------------------------------------------------------------------------
# The page


_SERIES_CACHE: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()


def cached_series(record: Record, level: str, stat: str, smoothing: float, normalize: str = "none") -> dict[str, Any]:
    """`layer_series`, remembered per record, length and view: binning 80,000 steps is the slow part."""
    key = (id(record), len(record.steps), level, stat, smoothing, normalize)
    if key not in _SERIES_CACHE:
        _SERIES_CACHE[key] = layer_series(record, level, stat, max_points=SERIES_POINTS, smoothing=smoothing,
                                          normalize=normalize)
        if len(_SERIES_CACHE) > 512:
            _SERIES_CACHE.popitem(last=False)
    return _SERIES_CACHE[key]


def _baseline(view: View) -> str | None:
    """The chosen baseline if it is one of the selected runs (a stale choice is dropped, not an error)."""
    baseline = view.controls["baseline"]
    return baseline if baseline in view.records else None


def build_heatmap(view: View) -> tuple[dict[str, Any], Rows]:
    """The heatmap card: Figure 6 or the difference view, and its cells."""
    c, records = view.controls, view.records
    log, robust = "log" in c["scale"], "robust" in c["scale"]
    baseline = _baseline(view)
    fig = heatmap_figure_spec(records, c["stat"], c["columns"], c["window"], log, robust, baseline, c["normalize"])
    fig["layout"].update(width=None, autosize=True)  # the card's width, whatever the number of runs (2 filled half)
    rows = heatmap_csv_rows(records, c["stat"], c["columns"], c["window"], log, baseline, c["normalize"]) \
        if records else []
    return fig, rows


def build_series(view: View) -> tuple[dict[str, Any], Rows]:
    """The curves card: each run's groups over training, binned and smoothed."""
    c = view.controls
    series = {label: cached_series(r, c["level"], c["stat"], c["smoothing"], c["normalize"])
              for label, r in view.records.items()}
    fig = series_figure_spec(series, "log" in c["series_log"], c["stat"], c["level"], normalize=c["normalize"])
    return fig, series_csv_rows(series)


def extras(view: View) -> list[Any]:
    """The baseline choices (the selected runs with a record) and a note per record that failed to load."""
    problems = view.loaded[1]
    notes = [note(f"{run}: {problem}", "warning") for run, problem in problems.items()]
    return [list(view.records), notes]


def layout() -> html.Div:
    """Controls, the heatmap card, the curve controls and the curve card."""
    return html.Div([
        html.Div(id="grad-notes"),
        html.Div(className="controls", children=[
            control("statistic", dcc.RadioItems(STAT_OPTIONS, "mean_abs", id="grad-stat", inline=True)),
            control("columns", dcc.RadioItems(list(COLUMNS), "stage", id="grad-columns", inline=True)),
            control("colour", dcc.Checklist([{"label": "log", "value": "log"}, {"label": "robust", "value": "robust"}],
                                            ["log"], id="grad-scale", inline=True)),
            control("normalise", dcc.RadioItems(NORMALIZE_OPTIONS, "none", id="grad-normalize", inline=True)),
            control("difference against", dcc.Dropdown(id="grad-baseline", placeholder="none", clearable=True,
                                                       style={"minWidth": "180px"})),
        ]),
        control("step window (fraction of training)", dcc.RangeSlider(0, 1, 0.05, value=[0, 1], id="grad-window",
                                                                      marks={0: "start", 0.5: "middle", 1: "end"})),
        figure_card(PAGE_NAME, "heatmap", "Average gradient per layer and ResBlock (Figure 6)", height=480),
        html.Div(className="controls", children=[
            control("level", dcc.RadioItems(list(LEVELS), "stage", id="series-level", inline=True)),
            control("smoothing", dcc.Slider(0, 0.99, 0.01, value=0.6, id="series-smoothing",
                                            marks={0: "0", 0.6: "0.6", 0.99: "0.99"})),
            control("y axis", dcc.Checklist([{"label": "log", "value": "log"}], ["log"], id="series-log", inline=True)),
        ]),
        figure_card(PAGE_NAME, "series", "Gradient statistic over training steps", height=460),
    ])


PAGE_NAME = "gradients"
PAGE = Page(
    name=PAGE_NAME, title="Gradients", layout=layout,
    figures=(FigureSpec("heatmap", "Average gradient per layer and ResBlock (Figure 6)", build_heatmap, 480,
                        ("stat", "columns", "scale", "window", "baseline", "normalize")),
             FigureSpec("series", "Gradient statistic over training steps", build_series, 460,
                        ("stat", "level", "smoothing", "series_log", "normalize"))),
    controls={
        "stat": Control("grad-stat", "statistic", choice, ([o["value"] for o in STAT_OPTIONS],),
                        {"default": "mean_abs"}),
        "columns": Control("grad-columns", "column level", choice, (COLUMNS,), {"default": "stage"}),
        "scale": Control("grad-scale", "colour scale", flags, (("log", "robust"),)),
        "window": Control("grad-window", "step window", window, (), {"default": (0.0, 1.0)}),
        "baseline": Control("grad-baseline", "baseline run", label_or_none),
        "normalize": Control("grad-normalize", "normalisation", choice, (tuple(NORMALIZATIONS),),
                             {"default": "none"}),
        "level": Control("series-level", "level", choice, (LEVELS,), {"default": "stage"}),
        "smoothing": Control("series-smoothing", "smoothing", number, (0.0, 0.99), {"default": 0.6}),
        "series_log": Control("series-log", "y axis", flags, (("log",),)),
    },
    extra_outputs=(Output("grad-baseline", "options"), Output("grad-notes", "children")),
    extras=extras,
)
