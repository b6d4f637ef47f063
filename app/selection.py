"""The run selection, owned by one object: the URL query, the run picker and the runs every page reads.

The selection is a list of run ids kept in the URL (``?page=gradients&runs=a,b``), so a view can be
linked. `Selection` is the only code that parses that query, checks ids against the runs folder
(`RunIndex.resolve`, which refuses anything leaving it) and turns ids into runs and records; pages
receive the checked runs through `app.pages.base.View`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode

import dash
from dash import Input, Output, State, ctx, dcc, html, no_update

from gradscope import GradscopeError, Record

from . import validate
from .components import note
from .errors import AppError
from .runs import RunAccessError, RunIndex, RunInfo

URL = "url"
PICKER = "run-select"
NOTES = "selection-notes"
TABS = "tabs"
TICK = "tick"
COUNT = "run-count"
VERSION = "selection-version"  # a dcc.Store: changes when the selected runs' files do (live pages redraw on it)


class Selection:
    """The runs chosen for comparison, checked against the runs folder.

    Args:
        index: the runs folder.
        pages: page names the URL may name, in order; the first is the default.
    """

    def __init__(self, index: RunIndex, pages: Sequence[str]) -> None:
        self.index = index
        self.pages = tuple(pages)

    def parse(self, search: str | None) -> tuple[list[str], str | None]:
        """``?runs=a,b&page=gradients`` -> (["a", "b"], "gradients"); an unknown page gives None."""
        query = parse_qs((search if isinstance(search, str) else "").lstrip("?"))
        runs = [r for part in query.get("runs", []) for r in part.split(",") if r]
        page = query.get("page", [None])[0]
        return runs, page if page in self.pages else None

    def search(self, run_ids: Sequence[str], page: str) -> str:
        """The URL query for a selection and page."""
        return "?" + urlencode({"page": page if page in self.pages else self.pages[0], "runs": ",".join(run_ids)})

    def check(self, run_ids: Any) -> tuple[list[str], list[str]]:
        """The ids that name runs inside the runs folder (each once, in order), and why each other was refused."""
        try:
            ids = validate.run_ids(run_ids)
        except AppError as exc:
            return [], [str(exc)]
        kept, refused = [], []
        for run_id in ids:
            try:
                self.index.resolve(run_id)
                kept.append(run_id)
            except RunAccessError as exc:
                refused.append(str(exc))
        return kept, refused

    def runs(self, run_ids: Any) -> list[RunInfo]:
        """The selected runs that still exist (a run deleted meanwhile is dropped, not an error)."""
        found = []
        for run_id in self.check(run_ids)[0]:
            try:
                found.append(self.index.run(run_id))
            except RunAccessError:
                continue
        return found

    def records(self, run_ids: Any) -> tuple[dict[str, Record], dict[str, str]]:
        """Gradient records of the selected runs by display label, and the problem of each that failed."""
        kept, _ = self.check(run_ids)
        try:
            return self.index.records(kept)
        except (GradscopeError, OSError, ValueError) as exc:  # the index reports per run; this is a backstop
            return {}, {"selection": str(exc)}

    def options(self) -> list[dict[str, str]]:
        """The run picker's choices: every run in the folder."""
        return [{"label": f"{r.label} — {r.id}", "value": r.id} for r in self.index.scan()]

    def picker(self) -> html.Div:
        """The run picker shown above every page, with the version of what it selects."""
        return html.Div(className="selection", children=[
            html.Label("runs to compare"),
            dcc.Dropdown(id=PICKER, options=self.options(), multi=True,
                         placeholder="pick runs (or tick them in the Runs table)"),
            dcc.Store(id=VERSION),
        ])

    def version(self, run_ids: Any) -> str:
        """A short digest of the selected runs and their files: equal while nothing a page shows has changed."""
        return self.index.version(self.check(run_ids)[0])

    def register(self, app: dash.Dash) -> None:
        """URL <-> picker <-> page tab, the selection's version, and the picker's choices refreshed on every tick."""

        @app.callback(
            Output(URL, "search"), Output(PICKER, "value"), Output(TABS, "value"), Output(NOTES, "children"),
            Input(URL, "search"), Input(PICKER, "value"), Input(TABS, "value"),
        )
        def sync(search: Any, selected: Any, page: Any) -> Any:
            if ctx.triggered_id in (None, URL) or selected is None:  # first load: the URL decides
                runs, url_page = self.parse(search)
                kept, refused = self.check(runs)
                current = page if page in self.pages else self.pages[0]
                return no_update, kept, url_page or current, _refusals(refused)
            kept, refused = self.check(selected)
            return self.search(kept, page), no_update, no_update, _refusals(refused)

        @app.callback(Output(VERSION, "data"), Input(TICK, "n_intervals"), Input(PICKER, "value"),
                      State(VERSION, "data"))
        def track(_: Any, selected: Any, shown: Any) -> Any:
            # A tick redraws a live page only when a selected run changed: redrawing a dozen finished runs'
            # figures every few seconds cost the browser ~0.3 s each time, and reset what the user hovered.
            current = self.version(selected)
            return no_update if current == shown else current

        @app.callback(Output(PICKER, "options"), Output(COUNT, "children"), Input(TICK, "n_intervals"))
        def refresh(_: Any) -> Any:
            options = self.options()
            self.index.forget({o["value"] for o in options})
            return options, f"{len(options)} runs"


def _refusals(refused: list[str]) -> list[html.Div]:
    return [note(f"refused: {r}", "error") for r in refused]
