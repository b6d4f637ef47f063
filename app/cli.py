"""``gradscope-dashboard --runs DIR``: serve the dashboard on 127.0.0.1 (``python -m app`` too)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="gradscope-dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="folder of runs to show (default: runs)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8050)
    parser.add_argument("--demo", action="store_true", help="train small demo runs first if the folder has none")
    parser.add_argument("--refresh", type=float, default=5.0, help="seconds between checks for live runs")
    parser.add_argument("--debug", action="store_true", help="Dash debug mode (never on a shared server)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    runs = Path(args.runs)
    if runs.exists() and not runs.is_dir():
        print(f"error: --runs {runs} is a file; give a folder", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port} is not a port number (1-65535)", file=sys.stderr)
        return 2
    from .runs import RunIndex

    if args.demo and not RunIndex(runs).ids():
        from .demo import make_demo

        runs.mkdir(parents=True, exist_ok=True)
        make_demo(runs)
    from .server import create_app

    app = create_app(runs, refresh_seconds=args.refresh)
    print(f"gradscope dashboard on http://{args.host}:{args.port}/ (runs: {runs.resolve()})")
    app.run(host=args.host, port=args.port, debug=args.debug)
    return 0
