"""Render a server-built figure to one of a fixed set of formats, in memory.

Nothing here touches the file system: PNG, SVG and PDF come back from kaleido as bytes
(`kaleido.calc_fig_sync`, MathJax off because its default is a CDN), HTML from plotly as text with
plotly.js inlined (so the file works offline), CSV from the figure's rows. Before rendering, layout
images are kept only when their source is inline data, so no export can embed a file from the
server's disk or fetch a URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from .errors import AppError
from .shared import Rows, csv_text

FORMATS = ("png", "svg", "pdf", "html", "csv")
MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "html": "text/html",
               "csv": "text/csv"}
SCALE = 2.0  # PNG pixels per CSS pixel: sharp on a slide
DEFAULT_SIZE = (900, 500)


def check_format(fmt: object) -> str:
    """``fmt`` if it is one of `FORMATS` (the value from the registry, not the caller's object)."""
    for known in FORMATS:
        if fmt == known:
            return known
    raise AppError(f"unknown download format {str(fmt)[:40]!r}; expected one of: {', '.join(FORMATS)}")


def inline_images_only(fig: go.Figure) -> go.Figure:
    """The figure without layout images whose source is a path or URL (``file://``, ``http://``, ``/x.png``)."""
    images = [im for im in fig.layout.images if isinstance(im.source, str) and im.source.startswith("data:image/")]
    if len(images) != len(fig.layout.images):
        fig.layout.images = images
    return fig


def render(figure: go.Figure | dict[str, Any], rows: Sequence[dict[str, Any]] | Rows, fmt: str) -> bytes:
    """``figure`` (or, for CSV, its ``rows``) as the bytes of a ``fmt`` file."""
    fmt = check_format(fmt)
    if fmt == "csv":
        return csv_text(rows).encode()
    fig = inline_images_only(go.Figure(figure))
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True).encode()
    return _static(fig, fmt)


def _static(fig: go.Figure, fmt: str) -> bytes:
    """PNG, SVG or PDF through kaleido and Chromium, without writing a file."""
    try:
        import kaleido
    except ImportError:
        raise AppError("PNG/SVG/PDF downloads need kaleido: pip install 'gradscope[export]'") from None
    from gradscope.exporting import _find_browser

    _find_browser()
    width = fig.layout.width or DEFAULT_SIZE[0]
    height = fig.layout.height or DEFAULT_SIZE[1]
    try:
        data = kaleido.calc_fig_sync(fig.to_dict(), opts={"format": fmt, "width": width, "height": height,
                                                           "scale": SCALE}, kopts={"mathjax": False})
    except Exception as exc:  # kaleido raises several types when Chromium is missing or fails
        raise AppError(f"{fmt.upper()} rendering failed ({type(exc).__name__}); HTML and CSV need no browser") from exc
    return data if isinstance(data, bytes) else str(data).encode()
