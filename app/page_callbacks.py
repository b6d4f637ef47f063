"""One callback per page: selected runs in, figures (and their CSV rows) out.

Each does its work only while its page is visible; the ``tick`` interval re-runs the visible page
so live runs update without a reload.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import dash
import plotly.graph_objects as go
from dash import Input, Output, html, no_update

from gradscope import GradscopeError, Record

from . import data, figures
from .callbacks import selected_runs
from .components import badge, note
from .errors import AppError
from .runs import RunIndex

SERIES_POINTS = 600  # points per curve: finer than a plot's pixels per run once a dozen runs share it


def _failed(message: str) -> go.Figure:
    """An empty figure that says what went wrong, instead of a traceback in the browser."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


_SERIES_CACHE: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()


def _cached_series(record: Record, level: str, stat: str, smoothing: float) -> dict[str, Any]:
    """`data.layer_series`, remembered per record, length and view: binning 80,000 steps is the slow part."""
    key = (id(record), len(record.steps), level, stat, smoothing)
    if key not in _SERIES_CACHE:
        _SERIES_CACHE[key] = data.layer_series(record, level, stat, max_points=SERIES_POINTS, smoothing=smoothing)
        if len(_SERIES_CACHE) > 512:
            _SERIES_CACHE.popitem(last=False)
    return _SERIES_CACHE[key]


def _graph(name: str) -> Output:
    return Output({"type": "graph", "name": name}, "figure")


def _csv(name: str) -> Output:
    return Output({"type": "csv", "name": name}, "data")


def register_pages(app: dash.Dash, index: RunIndex) -> None:
    """Attach the page callbacks."""

    @app.callback(
        _graph("heatmap"), _csv("heatmap"), _graph("series"), _csv("series"), Output("grad-baseline", "options"),
        Input("tabs", "value"), Input("run-select", "value"), Input("grad-stat", "value"),
        Input("grad-columns", "value"), Input("grad-scale", "value"), Input("grad-window", "value"),
        Input("grad-baseline", "value"), Input("series-level", "value"), Input("series-smoothing", "value"),
        Input("series-log", "value"), Input("tick", "n_intervals"),
    )
    def gradients(page: str, run_ids: list[str] | None, stat: str, columns: str, scale: list[str],
                  window: list[float], baseline: str | None, level: str, smoothing: float, series_log: list[str],
                  _: Any) -> Any:
        if page != "gradients":
            return (no_update,) * 5
        records, _problems = index.records(run_ids or [])
        options = list(records)
        if baseline not in records:
            baseline = None
        log, robust = "log" in (scale or []), "robust" in (scale or [])
        span = (float(window[0]), float(window[1]))
        try:
            heat = figures.heatmap_figure(records, stat, columns, span, log, robust, baseline)
            heat_rows = data.heatmap_csv_rows(records, stat, columns, span, log, baseline) if records else []
            series = {label: _cached_series(r, level, stat, smoothing) for label, r in records.items()}
            lines = figures.series_figure_spec(series, "log" in (series_log or []), stat, level)
        except (AppError, GradscopeError) as exc:
            return _failed(str(exc)), [], _failed(str(exc)), [], options
        return heat, heat_rows, lines, data.series_csv_rows(series), options

    @app.callback(
        _graph("teacher"), _csv("teacher"),
        Input("tabs", "value"), Input("run-select", "value"), Input("vt-a", "value"), Input("vt-k", "value"),
        Input("vt-log", "value"),
    )
    def virtual_teacher(page: str, run_ids: list[str] | None, a: float, k: int, log_x: list[str]) -> Any:
        if page != "teacher":
            return no_update, no_update
        try:
            curves = data.virtual_teacher_curves(a if a is not None else 0.9, int(k or 10))
        except AppError as exc:
            return _failed(str(exc)), []
        markers = data.temperature_markers(selected_runs(index, run_ids))
        return figures.virtual_teacher_figure(curves, markers, "log" in (log_x or [])), \
            data.virtual_teacher_csv_rows(curves)

    @app.callback(
        _graph("robust"), _csv("robust"), _graph("eps"), _csv("eps"), _graph("breakdown"), _csv("breakdown"),
        Output("robust-flags", "children"),
        Input("tabs", "value"), Input("run-select", "value"), Input("tick", "n_intervals"),
    )
    def robustness(page: str, run_ids: list[str] | None, _: Any) -> Any:
        if page != "robustness":
            return (no_update,) * 7
        runs = selected_runs(index, run_ids)
        summary, curves, breakdown = data.robustness_summary(runs), data.eps_curves(runs), data.attack_breakdown(runs)
        flags = [html.Div([badge("warning", "warning"), f" {f['run']}: {f['message']}"], className="problem")
                 for f in data.sanity_flags(runs)]
        return (figures.robustness_figure(summary), summary, figures.eps_figure(curves), curves,
                figures.breakdown_figure(breakdown), breakdown, flags)

    @app.callback(
        _graph("training"), _csv("training"),
        Input("tabs", "value"), Input("run-select", "value"), Input("train-metric", "value"),
        Input("tick", "n_intervals"),
    )
    def training(page: str, run_ids: list[str] | None, metric: str, _: Any) -> Any:
        if page != "training":
            return no_update, no_update
        rows = data.training_curves(selected_runs(index, run_ids), metric)
        return figures.training_figure(rows, metric, log_y=metric in ("train_loss", "lr")), rows

    @app.callback(
        _graph("attribution"), _csv("attribution"), Output("attr-notes", "children"),
        Input("tabs", "value"), Input("run-select", "value"), Input("attr-image", "value"),
    )
    def attribution(page: str, run_ids: list[str] | None, image: int) -> Any:
        if page != "attribution":
            return no_update, no_update, no_update
        runs = selected_runs(index, run_ids)
        panels = {r.label: data.attribution_panels(r) for r in runs}
        missing = [label for label, p in panels.items() if p is None]
        notes = [note(f"not attributed yet: {', '.join(missing)} — run python -m trainers attribute RUN", "warning")
                 ] if missing else []
        try:
            return figures.attribution_figure(panels, int(image or 0)), data.attribution_csv_rows(panels), notes
        except AppError as exc:
            return _failed(str(exc)), [], notes

    @app.callback(Output("tables", "children"), Input("tabs", "value"), Input("tick", "n_intervals"))
    def tables(page: str, _: Any) -> Any:
        if page != "tables":
            return no_update
        return [_table(t) for t in data.poster_tables(index.scan())]


def _table(table: dict[str, Any]) -> html.Div:
    rows = table["rows"]
    columns = ["run", "metric", "ours", "poster", "n_seeds"] + (["parameters"] if table["figure"] == "fig1" else [])
    head = html.Tr([html.Th(c) for c in columns])
    body = [html.Tr([html.Td("" if r.get(c) is None else str(r.get(c))) for c in columns]) for r in rows]
    measured = f" — measured on {', '.join(table['datasets'])}" if table.get("datasets") else ""
    return html.Div([html.H3(f"{table['figure']}: {table['title']}{measured}"),
                     html.Table([head, *body], className="poster")])
