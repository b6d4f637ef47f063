"""``python -m app.screenshots --runs DIR --out docs/img``: a screenshot of every page, for the README.

Serves the dashboard on a free local port, opens each page in headless Chromium (selenium and
Debian's ``chromium-driver``, as the browser tests use) with the chosen runs selected, waits until
the page has drawn and saves ``<page>.png``. Tests never write into the repository; this command is
the one place the README's images come from.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

from .errors import AppError

WAIT_SECONDS = 60.0
SETTLE_SECONDS = 1.0  # plotly's transitions and fonts settle after the first draw
READY = {"runs": "#runs-table td", "tables": "#tables h3"}  # pages without figures: what shows they are drawn


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m app.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="folder of runs to show")
    parser.add_argument("--out", default="docs/img", help="folder the PNGs are written to (default docs/img)")
    parser.add_argument("--select", default="", help="comma-separated run ids (default: up to 6 finished runs)")
    parser.add_argument("--pages", default="", help="comma-separated pages (default: all)")
    parser.add_argument("--size", default="1400x1000", help="window size WIDTHxHEIGHT (default 1400x1000)")
    return parser


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise AppError(f"--size {text!r} is not WIDTHxHEIGHT (for example 1400x1000)") from None
    if not (320 <= width <= 4000 and 240 <= height <= 4000):
        raise AppError(f"--size {text!r} is out of range; width 320-4000, height 240-4000")
    return width, height


def _driver(width: int, height: int):  # noqa: ANN202  (selenium's type, imported lazily)
    """Headless Chromium through chromedriver."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    browser = next((found for name in ("chromium", "chromium-browser", "google-chrome")
                    if (found := shutil.which(name))), None)
    if browser:
        options.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    try:
        return webdriver.Chrome(options=options)
    except Exception as exc:  # selenium raises several types when chromedriver or Chromium is missing
        raise AppError(f"cannot start headless Chromium ({type(exc).__name__}); install Debian's chromium and "
                       "chromium-driver") from exc


def take(runs: Path, out: Path, select: Sequence[str] = (), pages: Sequence[str] = (),
         size: tuple[int, int] = (1400, 1000)) -> list[Path]:
    """Screenshot each page of the dashboard over ``runs`` into ``out``; returns the files written."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait
    from werkzeug.serving import make_server

    from .pages import PAGES, page
    from .runs import RunIndex
    from .server import create_app

    if not runs.is_dir():
        raise AppError(f"--runs {runs} is not a folder of runs")
    chosen = [page(name) for name in pages] if pages else list(PAGES)
    run_ids = list(select) or [r.id for r in RunIndex(runs).scan() if r.status == "finished"][:6]
    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = make_server("127.0.0.1", 0, create_app(runs).server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    driver = _driver(*size)
    written = []
    try:
        for p in chosen:
            query = urlencode({"page": p.name, "runs": ",".join(run_ids)})
            driver.get(f"http://127.0.0.1:{server.server_port}/?{query}")
            ready = READY.get(p.name) or f"#card-{p.figures[0].name} .js-plotly-plot .main-svg"
            WebDriverWait(driver, WAIT_SECONDS).until(
                expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ready)))
            WebDriverWait(driver, WAIT_SECONDS).until(lambda d: not d.find_elements(
                By.CSS_SELECTOR, "[data-dash-is-loading='true']"))
            time.sleep(SETTLE_SECONDS)
            path = out / f"{p.name}.png"
            driver.save_screenshot(str(path))
            written.append(path)
    finally:
        driver.quit()
        server.shutdown()
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        written = take(Path(args.runs), Path(args.out), [s for s in args.select.split(",") if s],
                       [s for s in args.pages.split(",") if s], _size(args.size))
    except AppError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
