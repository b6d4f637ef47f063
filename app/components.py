"""Small layout pieces shared by the pages: a figure card with its download buttons, badges, notes."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from .export import FORMATS


def graph_id(figure: str) -> str:
    """The component id of a figure's graph (figure names are unique across pages)."""
    return f"graph-{figure}"


def export_id(page: str, figure: str, fmt: str) -> dict[str, str]:
    """The id of a download button: it names the figure and format, nothing else reaches the server."""
    return {"type": "export", "page": page, "figure": figure, "fmt": fmt}


def figure_card(page: str, figure: str, title: str, height: int = 420) -> html.Div:
    """A graph plus one download button per format; `app.downloads` rebuilds the figure on the server."""
    buttons = [html.Button(fmt.upper(), id=export_id(page, figure, fmt), className="export", n_clicks=0,
                           **{"data-fmt": fmt}) for fmt in FORMATS]
    return html.Div(className="card", id=f"card-{figure}", children=[
        html.Div(className="card-head", children=[html.H3(title), html.Div(buttons, className="exports")]),
        dcc.Loading(dcc.Graph(id=graph_id(figure), style={"height": f"{height}px"},
                              config={"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}})),
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
