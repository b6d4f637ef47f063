"""Runs page: every run of the folder with its status and headline numbers; ticking rows selects them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dash
from dash import Input, Output, dash_table, html, no_update

from trainers.labels import attacks_of
from trainers.summarize import (
    RunResults,
    current_entries,
    own_eps_label,
    results_are_current,
    results_eps_label,
    run_rows,
)

from ..components import badge, note
from ..demo import demo_status
from ..selection import PICKER, TABS, TICK
from ..shared import Rows, RunLike
from .base import AppContext, Page

COLUMNS = ("id", "method", "model", "dataset", "seed", "epochs_done", "epochs_planned", "status", "clean", "pgd20",
           "robust", "measured_as", "n_images", "best_epoch", "stale", "problem")


# ---------------------------------------------------------------------------------------------------
# Data


def _epochs_done(run: RunLike) -> int:
    if run.results and "epochs" in run.results:
        return int(run.results["epochs"])
    return int(run.metrics[-1].get("epoch", len(run.metrics))) if run.metrics else 0


def pgd20_accuracy(run: RunResults, eps_label: str | None = None) -> float | None:
    """The run's current PGD-20 accuracy at ``eps_label`` (default: the run's own training ε, else 8/255).

    Evaluated (most images) else training's final report.

    Only results computed from the reported checkpoint as it is now count (`trainers.summarize.current_entries`);
    a stale one is left out and listed in the ``stale`` column instead.
    """
    eps_label = eps_label or own_eps_label(run)
    evaluated = [e for e in current_entries(run).values()
                 if e.get("eps_label") == eps_label and attacks_of(e) == ["pgd-20"]]
    if evaluated:
        return float(max(evaluated, key=lambda e: e.get("n", 0))["accuracy"])
    best = (run.results or {}).get("best") or {}
    value = best.get("test_pgd20_acc")
    if eps_label == results_eps_label(run) and isinstance(value, (int, float)) and results_are_current(run):
        return float(value)
    return None


def runs_table(runs: Iterable[RunLike]) -> Rows:
    """One row per run for the runs page: what it is, how far it got, its headline numbers.

    The numbers are `trainers.summarize.run_rows`' (the rows ``python -m trainers summarize`` prints):
    ``clean`` and ``robust`` from one checkpoint on the same images, ``measured_as`` naming what
    ``robust`` measured (`trainers.labels.robust_label`), ``stale`` the stored results left out because
    their checkpoint changed. ``pgd20`` is the current PGD-20 accuracy at the run's own ε (`pgd20_accuracy`).
    """
    runs = list(runs)
    results = [RunResults.of_run(run) for run in runs]
    rows = []
    for run, res, summary in zip(runs, results, run_rows(results)):
        config = run.config or {}
        extras = config.get("extras") or {}
        rows.append({
            "id": run.id, "label": run.label, "recipe": extras.get("recipe"), "method": summary.method,
            "model": summary.model, "dataset": summary.dataset, "seed": summary.seed,
            "epochs_done": _epochs_done(run), "epochs_planned": config.get("epochs"), "status": run.status,
            "clean": summary.clean, "pgd20": pgd20_accuracy(res), "robust": summary.robust,
            "measured_as": summary.robust_label, "n_images": summary.n_images or None,
            "best_epoch": (run.results or {}).get("best_epoch"),
            "stale": "; ".join(summary.stale) or None, "problem": run.problem,
        })
    return rows


# ---------------------------------------------------------------------------------------------------
# The page


def layout() -> html.Div:
    """Sortable, filterable run table; ticking rows selects runs for every other page."""
    return html.Div([
        html.Div(id="runs-notes"),
        dash_table.DataTable(
            id="runs-table", columns=[{"name": c, "id": c} for c in COLUMNS], data=[], row_selectable="multi",
            selected_rows=[], sort_action="native", filter_action="native", page_size=50,
            style_cell={"fontFamily": "inherit", "fontSize": "13px", "padding": "4px 8px", "textAlign": "left"},
            style_data_conditional=[
                {"if": {"filter_query": '{status} = "corrupt"'}, "backgroundColor": "#fde2e1"},
                {"if": {"filter_query": '{status} = "live"'}, "backgroundColor": "#e4f4e4"},
                {"if": {"filter_query": '{status} = "failed"'}, "backgroundColor": "#fff4d6"},
            ],
        ),
    ])


def notes(root: Any, runs: list[Any]) -> list[Any]:
    """The background demo's progress (or death), how to create runs when there are none; a badge per corrupt run."""
    demo = demo_status(root)
    found: list[Any] = [note(demo.message, "info" if demo.state in {"running", "finished"} else "error")
                        ] if demo is not None else []
    if not runs and demo is None:
        found.append(note([
            html.B(f"No runs in {root}. "),
            "Create some with ", html.Code("python -m trainers recipe fig4 --out RUNS --seeds 1"),
            " or start the dashboard with ", html.Code("--demo"), " to train small demo runs.",
        ]))
    for r in runs:  # a badge per broken file (or damaged record), naming it; a corrupt run without details too
        kind = "corrupt" if r.status == "corrupt" else "warning"
        for problem in r.problems or ([r.problem] if r.status == "corrupt" else []):
            found.append(html.Div([badge(kind, kind), f" {r.id}: {problem}"], className="problem"))
    return found


def register(app: dash.Dash, ctx: AppContext, page: Page) -> None:
    """The table refreshed on every tick while visible; its ticks and the selection kept equal."""

    @app.callback(Output("runs-table", "data"), Output("runs-notes", "children"),
                  Input(TABS, "value"), Input(TICK, "n_intervals"))
    def refresh(tab: Any, _: Any) -> Any:
        if tab != page.name:
            return no_update, no_update
        runs = ctx.index.scan()
        return runs_table(runs), notes(ctx.index.root, runs)

    @app.callback(
        Output(PICKER, "value", allow_duplicate=True), Output("runs-table", "selected_rows"),
        Input(PICKER, "value"), Input("runs-table", "selected_rows"), Input("runs-table", "data"),
        prevent_initial_call=True,
    )
    def ticks_follow_selection(current: Any, rows: Any, data: Any) -> Any:
        """Ticks and selection kept equal, both ways, in one callback (Dash allows a loop only inside one).

        A tick or untick edits the selection; a selection from the URL or the picker, or a refreshed
        table, re-ticks the rows.
        """
        ids = [row.get("id") if isinstance(row, dict) else None for row in (data if isinstance(data, list) else [])]
        selected = current if isinstance(current, list) else []
        if dash.ctx.triggered_id == "runs-table" and "runs-table.selected_rows" in dash.ctx.triggered_prop_ids:
            ticked = {ids[i] for i in (rows if isinstance(rows, list) else [])
                      if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(ids)}
            kept, _ = ctx.selection.check(ticked_selection(selected, ids, ticked))
            return (kept if kept != selected else no_update), no_update
        wanted = [i for i, run_id in enumerate(ids) if run_id in set(selected)]
        return no_update, (wanted if wanted != rows else no_update)


def ticked_selection(selected: list[Any], table_ids: list[Any], ticked: set[Any]) -> list[Any]:
    """The selection after the table's ticks changed.

    Runs not in the table are kept, unticked ones removed, newly ticked ones appended in table order.
    """
    listed = set(table_ids)
    kept = [r for r in selected if r not in listed or r in ticked]
    return kept + [r for r in table_ids if r in ticked and r not in kept]


PAGE = Page(name="runs", title="Runs", layout=layout, register=register)
