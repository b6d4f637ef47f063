r"""Projected gradient descent (Madry et al., 2018) in pixel space, L∞ threat model.

x' = Π_{B∞(x, ε) ∩ [0,1]^d} (x' + η · sign(∇_{x'} H(f(x'), y))), repeated ``steps`` times from a
uniform random start in the ε-ball. Inputs live in [0, 1] and the model normalises internally, so ε
is in pixel units (8/255 means what papers mean by it).

Only the input gradient is taken (``torch.autograd.grad`` w.r.t. x'), so the parameters' ``.grad``
and the gradscope recorder's hooks are untouched by the attack.

What the attack maximises is part of a training method (`TRAINING_ATTACKS`): the cross-entropy for
Madry et al.'s AT, the KL to the model's own clean prediction for TRADES, the KL to the teacher's
clean prediction for RSLAD. Each names its start too (uniform in the ball, or TRADES' x + 0.001·N(0, 1)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import TrainersError
from .progress import tracked
from .registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
STARTS = ("uniform", "gaussian", "none")
GAUSSIAN_START_STD = 0.001  # TRADES' start: x + 0.001·N(0, 1) (Zhang et al.'s code; MART and RSLAD reuse it)


def _sum_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # A sum, not a mean: the sign of the gradient is the same, and it does not shrink with the batch.
    return F.cross_entropy(logits.float(), labels, reduction="sum")


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    *,
    loss_fn: LossFn = _sum_cross_entropy,
    generator: torch.Generator | None = None,
    start: str = "uniform",
) -> torch.Tensor:
    """Adversarial examples x' with ‖x' - x‖∞ ≤ ε and x' ∈ [0, 1], maximising ``loss_fn(model(x'), y)``.

    The model is used in whatever mode it is in; callers pick (the training methods attack in eval
    mode so that the attack's forward passes leave BatchNorm's running statistics alone).

    Args:
        model: maps inputs in [0, 1] to logits.
        x: clean inputs in [0, 1].
        y: labels (or any target ``loss_fn`` takes, e.g. teacher probabilities).
        eps: radius ε of the L∞ ball, in pixel units.
        step_size: η, the size of each signed-gradient step.
        steps: number of steps (7 for the poster's PGD-7).
        random_start: start from a random point near x rather than at x.
        loss_fn: ``(logits, y) -> scalar`` to maximise; summed cross-entropy by default.
        generator: random source for the start, for reproducible attacks.
        start: the random start: ``uniform`` in the ball (Madry et al.), ``gaussian`` x + 0.001·N(0, 1)
            (TRADES), or ``none`` (same as ``random_start=False``).

    Returns:
        x' detached, same shape, dtype and memory format as ``x``.
    """
    if eps < 0 or step_size < 0:
        raise TrainersError(f"eps and step_size must be non-negative, got eps={eps!r}, step_size={step_size!r}")
    if steps < 0 or int(steps) != steps:
        raise TrainersError(f"steps must be a non-negative integer, got {steps!r}")
    if start not in STARTS:
        raise TrainersError(f"unknown PGD start {start!r}; expected one of: {', '.join(STARTS)}")
    x = x.detach()
    lower, upper = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    if random_start and start != "none" and eps > 0:
        device = generator.device if generator else x.device
        if start == "uniform":
            noise = (torch.rand(x.shape, generator=generator, device=device) * 2 - 1) * eps
        else:
            noise = torch.randn(x.shape, generator=generator, device=device) * GAUSSIAN_START_STD
        x_adv = torch.max(torch.min(x + noise.to(x.device, x.dtype), upper), lower)
    else:
        x_adv = x.clone()
    for _ in tracked(range(int(steps)), "PGD step"):
        x_adv.requires_grad_(True)
        loss = loss_fn(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.max(torch.min(x_adv, upper), lower)
    return x_adv.detach()


def kl_to_target_sum(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Σ over batch and classes of KL(target ‖ softmax(logits)): TRADES' and RSLAD's attack objective."""
    return F.kl_div(F.log_softmax(logits.float(), dim=1), target_probs.float(), reduction="sum")


TargetFn = Callable[[nn.Module, "nn.Module | None", torch.Tensor, torch.Tensor], torch.Tensor]


def _labels(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y


@torch.no_grad()
def _own_clean_probs(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.softmax(model(x).float(), dim=1)


@torch.no_grad()
def _teacher_clean_probs(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor,
                         y: torch.Tensor) -> torch.Tensor:
    if teacher is None:
        raise TrainersError("this attack maximises the KL to the teacher: pass --teacher PATH")
    return F.softmax(teacher(x).float(), dim=1)


@dataclass(frozen=True)
class TrainingAttack:
    """What a training method's PGD maximises, and from where it starts.

    Attributes:
        summary: the objective in symbols, for the docs and ``python -m trainers methods``.
        target: ``(model, teacher, x, y) -> target`` computed once on the clean x, without gradients.
        loss: ``(logits(x'), target) -> scalar`` to maximise (a sum over the batch).
        start: ``uniform`` or ``gaussian`` (see `pgd`).
    """

    summary: str
    target: TargetFn
    loss: LossFn
    start: str = "uniform"


TRAINING_ATTACKS = Registry[TrainingAttack]("training attack")
for _name, _attack in (
    ("ce", TrainingAttack("max H(q, p(x')), uniform start (Madry et al.)", _labels, _sum_cross_entropy)),
    ("ce-gaussian", TrainingAttack("max H(q, p(x')), start x + 0.001·N(0, 1) (MART)", _labels,
                                   _sum_cross_entropy, "gaussian")),
    ("trades-kl", TrainingAttack("max KL(p(x) ‖ p(x')), start x + 0.001·N(0, 1) (TRADES)", _own_clean_probs,
                                 kl_to_target_sum, "gaussian")),
    ("teacher-kl", TrainingAttack("max KL(p^t(x) ‖ p(x')), start x + 0.001·N(0, 1) (RSLAD)",
                                  _teacher_clean_probs, kl_to_target_sum, "gaussian")),
):
    TRAINING_ATTACKS.add(_name, _attack)


def training_attack(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor, attack: str,
                    eps: float, step_size: float, steps: int) -> torch.Tensor:
    """The x' of a training method: PGD on the objective ``attack`` names, in whatever mode ``model`` is."""
    objective = TRAINING_ATTACKS.get(attack)
    target = objective.target(model, teacher, x, y)
    return pgd(model, x, target, eps, step_size, steps, loss_fn=objective.loss, start=objective.start)
