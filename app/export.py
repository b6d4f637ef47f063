"""Downloads offered under every figure: PNG and SVG (kaleido + Chromium), HTML (self-contained) and CSV."""

from __future__ import annotations

import csv
import io
import re
import tempfile
from pathlib import Path
from typing import Any

EXPORT_FORMATS = ("png", "svg", "html", "csv")


def safe_filename(name: str) -> str:
    """A file name from a figure name: letters, digits, dash and underscore only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "figure"


def figure_bytes(figure: dict[str, Any], fmt: str) -> bytes:
    """The figure (a plotly JSON dict, as Dash holds it) rendered as ``fmt``."""
    import plotly.graph_objects as go

    from gradscope.exporting import write_figures

    fig = go.Figure(figure)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"figure.{fmt}"
        write_figures([(fig, path)])
        return path.read_bytes()


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text, columns in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
