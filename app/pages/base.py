"""What a page is: its layout, its controls, its figures and how they are filled.

A page module builds one `Page`. Its figures are builders ``View -> (figure, csv rows)``: the page's
display callback and the download callback (`app.downloads`) call the same builder, so a download is
the figure on screen, rebuilt on the server from the runs folder and the validated control values.

Adding a page: a module in ``app/pages/`` with its layout (cards from `app.components.figure_card`),
its data and figure functions, its `Control` checks and ``PAGE = Page(...)``, and one line in
`app.pages.PAGES`. The standard callbacks (`register_display`) need nothing more; a page with other
outputs passes ``extras`` or its own ``register``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import dash
import plotly.graph_objects as go
from dash import Input, Output, State, no_update

from gradscope import GradscopeError, Record

from ..components import graph_id
from ..errors import AppError
from ..runs import RunIndex, RunInfo
from ..selection import PICKER, TABS, VERSION, Selection
from ..shared import Rows, message_figure
from ..validate import shown

FigureLike = go.Figure | dict[str, Any]


@dataclass(frozen=True)
class AppContext:
    """What every callback reads: the runs folder and the selection over it."""

    index: RunIndex
    selection: Selection


@dataclass(frozen=True)
class Control:
    """A control of a page: the component whose ``value`` is read, and the check that value must pass.

    ``check`` is one of `app.validate`'s validators, called as ``check(kind, value, *args, **options)``:
    it returns the value to use (``2.0`` from a slider becomes ``2`` for `integer`) or raises
    `AppError` naming what it accepts. It runs on every value a client sends, for display and
    download alike.
    """

    id: str
    kind: str
    check: Callable[..., Any]
    args: tuple[Any, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def read(self, value: Any) -> Any:
        """``value`` checked."""
        return self.check(self.kind, value, *self.args, **self.options)


class View:
    """One drawing of a page: the checked selection and controls, with runs and records read once."""

    def __init__(self, ctx: AppContext, run_ids: Any, controls: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.run_ids, self.refused = ctx.selection.check(run_ids)
        self.controls = dict(controls)

    @cached_property
    def runs(self) -> list[RunInfo]:
        """The selected runs that exist."""
        return self.ctx.selection.runs(self.run_ids)

    @cached_property
    def loaded(self) -> tuple[dict[str, Record], dict[str, str]]:
        """Gradient records of the selected runs by label, and the problem of each that failed to load."""
        return self.ctx.selection.records(self.run_ids)

    @property
    def records(self) -> dict[str, Record]:
        """Gradient records of the selected runs by label."""
        return self.loaded[0]


Builder = Callable[[View], tuple[FigureLike, Rows]]


@dataclass(frozen=True)
class FigureSpec:
    """One figure of a page: a name unique across the app (its card, its download's file name).

    ``uses`` names the page controls the builder reads (empty: all of them); the figure is redrawn
    only when one of those, the selection or the tick changes.
    """

    name: str
    title: str
    build: Builder
    height: int = 420
    uses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Page:
    """A page (tab) of the dashboard.

    Attributes:
        name: URL and tab value (``gradients``).
        title: the tab's label.
        layout: builds the page's components.
        figures: its figures, in the order the display callback fills them.
        controls: control name -> `Control`; builders read ``view.controls[name]``.
        extra_outputs / extras: more outputs of the display callback (notes, options) and the
            function filling them from the same `View`.
        live: redraw when a selected run's files change, checked on every tick (pages showing runs still training).
        register: a page's own callbacks, replacing the standard display callback (`register_display`).
    """

    name: str
    title: str
    layout: Callable[[], Any]
    figures: Sequence[FigureSpec] = ()
    controls: Mapping[str, Control] = field(default_factory=dict)
    extra_outputs: Sequence[Output] = ()
    extras: Callable[[View], Sequence[Any]] | None = None
    live: bool = True
    register: Callable[[dash.Dash, AppContext, Page], None] | None = None

    def figure(self, name: object) -> FigureSpec:
        """The figure called ``name``, or `AppError` listing this page's figures."""
        for spec in self.figures:
            if spec.name == name:
                return spec
        raise AppError(f"no figure {shown(name)} on page {self.name}; expected one of: "
                       f"{', '.join(s.name for s in self.figures)}")

    def read_controls(self, values: Sequence[Any]) -> dict[str, Any]:
        """Control values in `controls` order, each checked; `AppError` names the first bad one."""
        return {key: control.read(value) for (key, control), value in zip(self.controls.items(), values)}

    def view(self, ctx: AppContext, run_ids: Any, values: Sequence[Any]) -> View:
        """A `View` of this page with checked controls."""
        return View(ctx, run_ids, self.read_controls(values))

    def attach(self, app: dash.Dash, ctx: AppContext) -> None:
        """Register the page's callbacks."""
        (self.register or register_display)(app, ctx, self)


def find_page(pages: Sequence[Page], name: object) -> Page:
    """The page of ``pages`` called ``name``; `AppError` lists them otherwise."""
    for page in pages:
        if page.name == name:
            return page
    raise AppError(f"no page {shown(name)}; expected one of: {', '.join(p.name for p in pages)}")


def build_or_message(spec: FigureSpec, view: View) -> tuple[FigureLike, Rows]:
    """``spec.build(view)``, or a figure saying what was wrong with the input or the files."""
    try:
        return spec.build(view)
    except (AppError, GradscopeError) as exc:
        return message_figure(str(exc)), []


def register_display(app: dash.Dash, ctx: AppContext, page: Page) -> None:
    """The standard display callbacks: one per figure, and one for the page's extras.

    A figure's callback takes the selection, the controls it uses (and, on live pages, the selection's
    version, which changes when a selected run's files do), so moving one control redraws only the
    figures that read it, and figures of a page are computed in parallel requests. Each works only while
    its page is the visible tab, so a selection change costs one page's work.
    """
    # live pages: the version follows the selection and its files; the selection itself is then read as state
    selection = ([Input(TABS, "value"), Input(VERSION, "data")], [State(PICKER, "value")]) if page.live \
        else ([Input(TABS, "value"), Input(PICKER, "value")], [])
    for spec in page.figures:
        _register_figure(app, ctx, page, spec, selection)
    if page.extras is None:
        return
    extras, outputs = page.extras, list(page.extra_outputs)
    inputs, states = selection

    @app.callback(outputs, inputs, states)
    def display_extras(tab: Any, *rest: Any) -> Any:
        if tab != page.name:
            return [no_update] * len(outputs)
        return list(extras(View(ctx, rest[-1], {})))


def _register_figure(app: dash.Dash, ctx: AppContext, page: Page, spec: FigureSpec,
                     selection: tuple[list[Input], list[State]]) -> None:
    keys = [k for k in page.controls if not spec.uses or k in spec.uses]
    inputs, states = selection
    controls = [Input(page.controls[k].id, "value") for k in keys]

    @app.callback(Output(graph_id(spec.name), "figure"), [*inputs, *controls], states)
    def display(tab: Any, second: Any, *rest: Any) -> Any:
        if tab != page.name:
            return no_update
        values, run_ids = (rest[:-1], rest[-1]) if states else (rest, second)
        try:
            view = View(ctx, run_ids, {k: page.controls[k].read(v) for k, v in zip(keys, values)})
        except AppError as exc:
            return message_figure(str(exc))
        return build_or_message(spec, view)[0]


def label_or_none(kind: str, value: object, max_length: int = 512) -> str | None:
    """None or a short string: a run label, checked later against the selected runs' labels."""
    if value is None or (isinstance(value, str) and len(value) <= max_length):
        return value
    raise AppError(f"{kind} {shown(value)} is not a run label")
