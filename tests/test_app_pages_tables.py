"""Tables page: `trainers.summarize.poster_tables` formatted, ours beside the poster's numbers."""

from __future__ import annotations

import csv
import io

from test_summarize import autoattack, run

from app.pages import tables as page
from app.shared import csv_text
from trainers.references import POSTER
from trainers.summarize import poster_tables


def _html_text(component) -> str:
    """Every string inside a Dash component tree."""
    if isinstance(component, str):
        return component
    children = getattr(component, "children", None)
    children = children if isinstance(children, list) else [children] if children is not None else []
    return " ".join(_html_text(c) for c in children)


def test_the_page_formats_summarizes_rows_it_does_not_recompute_them():
    runs = [run("tfkd-reg", "tfkd-reg", s, v, recipe="fig4") for s, v in ((0, 95.0), (1, 95.5))]
    runs += [run("at", "at", 0, 90.0, entries={"best/autoattack/eps=8/255/n=200": autoattack(47.0, clean=84.0)}),
             run("at-kd", "at-kd", 0, 82.0, pgd=51.0)]
    tables = poster_tables(runs)
    views = {t.figure: _html_text(page.table_view(t)) for t in tables}
    assert list(views) == ["fig1", "fig2", "fig4", "fig7"]
    assert "95.25 ± 0.35" in views["fig4"] and "95.39" in views["fig4"]
    assert "PGD-20 (fallback: AutoAttack not run)" in views["fig7"] and "51.00 (1 seed)" in views["fig7"]
    assert "84.00 (1 seed)" in views["fig7"]  # clean from AutoAttack's own images, not results.json's 90
    flat = page.poster_table_csv_rows(tables)
    assert len(flat) == sum(len(t.rows) for t in tables)
    parsed = list(csv.DictReader(io.StringIO(csv_text(flat))))
    assert {r["ours"] for r in parsed if r["figure"] == "fig4" and r["run"] == "tfkd-reg"} == {"95.25 ± 0.35"}


def test_the_posters_numbers_are_not_shown_beside_runs_on_another_data_set():
    fashion = [run("baseline", "baseline", 0, 91.0, recipe="fig4", dataset="fashion-mnist")]
    fig4 = next(t for t in poster_tables(fashion) if t.figure == "fig4")
    text = _html_text(page.table_view(fig4))
    assert "measured on fashion-mnist" in text and "Not shown beside runs on fashion-mnist" in text
    poster = POSTER["fig4"][1]["baseline"]["test_acc"]
    cells = [row.poster for row in fig4.rows]
    assert cells == [None] * len(cells)  # never in the table's poster column ...
    assert f"The poster measured on cifar10: baseline clean {poster:.2f}" in text  # ... but named by data set
