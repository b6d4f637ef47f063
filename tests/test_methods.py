"""Every registered method trains: on a fixed batch its loss falls within a few SGD steps."""

import pytest
import torch
from torch import nn

from trainers.errors import TrainersError
from trainers.methods import METHODS, Hyper


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_lowers_its_loss_on_a_fixed_batch(name):
    method = METHODS.get(name)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 3, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    teacher = tiny_net(1).eval().requires_grad_(False) if method.teacher else None
    hyper = Hyper(**method.resolve_defaults(10))
    model = tiny_net(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(0)
    losses = []
    for _ in range(20):
        out = method.loss(model, teacher, x, y, hyper)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        assert out.logits.shape == (32, 10)
    assert losses[-1] < 0.9 * losses[0], losses


def test_teacher_methods_refuse_to_run_without_a_teacher():
    method = METHODS.get("kd")
    with pytest.raises(TrainersError, match="teacher"):
        method.loss(tiny_net(0), None, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), Hyper())


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(TrainersError, match="unknown method 'nope'.*baseline.*at-tfkd-self"):
        METHODS.get("nope")


def test_yuan_multipliers_are_converted_by_the_number_of_classes():
    assert METHODS.get("tfkd-reg").resolve_defaults(10)["multiplier"] == pytest.approx(10.0)
    assert METHODS.get("tfkd-reg").resolve_defaults(100)["multiplier"] == pytest.approx(1.0)
    assert METHODS.get("tfkd-self").resolve_defaults(100)["multiplier"] == pytest.approx(0.5)
    assert METHODS.get("at").resolve_defaults(10)["eps"] == pytest.approx(8 / 255)
