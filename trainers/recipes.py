"""One command per figure of the poster: the chain of runs behind it, teachers before students.

``python -m trainers recipe fig4 --seeds 3 --out runs`` trains, for each seed, every run of the
figure into ``runs/fig4/seed<s>/<run>``. A finished run (``results.json`` present) is skipped and an
interrupted one resumed, so a recipe can be restarted after a crash. Hyperparameters are the
methods' and schedules' defaults (the poster's); the options given override them for every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig
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
    poster: dict[str, dict[str, float]]  # run name -> metric -> poster's value
    figures: tuple[str, ...] = ()  # figures drawn from each seed's gradscope records once its runs finish
    show_parameters: bool = False  # the figure's table reports parameter counts (Figure 1)


RECIPES = Registry[Recipe]("recipe")

for _recipe in (
    Recipe("fig1", "Vanilla KD: large and small MLPs (no KD, KD); poster on MNIST", "mnist", (
        RunSpec("teacher", "baseline", "mlp-teacher"),
        RunSpec("student", "baseline", "mlp-student"),
        RunSpec("student-kd", "kd", "mlp-student", teacher="teacher"),
    ), {"teacher": {"test_acc": 98.98}, "student": {"test_acc": 98.06}, "student-kd": {"test_acc": 98.73}},
        show_parameters=True),
    Recipe("fig2", "Reversed KD: ResNet18 teaching ResNet50; poster on CIFAR-10", "cifar10", (
        RunSpec("teacher", "baseline", "resnet50"),
        RunSpec("student", "baseline", "resnet18"),
        RunSpec("rekd", "rekd", "resnet50", teacher="student"),
    ), {"teacher": {"test_acc": 95.29}, "student": {"test_acc": 94.98}, "rekd": {"test_acc": 95.46}}),
    Recipe("fig4", "Teacher-free KD: ResNet18 (records give Figure 6); poster on CIFAR-10", "cifar10", (
        RunSpec("baseline", "baseline", "resnet18"),
        RunSpec("tfkd-reg", "tfkd-reg", "resnet18"),
        RunSpec("tfkd-self", "tfkd-self", "resnet18", teacher="baseline"),
    ), {"baseline": {"test_acc": 94.98}, "tfkd-reg": {"test_acc": 95.39}, "tfkd-self": {"test_acc": 95.42}},
        figures=("fig6.html", "fig6.csv")),
    Recipe("fig7", "Adversarial teacher-free KD: ResNet18, PGD-7 AT; poster on CIFAR-10", "cifar10", (
        RunSpec("at", "at", "resnet18"),
        RunSpec("at-kd", "at-kd", "resnet18", teacher="at"),
        RunSpec("at-tfkd-reg", "at-tfkd-reg", "resnet18"),
        RunSpec("at-tfkd-self", "at-tfkd-self", "resnet18", teacher="at"),
    ), {"at": {"test_acc": 84.22, "autoattack_acc": 46.99}, "at-kd": {"test_acc": 82.70, "autoattack_acc": 47.66},
        "at-tfkd-reg": {"test_acc": 82.02, "autoattack_acc": 48.28},
        "at-tfkd-self": {"test_acc": 81.53, "autoattack_acc": 48.83}}),
):
    RECIPES.add(_recipe.figure, _recipe)


def run_folder(out: Path, figure: str, seed: int, run: str) -> Path:
    """Where one run of a recipe lives."""
    return out / figure / f"seed{seed}" / run


def plan(figure: str, *, seeds: int, out: Path, overrides: dict[str, Any]) -> list[TrainConfig]:
    """The configs of every run of ``figure``, seed by seed, teachers first."""
    from .errors import TrainersError

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


def run_recipe(figure: str, *, seeds: int, out: Path, overrides: dict[str, Any]) -> list[Path]:
    """Train every run of ``figure`` not finished yet; returns the run folders."""
    from .loop import train

    folders = []
    for config in plan(figure, seeds=seeds, out=out, overrides=overrides):
        folder = RunFolder(Path(config.out))
        folders.append(folder.root)
        if folder.results.exists():
            print(f"{folder.root}: finished, skipped")
            continue
        resume = folder.last.exists()
        print(f"{folder.root}: {'resuming' if resume else 'training'} {config.method} {config.model}")
        train(config, resume=resume, overwrite=not resume and folder.holds_run())
    draw_record_figures(RECIPES.get(figure), folders)
    return folders


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
        if (folder / "gradscope" / "meta.json").exists():
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
