"""Callbacks: URL <-> selection, run list refresh, one callback per page, and the downloads.

Every page callback also takes the active tab and does nothing while its page is hidden, so a
selection change costs only the visible page's work.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode

import dash
from dash import ALL, MATCH, Input, Output, State, ctx, dcc, html, no_update

from .components import badge, note
from .export import csv_text, figure_bytes, safe_filename
from .pages import PAGES
from .runs import RunAccessError, RunIndex, RunInfo


def parse_selection(search: str | None) -> tuple[list[str], str | None]:
    """``?runs=a,b&page=gradients`` -> (["a", "b"], "gradients")."""
    query = parse_qs((search or "").lstrip("?"))
    runs = [r for part in query.get("runs", []) for r in part.split(",") if r]
    page = query.get("page", [None])[0]
    return runs, page if page in PAGES else None


def selection_search(runs: list[str], page: str) -> str:
    """The URL query for a selection and page."""
    return "?" + urlencode({"page": page, "runs": ",".join(runs)})


def checked_selection(index: RunIndex, run_ids: list[str]) -> tuple[list[str], list[str]]:
    """The ids that name runs inside the runs folder, and a message for each refused one."""
    kept, refused = [], []
    for run_id in run_ids or []:
        try:
            index.resolve(run_id)
            kept.append(run_id)
        except RunAccessError as exc:
            refused.append(str(exc))
    return kept, refused


def register(app: dash.Dash, index: RunIndex) -> None:
    """Attach every callback of the dashboard to ``app``."""

    @app.callback(
        Output("url", "search"), Output("run-select", "value"), Output("tabs", "value"),
        Output("selection-notes", "children"),
        Input("url", "search"), Input("run-select", "value"), Input("tabs", "value"),
    )
    def sync_selection(search: str | None, selected: list[str] | None, page: str) -> Any:
        if ctx.triggered_id in (None, "url") or selected is None:  # first load: the URL decides
            runs, url_page = parse_selection(search)
            kept, refused = checked_selection(index, runs)
            notes = [note(f"refused: {r}", "error") for r in refused]
            return no_update, kept, url_page or page or "runs", notes
        kept, refused = checked_selection(index, selected or [])
        return selection_search(kept, page), no_update, no_update, [note(f"refused: {r}", "error") for r in refused]

    @app.callback(
        Output("runs-store", "data"), Output("run-select", "options"), Output("runs-table", "data"),
        Output("runs-notes", "children"), Output("run-count", "children"),
        Input("tick", "n_intervals"),
    )
    def refresh_runs(_: int | None) -> Any:
        from .data import runs_table

        runs = index.scan()
        index.forget({r.id for r in runs})
        rows = runs_table(runs)
        options = [{"label": f"{r.label} — {r.id}", "value": r.id} for r in runs]
        notes: list[Any] = []
        if not runs:
            notes.append(note([
                html.B(f"No runs in {index.root}. "),
                "Create some with ", html.Code("python -m trainers recipe fig4 --out RUNS --seeds 1"),
                " or start the dashboard with ", html.Code("--demo"), " to train small demo runs.",
            ]))
        for r in runs:
            if r.status == "corrupt":
                notes.append(html.Div([badge("corrupt", "corrupt"), f" {r.id}: {r.problem}"], className="problem"))
        return [r.id for r in runs], options, rows, notes, f"{len(runs)} runs"

    @app.callback(
        Output("run-select", "value", allow_duplicate=True),
        Input("runs-table", "selected_rows"), State("runs-table", "data"), State("run-select", "value"),
        prevent_initial_call=True,
    )
    def select_from_table(rows: list[int] | None, data: list[dict[str, Any]] | None, current: list[str] | None) -> Any:
        if not rows or not data:
            return no_update
        picked = [data[i]["id"] for i in rows if i < len(data)]
        return list(dict.fromkeys([*(current or []), *picked]))

    @app.callback(
        Output({"type": "download", "name": MATCH}, "data"),
        Input({"type": "export", "name": MATCH, "fmt": ALL}, "n_clicks"),
        State({"type": "graph", "name": MATCH}, "figure"), State({"type": "csv", "name": MATCH}, "data"),
        prevent_initial_call=True,
    )
    def download(clicks: list[int], figure: dict[str, Any] | None, rows: list[dict[str, Any]] | None) -> Any:
        trigger = ctx.triggered_id
        if not trigger or not any(clicks):
            return no_update
        name, fmt = safe_filename(trigger["name"]), trigger["fmt"]
        if fmt == "csv":
            return dcc.send_string(csv_text(rows or []), f"{name}.csv")
        if not figure:
            return no_update
        return dcc.send_bytes(figure_bytes(figure, fmt), f"{name}.{fmt}")

    from .page_callbacks import register_pages

    register_pages(app, index)


def selected_runs(index: RunIndex, run_ids: list[str] | None) -> list[RunInfo]:
    """The selected runs that still exist (a run deleted meanwhile is dropped, not an error)."""
    runs = []
    for run_id in run_ids or []:
        try:
            runs.append(index.run(run_id))
        except RunAccessError:
            continue
    return runs
