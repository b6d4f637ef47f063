"""Demo runs for a first look: real short trainings on offline data, evaluated and attributed.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` when present (MNIST-sized, so the
ResNets run at 28x28); otherwise the generated ``synthetic`` set is used and the dashboard says so.
Five Figure-4 and Figure-7 style runs of a narrow ResNet18 on a few thousand images take a few
minutes on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path

from trainers.config import TrainConfig
from trainers.data import DEBIAN_FASHION_MNIST
from trainers.recipes import plan, run_folder

DEMO_RUNS = {"fig4": ("baseline", "tfkd-reg", "tfkd-self"), "fig7": ("at", "at-tfkd-reg")}
SETTINGS = {"epochs": 2, "train_subset": 2000, "test_subset": 1000, "batch_size": 64, "width": 8, "lr": 0.05}


def demo_dataset() -> str:
    """Fashion-MNIST when Debian's package is installed, else the generated set."""
    return "fashion-mnist" if DEBIAN_FASHION_MNIST.exists() else "synthetic"


def demo_configs(out: Path) -> list[TrainConfig]:
    """The demo's runs, teachers first, in the recipes' folder layout."""
    overrides = {"dataset": demo_dataset(), "progress": True, **SETTINGS}
    configs = []
    for figure, names in DEMO_RUNS.items():
        for config in plan(figure, seeds=1, out=out, overrides=overrides):
            if config.extras["run"] in names:
                if config.method.startswith("at"):
                    config.val_size, config.attack_steps, config.patience = 200, 2, None
                configs.append(config)
    return configs


def make_demo(out: Path) -> list[Path]:
    """Train, evaluate and attribute the demo runs under ``out`` (finished ones are kept)."""
    from trainers.attribution import attribute_run
    from trainers.loop import train
    from trainers.robustness import evaluate_run

    folders = []
    for config in demo_configs(out):
        folder = Path(config.out)
        folders.append(folder)
        if (folder / "results.json").exists():
            continue
        print(f"demo: training {config.extras['run']} ({config.method}, {config.model}, {config.dataset})")
        train(config, overwrite=True)
        adversarial = config.method.startswith("at")
        evaluate_run(folder, attacks=["clean", "pgd", "autoattack"] if adversarial else ["clean", "pgd"],
                     eps=8 / 255, n=200, attacks_to_run=["apgd-ce"], show_progress=True)
        attribute_run(folder, images=6)
    return folders


__all__ = ["make_demo", "demo_configs", "run_folder"]
