"""Robustness page: Figure 7 (clean against robust accuracy), the ε curves, the attacks' breakdown, sanity flags.

Every number comes from `trainers.summarize`'s rows, the ones ``python -m trainers summarize`` prints:
only current results (from the checkpoint as it is now), clean and robust accuracy from the same
checkpoint and images, each robust number labelled by `trainers.labels.robust_label` ("AutoAttack"
only for the standard four-attack suite; PGD fallbacks and bf16 said so). The poster's and the
literature's points are drawn only in the panel of the data set they were measured on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import plotly.graph_objects as go
from dash import Output, html
from plotly.subplots import make_subplots

from trainers.references import POSTER_SOURCE, reference_points
from trainers.summarize import (
    RobustnessPanel,
    RunResults,
    breakdown_rows,
    eps_curve_rows,
    robustness_panels,
)

from ..components import badge, figure_card
from ..shared import TEMPLATE, Rows, RunLike, annotate_empty, colour
from .base import FigureSpec, Page, View

POSTER_DATASET = "cifar10"  # where the poster's Figure 7 and the literature's points were measured
NO_RUNS = "No finished adversarial runs yet"


# ---------------------------------------------------------------------------------------------------
# Data


def run_results(runs: Iterable[RunLike]) -> list[RunResults]:
    """What `trainers.summarize` reads of each run (its checkpoints fingerprinted, inside the runs folder)."""
    return [RunResults.of_run(run) for run in runs]


def figure7_rows(panels: Sequence[RobustnessPanel]) -> Rows:
    """Figure 7's CSV: one row per method and data set, then one per reference point drawn beside them."""
    rows: Rows = [{"kind": "ours", **asdict(row)} for panel in panels for row in panel.rows]
    rows += [{"kind": ref.source, **asdict(ref)} for panel in panels for ref in panel.references]
    return rows


def eps_curves(runs: Iterable[RunResults]) -> Rows:
    """`trainers.summarize.eps_curve_rows` as dicts, with ``eps_255`` (ε·255) for the x axis."""
    return [{**asdict(row), "eps_255": row.eps * 255} for row in eps_curve_rows(runs)]


def attack_breakdown(runs: Iterable[RunResults], eps_label: str | None = None) -> Rows:
    """Accuracy after each attack of the AutoAttack result each run reports (`breakdown_rows`).

    Each attack runs on the points still robust, so accuracy falls along the list; where it stops
    falling shows which attack did the work (a big drop only at Square, a black-box attack, hints at
    gradient masking).
    """
    return [asdict(row) for row in breakdown_rows(runs, eps_label)]


def sanity_flags(runs: Iterable[RunLike]) -> Rows:
    """Warning signs stored by the evaluation (robust above clean, AutoAttack above PGD, flat ε curve)."""
    return [{"run": run.label, "id": run.id, "flag": flag.get("flag"), "message": flag.get("message")}
            for run in runs for flag in ((run.evaluation or {}).get("flags") or [])]


# ---------------------------------------------------------------------------------------------------
# Figures


def _symbol(label: str) -> str:
    """Filled circle: standard AutoAttack; open diamond: a PGD fallback; open square: anything else."""
    if label == "AutoAttack":
        return "circle"
    return "diamond-open" if "fallback" in label else "square-open"


def _eps_of(labels: Iterable[str | None]) -> str:
    """`` · ε 0.1`` (or ``8/255``, several joined) for titles; empty when nothing was measured."""
    found = sorted({label for label in labels if label})
    return f" · ε {', '.join(found)}" if found else ""


def robustness_figure(panels: Sequence[RobustnessPanel]) -> go.Figure:
    """Figure 7: clean against robust accuracy per method, one panel per data set, error bars = std over seeds.

    Each method's legend entry says what its robust number measured. The poster's points (grey
    crosses, named) and the literature's (grey open circles) appear only in the panel of their own
    data set. With no adversarial run the poster's CIFAR-10 panel is drawn alone, the message in its
    title so it never covers the points' labels.
    """
    empty = not panels
    if empty:
        panels = [RobustnessPanel(POSTER_DATASET, (), tuple(reference_points(POSTER_DATASET)))]
    titles = [f"{p.dataset}{_eps_of(r.eps_label for r in p.rows)}"
              + ("" if p.references else " (no published points on this data set)") for p in panels]
    if empty:
        titles = [f"{NO_RUNS}: the poster's and the literature's {POSTER_DATASET} points"]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, horizontal_spacing=0.08)
    fig.update_layout(template=TEMPLATE, legend={"title": {"text": "method · measured as"}},
                      title={"text": "Clean vs robust accuracy (L∞, each run at its own training ε), mean ± std over "
                                     "seeds"})
    methods = list(dict.fromkeys(row.method for p in panels for row in p.rows))
    legend_refs: set[str] = set()
    for col, panel in enumerate(panels, 1):
        for row in panel.rows:
            if row.clean_mean is None or row.robust_mean is None:
                continue
            label = row.robust_label or "?"
            name = f"{row.method} ({row.model}) · {label}"
            fig.add_trace(go.Scatter(
                x=[row.clean_mean], y=[row.robust_mean], mode="markers", name=name,
                marker={"size": 12, "color": colour(methods.index(row.method)), "symbol": _symbol(label)},
                error_x={"type": "data", "array": [row.clean_std or 0.0], "visible": True},
                error_y={"type": "data", "array": [row.robust_std or 0.0], "visible": True},
                hovertemplate=f"{name}<br>{panel.dataset}<br>clean %{{x:.2f}}%<br>robust %{{y:.2f}}%"
                              f"<br>{row.n_seeds} of {row.seeds_total} seed(s), images {row.n_images}<extra></extra>",
            ), row=1, col=col)
        for source in dict.fromkeys(ref.source for ref in panel.references):
            refs = [ref for ref in panel.references if ref.source == source]
            poster = source == POSTER_SOURCE
            fig.add_trace(go.Scatter(
                x=[r.clean for r in refs], y=[r.robust for r in refs], mode="markers+text" if poster else "markers",
                text=[r.name for r in refs], textposition="top center", textfont={"size": 10, "color": "#666"},
                name=f"{source} ({panel.dataset}, {refs[0].robust_label})", legendgroup=source,
                showlegend=source not in legend_refs,
                marker={"size": 9, "symbol": "x-thin" if poster else "circle-open",
                        "line": {"width": 2, "color": "#888"}, "color": "#888"},
                hovertemplate=f"%{{text}} ({source}, {panel.dataset})<br>clean %{{x:.2f}}%"
                              f"<br>{refs[0].robust_label} %{{y:.2f}}%<extra></extra>",
            ), row=1, col=col)
            legend_refs.add(source)
        fig.update_xaxes(title_text="clean accuracy (%)", row=1, col=col)
    fig.update_yaxes(title_text="robust accuracy (%)", row=1, col=1)
    return fig


def eps_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """PGD-20 accuracy against ε, one line per run (`eps_curves`); colour follows the method."""
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
            name=f"{first['run']} ({first['dataset']})", legendgroup=str(first["method"]),
            line={"color": colour(methods.index(str(first["method"])))},
            text=[p["eps_label"] for p in points],
            hovertemplate=f"{first['run']}<br>ε %{{text}}<br>%{{y:.2f}}% of {first['n']} images<extra></extra>",
        ))
    if not rows:
        annotate_empty(fig, "No ε sweeps yet: python -m trainers evaluate RUN")
    return fig


def breakdown_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Accuracy after each attack that ran, grouped bars per run (`attack_breakdown`), named by what ran."""
    fig = go.Figure(layout={
        "title": {"text": f"Accuracy after each attack{_eps_of(r.get('eps_label') for r in rows)}"},
        "template": TEMPLATE,
        "barmode": "group", "xaxis": {"title": {"text": "after attack (each on the points still robust)"}},
        "yaxis": {"title": {"text": "accuracy (%)"}},
    })
    for i, run_id in enumerate(dict.fromkeys(r["id"] for r in rows)):
        bars = sorted((r for r in rows if r["id"] == run_id), key=lambda r: r["order"])
        name = f"{bars[0]['run']} · {bars[0]['robust_label']}"
        fig.add_trace(go.Bar(
            x=[b["stage"] for b in bars], y=[b["accuracy"] for b in bars], name=name, marker_color=colour(i),
            hovertemplate=f"{name}<br>%{{x}}: %{{y:.2f}}% of {bars[0]['n']} images<extra></extra>",
        ))
    if not rows:
        annotate_empty(fig, "No AutoAttack evaluations yet: python -m trainers evaluate RUN --attacks autoattack")
    return fig


# ---------------------------------------------------------------------------------------------------
# The page


def build_robust(view: View) -> tuple[go.Figure, Rows]:
    """Figure 7 and its table."""
    panels = robustness_panels(run_results(view.runs))
    return robustness_figure(panels), figure7_rows(panels)


def build_eps(view: View) -> tuple[go.Figure, Rows]:
    """The ε sweeps."""
    curves = eps_curves(run_results(view.runs))
    return eps_figure(curves), curves


def build_breakdown(view: View) -> tuple[go.Figure, Rows]:
    """Accuracy after each attack of the reported AutoAttack result."""
    rows = attack_breakdown(run_results(view.runs))
    return breakdown_figure(rows), rows


def extras(view: View) -> list[Any]:
    """The evaluation's warning signs, one line per run and flag."""
    return [[html.Div([badge("warning", "warning"), f" {f['run']}: {f['message']}"], className="problem")
             for f in sanity_flags(view.runs)]]


FIGURES = (
    FigureSpec("robust", "Clean against robust accuracy per method (Figure 7)", build_robust),
    FigureSpec("eps", "Accuracy against ε (PGD-20)", build_eps),
    FigureSpec("breakdown", "Accuracy after each attack", build_breakdown),
)
PAGE_NAME = "robustness"


def layout() -> html.Div:
    """The flags above the three cards."""
    return html.Div([html.Div(id="robust-flags"), *(figure_card(PAGE_NAME, f.name, f.title) for f in FIGURES)])


PAGE = Page(name=PAGE_NAME, title="Robustness", layout=layout, figures=FIGURES,
            extra_outputs=(Output("robust-flags", "children"),), extras=extras)
