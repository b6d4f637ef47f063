"""Small layout pieces shared by the pages: a figure card with its export buttons, badges, notes."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from .export import EXPORT_FORMATS


def figure_card(name: str, title: str, height: int = 420) -> html.Div:
    """A graph plus PNG/SVG/HTML/CSV buttons; callbacks fill ``graph`` and the ``csv`` store by ``name``."""
    buttons = [html.Button(fmt.upper(), id={"type": "export", "name": name, "fmt": fmt}, className="export",
                           n_clicks=0) for fmt in EXPORT_FORMATS]
    return html.Div(className="card", id=f"card-{name}", children=[
        html.Div(className="card-head", children=[html.H3(title), html.Div(buttons, className="exports")]),
        dcc.Loading(dcc.Graph(id={"type": "graph", "name": name}, style={"height": f"{height}px"},
                              config={"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}})),
        dcc.Store(id={"type": "csv", "name": name}),
        dcc.Download(id={"type": "download", "name": name}),
    ])


def badge(text: str, kind: str) -> html.Span:
    """A coloured status label (finished, live, failed, corrupt, warning)."""
    return html.Span(text, className=f"badge badge-{kind}")


def note(children: Any, kind: str = "info") -> html.Div:
    """A boxed message: how to create runs, what went wrong."""
    return html.Div(children, className=f"note note-{kind}")


def control(label: str, component: Any) -> html.Div:
    """A labelled control in a page's control bar."""
    return html.Div([html.Label(label), component], className="control")
