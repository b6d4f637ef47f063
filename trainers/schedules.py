"""Learning-rate schedules of the poster, by name; each steps once per epoch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import ExponentialLR, LambdaLR, LRScheduler, MultiStepLR

from .config import TrainConfig
from .registry import Registry

SCHEDULES = Registry[Callable[[torch.optim.Optimizer, TrainConfig], LRScheduler]]("schedule")


@SCHEDULES.register("step")
def step_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LRScheduler:
    """Lr × γ at each milestone epoch (poster: ÷5 at 60, 120 and 160)."""
    return MultiStepLR(optimizer, milestones=list(config.milestones or []), gamma=config.gamma or 1.0)


@SCHEDULES.register("exponential")
def exponential_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LRScheduler:
    """Lr × γ after every epoch (poster: γ = 0.9 for AT, 0.95 for the MLPs)."""
    return ExponentialLR(optimizer, gamma=config.gamma or 1.0)


@SCHEDULES.register("constant")
def constant_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LRScheduler:
    """The same lr throughout (what several of the poster's original training functions ran)."""
    return LambdaLR(optimizer, lambda epoch: 1.0)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LRScheduler:
    """The scheduler ``config.schedule`` names."""
    return SCHEDULES.get(config.schedule or "constant")(optimizer, config)
