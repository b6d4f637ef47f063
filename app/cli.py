"""``gradscope-dashboard --runs DIR``: serve the dashboard on 127.0.0.1 (``python -m app`` too).

Every option is checked before anything starts, and a bad one is a one-line error naming the value
and what is accepted. With ``--demo`` the server answers at once while the demo runs train in a
background process (`app.demo`), which is stopped when the dashboard stops.
"""

from __future__ import annotations

import argparse
import math
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .demo import SIZES

REFRESH_RANGE = (0.5, 3600.0)  # seconds between checks for live runs


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; give an integer from 1 to 65535")
    return port


def _refresh(text: str) -> float:
    low, high = REFRESH_RANGE
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not low <= seconds <= high:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted: give the seconds between checks for live runs, "
                                         f"from {low:g} to {high:g}")
    return seconds


def _host(text: str) -> str:
    if not text or text != text.strip() or any(c in text for c in "/ \t\n?#@"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name or IP address (e.g. 127.0.0.1, "
                                         "0.0.0.0 for every interface)")
    return text


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = _Parser(prog="gradscope-dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", type=Path, help="folder of runs to show (default: runs)")
    parser.add_argument("--host", default="127.0.0.1", type=_host,
                        help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=_port, default=8050, help="port to serve on (default 8050)")
    parser.add_argument("--demo", action="store_true",
                        help="train small demo runs in the background if the folder has none (or an unfinished demo)")
    parser.add_argument("--demo-size", choices=sorted(SIZES), default="full", help=argparse.SUPPRESS)  # tests
    parser.add_argument("--refresh", type=_refresh, default=5.0,
                        help=f"seconds between checks for live runs ({REFRESH_RANGE[0]:g} to {REFRESH_RANGE[1]:g}; "
                        "default 5)")
    parser.add_argument("--debug", action="store_true", help="Dash debug mode (never on a shared server)")
    return parser


def _check_bind(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` (None when it can), found before anything starts."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"--host {host!r} does not resolve to an address of this machine"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port or --host"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    runs: Path = args.runs.expanduser()
    if runs.exists() and not runs.is_dir():
        parser.error(f"--runs {str(runs)!r} is a file; give a folder of runs")
    problem = _check_bind(args.host, args.port)
    if problem:
        parser.error(problem)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so the demo process is stopped on the way out

    from .server import create_app

    if args.demo:
        from .demo import DemoFiles, needs_demo, start_demo

        if needs_demo(runs):
            runs.mkdir(parents=True, exist_ok=True)
            start_demo(runs, args.demo_size)
            print(f"demo: training small runs in the background; they appear on the Runs page as they start "
                  f"(log: {DemoFiles(runs).log})", flush=True)
    app = create_app(runs, refresh_seconds=args.refresh)
    print(f"gradscope dashboard on http://{args.host}:{args.port}/ (runs: {runs.resolve()})", flush=True)
    app.run(host=args.host, port=args.port, debug=args.debug)
    return 0
