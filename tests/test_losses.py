"""Losses and PGD against their formulas, on small random tensors and a tiny real model."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers.attacks import pgd
from trainers.errors import TrainersError
from trainers.losses import (
    kd_loss,
    multiplier_from_elementwise,
    soft_kl,
    tfkd_reg_loss,
    virtual_teacher,
    virtual_teacher_correct_prob,
)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 10, generator=g) * 3, torch.randn(8, 10, generator=g) * 3
    return student, teacher, torch.randint(0, 10, (8,), generator=g)


def test_kd_alpha_zero_is_cross_entropy(batch):
    student, teacher, y = batch
    torch.testing.assert_close(kd_loss(student, teacher, y, alpha=0.0, temperature=4.0), F.cross_entropy(student, y))


def test_kd_teacher_equal_to_student_has_zero_kl(batch):
    student, _, y = batch
    assert kd_loss(student, student.clone(), y, alpha=1.0, temperature=4.0).abs() < 1e-6


def test_kd_matches_formula(batch):
    student, teacher, y = batch
    alpha, tau, m = 0.7, 3.0, 2.0
    p_t = F.softmax(teacher / tau, 1)
    log_p_s = F.log_softmax(student / tau, 1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(1).mean()
    expected = (1 - alpha) * F.cross_entropy(student, y) + alpha * m * tau**2 * kl
    torch.testing.assert_close(kd_loss(student, teacher, y, alpha, tau, multiplier=m), expected)


def test_kd_without_temperature_squared_is_the_posters_scale(batch):
    student, teacher, y = batch
    alpha, tau = 0.5, 4.0
    p_t = F.softmax(teacher / tau, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(student / tau, 1))).sum(1).mean()
    expected = (1 - alpha) * F.cross_entropy(student, y) + alpha * 0.1 * kl
    torch.testing.assert_close(kd_loss(student, teacher, y, alpha, tau, 0.1, temperature_squared=False), expected)


def test_kd_does_not_backpropagate_into_the_teacher(batch):
    student, teacher, y = batch
    student, teacher = student.requires_grad_(), teacher.requires_grad_()
    kd_loss(student, teacher, y, 0.5, 2.0).backward()
    assert student.grad is not None and teacher.grad is None


@pytest.mark.parametrize("a", [0.9, 0.99])
@pytest.mark.parametrize("tau", [1.0, 6.0, 20.0])
@pytest.mark.parametrize("k", [10, 100])
def test_virtual_teacher_follows_the_closed_form(a, tau, k):
    y = torch.tensor([0, 3, k - 1])
    probs = virtual_teacher(y, k, a, tau)
    assert probs.shape == (3, k)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    correct = 1 / (1 + (k - 1) * math.exp(-(a - (1 - a) / (k - 1)) / tau))
    torch.testing.assert_close(probs[torch.arange(3), y], torch.full((3,), correct))
    assert virtual_teacher_correct_prob(k, a, tau) == pytest.approx(correct)
    others = probs.clone()
    others[torch.arange(3), y] = float("nan")
    torch.testing.assert_close(others.nanmean(1), torch.full((3,), (1 - correct) / (k - 1)))


def test_virtual_teacher_softens_towards_uniform_as_temperature_grows():
    y = torch.tensor([2])
    ps = [virtual_teacher(y, 10, 0.9, t)[0, 2].item() for t in (0.1, 1, 10, 100)]
    assert ps == sorted(ps, reverse=True) and ps[-1] == pytest.approx(0.1, abs=0.01)


def test_tfkd_reg_matches_formula(batch):
    student, _, y = batch
    alpha, tau, a, m = 0.1, 20.0, 0.99, 10.0
    teacher = virtual_teacher(y, 10, a, tau)
    kl = (teacher * (teacher.log() - F.log_softmax(student, 1))).sum(1).mean()
    expected = (1 - alpha) * F.cross_entropy(student, y) + alpha * m * kl
    torch.testing.assert_close(tfkd_reg_loss(student, y, alpha, tau, a, multiplier=m), expected)
    assert tfkd_reg_loss(student, y, 0.0, tau, a) == pytest.approx(F.cross_entropy(student, y).item())


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")  # the reference is that mean, on purpose
def test_multiplier_conversion_equals_an_elementwise_mean_kl(batch):
    student, teacher, _ = batch
    p_t = F.softmax(teacher, 1)
    elementwise = nn.KLDivLoss(reduction="mean")(F.log_softmax(student, 1), p_t) * 100.0
    ours = soft_kl(p_t, student) * multiplier_from_elementwise(100.0, 10)
    torch.testing.assert_close(ours, elementwise)


@pytest.mark.parametrize("bad", [{"alpha": 1.5}, {"alpha": -0.1}, {"temperature": 0.0}])
def test_bad_hyperparameters_raise(batch, bad):
    student, teacher, y = batch
    with pytest.raises(TrainersError):
        kd_loss(student, teacher, y, **{"alpha": 0.5, "temperature": 2.0, **bad})


def tiny_classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def test_pgd_stays_in_the_ball_and_the_box_and_raises_the_loss():
    model = tiny_classifier()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    eps = 8 / 255
    x_adv = pgd(model, x, y, eps, 2 / 255, 7, generator=torch.Generator().manual_seed(2))
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    assert all(p.grad is None for p in model.parameters())  # input gradients only


def test_pgd_is_reproducible_and_zero_steps_without_start_is_identity():
    model = tiny_classifier()
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))
    a = pgd(model, x, y, 0.03, 0.01, 3, generator=torch.Generator().manual_seed(5))
    b = pgd(model, x, y, 0.03, 0.01, 3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(pgd(model, x, y, 0.03, 0.01, 0, random_start=False), x)


def test_pgd_rejects_bad_arguments():
    model = tiny_classifier()
    x, y = torch.rand(2, 3, 8, 8), torch.randint(0, 10, (2,))
    with pytest.raises(TrainersError, match="eps"):
        pgd(model, x, y, -1.0, 0.1, 3)
    with pytest.raises(TrainersError, match="steps"):
        pgd(model, x, y, 0.1, 0.1, 2.5)
