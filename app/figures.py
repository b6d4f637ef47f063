"""Plotly figures of the dashboard, drawn from the results of `app.data` (numbers there, drawing here).

Every builder returns a ``go.Figure`` with a title and axis titles, and draws an empty figure with a
note saying what is missing rather than failing when there is nothing to show yet (a fresh runs
folder, a run not evaluated). The poster's Figure 6 itself is `gradscope.figures.heatmap`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative
from plotly.subplots import make_subplots

from gradscope.figures import STAT_LABELS
from gradscope.figures import heatmap as gradscope_heatmap
from gradscope.record import Record
from trainers.recipes import RECIPES

from .data import TRAINING_METRICS, AppError, check_choice, heatmap_view

PALETTE = qualitative.Dark24  # 24 distinguishable colours: up to 12 groups x a few runs stay apart
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
TEMPLATE = "plotly_white"
METRIC_LABELS = {"train_loss": "training loss", "train_acc": "training accuracy (%)", "test_acc": "test accuracy (%)",
                 "val_acc": "validation accuracy (%)", "val_pgd_acc": "validation PGD accuracy (%)",
                 "lr": "learning rate"}
ROBUST_SYMBOLS = {"AutoAttack": "circle", "PGD-20": "diamond-open"}


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = hex_to_rgb(colour)
    return f"rgba({r},{g},{b},{alpha})"


def _note(fig: go.Figure, message: str) -> go.Figure:
    """Say on the figure why it is empty."""
    fig.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font={"size": 14, "color": "#666"})
    return fig


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    """A JSON-safe list: NaN and inf become gaps (None) in the plot."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


# ---------------------------------------------------------------------------------------------------
# Gradients


def heatmap_figure(
    records: Mapping[str, Record], stat: str = "mean_abs", columns: str = "stage",
    window: tuple[float, float] = (0.0, 1.0), log: bool = True, robust: bool = False, baseline: str | None = None,
) -> go.Figure:
    """Figure 6 (one panel per run, one colour scale), or each run's difference from ``baseline``.

    Without a baseline this is `gradscope.figures.heatmap`. With one, panels show
    ``log10(run / baseline)`` (``log``) or ``run - baseline`` per cell (`app.data.HeatmapView`) on a
    diverging scale centred at 0 — red where the run's gradient is larger — symmetric about 0 so
    equal and opposite changes get equal colour; ``robust`` clips it to the 98th percentile of |Δ|.
    The numbers are `app.data.heatmap_csv_rows` with the same arguments.
    """
    if not records:
        return _note(go.Figure(layout={"title": {"text": "Gradient heatmap"}, "template": TEMPLATE,
                                       "xaxis": {"title": {"text": columns}}, "yaxis": {"title": {"text": "layer"}}}),
                     "Select runs with a gradient record")
    if baseline is None:
        fig = gradscope_heatmap(dict(records), stat=stat, columns=columns, window=window, log=log, robust=robust)
    else:
        fig = _difference_heatmap(records, stat, columns, window, log, robust, baseline)
    fig.update_xaxes(title_text=columns)
    fig.update_yaxes(title_text=f"layer (named within its {columns})", row=1, col=1)
    return fig


def _difference_heatmap(records: Mapping[str, Record], stat: str, columns: str, window: tuple[float, float],
                        log: bool, robust: bool, baseline: str) -> go.Figure:
    view = heatmap_view(records, stat, columns, window, log, baseline)
    label = STAT_LABELS[stat]
    cells = np.concatenate([np.abs(g.values).ravel() for g in view.grids])
    cells = cells[np.isfinite(cells)]
    top = float(np.percentile(cells, 98) if robust else cells.max()) if cells.size else 0.0
    top = top if top > 0 else 1.0  # the baseline alone: all zeros
    fig = make_subplots(rows=1, cols=len(view.grids), shared_yaxes=True, horizontal_spacing=0.015,
                        subplot_titles=[g.title + (" (baseline)" if g.title == baseline else "")
                                        for g in view.grids])
    for i, grid in enumerate(view.grids, start=1):
        if log:
            with np.errstate(over="ignore", invalid="ignore"):
                custom = np.power(10.0, grid.values)
            hover = f"{grid.title}<br>%{{x}} · %{{y}}<br>{label}: ×%{{customdata:.3g}} of {baseline}<extra></extra>"
        else:
            custom = grid.values
            hover = f"{grid.title}<br>%{{x}} · %{{y}}<br>{label} − {baseline} = %{{z:.3e}}<extra></extra>"
        fig.add_trace(go.Heatmap(
            x=grid.columns, y=grid.rows, z=[_finite_or_none(r) for r in grid.values],
            customdata=[_finite_or_none(r) for r in custom], coloraxis="coloraxis", xgap=1, ygap=1,
            name=grid.title, hoverongaps=False, hovertemplate=hover,
        ), row=1, col=i)
    quantity = f"log₁₀({label} / {baseline})" if log else f"{label} − {baseline}"
    lo, hi = view.window
    fig.update_layout(
        title={"text": f"{quantity} per layer, averaged over {lo:.0%}–{hi:.0%} of training"},
        coloraxis={"colorscale": "RdBu_r", "cmin": -top, "cmax": top, "cmid": 0.0,
                   "colorbar": {"title": {"text": quantity}}},
        template=TEMPLATE, height=max(360, 22 * len(view.grids[0].rows) + 160),
        width=max(640, 260 * len(view.grids) + 200), margin={"l": 110, "r": 40, "t": 80, "b": 80},
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", tickangle=-45)
    return fig


def series_figure(
    series_by_run: Mapping[str, Mapping[str, Mapping[str, Any]]], log_y: bool = True, stat: str = "mean_abs",
    level: str = "layer", title: str | None = None,
) -> go.Figure:
    """Gradient statistics over training: one line per (run, group) from `app.data.layer_series`.

    Per line: the smoothed curve, solid and in the legend; the raw (binned) values faded behind it;
    and, where points are bins of several steps, the band from each bin's min to max, so spikes the
    mean hides stay visible. Colour follows the group and dash the run (colour follows the run when
    each run shows one group). Log y by default: gradient statistics span decades.
    """
    return go.Figure(series_figure_spec(series_by_run, log_y, stat, level, title))


def series_figure_spec(
    series_by_run: Mapping[str, Mapping[str, Mapping[str, Any]]], log_y: bool = True, stat: str = "mean_abs",
    level: str = "layer", title: str | None = None,
) -> dict[str, Any]:
    """`series_figure` as a plain plotly JSON dict.

    With a dozen runs the figure holds hundreds of traces, and plotly's per-property validation of
    ``go.Scatter`` costs seconds; the dashboard sends this dict to the browser as it is.
    """
    label = STAT_LABELS.get(stat, stat)
    layout: dict[str, Any] = {
        "title": {"text": title or f"{label} per {level} over training"}, "template": _template_json(),
        "xaxis": {"title": {"text": "step"}}, "yaxis": {"title": {"text": label}, "type": "log" if log_y else "linear"},
        "hovermode": "closest", "legend": {"title": {"text": f"run · {level}"}},
    }
    traces: list[dict[str, Any]] = []
    groups = list(dict.fromkeys(g for series in series_by_run.values() for g in series))
    by_run = len(groups) == 1
    for r, (run, series) in enumerate(series_by_run.items()):
        for name, s in series.items():
            colour = _colour(r if by_run else groups.index(name))
            dash = "solid" if by_run else DASHES[r % len(DASHES)]
            key = f"{run} · {name}"
            x = np.asarray(s["steps"], dtype=np.float64).tolist()
            if s.get("bin_size", 1) > 1:
                traces.append({
                    "type": "scatter", "x": x + x[::-1],
                    "y": _finite_or_none(s["high"]) + _finite_or_none(s["low"])[::-1],
                    "fill": "toself", "fillcolor": _rgba(colour, 0.12), "line": {"width": 0}, "hoverinfo": "skip",
                    "showlegend": False, "legendgroup": key, "name": f"{key} min–max",
                })
            traces.append({
                "type": "scatter", "x": x, "y": _finite_or_none(s["value"]), "mode": "lines",
                "line": {"color": _rgba(colour, 0.3), "width": 1, "dash": dash}, "hoverinfo": "skip",
                "showlegend": False, "legendgroup": key, "name": f"{key} raw",
            })
            traces.append({
                "type": "scatter", "x": x, "y": _finite_or_none(s["smoothed"]), "mode": "lines",
                "line": {"color": colour, "width": 2, "dash": dash}, "customdata": _finite_or_none(s["value"]),
                "legendgroup": key, "name": key,
                "hovertemplate": f"{key}<br>step %{{x:.0f}}<br>smoothed %{{y:.3e}}"
                                 "<br>raw %{customdata:.3e}<extra></extra>",
            })
    if not traces:
        layout["annotations"] = [{"text": "Select runs with a gradient record", "showarrow": False, "x": 0.5, "y": 0.5,
                                  "xref": "paper", "yref": "paper"}]
    return {"data": traces, "layout": layout}


@functools.lru_cache(maxsize=1)
def _template_json() -> dict[str, Any]:
    """The figures' template as plain JSON (plotly.js does not know template names)."""
    import plotly.io as pio

    return pio.templates[TEMPLATE].to_plotly_json()


# ---------------------------------------------------------------------------------------------------
# Virtual teacher


def virtual_teacher_figure(
    curves: Mapping[str, Any], markers: Sequence[Mapping[str, Any]] = (), log_x: bool = True,
) -> go.Figure:
    """Figure 5: the virtual teacher's correct- and incorrect-class probabilities against τ.

    ``curves`` is `app.data.virtual_teacher_curves`; ``markers`` (`app.data.temperature_markers`)
    place the Tf-KD-reg runs at their own τ. A dotted line marks 1/K, where both curves meet as τ grows.
    """
    a, k = curves["a"], curves["num_classes"]
    taus = np.asarray(curves["temperature"], dtype=np.float64).tolist()
    fig = go.Figure(layout={
        "title": {"text": f"Virtual teacher probabilities at each temperature τ (a = {a:g}, K = {k})"},
        "template": TEMPLATE, "xaxis": {"title": {"text": "temperature τ"}, "type": "log" if log_x else "linear"},
        "yaxis": {"title": {"text": "probability"}, "range": [0, 1.02]}, "hovermode": "x unified",
    })
    fig.add_trace(go.Scatter(x=taus, y=_finite_or_none(curves["correct"]), mode="lines", name="correct class",
                             line={"color": _colour(0), "width": 2}))
    fig.add_trace(go.Scatter(x=taus, y=_finite_or_none(curves["incorrect"]), mode="lines",
                             name="each incorrect class", line={"color": _colour(1), "width": 2}))
    fig.add_hline(y=1.0 / k, line={"dash": "dot", "color": "#888"}, annotation_text="1/K",
                  annotation_position="bottom right")
    if markers:
        fig.add_trace(go.Scatter(
            x=[m["temperature"] for m in markers], y=[m["correct"] for m in markers], mode="markers",
            name="Tf-KD-reg runs", marker={"size": 11, "symbol": "x", "color": "#222"},
            text=[m["label"] for m in markers],
            customdata=[[m["a"], m["num_classes"]] for m in markers],
            hovertemplate="%{text}<br>τ = %{x:g}, a = %{customdata[0]:g}, K = %{customdata[1]}"
                          "<br>p(correct) = %{y:.3f}<extra></extra>",
        ))
    return fig


# ---------------------------------------------------------------------------------------------------
# Robustness


def robustness_figure(summary: Sequence[Mapping[str, Any]], poster: bool = True) -> go.Figure:
    """Figure 7 as a scatter: clean against robust accuracy per method, error bars = std over seeds.

    Filled circles are AutoAttack at 8/255, open diamonds PGD-20 (not evaluated with AutoAttack yet:
    an upper bound). With ``poster`` the poster's four numbers are drawn as grey crosses to compare.
    """
    fig = go.Figure(layout={
        "title": {"text": "Clean vs robust accuracy (L∞, ε = 8/255), mean ± std over seeds"}, "template": TEMPLATE,
        "xaxis": {"title": {"text": "clean accuracy (%)"}},
        "yaxis": {"title": {"text": "robust accuracy (%)"}}, "legend": {"title": {"text": "method · attack"}},
    })
    shown = [row for row in summary if row.get("robust_mean") is not None and row.get("clean_mean") is not None]
    several = len({(row["model"], row["dataset"]) for row in shown}) > 1
    for i, row in enumerate(shown):
        name = row["method"] + (f" ({row['model']}, {row['dataset']})" if several else "")
        fig.add_trace(go.Scatter(
            x=[row["clean_mean"]], y=[row["robust_mean"]], mode="markers", name=f"{name} · {row['robust_kind']}",
            marker={"size": 12, "color": _colour(i), "symbol": ROBUST_SYMBOLS.get(row["robust_kind"], "circle")},
            error_x={"type": "data", "array": [row.get("clean_std") or 0.0], "visible": True},
            error_y={"type": "data", "array": [row.get("robust_std") or 0.0], "visible": True},
            hovertemplate=f"{name}<br>clean %{{x:.2f}}%<br>{row['robust_kind']} %{{y:.2f}}%"
                          f"<br>{row['n_seeds']} seed(s)<extra></extra>",
        ))
    if poster and "fig7" in RECIPES:
        numbers = RECIPES.get("fig7").poster
        fig.add_trace(go.Scatter(
            x=[v["test_acc"] for v in numbers.values()], y=[v["autoattack_acc"] for v in numbers.values()],
            mode="markers+text", text=list(numbers), textposition="top center", name="poster (AutoAttack)",
            marker={"size": 10, "symbol": "x-thin", "line": {"width": 2, "color": "#888"}, "color": "#888"},
            hovertemplate="poster %{text}<br>clean %{x:.2f}%<br>AutoAttack %{y:.2f}%<extra></extra>",
        ))
    if not shown:
        _note(fig, "No finished adversarial runs yet")
    return fig


def eps_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """PGD-20 accuracy against ε, one line per run (`app.data.eps_curves`); colour follows the method."""
    fig = go.Figure(layout={
        "title": {"text": "Robustness curve: PGD-20 accuracy against ε"}, "template": TEMPLATE,
        "xaxis": {"title": {"text": "ε (×1/255)"}}, "yaxis": {"title": {"text": "accuracy (%)"}},
    })
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    for run_id in dict.fromkeys(r["id"] for r in rows):
        points = [r for r in rows if r["id"] == run_id]
        first = points[0]
        fig.add_trace(go.Scatter(
            x=[p["eps_255"] for p in points], y=[p["accuracy"] for p in points], mode="lines+markers",
            name=first["run"], legendgroup=str(first["method"]),
            line={"color": _colour(methods.index(str(first["method"])))},
            text=[p["eps_label"] for p in points],
            hovertemplate=f"{first['run']}<br>ε %{{text}}<br>%{{y:.2f}}% of {first['n']} images<extra></extra>",
        ))
    if not rows:
        _note(fig, "No ε sweeps yet: python -m trainers evaluate RUN")
    return fig


def breakdown_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """AutoAttack's accuracy after each of its attacks, grouped bars per run (`app.data.attack_breakdown`)."""
    fig = go.Figure(layout={
        "title": {"text": "AutoAttack: accuracy after each attack (ε = 8/255)"}, "template": TEMPLATE,
        "barmode": "group", "xaxis": {"title": {"text": "after attack (each on the points still robust)"}},
        "yaxis": {"title": {"text": "accuracy (%)"}},
    })
    for i, run_id in enumerate(dict.fromkeys(r["id"] for r in rows)):
        bars = sorted((r for r in rows if r["id"] == run_id), key=lambda r: r["order"])
        fig.add_trace(go.Bar(
            x=[b["stage"] for b in bars], y=[b["accuracy"] for b in bars], name=bars[0]["run"],
            marker_color=_colour(i),
            hovertemplate=f"{bars[0]['run']}<br>%{{x}}: %{{y:.2f}}% of {bars[0]['n']} images<extra></extra>",
        ))
    if not rows:
        _note(fig, "No AutoAttack evaluations yet: python -m trainers evaluate RUN --attacks autoattack")
    return fig


# ---------------------------------------------------------------------------------------------------
# Training


def training_figure(rows: Sequence[Mapping[str, Any]], metric: str = "test_acc", log_y: bool = False) -> go.Figure:
    """One line per run of a metric against epoch (`app.data.training_curves`)."""
    check_choice("training metric", metric, TRAINING_METRICS)
    label = METRIC_LABELS[metric]
    fig = go.Figure(layout={
        "title": {"text": f"{label[0].upper()}{label[1:]} per epoch"}, "template": TEMPLATE,
        "xaxis": {"title": {"text": "epoch"}}, "hovermode": "x unified",
        "yaxis": {"title": {"text": label}, "type": "log" if log_y else "linear"},
    })
    for i, run_id in enumerate(dict.fromkeys(r["id"] for r in rows)):
        points = [r for r in rows if r["id"] == run_id]
        fig.add_trace(go.Scatter(
            x=[p["epoch"] for p in points], y=[p["value"] for p in points], mode="lines+markers",
            name=points[0]["run"], line={"color": _colour(i)}, marker={"size": 4},
        ))
    if not rows:
        _note(fig, f"No run logs {metric} yet")
    return fig


# ---------------------------------------------------------------------------------------------------
# Attribution


def attribution_figure(panels_by_run: Mapping[str, Mapping[str, Any] | None], image_index: int = 0) -> go.Figure:
    """A grid of one test image: a row per run, columns the input then each method's map.

    ``panels_by_run`` maps a run label to `app.data.attribution_panels` (None: not attributed, left
    out). Maps share one colour bar in [0, 1], each scaled by its own 99th percentile; a cell is
    blank where a run lacks a method (Grad-CAM of an MLP).
    """
    panels = {run: p for run, p in panels_by_run.items() if p is not None}
    if not panels:
        return _note(go.Figure(layout={"title": {"text": "Attribution maps"}, "template": TEMPLATE,
                                       "xaxis": {"title": {"text": "method"}}, "yaxis": {"title": {"text": "run"}}}),
                     "No attributions yet: python -m trainers attribute RUN")
    for run, p in panels.items():
        if not isinstance(image_index, int) or not 0 <= image_index < len(p["images"]):
            raise AppError(f"image {image_index!r} does not exist for {run}: it was explained on "
                           f"{len(p['images'])} images (0 to {len(p['images']) - 1})")
    columns = ["input", *dict.fromkeys(name for p in panels.values() for name in p["maps"])]
    fig = make_subplots(rows=len(panels), cols=len(columns), horizontal_spacing=0.01, vertical_spacing=0.04,
                        subplot_titles=columns)
    for r, (run, p) in enumerate(panels.items(), start=1):
        image = p["images"][image_index]
        rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
        fig.add_trace(go.Image(z=np.round(rgb * 255).astype(np.uint8), name=f"{run} input",
                               hovertemplate=f"{run}<br>x %{{x}}, y %{{y}}<extra></extra>"), row=r, col=1)
        for c, name in enumerate(columns[1:], start=2):
            if name in p["maps"]:
                fig.add_trace(go.Heatmap(
                    z=p["maps"][name][image_index], coloraxis="coloraxis", name=f"{run} {name}",
                    hovertemplate=f"{run} · {name}<br>x %{{x}}, y %{{y}}<br>%{{z:.2f}}<extra></extra>",
                ), row=r, col=c)
        label, prediction = int(p["labels"][image_index]), int(p["predictions"][image_index])
        fig.update_yaxes(title_text=f"{run}<br>y={label} pred={prediction}", row=r, col=1)
        for c in range(1, len(columns) + 1):
            n = (r - 1) * len(columns) + c
            fig.update_yaxes(autorange="reversed", scaleanchor=f"x{'' if n == 1 else n}", row=r, col=c)
    for c, name in enumerate(columns, start=1):
        fig.update_xaxes(title_text=name, row=len(panels), col=c)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain", title_font={"size": 11})
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_annotations(font={"size": 11})
    index = int(next(iter(panels.values()))["indices"][image_index])
    fig.update_layout(
        title={"text": f"Attribution maps of test image #{index}",
               "subtitle": {"text": "each map scaled by its own 99th percentile: compare shapes, not colours"}},
        coloraxis={"colorscale": "Inferno", "cmin": 0.0, "cmax": 1.0,
                   "colorbar": {"title": {"text": "relative magnitude"}}},
        template=TEMPLATE, height=170 * len(panels) + 160, width=max(600, 150 * len(columns) + 160),
        margin={"l": 110, "r": 40, "t": 100, "b": 40},
    )
    return fig
