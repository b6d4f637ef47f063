"""Learning-rate schedules of the poster, by name; each steps once per epoch.

An optional linear warm-up (`add_warmup`, Yuan et al.: one epoch) scales the scheduled lr per
optimizer step on top of whichever schedule runs, and leaves the schedule's own state untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import ExponentialLR, LambdaLR, LRScheduler, MultiStepLR

from .config import TrainConfig
from .errors import TrainersError
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


class LinearWarmup:
    """Per-step linear warm-up: lr = scheduled lr × (i + 1) / (E · S) at step i of the first E epochs.

    S is the number of steps per epoch. Yuan et al.'s ``WarmUpLR`` does the same over their first
    epoch. It runs as optimizer step hooks: before each step the lr is scaled, after it the
    scheduled lr is put back, so the epoch scheduler only ever sees (and checkpoints) its own lr.
    Where a step falls is read from the scheduler's finished epochs, so a resumed run warms up
    exactly as an uninterrupted one.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: LRScheduler, epochs: int,
                 steps_per_epoch: int) -> None:
        self.optimizer, self.scheduler = optimizer, scheduler
        self.total = epochs * steps_per_epoch
        self.steps_per_epoch = steps_per_epoch
        self._epoch, self._in_epoch = -1, 0
        self._scheduled: list[float] = []
        self._handles = [optimizer.register_step_pre_hook(self._before), optimizer.register_step_post_hook(self._after)]

    def factor(self, step: int) -> float:
        """The lr factor of global step ``step`` (0-based)."""
        return min(1.0, (step + 1) / self.total) if self.total else 1.0

    def _before(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        epoch = self.scheduler.last_epoch
        if epoch != self._epoch:
            self._epoch, self._in_epoch = epoch, 0
        factor = self.factor(epoch * self.steps_per_epoch + self._in_epoch)
        self._scheduled = [group["lr"] for group in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, self._scheduled):
            group["lr"] = lr * factor

    def _after(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group, lr in zip(optimizer.param_groups, self._scheduled):
            group["lr"] = lr
        self._in_epoch += 1

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self._handles:
            handle.remove()


def add_warmup(optimizer: torch.optim.Optimizer, scheduler: LRScheduler, epochs: int,
               steps_per_epoch: int) -> LinearWarmup | None:
    """Warm the lr up linearly over the first ``epochs`` epochs (none for 0)."""
    if epochs < 0 or int(epochs) != epochs:
        raise TrainersError(f"--warmup-epochs must be a non-negative integer, got {epochs!r}")
    if steps_per_epoch < 1:
        raise TrainersError(f"steps per epoch must be positive, got {steps_per_epoch!r}")
    return LinearWarmup(optimizer, scheduler, int(epochs), steps_per_epoch) if epochs else None
