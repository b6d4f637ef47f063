"""Tables page: Figures 1, 2, 4 and 7 as mean ± std over seeds beside the poster's numbers.

The rows are `trainers.summarize.poster_tables`' (what ``python -m trainers summarize`` prints); this
page only formats them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import dash
from dash import Input, Output, html, no_update

from trainers.references import poster_numbers
from trainers.summarize import PosterTable, RunResults, TableRow, poster_tables

from ..selection import TABS, TICK
from ..shared import Rows, RunLike
from .base import AppContext, Page

COLUMNS = ("run", "measured as", "ours", "poster", "literature", "seeds", "images", "stale seeds")


# ---------------------------------------------------------------------------------------------------
# Data


def tables_of(runs: Iterable[RunLike]) -> list[PosterTable]:
    """`trainers.summarize.poster_tables` of the runs folder's runs."""
    return poster_tables(RunResults.of_run(run) for run in runs)


def poster_table_csv_rows(tables: Sequence[PosterTable]) -> Rows:
    """The tables flattened: one row per figure, run and metric (``ours`` as printed)."""
    return [{"figure": t.figure, "measured_on": ", ".join(t.datasets), "poster_dataset": t.poster_dataset,
             **asdict(row), "ours": row.ours} for t in tables for row in t.rows]


def _cells(row: TableRow, parameters: bool) -> list[str]:
    def text(value: Any) -> str:
        return "" if value is None else str(value)

    cells = [row.run, row.label, row.ours, text(row.poster), text(row.literature),
             f"{row.n_seeds} of {row.seeds_total}", ", ".join(map(str, row.n_images)), text(row.stale or None)]
    return cells + ([text(row.parameters)] if parameters else [])


# ---------------------------------------------------------------------------------------------------
# The page


def poster_line(figure: str) -> str:
    """The poster's numbers of ``figure`` in one line, for a table whose runs are on another data set."""
    names = {"test_acc": "clean", "autoattack_acc": "AutoAttack"}
    return "; ".join(f"{run} " + ", ".join(f"{names.get(metric, metric)} {value:.2f}" for metric, value in
                                           values.items()) for run, values in poster_numbers(figure).items())


def table_view(table: PosterTable) -> html.Div:
    """One recipe's table as HTML, saying which data set ours were measured on and whether the poster's compare."""
    parameters = any(row.parameters is not None for row in table.rows)
    columns = [*COLUMNS, *(["parameters"] if parameters else [])]
    head = html.Tr([html.Th(c) for c in columns])
    body = [html.Tr([html.Td(c) for c in _cells(row, parameters)]) for row in table.rows]
    measured = f" — measured on {', '.join(table.datasets)}" if table.datasets else ""
    caveat = [] if table.comparable else [html.P(
        f"The poster measured on {table.poster_dataset}: {poster_line(table.figure)}. Not shown beside runs on "
        f"{', '.join(table.datasets)}.", className="note note-info")]
    return html.Div([html.H3(f"{table.figure}: {table.title}{measured}"), *caveat,
                     html.Table([head, *body], className="poster")])


def register(app: dash.Dash, ctx: AppContext, page: Page) -> None:
    """The tables, recomputed on every tick while visible (they read every run of the folder)."""

    @app.callback(Output("tables", "children"), Input(TABS, "value"), Input(TICK, "n_intervals"))
    def tables(tab: Any, _: Any) -> Any:
        if tab != page.name:
            return no_update
        return [table_view(t) for t in tables_of(ctx.index.scan())]


PAGE = Page(name="tables", title="Tables", layout=lambda: html.Div(id="tables"), register=register)
