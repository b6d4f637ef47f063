"""Every registered method trains: on a fixed batch its loss falls within a few SGD steps."""

import pytest
import torch
from torch import nn

from trainers.attacks import TRAINING_ATTACKS
from trainers.config import SCHEDULES
from trainers.errors import TrainersError
from trainers.methods import METHODS, Hyper, iad_introspects, with_epoch


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


def test_yuan_multipliers_are_converted_by_the_number_of_classes_under_yuan_literal():
    assert METHODS.get("tfkd-reg").resolve_defaults(10, "yuan-literal")["multiplier"] == pytest.approx(10.0)
    assert METHODS.get("tfkd-reg").resolve_defaults(100, "yuan-literal")["multiplier"] == pytest.approx(1.0)
    assert METHODS.get("tfkd-self").resolve_defaults(100, "yuan-literal")["multiplier"] == pytest.approx(0.5)
    assert METHODS.get("at").resolve_defaults(10)["eps"] == pytest.approx(8 / 255)


def test_default_preset_keeps_yuans_cifar100_multipliers_on_any_k():
    for k in (10, 100, 1000):
        assert METHODS.get("tfkd-reg").resolve_defaults(k)["multiplier"] == pytest.approx(1.0)
        assert METHODS.get("tfkd-self").resolve_defaults(k)["multiplier"] == pytest.approx(0.5)


def test_kd_and_rekd_defaults_are_yuans_resnet18_kd_config():
    for name in ("kd", "rekd"):
        method = METHODS.get(name)
        assert (method.defaults["alpha"], method.defaults["temperature"]) == (0.6, 20.0)
        assert "Yuan" in method.source


def test_every_method_names_a_source_schedule_and_registered_attack():
    for name, method in METHODS.items():
        defaults = method.resolve_defaults(10)
        assert defaults["attack"] in TRAINING_ATTACKS, name
        assert method.schedule is None or method.schedule in SCHEDULES, name
        assert method.adversarial == (method.schedule is not None), name
        assert name == "baseline" or method.source, name


def test_the_loop_gets_the_epoch_through_hyper():
    hyper = Hyper(epochs=200, iad_begin=0.3)
    assert not iad_introspects(with_epoch(hyper, 59)) and iad_introspects(with_epoch(hyper, 60))
