"""One command per figure of the poster: the chain of runs behind it, teachers before students.

``python -m trainers recipe fig4 --seeds 3 --out runs`` trains, for each seed, every run of the
figure into ``runs/fig4/seed<s>/<run>``. Every run's options are validated before the first starts.
A finished run whose results are current (same options) is skipped and an interrupted one resumed, so
a recipe can be rerun after a crash; a folder holding a run with other options is refused, never
replaced. Hyperparameters are the methods' and schedules' defaults (the poster's); the options given
override them for every run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig, check_fields
from .errors import TrainersError
from .references import poster_numbers
from .registry import Registry
from .run_folder import RunFolder


@dataclass(frozen=True)
class RunSpec:
    """One run of a recipe; ``teacher`` names an earlier run of the same seed."""

    name: str
    method: str
    model: str
    teacher: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """The runs behind one figure, in the order they must run, and the poster's numbers for them."""

    figure: str
    title: str
    dataset: str
    runs: tuple[RunSpec, ...]
    poster: dict[str, dict[str, float]]  # run name -> metric -> poster's value (from trainers.references)
    figures: tuple[str, ...] = ()  # figures drawn from each seed's gradscope records once its runs finish
    show_parameters: bool = False  # the figure's table reports parameter counts (Figure 1)


RECIPES = Registry[Recipe]("recipe")

for _recipe in (
    Recipe("fig1", "Vanilla KD: large and small MLPs (no KD, KD); poster on MNIST", "mnist", (
        RunSpec("teacher", "baseline", "mlp-teacher"),
        RunSpec("student", "baseline", "mlp-student"),
        RunSpec("student-kd", "kd", "mlp-student", teacher="teacher"),
    ), poster_numbers("fig1"), show_parameters=True),
    Recipe("fig2", "Reversed KD: ResNet18 teaching ResNet50; poster on CIFAR-10", "cifar10", (
        RunSpec("teacher", "baseline", "resnet50"),
        RunSpec("student", "baseline", "resnet18"),
        RunSpec("rekd", "rekd", "resnet50", teacher="student"),
    ), poster_numbers("fig2")),
    Recipe("fig4", "Teacher-free KD: ResNet18 (records give Figure 6); poster on CIFAR-10", "cifar10", (
        RunSpec("baseline", "baseline", "resnet18"),
        RunSpec("tfkd-reg", "tfkd-reg", "resnet18"),
        RunSpec("tfkd-self", "tfkd-self", "resnet18", teacher="baseline"),
    ), poster_numbers("fig4"), figures=("fig6.html", "fig6.csv")),
    Recipe("fig7", "Adversarial teacher-free KD: ResNet18, PGD-7 AT; poster on CIFAR-10", "cifar10", (
        RunSpec("at", "at", "resnet18"),
        RunSpec("at-kd", "at-kd", "resnet18", teacher="at"),
        RunSpec("at-tfkd-reg", "at-tfkd-reg", "resnet18"),
        RunSpec("at-tfkd-self", "at-tfkd-self", "resnet18", teacher="at"),
        # the literature beside them (trainers.references), each with its own schedule; distillers learn from `at`
        RunSpec("trades", "trades", "resnet18"),
        RunSpec("mart", "mart", "resnet18"),
        RunSpec("ard", "ard", "resnet18", teacher="at"),
        RunSpec("rslad", "rslad", "resnet18", teacher="at"),
        RunSpec("iad", "iad", "resnet18", teacher="at"),
    ), poster_numbers("fig7")),
):
    RECIPES.add(_recipe.figure, _recipe)


def run_folder(out: Path, figure: str, seed: int, run: str) -> Path:
    """Where one run of a recipe lives."""
    return out / figure / f"seed{seed}" / run


def plan(figure: str, *, seeds: int, out: Path, overrides: dict[str, Any]) -> list[TrainConfig]:
    """The configs of every run of ``figure``, seed by seed, teachers first."""
    recipe = RECIPES.get(figure)
    if seeds < 1:
        raise TrainersError(f"--seeds must be a positive integer, got {seeds!r}")
    given = {k: v for k, v in overrides.items() if v is not None}
    configs = []
    for seed in range(seeds):
        for spec in recipe.runs:
            teacher = str(run_folder(out, figure, seed, spec.teacher)) if spec.teacher else None
            configs.append(TrainConfig(**{
                "dataset": recipe.dataset, **spec.options, **given, "method": spec.method, "model": spec.model,
                "teacher": teacher, "seed": seed, "out": str(run_folder(out, figure, seed, spec.name)),
                "extras": {"recipe": figure, "run": spec.name},
            }))
    return configs


# Options that do not change what a run computes; a finished run stays current when only these differ.
RUNTIME_ONLY = ("out", "teacher", "device", "progress", "download", "data_dir", "compile", "eval_batch_size",
                "extras", "num_classes", "in_shape", "epochs", "patience")


def _resolved(config: TrainConfig, num_classes: int | None = None) -> TrainConfig:
    """A resolved copy of a planned config (defaults filled; ``num_classes`` fills the method's too)."""
    from .loop import resolve

    copy = dataclasses.replace(config, extras=dict(config.extras))
    resolve(copy)  # as the loop does: first without the data set, then with its number of classes
    if num_classes is not None:
        copy.num_classes = num_classes
        resolve(copy)
    return copy


def check_plan(configs: list[TrainConfig]) -> None:
    """Validate every run of a recipe (options, names, output folders) before the first one starts."""
    for config in configs:
        check_fields(config)
        RunFolder(Path(config.out)).check_writable()
        _resolved(config)


def run_state(config: TrainConfig) -> str:
    """What a recipe does with one planned run: ``done`` (results current), ``resume``, ``train`` or ``restart``.

    A run folder holding a run with other options (beyond `RUNTIME_ONLY`, or more epochs than asked)
    is refused with a one-line error: a recipe never replaces a run it did not plan.
    """
    folder = RunFolder(Path(config.out))
    if not folder.holds_run():
        return "train"
    try:
        stored = folder.read_train_config()
    except TrainersError:
        return "restart" if not folder.last.exists() else _refuse(folder, "its config.json cannot be read")
    stored = _resolved(stored)  # fields added since it ran take the values it ran with (trainers.presets: legacy)
    asked = _resolved(config, stored.num_classes)
    differences = [f"{f.name} {getattr(stored, f.name)!r} (this recipe: {getattr(asked, f.name)!r})"
                   for f in dataclasses.fields(TrainConfig)
                   if f.name not in RUNTIME_ONLY and getattr(stored, f.name) != getattr(asked, f.name)]
    if asked.epochs < (stored.epochs or 0):
        differences.append(f"epochs {stored.epochs} (this recipe: {asked.epochs})")
    if differences:
        _refuse(folder, f"it was trained with {differences[0]}")
    if not folder.last.exists():
        return "restart"  # stopped before its first checkpoint
    try:
        results = folder.read_results()
    except TrainersError:
        results = None
    return "done" if results is not None and stored.epochs == asked.epochs else "resume"


def _refuse(folder: RunFolder, why: str) -> str:
    raise TrainersError(f"{folder.root} holds a run this recipe did not plan: {why}; "
                        "choose another --out or move that run away")


def run_recipe(figure: str, *, seeds: int, out: Path, overrides: dict[str, Any]) -> list[Path]:
    """Train every run of ``figure`` not finished yet; returns the run folders.

    Everything is validated first; then finished runs are skipped, interrupted ones resumed and the
    rest trained, with one progress line per run, so an interrupted recipe can simply be rerun.
    """
    from .loop import train

    configs = plan(figure, seeds=seeds, out=out, overrides=overrides)
    check_plan(configs)
    states = [run_state(config) for config in configs]
    counts = {state: states.count(state) for state in ("done", "resume", "restart", "train")}
    print(f"{figure}: {len(configs)} runs; {counts['done']} finished earlier, {counts['resume']} to resume, "
          f"{counts['train'] + counts['restart']} to train", flush=True)
    folders = []
    started = time.perf_counter()
    for number, (config, state) in enumerate(zip(configs, states), 1):
        folder = RunFolder(Path(config.out))
        folders.append(folder.root)
        prefix = f"[{number}/{len(configs)}] {folder.root}"
        if state == "done":
            print(f"{prefix}: finished, skipped", flush=True)
            continue
        print(f"{prefix}: {_VERBS[state]} {config.method} {config.model}", flush=True)
        run_started = time.perf_counter()
        if state == "resume" and config.epochs is None:
            config = dataclasses.replace(config, epochs=_resolved(config).epochs)  # the schedule's, if it grew
        train(config, resume=state == "resume", overwrite=state == "restart")
        print(f"{prefix}: done in {_duration(time.perf_counter() - run_started)} "
              f"({_duration(time.perf_counter() - started)} so far)", flush=True)
    draw_record_figures(RECIPES.get(figure), folders)
    return folders


_VERBS = {"resume": "resuming", "restart": "restarting (stopped before its first checkpoint)", "train": "training"}


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def draw_record_figures(recipe: Recipe, folders: list[Path]) -> list[Path]:
    """Figure 6 (the gradient heatmap of the Figure 4 runs) for every seed, beside its runs."""
    import gradscope
    from gradscope.exporting import write_csv
    from gradscope.figures import heatmap_grids, heatmap_rows

    written: list[Path] = []
    if not recipe.figures:
        return written
    by_seed: dict[Path, list[Path]] = {}
    for folder in folders:
        if RunFolder(folder).has_record():
            by_seed.setdefault(folder.parent, []).append(folder)
    for seed_folder, runs in by_seed.items():
        records = {run.name: gradscope.load(run) for run in runs}
        for name in recipe.figures:
            path = seed_folder / name
            if name.endswith(".csv"):
                write_csv(heatmap_rows(heatmap_grids(records, "mean_abs", "stage", (0.0, 1.0)), "mean_abs",
                                       (0.0, 1.0)), path)
            else:
                gradscope.export(gradscope.heatmap(records, stat="mean_abs"), path)
            written.append(path)
            print(f"{path}: written")
    return written
