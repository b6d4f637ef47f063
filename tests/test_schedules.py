"""Linear warm-up: per-step lr against its formula, the schedule untouched, a resume identical."""

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import MultiStepLR

from trainers.errors import TrainersError
from trainers.schedules import add_warmup


def setup(lr: float = 0.1):
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = MultiStepLR(optimizer, milestones=[2], gamma=0.5)
    seen: list[float] = []
    return model, optimizer, scheduler, seen


def run_epochs(model, optimizer, scheduler, seen, epochs: int, steps: int) -> None:
    for _ in range(epochs):
        for _ in range(steps):
            optimizer.zero_grad()
            model(torch.ones(1, 3)).sum().backward()
            optimizer.step()
        scheduler.step()


def watch(optimizer, seen) -> None:
    """Record the lr each step uses (a pre-hook registered after the warm-up's)."""
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))


def test_warmup_rises_linearly_per_step_then_hands_over_to_the_schedule():
    model, optimizer, scheduler, seen = setup()
    add_warmup(optimizer, scheduler, epochs=2, steps_per_epoch=3)
    watch(optimizer, seen)
    run_epochs(model, optimizer, scheduler, seen, epochs=4, steps=3)
    expected = [0.1 * (i + 1) / 6 for i in range(6)] + [0.05] * 6  # then MultiStepLR's ÷2 after epoch 2
    assert seen == pytest.approx(expected)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # the schedule's own lr is never overwritten


def test_a_resumed_run_warms_up_as_an_uninterrupted_one():
    model, optimizer, scheduler, seen = setup()
    add_warmup(optimizer, scheduler, epochs=2, steps_per_epoch=3)
    watch(optimizer, seen)
    run_epochs(model, optimizer, scheduler, seen, epochs=1, steps=3)
    saved = scheduler.state_dict(), optimizer.state_dict()
    model2, optimizer2, scheduler2, seen2 = setup()
    optimizer2.load_state_dict(saved[1])
    scheduler2.load_state_dict(saved[0])
    add_warmup(optimizer2, scheduler2, epochs=2, steps_per_epoch=3)
    watch(optimizer2, seen2)
    run_epochs(model2, optimizer2, scheduler2, seen2, epochs=1, steps=3)
    assert seen + seen2 == pytest.approx([0.1 * (i + 1) / 6 for i in range(6)])


def test_no_warmup_and_bad_values():
    model, optimizer, scheduler, seen = setup()
    assert add_warmup(optimizer, scheduler, epochs=0, steps_per_epoch=3) is None
    with pytest.raises(TrainersError, match="--warmup-epochs"):
        add_warmup(optimizer, scheduler, epochs=-1, steps_per_epoch=3)
