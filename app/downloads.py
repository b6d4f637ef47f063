"""The one download callback: the client names a figure and a format; the server rebuilds and renders it.

A download button's id says only ``{page, figure, fmt}``. The figure is rebuilt by the page's own
builder from the runs folder, with the run selection and the page's control values read as Dash
``State`` of known components and checked like any other input; it is rendered in memory
(`app.export.render`) and sent under a name taken from the page registry. So no request value
reaches a file path, no client-supplied figure is rendered and no file is read into an export; an
unknown page, figure or format is answered with a note, never an error page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dash
from dash import ALL, Input, Output, State, dcc, html, no_update

from gradscope import GradscopeError

from .components import note
from .errors import AppError
from .export import check_format, render
from .pages.base import AppContext, Page, find_page
from .selection import PICKER

DOWNLOAD = "download"
NOTES = "download-notes"
BUTTONS = {"type": "export", "page": ALL, "figure": ALL, "fmt": ALL}


def components() -> list[Any]:
    """The download target and the place its problems are reported; once per app."""
    return [dcc.Download(id=DOWNLOAD), html.Div(id=NOTES)]


def register(app: dash.Dash, ctx: AppContext, pages: Sequence[Page]) -> None:
    """Attach the download callback for every figure of ``pages``."""
    states = [State(PICKER, "value")]
    spans: dict[str, tuple[int, int]] = {}
    for page in pages:
        spans[page.name] = (len(states) - 1, len(states) - 1 + len(page.controls))
        states += [State(c.id, "value") for c in page.controls.values()]

    @app.callback(Output(DOWNLOAD, "data"), Output(NOTES, "children"), Input(BUTTONS, "n_clicks"), *states,
                  prevent_initial_call=True)
    def download(clicks: Any, run_ids: Any, *values: Any) -> Any:
        trigger = dash.ctx.triggered_id
        if not isinstance(trigger, dict) or not isinstance(clicks, list) or not any(
                isinstance(c, int) and c > 0 for c in clicks):
            return no_update, no_update
        try:
            page = find_page(pages, trigger.get("page"))
            spec = page.figure(trigger.get("figure"))
            fmt = check_format(trigger.get("fmt"))
            start, stop = spans[page.name]
            figure, rows = spec.build(page.view(ctx, run_ids, values[start:stop]))
            data = render(figure, rows, fmt)
        except (AppError, GradscopeError) as exc:
            return no_update, note(f"download refused: {exc}", "error")
        return dcc.send_bytes(data, f"{spec.name}.{fmt}"), []
