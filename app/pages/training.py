"""Training page: a metric of ``metrics.jsonl`` per epoch, one line per run (live runs included)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from dash import dcc, html

from ..components import control, figure_card
from ..shared import TEMPLATE, Rows, RunLike, annotate_empty, check_choice, colour, finite_number
from ..validate import choice
from .base import Control, FigureSpec, Page, View

TRAINING_METRICS = ("train_loss", "train_acc", "test_acc", "val_acc", "val_pgd_acc", "lr")
METRIC_LABELS = {"train_loss": "training loss", "train_acc": "training accuracy (%)", "test_acc": "test accuracy (%)",
                 "val_acc": "validation accuracy (%)", "val_pgd_acc": "validation PGD accuracy (%)",
                 "lr": "learning rate"}
LOG_METRICS = ("train_loss", "lr")  # quantities spanning decades


# ---------------------------------------------------------------------------------------------------
# Data


def training_curves(runs: Iterable[RunLike], metric: str = "test_acc") -> Rows:
    """``metric`` at every finished epoch of every run that logs it (``metrics.jsonl``), long format.

    ``val_pgd_acc`` exists for adversarial runs only and ``val_acc`` for runs with a validation split;
    runs without the metric give no rows.
    """
    check_choice("training metric", metric, TRAINING_METRICS)
    rows = []
    for run in runs:
        for row in run.metrics:
            value = row.get(metric)
            if value is None:
                continue
            rows.append({"run": run.label, "id": run.id, "method": (run.config or {}).get("method"),
                         "epoch": row.get("epoch"), "step": row.get("step"), "metric": metric,
                         "value": finite_number(float(value))})
    return rows


# ---------------------------------------------------------------------------------------------------
# Figures


def epoch_ticks(rows: Sequence[Mapping[str, Any]], most: int = 10) -> dict[str, Any]:
    """Whole-epoch ticks, at most ``most`` of them: epochs are counted, 1.2 epochs is never logged."""
    last = max((r["epoch"] for r in rows if isinstance(r.get("epoch"), (int, float))), default=1)
    return {"tickmode": "linear", "tick0": 0, "dtick": max(1, math.ceil(last / most)), "tickformat": "d"}


def training_figure(rows: Sequence[Mapping[str, Any]], metric: str = "test_acc", log_y: bool = False) -> go.Figure:
    """One line per run of a metric against epoch (`training_curves`)."""
    check_choice("training metric", metric, TRAINING_METRICS)
    label = METRIC_LABELS[metric]
    fig = go.Figure(layout={
        "title": {"text": f"{label[0].upper()}{label[1:]} per epoch"}, "template": TEMPLATE,
        "xaxis": {"title": {"text": "epoch"}, **epoch_ticks(rows)}, "hovermode": "x unified",
        "yaxis": {"title": {"text": label}, "type": "log" if log_y else "linear"},
    })
    for i, run_id in enumerate(dict.fromkeys(r["id"] for r in rows)):
        points = [r for r in rows if r["id"] == run_id]
        fig.add_trace(go.Scatter(
            x=[p["epoch"] for p in points], y=[p["value"] for p in points], mode="lines+markers",
            name=points[0]["run"], line={"color": colour(i)}, marker={"size": 4},
        ))
    if not rows:
        annotate_empty(fig, f"No run logs {metric} yet")
    return fig



# ---------------------------------------------------------------------------------------------------
# The page


def build_training(view: View) -> tuple[go.Figure, Rows]:
    """The chosen metric of every selected run."""
    metric = view.controls["metric"]
    rows = training_curves(view.runs, metric)
    return training_figure(rows, metric, log_y=metric in LOG_METRICS), rows


def layout() -> html.Div:
    """The metric picker above the figure."""
    return html.Div([
        html.Div(className="controls", children=[
            control("metric", dcc.Dropdown(list(TRAINING_METRICS), "train_loss", id="train-metric", clearable=False,
                                           style={"minWidth": "200px"})),
        ]),
        figure_card(PAGE_NAME, "training", "Training curves"),
    ])


PAGE_NAME = "training"
PAGE = Page(
    name=PAGE_NAME, title="Training", layout=layout,
    figures=(FigureSpec("training", "Training curves", build_training),),
    controls={"metric": Control("train-metric", "training metric", choice, (TRAINING_METRICS,),
                                {"default": "train_loss"})},
)
