"""The resolved configuration of a training run: one dataclass, written to the run folder as JSON.

Defaults live in one visible place: `SCHEDULES` holds the poster's three training schedules, and each
method (`trainers.methods`) carries its own hyperparameter defaults. The CLI only fills the fields
the user gave; `resolve` fills the rest. Reproducing a run is reading its ``config.json`` back.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TrainersError
from .shapes import Obj, shape_of_hint

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
    # The literature's own schedules (official code), selected on validation PGD without early stopping,
    # which would stop on the plateau before the first lr drop. TRADES and MART: 76 epochs, lr ÷10
    # from (1-based) epoch 75, 90, 100.
    "trades-step": {"epochs": 76, "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4, "batch_size": 128,
                    "schedule": "step", "milestones": [74, 89, 99], "gamma": 0.1, "val_size": 1000,
                    "select_on": "val_pgd_acc"},
    # ARD and IAD: 200 epochs, lr ÷10 at 100 and 150.
    "ard-step": {"epochs": 200, "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4, "batch_size": 128,
                 "schedule": "step", "milestones": [100, 150], "gamma": 0.1, "val_size": 1000,
                 "select_on": "val_pgd_acc"},
    # RSLAD: 300 epochs, lr ÷10 after 215, 260 and 285.
    "rslad-step": {"epochs": 300, "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4, "batch_size": 128,
                   "schedule": "step", "milestones": [215, 260, 285], "gamma": 0.1, "val_size": 1000,
                   "select_on": "val_pgd_acc"},
}
SCHEDULE_NAMES = ("step", "exponential", "constant")
SELECT_ON = ("val_acc", "val_pgd_acc", "last")


@dataclass(frozen=True)
class Bounds:
    """The range a numeric field must lie in: ``low``/``high`` (None: unbounded), open or closed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        """``in [0, 1]``, ``> 0``, ``>= 1``."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"

    def holds(self, value: float) -> bool:
        """Whether ``value`` lies in the range (NaN never does)."""
        if value != value:
            return False
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok


POSITIVE, NON_NEGATIVE, UNIT = Bounds(0, low_open=True), Bounds(0), Bounds(0, 1)
AT_LEAST_ONE = Bounds(1)


def option(default: Any = dataclasses.MISSING, help: str = "", *, bounds: Bounds | None = None,
           choices: tuple[str, ...] = (), cli: bool = True, factory: Any = None) -> Any:
    """A `TrainConfig` field with what the CLI and `check_fields` need: help, range, choices.

    ``cli=False`` marks a field the run fills itself (from the data set or the recipe).
    """
    metadata = {"help": help, "bounds": bounds, "choices": choices, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that decides a training run. ``None`` fields are filled by `resolve`.

    Every field with ``cli`` metadata (the default) is a ``python -m trainers train`` option derived
    from it: ``--field-name``, typed from the annotation, with the help, range and choices given here.
    """

    method: str = option(help="training method (python -m trainers methods lists them)")
    model: str = option(help="architecture: mlp-teacher, mlp-student, resnet18, resnet50, ...")
    dataset: str = option(help="cifar10, mnist, fashion-mnist, synthetic, synthetic-mnist, ...")
    out: str = option(help="run folder to create")
    teacher: str | None = option(None, "teacher checkpoint or run folder (distillation methods)")
    # data
    data_dir: str = option("data", "folder holding the data sets")
    download: bool = option(False, "download the data set if it is missing")
    train_subset: int | None = option(None, "train on a seeded random N images", bounds=AT_LEAST_ONE)
    test_subset: int | None = option(None, "evaluate on the first N test images only (quick runs)",
                                     bounds=AT_LEAST_ONE)
    val_size: int | None = option(None, "validation images held out of the training set", bounds=NON_NEGATIVE)
    # optimisation
    epochs: int | None = option(None, "training epochs", bounds=AT_LEAST_ONE)
    batch_size: int | None = option(None, "global batch size (split over DDP processes)", bounds=AT_LEAST_ONE)
    lr: float | None = option(None, "initial SGD learning rate", bounds=POSITIVE)
    momentum: float | None = option(None, "SGD momentum", bounds=Bounds(0, 1, high_open=True))
    weight_decay: float | None = option(None, "SGD weight decay (L2)", bounds=NON_NEGATIVE)
    schedule: str | None = option(None, "learning-rate schedule", choices=SCHEDULE_NAMES)
    milestones: list[int] | None = option(None, "epochs at which the step schedule multiplies lr by gamma",
                                          bounds=AT_LEAST_ONE)
    gamma: float | None = option(None, "lr factor: per milestone (step) or per epoch (exponential)",
                                 bounds=Bounds(0, 1, low_open=True))
    select_on: str | None = option(None, "which epoch is 'best'", choices=SELECT_ON)
    patience: int | None = option(None, "early stopping: epochs without a better select_on (default: never stop)",
                                  bounds=AT_LEAST_ONE)
    # method hyperparameters (None: the method's default)
    alpha: float | None = option(None, "α: weight of the distillation term", bounds=UNIT)
    temperature: float | None = option(None, "τ: softmax temperature of the teacher", bounds=POSITIVE)
    a: float | None = option(None, "a: the virtual teacher's probability of the true class", bounds=UNIT)
    multiplier: float | None = option(None, "multiplier on the batch-mean KL (see trainers.losses)",
                                      bounds=NON_NEGATIVE)
    student_temperature: float | None = option(None, "softmax temperature of the student", bounds=POSITIVE)
    eps: float | None = option(None, "ε: L∞ radius of the training attack, pixel units", bounds=NON_NEGATIVE)
    step_size: float | None = option(None, "PGD step size, pixel units", bounds=NON_NEGATIVE)
    attack_steps: int | None = option(None, "PGD steps of the training attack", bounds=NON_NEGATIVE)
    preset: str | None = option(None, "loss preset of the distillation methods: poster, yuan-literal, "
                                "yuan-strength (default; see trainers.presets)")
    temperature_squared: bool | None = option(None, "multiply the KD term by τ² (Hinton, Yuan) or not (poster)")
    attack: str | None = option(None, "objective of the training attack: ce, ce-gaussian, trades-kl, teacher-kl")
    beta: float | None = option(None, "β: TRADES/MART robust-term weight; IAD's confidence exponent",
                                bounds=NON_NEGATIVE)
    iad_begin: float | None = option(None, "IAD: fraction of the epochs before introspection starts", bounds=UNIT)
    warmup_epochs: int = option(0, "linear per-step lr warm-up over the first N epochs (Yuan et al.: 1)",
                                bounds=NON_NEGATIVE)
    # model
    width: int = option(64, "ResNet base width (64 as in the paper)", bounds=AT_LEAST_ONE)
    # run
    seed: int = option(0, "seed of initialisation, data order and attacks", bounds=NON_NEGATIVE)
    device: str = option("cpu", "cpu, cuda or cuda:N")
    bf16: bool = option(False, "bfloat16 autocast for training steps")
    channels_last: bool = option(False, "channels-last memory format")
    compile: bool = option(False, "torch.compile the model")
    record: bool = option(True, "record gradient statistics with gradscope")
    record_every: int = option(1, "record every N-th optimizer step (steps 0, N, 2N, ...)", bounds=AT_LEAST_ONE)
    eval_batch_size: int = option(500, "batch size of per-epoch evaluation", bounds=AT_LEAST_ONE)
    eval_pgd_steps: int = option(10, "PGD steps of the per-epoch validation attack", bounds=NON_NEGATIVE)
    progress: bool = option(True, "progress bars")
    # filled by resolve: what the run actually used
    schedule_preset: str | None = option(None, "the poster's schedule to start from (default: by model and method)",
                                         choices=tuple(SCHEDULES))
    num_classes: int | None = option(None, "filled from the data set", cli=False)
    in_shape: list[int] | None = option(None, "(C, H, W) of the data set, filled from it", cli=False)
    extras: dict[str, Any] = option(help="facts a recipe adds (figure, run name)", cli=False, factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> TrainConfig:
        """Read a config back; a non-object, a missing name, an unknown key or a wrong type is a one-line error."""
        problem = config_shape().problem(data, "")
        if problem:
            raise TrainersError(f"config: {problem}")
        return cls(**data)

    def save(self, path: Path) -> None:
        """Write as indented JSON."""
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


REQUIRED = ("method", "model", "dataset", "out")  # a stored config without these cannot be rebuilt


def config_shape(required: tuple[str, ...] = REQUIRED) -> Obj:
    """`TrainConfig` as a JSON shape: every field typed, ``required`` present, no unknown keys."""
    hints = typing.get_type_hints(TrainConfig)
    fields_ = {f.name: shape_of_hint(hints[f.name]) for f in dataclasses.fields(TrainConfig)}
    return Obj(fields_, required=required, rest=None)


def flag(name: str) -> str:
    """The command-line flag of a field: ``--weight-decay``."""
    return "--" + name.replace("_", "-")


def check_fields(config: TrainConfig) -> None:
    """Check every set field's type, range and choices; each problem is a one-line `TrainersError`.

    Fields still ``None`` are skipped, so this runs before resolution too (validate, then write).
    """
    hints = typing.get_type_hints(TrainConfig)
    for spec in dataclasses.fields(TrainConfig):
        value = getattr(config, spec.name)
        if value is None:
            continue
        problem = shape_of_hint(hints[spec.name]).problem(value, "")
        if problem:
            raise TrainersError(f"{flag(spec.name)} {problem.replace('must hold', 'must be', 1)}")
        bounds: Bounds | None = spec.metadata.get("bounds")
        values = value if isinstance(value, list) else [value]
        if bounds is not None and not all(bounds.holds(v) for v in values):
            raise TrainersError(f"{flag(spec.name)} must be {bounds.describe()}, got {value!r}")
        choices = spec.metadata.get("choices")
        if choices and value not in choices:
            raise TrainersError(f"unknown {flag(spec.name)} {value!r}; expected one of: {', '.join(choices)}")
    if config.milestones and sorted(set(config.milestones)) != config.milestones:
        raise TrainersError(f"--milestones must increase, got {config.milestones}")
    if config.device not in ("cpu", "cuda") and not config.device.startswith("cuda:"):
        raise TrainersError(f"unknown device {config.device!r}; expected cpu, cuda or cuda:N")


def preset_for(model: str, method_schedule: str | None) -> str:
    """The schedule preset of a run: the method's own, else its model family's."""
    if method_schedule is not None:
        return method_schedule
    return "mlp-exp" if model.startswith("mlp") else "resnet-step"


def fill(config: TrainConfig, defaults: dict[str, Any]) -> None:
    """Set every ``None`` field of ``config`` that ``defaults`` names."""
    for key, value in defaults.items():
        if getattr(config, key) is None:
            setattr(config, key, value)


def validate(config: TrainConfig) -> None:
    """Check a resolved config: every field (`check_fields`), the filled ones present, and their combinations."""
    check_fields(config)
    for name in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "gamma", "select_on"):
        if getattr(config, name) is None:
            raise TrainersError(f"{flag(name)} is not set and the schedule preset gives no default")
    if config.schedule == "step" and not config.milestones:
        raise TrainersError("--schedule step needs --milestones (epochs at which lr is multiplied by --gamma)")
    if config.select_on != "last" and not config.val_size:
        raise TrainersError(f"--select-on {config.select_on} needs a validation split (--val-size N > 0)")
