"""Write figures and their data to files: PNG/SVG/PDF through kaleido and Chromium, HTML and CSV without.

kaleido starts a browser for every call, so `write_figures` renders any number of figures in one
session. MathJax is switched off: kaleido's default loads it from a CDN, which fails offline.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import GradscopeError, one_of

STATIC_FORMATS = ("png", "svg", "pdf")
FIGURE_FORMATS = (*STATIC_FORMATS, "html")


def format_of(path: str | os.PathLike[str], accepted: Sequence[str] = FIGURE_FORMATS) -> str:
    """The export format named by ``path``'s extension, checked against ``accepted``."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in accepted:
        raise one_of("output format", suffix or str(path), [f".{a}" for a in accepted])
    return suffix


def check_writable(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if a file can be written there (folders may be created), else `GradscopeError`.

    Checked before anything is computed or written, so a bad output leaves nothing behind.
    """
    path = Path(path)
    if path.is_dir():
        raise GradscopeError(f"cannot write {path}: it is a folder; give a file name")
    folder = path.parent
    while not folder.exists():
        if folder.is_symlink():  # a dangling link: mkdir would fail on it
            raise GradscopeError(f"cannot write {path}: {folder} is a broken link")
        folder = folder.parent
    if not folder.is_dir():
        raise GradscopeError(f"cannot write {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GradscopeError(f"cannot write {path}: no permission to write in {folder}")
    return path


def _find_browser() -> None:
    """Point kaleido at the system Chromium (Debian's ``chromium``) unless told otherwise."""
    if "BROWSER_PATH" not in os.environ:
        for name in ("chromium", "chromium-browser", "google-chrome"):
            found = shutil.which(name)
            if found:
                os.environ["BROWSER_PATH"] = found
                return


def write_figures(items: Iterable[tuple[Any, str | os.PathLike[str]]], scale: float = 2.0) -> list[Path]:
    """Write each ``(figure, path)``; the format follows the extension (.png .svg .pdf .html)."""
    statics, written = [], []
    for fig, path in items:
        path = check_writable(path)
        kind = format_of(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "html":
            fig.write_html(path, include_plotlyjs=True, full_html=True)  # self-contained: works offline
        else:
            statics.append({"fig": fig, "path": path, "opts": {"format": kind, "scale": scale}})
        written.append(path)
    if statics:
        _render_static(statics)
    return written


def _render_static(figures: list[dict[str, Any]]) -> None:
    try:
        import kaleido
    except ImportError:
        raise GradscopeError("PNG/SVG/PDF export needs kaleido: pip install 'gradscope[export]'") from None
    _find_browser()
    try:
        kaleido.write_fig_from_object_sync(figures, kopts={"mathjax": False})
    except Exception as exc:  # kaleido raises several types when Chromium is missing or fails
        raise GradscopeError(
            f"static export failed ({type(exc).__name__}: {exc}). It needs Chromium: install Debian's "
            "'chromium' or set BROWSER_PATH; .html and .csv need no browser"
        ) from exc
    missing = [str(f["path"]) for f in figures if not Path(f["path"]).is_file()]
    if missing:
        raise GradscopeError(f"static export wrote nothing to {', '.join(missing)}")


def write_figure(fig: Any, path: str | os.PathLike[str], scale: float = 2.0) -> Path:
    """Write one figure; see `write_figures`."""
    return write_figures([(fig, path)], scale)[0]


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write dict rows as CSV with a header from the first row's keys."""
    path = check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)
    return path
