"""The dashboard's pages, in tab order. Adding a page: one module exposing ``PAGE``, one line here."""

from __future__ import annotations

from . import attribution, gradients, robustness, runs, tables, teacher, training
from .base import AppContext, Page, find_page

PAGES: tuple[Page, ...] = (
    runs.PAGE,
    gradients.PAGE,
    teacher.PAGE,
    robustness.PAGE,
    training.PAGE,
    attribution.PAGE,
    tables.PAGE,
)


def page(name: object) -> Page:
    """The page called ``name``; `AppError` lists the pages otherwise."""
    return find_page(PAGES, name)


__all__ = ["PAGES", "AppContext", "Page", "page"]
