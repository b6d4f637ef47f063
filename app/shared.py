"""What several pages share: the run shape they read, CSV rows, small number helpers and plot styling.

Page modules (`app.pages.*`) hold their own data and figures; anything two of them need lives here,
so that no page imports another.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative

from .errors import AppError

Rows = list[dict[str, Any]]

ROBUST_EPS_LABEL = "8/255"  # the poster's (and RobustBench's) L∞ budget for CIFAR-10
PALETTE = qualitative.Dark24  # 24 distinguishable colours: up to 12 groups x a few runs stay apart
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
TEMPLATE = "plotly_white"


class RunLike(Protocol):
    """What the run index knows about one run folder (see docs/trainers.md, "Run folder").

    Attributes:
        id: path relative to the runs folder, posix (``fig4/seed0/baseline``); unique.
        label: short display name (``tfkd-reg s0``).
        path: the run folder.
        config: ``config.json`` as a dict (``{}`` when missing).
        metrics: one dict per finished epoch (``metrics.jsonl``).
        results: ``results.json`` once the run finished, else None.
        evaluation: ``evaluation.json`` as `trainers.robustness.read_evaluation` returns it.
        status: ``live``, ``finished``, ``failed`` or ``corrupt``.
        problem: what is wrong with the folder, in words, or None.
        problems: each broken file as `app.runs.RunProblem` (``file``, ``problem``); a badge each.
    """

    id: str
    label: str
    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    results: dict[str, Any] | None
    evaluation: dict[str, Any]
    status: str
    problem: str | None
    problems: list[Any]


# ---------------------------------------------------------------------------------------------------
# Numbers and rows


def csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows as CSV text (header = every key, in first-seen order; None as an empty cell).

    Rows need not share all keys, as tables mixing finished and live runs do not.
    """
    rows = list(rows)
    fields = list(dict.fromkeys(key for row in rows for key in row)) or ["empty"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    return out.getvalue()


def check_choice(kind: str, value: object, accepted: Sequence[str]) -> None:
    """Raise `AppError` naming ``value`` and the accepted ones unless ``value`` is among them."""
    if not isinstance(value, str) or value not in accepted:
        raise AppError(f"unknown {kind} {value!r}; expected one of: {', '.join(map(str, accepted))}")


def finite_number(value: float) -> float | None:
    """None for NaN and inf: JSON has no such numbers, and an empty CSV cell reads as missing."""
    return value if math.isfinite(value) else None


def finite_or_none(values: np.ndarray | Sequence[float]) -> list[float | None]:
    """A JSON-safe list: NaN and inf become gaps (None) in a plot."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


# ---------------------------------------------------------------------------------------------------
# Plot styling


def colour(i: int) -> str:
    """The ``i``-th colour of the palette, cycling."""
    return PALETTE[i % len(PALETTE)]


def rgba(hex_colour: str, alpha: float) -> str:
    """A palette colour with transparency (bands and faded raw curves)."""
    r, g, b = hex_to_rgb(hex_colour)
    return f"rgba({r},{g},{b},{alpha})"


def annotate_empty(fig: go.Figure, message: str) -> go.Figure:
    """Say on the figure why it is empty."""
    fig.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font={"size": 14, "color": "#666"})
    return fig


def message_figure(message: str) -> go.Figure:
    """An empty figure that says what went wrong, instead of a traceback in the browser."""
    fig = go.Figure(layout={"template": TEMPLATE})
    annotate_empty(fig, message)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


@functools.lru_cache(maxsize=1)
def template_json() -> dict[str, Any]:
    """The figures' template as plain JSON (plotly.js does not know template names)."""
    import plotly.io as pio

    return pio.templates[TEMPLATE].to_plotly_json()


def warm_up() -> None:
    """Build and encode one small figure of each kind the pages draw, so the first real one is fast.

    Plotly loads its validators and templates on first use (about 0.7 s on a small machine), which
    would otherwise land on the first view a user asks for; the server calls this in a background
    thread at start.
    """
    from plotly.io.json import to_json_plotly
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=["a", "b"])
    fig.add_trace(go.Heatmap(z=[[1.0]], coloraxis="coloraxis"), row=1, col=1)
    fig.add_trace(go.Scatter(x=[1], y=[1]), row=1, col=2)
    fig.add_trace(go.Bar(x=["a"], y=[1]), row=1, col=2)
    fig.update_layout(template=TEMPLATE, coloraxis={"colorscale": "Viridis"})
    to_json_plotly(fig)
    template_json()
