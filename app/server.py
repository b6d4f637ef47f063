"""The Dash application: one shared run selection (kept in the URL) and a page per view."""

from __future__ import annotations

from pathlib import Path

import dash
from dash import dcc, html

from .callbacks import register
from .pages import BUILDERS, PAGES
from .runs import RunIndex

ASSETS = Path(__file__).parent / "assets"


def layout(index: RunIndex, refresh_seconds: float) -> html.Div:
    """The page, built per visit so that the run choices are there before the URL's selection is applied."""
    options = [{"label": f"{r.label} — {r.id}", "value": r.id} for r in index.scan()]
    return html.Div(className="page", children=[
        dcc.Location(id="url", refresh=False),
        html.Header(className="top", children=[
            html.H1("gradscope"),
            html.Span(f"runs: {index.root}", className="root", id="root"),
            html.Span(id="run-count", className="root"),
        ]),
        html.Div(className="selection", children=[
            html.Label("runs to compare"),
            dcc.Dropdown(id="run-select", options=options, multi=True,
                         placeholder="pick runs (or tick them in the Runs table)"),
        ]),
        html.Div(id="selection-notes"),
        dcc.Tabs(id="tabs", value="runs", children=[
            dcc.Tab(label=title, value=key, children=[html.Div(BUILDERS[key](), className="tab-body")])
            for key, title in PAGES.items()
        ]),
        dcc.Interval(id="tick", interval=int(refresh_seconds * 1000)),
        dcc.Store(id="runs-store"),
    ])


def create_app(runs_dir: str | Path, *, refresh_seconds: float = 5.0) -> dash.Dash:
    """A dashboard over the runs under ``runs_dir``; live runs refresh every ``refresh_seconds``."""
    index = RunIndex(runs_dir)
    app = dash.Dash(__name__, title="gradscope", assets_folder=str(ASSETS), suppress_callback_exceptions=True,
                    serve_locally=True, update_title=None)
    app.layout = lambda: layout(index, refresh_seconds)
    register(app, index)
    return app
