"""``python -m trainers``: train one run, run a figure's recipe, summarize results, fetch data.

Bad input ends with one line on stderr and exit status 2; nothing already written is removed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from gradscope.errors import GradscopeError

from .config import TrainConfig, check_fields, flag
from .errors import TrainersError
from .run_folder import RunFolder


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one-line `TrainersError`s, like every other error."""

    def error(self, message: str) -> NoReturn:
        raise TrainersError(f"{message} ({self.prog} --help lists the options)")


RECIPE_FIXED = ("method", "model", "teacher", "out", "seed")  # a recipe sets these for each of its runs


def add_config_options(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One option per `TrainConfig` field (except ``skip`` and fields the run fills itself).

    Flags, types, help, ranges and choices come from the dataclass; an option not given is absent
    from the parsed namespace, so only what the user typed overrides the defaults.
    """
    hints = typing.get_type_hints(TrainConfig)
    for spec in dataclasses.fields(TrainConfig):
        meta = spec.metadata
        if spec.name in skip or not meta.get("cli", True):
            continue
        hint = hints[spec.name]
        kind = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        help_text = meta.get("help", "")
        if meta.get("choices"):
            help_text += f"; one of: {', '.join(meta['choices'])}"
        if meta.get("bounds") is not None:
            help_text += f"; {meta['bounds'].describe()}"
        if spec.default is None:
            help_text += " (default: the method's or schedule's)"
        elif spec.default is not dataclasses.MISSING:
            help_text += f" (default: {spec.default})"
        options: dict[str, Any] = {"dest": spec.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is list:
            options.update(nargs="+", type=typing.get_args(kind)[0], metavar="N")
        else:
            options["type"] = kind
        parser.add_argument(flag(spec.name), **options)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m trainers``."""
    parser = _Parser(prog="python -m trainers", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one model with one method")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a run already in --out (all of its state: evaluation, attribution, record)")
    add_config_options(train)

    recipe = commands.add_parser("recipe", help="run the chain of runs behind one of the poster's figures")
    recipe.add_argument("figure", help="fig1, fig2, fig4 or fig7")
    recipe.add_argument("--seeds", type=int, default=3)
    recipe.add_argument("--out", required=True, help="folder for the recipe's runs")
    add_config_options(recipe, skip=RECIPE_FIXED)

    summarize = commands.add_parser("summarize", help="print each figure's table next to the poster's numbers")
    summarize.add_argument("folder", help="a recipe's --out folder (or any folder of runs)")

    ratios = commands.add_parser("gradient-ratios",
                                 help="Figure 6 as numbers: each run's layer gradients over its seed's baseline")
    ratios.add_argument("folder", help="a recipe's --out folder, a figure's folder or one seed's folder")
    ratios.add_argument("--baseline", default="baseline", help="the run each seed's other runs are compared with")
    ratios.add_argument("--stat", default="mean_abs", help="mean_abs, l2 or max_abs (default mean_abs)")
    ratios.add_argument("--window", type=float, nargs=2, default=(0.0, 1.0), metavar=("START", "STOP"),
                        help="part of training to average over, as fractions (default 0 1)")

    download = commands.add_parser("download", help="fetch a data set with torchvision")
    download.add_argument("dataset")
    download.add_argument("--data-dir", default="data")

    evaluate = commands.add_parser("evaluate", help="clean, PGD-20, ε sweep and AutoAttack accuracy of a run")
    evaluate.add_argument("path", help="run folder (its best, else last checkpoint) or checkpoint file")
    evaluate.add_argument("--attacks", default="clean,pgd,autoattack", help="comma-separated: clean, pgd, autoattack")
    evaluate.add_argument("--eps", default="8/255", help="L∞ radius in pixel units, e.g. 8/255")
    evaluate.add_argument("--n", type=int, help="evaluate the first N test images (default: all)")
    evaluate.add_argument("--batch-size", type=int)
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--autoattack-subset", help="comma-separated AutoAttack attacks (default: the standard four)")
    evaluate.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the ε sweep")

    attribute = commands.add_parser("attribute", help="Captum attribution maps of a run on fixed test images")
    attribute.add_argument("path", help="run folder or checkpoint file")
    attribute.add_argument("--images", type=int, default=8)
    attribute.add_argument("--methods", default="saliency,ig,gradcam")
    attribute.add_argument("--device", default="cpu")

    commands.add_parser("methods", help="list the methods and their defaults")
    return parser


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The `TrainConfig` fields the user set on the command line."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in fields}


def _train(args: argparse.Namespace) -> None:
    from .loop import RESUME_OVERRIDES, train

    given = _given(args)
    if args.resume and args.overwrite:
        raise TrainersError("--resume and --overwrite exclude each other: --resume continues the run in --out, "
                            "--overwrite replaces it")
    required = ("out",) if args.resume else ("method", "model", "dataset", "out")
    missing = [flag(name) for name in required if name not in given]
    if missing:
        raise TrainersError(f"{', '.join(missing)} required (python -m trainers train --help lists the options)")
    if args.resume:
        fixed = [flag(name) for name in given if name not in (*RESUME_OVERRIDES, "out")]
        if fixed:
            raise TrainersError(f"{', '.join(fixed)} cannot change on --resume (the run's config.json holds it); "
                                f"--resume accepts {', '.join(flag(n) for n in RESUME_OVERRIDES)}")
    config = TrainConfig(**{"method": "", "model": "", "dataset": "", **given})
    check_fields(config)
    results = train(config, resume=args.resume, overwrite=args.overwrite)
    print(_one_line(results))


def _one_line(results: dict) -> str:
    if "interrupted_at_epoch" in results:
        return f"stopped after epoch {results['interrupted_at_epoch']}"
    scores = ", ".join(f"{k} {v:.2f}" for k, v in results["best"].items() if v is not None)
    return f"{results['method']} {results['model']} seed {results['seed']}: {scores}"


def _recipe(args: argparse.Namespace) -> None:
    from .recipes import run_recipe

    run_recipe(args.figure, seeds=args.seeds, out=Path(args.out), overrides=_given(args))


def _summarize(args: argparse.Namespace) -> None:
    from .summarize import summarize

    print(summarize(Path(args.folder)))


def _gradient_ratios(args: argparse.Namespace) -> None:
    from gradscope.stats import STATS

    from .gradient_ratios import compare, ratio_lines

    if args.stat not in STATS[:3]:
        raise TrainersError(f"--stat {args.stat!r}: expected one of: {', '.join(STATS[:3])}")
    start, stop = args.window
    if not 0.0 <= start < stop <= 1.0:
        raise TrainersError(f"--window {start:g} {stop:g}: expected 0 <= START < STOP <= 1")
    summaries = compare(Path(args.folder), args.baseline, args.stat, (start, stop))
    print("\n".join(ratio_lines(summaries, args.baseline, args.stat)))


def _download(args: argparse.Namespace) -> None:
    from .data import download_dataset

    download_dataset(args.dataset, Path(args.data_dir))
    print(f"{args.dataset} is ready (found or downloaded; --data-dir {args.data_dir})")


def _methods(args: argparse.Namespace) -> None:
    from .methods import METHODS

    for name, method in METHODS.items():
        teacher = f" [teacher: {'+'.join(method.teacher)}]" if method.teacher else ""
        print(f"{name:14s} {method.summary}{teacher}")


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise TrainersError(f"{name} must be a positive integer, got {value}")


def _writable_run(path: str, device: str) -> RunFolder:
    """The run folder an evaluation or attribution of ``path`` writes into, after checking its checkpoint.

    The checkpoint is read (and its model rebuilt) before anything is written, so a bad one is refused
    without a trace; the caller then holds the folder's writer lock while it writes.
    """
    from .restore import restore

    if device.startswith("cuda") and not torch_cuda_available():
        raise TrainersError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return RunFolder(restore(path, "cpu").run_dir)


def torch_cuda_available() -> bool:
    """Whether CUDA is usable (torch imported only when asked)."""
    import torch

    return torch.cuda.is_available()


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluate import ATTACKS, STANDARD_AUTOATTACK, parse_eps
    from .robustness import evaluate_run, evaluation_lines

    eps = parse_eps(args.eps)
    attacks = [a for a in args.attacks.split(",") if a]
    if not attacks:
        raise TrainersError("--attacks is empty; give some of: " + ", ".join(ATTACKS))
    for attack in attacks:
        ATTACKS.get(attack)
    subset = [a for a in args.autoattack_subset.split(",") if a] if args.autoattack_subset else None
    unknown = sorted(set(subset or ()) - set(STANDARD_AUTOATTACK))
    if unknown or subset == []:
        raise TrainersError(f"--autoattack-subset {args.autoattack_subset!r}: expected some of: "
                            + ", ".join(STANDARD_AUTOATTACK))
    _positive("--n", args.n)
    _positive("--batch-size", args.batch_size)
    with _writable_run(args.path, args.device).writing():
        evaluation = evaluate_run(args.path, attacks=attacks, eps=eps, n=args.n, batch_size=args.batch_size,
                                  device=args.device, sweep=args.sweep, attacks_to_run=subset)
    print("\n".join(evaluation_lines(evaluation)))


def _attribute(args: argparse.Namespace) -> None:
    from .attribution import attribute_run

    _positive("--images", args.images)
    with _writable_run(args.path, args.device).writing():
        folder = attribute_run(args.path, images=args.images, methods=tuple(args.methods.split(",")),
                               device=args.device)
    print(f"attributions written to {folder}")


COMMANDS = {"train": _train, "recipe": _recipe, "summarize": _summarize, "gradient-ratios": _gradient_ratios,
            "download": _download, "methods": _methods, "evaluate": _evaluate, "attribute": _attribute}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        COMMANDS[args.command](args)
    except (TrainersError, GradscopeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0
