"""Virtual-teacher page: Figure 5, the teacher's probabilities against temperature, with the runs' own τ."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dash
import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, dcc, html, no_update

from trainers.losses import virtual_teacher_correct_prob
from trainers.presets import config_loss_minimiser

from ..components import control, figure_card
from ..errors import AppError
from ..selection import PICKER
from ..shared import TEMPLATE, Rows, RunLike, colour, finite_or_none
from ..validate import flags, integer, number
from .base import AppContext, Control, FigureSpec, Page, View, register_display

JITTER_DECADES = 0.05  # runs sharing a τ are drawn this far apart on the log axis (their hover gives the true τ)

# ---------------------------------------------------------------------------------------------------
# Data


def virtual_teacher_curves(
    a: float = 0.9, num_classes: int = 10, temperatures: Sequence[float] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Tf-KD-reg's virtual teacher p^d_τ at each temperature τ: Figure 5 of the poster.

    The teacher is the softmax at temperature τ of a distribution putting ``a`` on the correct class
    and (1-a)/(K-1) on each other one, so in closed form (`trainers.losses.virtual_teacher_correct_prob`)

        p_correct(τ) = 1 / (1 + (K-1) exp(-(a - (1-a)/(K-1)) / τ)),  p_incorrect = (1 - p_correct) / (K-1),

    both tending to 1/K as τ grows: the higher the temperature, the stronger the label smoothing.

    Args:
        a: probability given to the correct class before the softmax, in [1/K, 1] (poster: 0.9 to 1).
        num_classes: K, at least 2.
        temperatures: the τ values (positive); default 200 log-spaced from 0.05 to 100, which shows
            the teacher going from one-hot to uniform.

    Returns:
        ``{"temperature", "correct", "incorrect"}`` arrays, and ``"a"`` and ``"num_classes"``.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise AppError(f"num_classes must be an integer of at least 2, got {num_classes!r}")
    if not isinstance(a, (int, float)) or isinstance(a, bool) or not 1.0 / num_classes <= a <= 1.0:
        raise AppError(f"a is the correct class's probability and must lie in [1/K, 1] = [{1 / num_classes:.3g}, 1], "
                       f"got {a!r}")
    taus = np.geomspace(0.05, 100.0, 200) if temperatures is None else np.asarray(temperatures, dtype=np.float64)
    if taus.ndim != 1 or not len(taus) or not np.all(taus > 0):
        raise AppError(f"temperatures must be a non-empty list of positive numbers, got {temperatures!r}")
    correct = np.array([virtual_teacher_correct_prob(num_classes, a, tau) for tau in taus.tolist()])
    return {"temperature": taus, "correct": correct, "incorrect": (1.0 - correct) / (num_classes - 1),
            "a": float(a), "num_classes": num_classes}


def virtual_teacher_csv_rows(curves: Mapping[str, Any]) -> Rows:
    """`virtual_teacher_curves` as one row per temperature."""
    return [{"temperature": float(t), "correct": float(c), "incorrect": float(i), "a": curves["a"],
             "num_classes": curves["num_classes"]}
            for t, c, i in zip(curves["temperature"], curves["correct"], curves["incorrect"])]


def temperature_markers(runs: Iterable[RunLike]) -> Rows:
    """Where each Tf-KD-reg run (``tfkd-reg``, ``at-tfkd-reg``, ...) sits on Figure 5.

    Each marker carries the run's own τ, a and K, and the correct-class probability of its teacher,
    so a run trained with another ``a`` than the curve's is placed at its own value.
    """
    markers = []
    for run in runs:
        config = run.config or {}
        if "tfkd-reg" not in str(config.get("method", "")):
            continue
        tau, a = config.get("temperature"), config.get("a")
        if tau is None or a is None:
            continue
        k = int(config.get("num_classes") or 10)
        markers.append({"label": run.label, "id": run.id, "method": config["method"], "temperature": float(tau),
                        "a": float(a), "num_classes": k,
                        "correct": virtual_teacher_correct_prob(k, float(a), float(tau))})
    return markers


def spread(markers: Sequence[Mapping[str, Any]]) -> list[float]:
    """The x of each marker: its τ, moved a little along the log axis when several runs share a point.

    Two seeds of one Tf-KD-reg setting sit on the same (τ, p) and would draw as one marker; they are
    spread symmetrically by `JITTER_DECADES` so each is seen (hover shows the true τ).
    """
    keys = [(round(m["temperature"], 9), round(m["correct"], 9)) for m in markers]
    xs = []
    for i, (m, key) in enumerate(zip(markers, keys)):
        same = [j for j, other in enumerate(keys) if other == key]
        offset = (same.index(i) - (len(same) - 1) / 2) * JITTER_DECADES
        xs.append(m["temperature"] * 10.0**offset)
    return xs


def run_settings(runs: Iterable[RunLike]) -> Rows:
    """Per selected run with a K: its a, K, τ and the student p(true) at which its actual loss is lowest.

    The minimiser is `trainers.presets.config_loss_minimiser` of the run's stored config: the label
    smoothing the run's loss really asks for (1 - p), which a and τ alone do not tell when the
    regulariser's multiplier changes with K.
    """
    rows = []
    for run in runs:
        config = run.config or {}
        if not isinstance(config.get("num_classes"), int):
            continue
        try:
            best = config_loss_minimiser(config)
        except (ValueError, TypeError, RuntimeError):  # a hand-edited config the loss cannot take
            best = None
        rows.append({"run": run.label, "id": run.id, "method": config.get("method"), "a": config.get("a"),
                     "K": config["num_classes"], "τ": config.get("temperature"),
                     "loss-minimising p(true)": None if best is None else round(best, 4)})
    return rows


# ---------------------------------------------------------------------------------------------------
# Figures


def virtual_teacher_figure(
    curves: Mapping[str, Any], markers: Sequence[Mapping[str, Any]] = (), log_x: bool = True,
) -> go.Figure:
    """Figure 5: the virtual teacher's correct- and incorrect-class probabilities against τ.

    ``curves`` is `virtual_teacher_curves`; ``markers`` (`temperature_markers`)
    place the Tf-KD-reg runs at their own τ. A dotted line marks 1/K, where both curves meet as τ grows.
    """
    a, k = curves["a"], curves["num_classes"]
    taus = np.asarray(curves["temperature"], dtype=np.float64).tolist()
    fig = go.Figure(layout={
        "title": {"text": f"Virtual teacher probabilities at each temperature τ (a = {a:g}, K = {k})"},
        "template": TEMPLATE, "hovermode": "closest",
        "xaxis": {"title": {"text": "temperature τ"}, **({"type": "log", "dtick": 1} if log_x else {})},
        "yaxis": {"title": {"text": "probability"}, "range": [-0.02, 1.02], "dtick": 0.2},
    })
    fig.add_trace(go.Scatter(x=taus, y=finite_or_none(curves["correct"]), mode="lines", name="correct class",
                             line={"color": colour(0), "width": 2}))
    fig.add_trace(go.Scatter(x=taus, y=finite_or_none(curves["incorrect"]), mode="lines",
                             name="each incorrect class", line={"color": colour(1), "width": 2}))
    fig.add_hline(y=1.0 / k, line={"dash": "dot", "color": "#888"}, annotation_text="1/K",
                  annotation_position="bottom right")
    for i, (m, x) in enumerate(zip(markers, spread(markers))):
        fig.add_trace(go.Scatter(
            x=[x], y=[m["correct"]], mode="markers", name=m["label"], legendgroup="runs",
            legendgrouptitle={"text": "Tf-KD-reg runs"},
            marker={"size": 11, "symbol": "x", "color": colour(i + 2), "line": {"width": 1, "color": "#222"}},
            customdata=[[m["temperature"], m["a"], m["num_classes"]]],
            hovertemplate=f"{m['label']}<br>τ = %{{customdata[0]:g}}, a = %{{customdata[1]:g}}, K = %{{customdata[2]}}"
                          "<br>p(correct) = %{y:.3f}<extra></extra>",
        ))
    return fig



# ---------------------------------------------------------------------------------------------------
# The page


def build_teacher(view: View) -> tuple[go.Figure, Rows]:
    """Figure 5 at the chosen a and K, with a marker per selected Tf-KD-reg run."""
    c = view.controls
    curves = virtual_teacher_curves(c["a"], c["k"])
    markers = temperature_markers(view.runs)
    return virtual_teacher_figure(curves, markers, "log" in c["log"]), virtual_teacher_csv_rows(curves)


def layout() -> html.Div:
    """The a, K and axis controls above the figure."""
    return html.Div([
        html.Div(className="controls", children=[
            control("a (correct-class probability)", html.Div(className="slider-wide", children=dcc.Slider(
                0.5, 1.0, 0.01, value=0.9, id="vt-a", marks={v: f"{v:g}" for v in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)}))),
            control("classes K", html.Div(className="slider-wide", children=dcc.Slider(
                2, 100, 1, value=10, id="vt-k", marks={v: str(v) for v in (2, 25, 50, 75, 100)}))),
            control("x axis", dcc.Checklist([{"label": "log", "value": "log"}], ["log"], id="vt-log", inline=True)),
        ]),
        figure_card(PAGE_NAME, "teacher", "Virtual teacher probabilities against temperature (Figure 5)"),
        html.Div(id="vt-runs"),
    ])


def runs_view(view: View) -> list[Any]:
    """The selected runs' a, K, τ and loss-minimising p(true), as a table under the figure."""
    rows = run_settings(view.runs)
    if not rows:
        return [[]]
    columns = ["run", "method", "a", "K", "τ", "loss-minimising p(true)"]
    head = html.Tr([html.Th(c) for c in columns])
    body = [html.Tr([html.Td("—" if r[c] is None else str(r[c])) for c in columns]) for r in rows]
    return [[html.H3("Selected runs: where each run's loss is lowest"),
             html.P("— : the run's loss has no p(true) minimum of its own (no distillation term, or a real "
                    "teacher's).", className="problem"),
             html.Table([head, *body], className="poster", id="vt-runs-table")]]


def first_setting(runs: Iterable[RunLike]) -> tuple[float | None, int | None]:
    """The a and K of the first selected Tf-KD-reg run (None, None without one): the sliders start there."""
    for m in temperature_markers(runs):
        return m["a"], m["num_classes"]
    return None, None


def register(app: dash.Dash, ctx: AppContext, page: Page) -> None:
    """The standard display callbacks, and the a and K sliders moved to the selected runs' values."""
    register_display(app, ctx, page)

    @app.callback(Output("vt-a", "value"), Output("vt-k", "value"), Input(PICKER, "value"))
    def sliders_follow_runs(run_ids: Any) -> Any:
        a, k = first_setting(ctx.selection.runs(run_ids))
        if a is None or k is None:
            return no_update, no_update
        return (a if 0.5 <= a <= 1.0 else no_update), (k if 2 <= k <= 100 else no_update)


PAGE_NAME = "teacher"
PAGE = Page(
    name=PAGE_NAME, title="Virtual teacher", layout=layout, live=False, register=register,
    extra_outputs=(Output("vt-runs", "children"),), extras=runs_view,
    figures=(FigureSpec("teacher", "Virtual teacher probabilities against temperature (Figure 5)", build_teacher),),
    controls={
        "a": Control("vt-a", "a", number, (0.0, 1.0), {"default": 0.9}),
        "k": Control("vt-k", "classes K", integer, (2, 1000), {"default": 10}),
        "log": Control("vt-log", "x axis", flags, (("log",),)),
    },
)
