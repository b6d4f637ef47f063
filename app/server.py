"""The Dash application built from the page list: one run selection (kept in the URL), a tab per page.

`create_app` binds nothing itself; ``gradscope-dashboard`` (`app.cli`) and ``app.wsgi`` serve it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import dash
from dash import dcc, html
from flask import request
from werkzeug.exceptions import HTTPException

from . import downloads
from .pages import PAGES, AppContext
from .runs import RunIndex
from .selection import COUNT, NOTES, TABS, TICK, URL, Selection
from .shared import warm_up
from .validate import answer_error, shown

ASSETS = Path(__file__).parent / "assets"
log = logging.getLogger("app.server")


def layout(ctx: AppContext, refresh_seconds: float) -> html.Div:
    """The page, built per visit so that the run choices are there before the URL's selection is applied."""
    return html.Div(className="page", children=[
        dcc.Location(id=URL, refresh=False),
        html.Header(className="top", children=[
            html.H1("gradscope"),
            html.Span(f"runs: {ctx.index.root}", className="root", id="root"),
            html.Span(id=COUNT, className="root"),
        ]),
        ctx.selection.picker(),
        html.Div(id=NOTES),
        *downloads.components(),
        dcc.Tabs(id=TABS, value=PAGES[0].name, children=[
            dcc.Tab(label=page.title, value=page.name, children=[html.Div(page.layout(), className="tab-body")])
            for page in PAGES
        ]),
        dcc.Interval(id=TICK, interval=int(refresh_seconds * 1000)),
    ])


def create_app(runs_dir: str | Path, *, refresh_seconds: float = 5.0) -> dash.Dash:
    """A dashboard over the runs under ``runs_dir``; live runs refresh every ``refresh_seconds``."""
    index = RunIndex(runs_dir)
    ctx = AppContext(index, Selection(index, [page.name for page in PAGES]))
    app = dash.Dash(__name__, title="gradscope", assets_folder=str(ASSETS), suppress_callback_exceptions=True,
                    serve_locally=True, update_title=None, on_error=answer_error)
    app.layout = lambda: layout(ctx, refresh_seconds)
    ctx.selection.register(app)
    for page in PAGES:
        page.attach(app, ctx)
    downloads.register(app, ctx, PAGES)
    _refuse_malformed_requests(app)
    threading.Thread(target=warm_up, name="plotly-warm-up", daemon=True).start()
    return app


def _refuse_malformed_requests(app: dash.Dash) -> None:
    """A callback request Dash cannot match to a callback is answered 400, not 500.

    Values a client sends are checked by each callback (`app.validate`); a request naming an
    unknown output or carrying the wrong number of values fails inside Dash before any callback
    runs, and is a client's mistake, not the server's.
    """

    @app.server.errorhandler(Exception)
    def refuse(error: Exception) -> Any:
        if isinstance(error, HTTPException):
            return error
        if request.path.endswith("/_dash-update-component"):
            log.warning("malformed callback request: %s", shown(error))
            return {"error": f"malformed callback request ({type(error).__name__})"}, 400
        log.error("request failed", exc_info=error)
        return "internal error; the details are in the server's log", 500
