"""``python -m trainers``: train one run, run a figure's recipe, summarize results, fetch data.

Bad input ends with one line on stderr and exit status 2; nothing already written is removed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import TrainConfig
from .errors import TrainersError


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``recipe`` (None means: the method's or preset's default)."""
    parser.add_argument("--dataset", help="cifar10, mnist, fashion-mnist, synthetic, ...")
    parser.add_argument("--data-dir", default="data", help="folder holding the data sets (default: data)")
    parser.add_argument("--download", action="store_true", help="download the data set if it is missing")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--train-subset", type=int, metavar="N", help="train on a seeded random N images")
    parser.add_argument("--test-subset", type=int, metavar="N", help="evaluate on the first N test images")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--width", type=int, default=64, help="ResNet base width (64 as in the paper)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--no-record", dest="record", action="store_false", help="do not record gradients")
    parser.add_argument("--record-every", type=int, default=1, metavar="N")
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m trainers``."""
    from .methods import METHODS
    from .models import MODELS

    parser = argparse.ArgumentParser(prog="python -m trainers", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one model with one method")
    train.add_argument("--method", help=", ".join(METHODS))
    train.add_argument("--model", help=", ".join(MODELS))
    train.add_argument("--teacher", help="teacher checkpoint (or run folder) for distillation methods")
    train.add_argument("--out", required=True, help="run folder to create")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    for name in ("alpha", "temperature", "a", "multiplier", "student-temperature", "eps", "step-size"):
        train.add_argument(f"--{name}", type=float)
    train.add_argument("--attack-steps", type=int)
    train.add_argument("--val-size", type=int)
    train.add_argument("--select-on", help="val_acc, val_pgd_acc or last")
    train.add_argument("--patience", type=int)
    train.add_argument("--schedule", help="step, exponential or constant")
    _add_run_options(train)

    recipe = commands.add_parser("recipe", help="run the chain of runs behind one of the poster's figures")
    recipe.add_argument("figure", help="fig1, fig2, fig4 or fig7")
    recipe.add_argument("--seeds", type=int, default=3)
    recipe.add_argument("--out", required=True, help="folder for the recipe's runs")
    _add_run_options(recipe)

    summarize = commands.add_parser("summarize", help="print each figure's table next to the poster's numbers")
    summarize.add_argument("folder", help="a recipe's --out folder (or any folder of runs)")

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


def _train(args: argparse.Namespace) -> None:
    from .loop import train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if not args.resume:
        missing = [f"--{name}" for name in ("method", "model", "dataset") if name not in given]
        if missing:
            raise TrainersError(f"{', '.join(missing)} required (python -m trainers train --help lists them)")
    config = TrainConfig(**{"method": "", "model": "", "dataset": "", **given})
    results = train(config, resume=args.resume, overwrite=args.overwrite)
    print(_one_line(results))


def _one_line(results: dict) -> str:
    if "interrupted_at_epoch" in results:
        return f"stopped after epoch {results['interrupted_at_epoch']}"
    scores = ", ".join(f"{k} {v:.2f}" for k, v in results["best"].items() if v is not None)
    return f"{results['method']} {results['model']} seed {results['seed']}: {scores}"


def _recipe(args: argparse.Namespace) -> None:
    from .recipes import run_recipe

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "figure", "seeds", "out")}
    run_recipe(args.figure, seeds=args.seeds, out=Path(args.out), overrides=overrides)


def _summarize(args: argparse.Namespace) -> None:
    from .summarize import summarize

    print(summarize(Path(args.folder)))


def _download(args: argparse.Namespace) -> None:
    from .data import download_dataset

    download_dataset(args.dataset, Path(args.data_dir))
    print(f"{args.dataset} is ready (found or downloaded; --data-dir {args.data_dir})")


def _methods(args: argparse.Namespace) -> None:
    from .methods import METHODS

    for name, method in METHODS.items():
        teacher = f" [teacher: {'+'.join(method.teacher)}]" if method.teacher else ""
        print(f"{name:14s} {method.summary}{teacher}")


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluate import parse_eps
    from .robustness import evaluate_run

    subset = args.autoattack_subset.split(",") if args.autoattack_subset else None
    evaluation = evaluate_run(args.path, attacks=[a for a in args.attacks.split(",") if a], eps=parse_eps(args.eps),
                              n=args.n, batch_size=args.batch_size, device=args.device, sweep=args.sweep,
                              attacks_to_run=subset)
    for key, entry in evaluation["results"].items():
        breakdown = entry.get("breakdown")
        detail = f"  ({', '.join(f'{k} {v:.2f}' for k, v in breakdown.items())})" if breakdown else ""
        print(f"{key}: {entry['accuracy']:.2f}%{detail}")
    for key, sweep in evaluation["sweeps"].items():
        pairs = ", ".join(f"{e} {a:.2f}" for e, a in zip(sweep["eps_labels"], sweep["accuracy"]))
        print(f"{key}: {pairs}")
    for flag in evaluation["flags"]:
        print(f"WARNING {flag['flag']}: {flag['message']}")


def _attribute(args: argparse.Namespace) -> None:
    from .attribution import attribute_run

    folder = attribute_run(args.path, images=args.images, methods=tuple(args.methods.split(",")), device=args.device)
    print(f"attributions written to {folder}")


COMMANDS = {"train": _train, "recipe": _recipe, "summarize": _summarize, "download": _download,
            "methods": _methods, "evaluate": _evaluate, "attribute": _attribute}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except TrainersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0
