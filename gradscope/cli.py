"""``gradscope`` command line: export heatmaps of records, and describe a record.

gradscope heatmap runs/baseline runs/tfkd-reg runs/tfkd-self -o fig6.png -o fig6.csv
gradscope info runs/baseline
gradscope cache runs/*/            # aggregate finished records once, for fast dashboards
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from .errors import GradscopeError
from .exporting import FIGURE_FORMATS, check_writable, format_of, write_csv, write_figures
from .figures import COLUMN_LEVELS, as_titled_records, heatmap, heatmap_grids, heatmap_rows
from .record import NORMALIZATIONS, RecordWarning
from .stats import STATS


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line like every other gradscope error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_window(text: str) -> tuple[float, float]:
    """``"0:0.1"`` -> (0.0, 0.1): a part of training as fractions of the recorded steps."""
    try:
        lo, hi = (float(x) if x else d for x, d in zip(text.split(":"), (0.0, 1.0), strict=True))
    except ValueError:
        raise argparse.ArgumentTypeError(f"window {text!r} must look like START:STOP, e.g. 0:0.1 or 0.9:1") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise argparse.ArgumentTypeError(f"window {text!r} needs 0 <= START < STOP <= 1")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``gradscope``."""
    parser = _Parser(prog="gradscope", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    hm = commands.add_parser("heatmap", help="export the Figure-6 heatmap of one or more runs")
    hm.add_argument("runs", nargs="+", help="record folders, or run folders holding gradscope/")
    hm.add_argument("-o", "--output", action="append", required=True,
                    help=f"output file, repeatable; format from extension: {', '.join(FIGURE_FORMATS)}, csv")
    hm.add_argument("--stat", default="mean_abs", choices=STATS)
    hm.add_argument("--columns", default="stage", choices=COLUMN_LEVELS, help="x axis: stages or ResBlocks")
    hm.add_argument("--window", type=parse_window, default=(0.0, 1.0),
                    help="part of training to average, as fractions: 0:0.1 early, 0.9:1 late (default 0:1)")
    hm.add_argument("--linear", action="store_true", help="linear colour scale (default log10)")
    hm.add_argument("--robust", action="store_true", help="clip colours to the 2nd-98th percentile")
    hm.add_argument("--normalize", default="none", choices=list(NORMALIZATIONS),
                    help="none: the statistic; global: each step divided by the run's global gradient norm")
    hm.add_argument("--titles", help="comma-separated panel titles, one per run")
    hm.add_argument("--scale", type=float, default=2.0, help="pixel scale of PNG output (0 < scale <= 10)")

    info = commands.add_parser("info", help="describe a record: steps, groups, problems")
    info.add_argument("run")

    cache = commands.add_parser("cache", help="compute every view of finished records now and keep it in their "
                                "cache/, so that their first view in the dashboard is fast")
    cache.add_argument("runs", nargs="+", help="record folders, or run folders holding gradscope/")
    cache.add_argument("--normalize", action="append", choices=list(NORMALIZATIONS),
                       help="views to prepare, repeatable (default: none)")
    return parser


def run_heatmap(args: argparse.Namespace) -> None:
    """Export the heatmap of ``args.runs`` to every ``args.output``; every check before any write."""
    if not 0.0 < args.scale <= 10.0:
        raise GradscopeError(f"--scale {args.scale:g} must be a pixel scale above 0 and at most 10")
    kinds = [format_of(path, (*FIGURE_FORMATS, "csv")) for path in args.output]
    for path in args.output:
        check_writable(path)
    titles = args.titles.split(",") if args.titles else []
    if titles and len(titles) != len(args.runs):
        raise GradscopeError(f"--titles has {len(titles)} names for {len(args.runs)} runs")
    records = as_titled_records(dict(zip(titles, args.runs)) if titles else args.runs)
    view = {"stat": args.stat, "columns": args.columns, "window": args.window, "normalize": args.normalize}
    rows = heatmap_rows(heatmap_grids(records, **view), args.stat, args.window, args.normalize)
    fig = heatmap(records, **view, log=not args.linear, robust=args.robust)
    for path in (p for p, k in zip(args.output, kinds) if k == "csv"):
        write_csv(rows, path)
    write_figures([(fig, p) for p, k in zip(args.output, kinds) if k != "csv"], scale=args.scale)
    for path in args.output:
        print(f"wrote {path}")


def run_info(args: argparse.Namespace) -> None:
    """Print a short description of a record, and its problems."""
    (title, record), = as_titled_records(args.run).items()
    meta = record.meta
    steps = record.steps
    span = f"steps {steps[0]}..{steps[-1]}" if len(steps) else "no steps yet"
    model = meta.get("model", "unknown model")
    print(f"{title}: {model}, {len(record.param_names)} parameter tensors, {len(steps)} recorded ({span})")
    written = meta.get("written")
    state = "open (live, or its process ended abruptly)" if not record.closed else (
        f"closed after writing {written['steps']} steps in {written['frames']} frames ({written['bytes']} bytes)"
        if written else "closed")
    print(f"  trigger {meta.get('trigger', '?')}, every {meta.get('every', '?')}, {state}")
    for level in ("layer", "block", "stage"):
        names = record.names(level)
        print(f"  {level}s ({len(names)}): {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
    if record.skipped.any():
        print(f"  skipped optimizer steps: {int(record.skipped.sum())}")
    if record.tags:
        print(f"  tags: {record.tags}")
    for problem in record.problems:
        print(f"  problem: {problem}")
    if not record.problems:
        print("  no problems found")


def run_cache(args: argparse.Namespace) -> None:
    """Compute and keep every level and statistic of each record (`Record.prepare`)."""
    for title, record in as_titled_records(args.runs).items():
        record.prepare(normalize=args.normalize or ["none"])
        where = "kept in its cache/" if record.cached else "not kept: the record is live or its folder read-only"
        print(f"{title}: {len(record)} steps, every view computed; {where}")


COMMANDS = {"heatmap": run_heatmap, "info": run_info, "cache": run_cache}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; bad input ends with one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RecordWarning)  # `info` prints problems itself
            COMMANDS[args.command](args)
    except GradscopeError as exc:
        print(f"gradscope: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the disk refused a write checked as possible (full, removed meanwhile)
        print(f"gradscope: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
