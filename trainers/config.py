"""The resolved configuration of a training run: one dataclass, written to the run folder as JSON.

Defaults live in one visible place: `SCHEDULES` holds the poster's three training schedules, and each
method (`trainers.methods`) carries its own hyperparameter defaults. The CLI only fills the fields
the user gave; `resolve` fills the rest. Reproducing a run is reading its ``config.json`` back.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TrainersError

# Poster, Methods: the three schedules it trained with.
SCHEDULES: dict[str, dict[str, Any]] = {
    # ResNets on CIFAR-10 (Yuan et al.): 200 epochs, lr 0.1 divided by 5 at 60/120/160.
    "resnet-step": {"epochs": 200, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
                    "schedule": "step", "milestones": [60, 120, 160], "gamma": 0.2, "val_size": 0, "select_on": "last"},
    # Adversarial training (Maroto et al.): 50 epochs, exponential decay 0.9, early stopping on PGD
    # accuracy of a validation split held out of the training set.
    "adversarial-exp": {"epochs": 50, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
                        "schedule": "exponential", "gamma": 0.9, "val_size": 1000, "select_on": "val_pgd_acc",
                        "patience": 10},
    # MLPs on MNIST (Hinton et al.'s setting): 50 epochs, lr 1e-2, exponential decay 0.95.
    "mlp-exp": {"epochs": 50, "lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-5, "batch_size": 128,
                "schedule": "exponential", "gamma": 0.95, "val_size": 0, "select_on": "last"},
}
SCHEDULE_NAMES = ("step", "exponential", "constant")
SELECT_ON = ("val_acc", "val_pgd_acc", "last")


@dataclass
class TrainConfig:
    """Everything that decides a training run. ``None`` fields are filled by `resolve`."""

    method: str
    model: str
    dataset: str
    out: str
    teacher: str | None = None
    # data
    data_dir: str = "data"
    download: bool = False
    train_subset: int | None = None
    test_subset: int | None = None  # evaluate on the first N test images only (quick runs)
    val_size: int | None = None
    # optimisation
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    milestones: list[int] | None = None
    gamma: float | None = None
    select_on: str | None = None  # which epoch is "best": val_acc, val_pgd_acc or last
    patience: int | None = None  # early stopping: epochs without a better `select_on` (None: never stop)
    # method hyperparameters (None: the method's default)
    alpha: float | None = None
    temperature: float | None = None
    a: float | None = None
    multiplier: float | None = None  # on the batch-mean KL; see trainers.losses
    student_temperature: float | None = None
    eps: float | None = None
    step_size: float | None = None
    attack_steps: int | None = None
    # model
    width: int = 64
    # run
    seed: int = 0
    device: str = "cpu"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    record: bool = True
    record_every: int = 1
    eval_batch_size: int = 500
    eval_pgd_steps: int = 10
    progress: bool = True
    # filled by resolve: what the run actually used
    schedule_preset: str | None = None
    num_classes: int | None = None
    in_shape: list[int] | None = None  # (C, H, W) of the data set
    extras: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """Read a config back; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainersError(f"unknown config keys {unknown}; expected some of: {', '.join(sorted(known))}")
        return cls(**data)

    def save(self, path: Path) -> None:
        """Write as indented JSON."""
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def preset_for(model: str, adversarial: bool) -> str:
    """The poster's schedule for a model family and kind of training."""
    if adversarial:
        return "adversarial-exp"
    return "mlp-exp" if model.startswith("mlp") else "resnet-step"


def fill(config: TrainConfig, defaults: dict[str, Any]) -> None:
    """Set every ``None`` field of ``config`` that ``defaults`` names."""
    for key, value in defaults.items():
        if getattr(config, key) is None:
            setattr(config, key, value)


def validate(config: TrainConfig) -> None:
    """Check ranges after resolution; each problem is a one-line `TrainersError`."""
    positive_ints = ("epochs", "batch_size", "record_every", "eval_batch_size")
    for name in positive_ints:
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise TrainersError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if not config.lr > 0:
        raise TrainersError(f"--lr must be positive, got {config.lr!r}")
    if config.schedule not in SCHEDULE_NAMES:
        raise TrainersError(f"unknown schedule {config.schedule!r}; expected one of: {', '.join(SCHEDULE_NAMES)}")
    if config.select_on not in SELECT_ON:
        raise TrainersError(f"unknown --select-on {config.select_on!r}; expected one of: {', '.join(SELECT_ON)}")
    if config.select_on != "last" and not config.val_size:
        raise TrainersError(f"--select-on {config.select_on} needs a validation split (--val-size N > 0)")
    for name in ("train_subset", "test_subset"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise TrainersError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if config.device not in ("cpu", "cuda") and not config.device.startswith("cuda:"):
        raise TrainersError(f"unknown device {config.device!r}; expected cpu, cuda or cuda:N")
