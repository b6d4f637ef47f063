r"""Training methods of the poster, one registry entry each.

A method turns a batch into a loss; the training loop knows no method by name. Each entry says
whether it needs a teacher (and which kind), whether it trains on adversarial inputs, and its
hyperparameter defaults (Yuan et al.'s ResNet18 settings for Tf-KD, Madry et al.'s PGD-7 for AT).
Adding a method is one `register` call with a `Method`.

Symbols: x clean inputs, x' = PGD(x) adversarial inputs, q labels, p = softmax(student logits),
p^t teacher, p^d the virtual teacher, α, τ, a as in `trainers.losses`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .attacks import pgd
from .errors import TrainersError
from .losses import kd_loss, multiplier_from_elementwise, tfkd_reg_loss
from .registry import Registry

PGD7 = {"eps": 8 / 255, "step_size": 2 / 255, "attack_steps": 7}  # Madry et al.'s CIFAR-10 setting


@dataclass(frozen=True)
class Hyper:
    """A method's resolved hyperparameters (copied from the run config)."""

    alpha: float = 0.0
    temperature: float = 1.0
    a: float = 0.99
    multiplier: float = 1.0
    student_temperature: float = 1.0
    eps: float = 0.0
    step_size: float = 0.0
    attack_steps: int = 0


@dataclass
class StepOutput:
    """What a method returns for one batch: the loss to minimise and the logits it trained on."""

    loss: torch.Tensor
    logits: torch.Tensor


LossFn = Callable[[nn.Module, "nn.Module | None", torch.Tensor, torch.Tensor, Hyper], StepOutput]


@dataclass(frozen=True)
class Method:
    """A registered training method.

    Attributes:
        name: CLI name.
        summary: one line for ``--help`` and the dashboard.
        loss: ``(model, teacher, x, y, hyper) -> StepOutput``; x in [0, 1].
        teacher: what the teacher must be; empty for no teacher, else some of ``"any"``,
            ``"smaller"`` (fewer parameters: Re-KD), ``"same"`` (the student's architecture:
            self-training) and ``"adversarial"`` (trained by an adversarial method).
        adversarial: trains on PGD inputs, so it gets the adversarial schedule and PGD validation.
        defaults: hyperparameter defaults; ``elementwise_multiplier`` is Yuan et al.'s multiplier,
            converted to ours with the data set's number of classes.
    """

    name: str
    summary: str
    loss: LossFn
    teacher: tuple[str, ...] = ()
    adversarial: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)

    def resolve_defaults(self, num_classes: int) -> dict[str, Any]:
        """Config defaults for this method on a data set with ``num_classes`` classes."""
        out = {k: v for k, v in self.defaults.items() if k != "elementwise_multiplier"}
        if "elementwise_multiplier" in self.defaults:
            out["multiplier"] = multiplier_from_elementwise(self.defaults["elementwise_multiplier"], num_classes)
        out.setdefault("multiplier", 1.0)
        out.setdefault("student_temperature", 1.0)
        for key in ("alpha", "temperature", "a", "eps", "step_size", "attack_steps"):
            out.setdefault(key, getattr(Hyper, key))
        return out


METHODS = Registry[Method]("method")


def adversarial_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, hyper: Hyper) -> torch.Tensor:
    """PGD inputs x' against ``model``'s cross-entropy, crafted in eval mode.

    Eval mode keeps the attack's forward passes out of BatchNorm's running averages. Under DDP the
    attack runs on the wrapped module: its input-only backward passes must not reach DDP's reducer.
    """
    target = model.module if isinstance(model, DistributedDataParallel) else model
    was_training = target.training
    target.eval()
    try:
        return pgd(target, x, y, hyper.eps, hyper.step_size, hyper.attack_steps, random_start=True)
    finally:
        target.train(was_training)


@torch.no_grad()
def teacher_logits(teacher: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """The frozen teacher's logits (eval mode, no gradients)."""
    if teacher is None:
        raise TrainersError("this method needs a teacher checkpoint (--teacher PATH)")
    return teacher(x)


def _cross_entropy(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                   hyper: Hyper) -> StepOutput:
    logits = model(x)
    return StepOutput(F.cross_entropy(logits.float(), y), logits)


def _distill(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
             hyper: Hyper) -> StepOutput:
    logits = model(x)
    loss = kd_loss(logits, teacher_logits(teacher, x), y, hyper.alpha, hyper.temperature, hyper.multiplier)
    return StepOutput(loss, logits)


def _virtual_teacher(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                     hyper: Hyper) -> StepOutput:
    logits = model(x)
    loss = tfkd_reg_loss(logits, y, hyper.alpha, hyper.temperature, hyper.a, hyper.multiplier,
                         hyper.student_temperature)
    return StepOutput(loss, logits)


def _adversarial_cross_entropy(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                               hyper: Hyper) -> StepOutput:
    return _cross_entropy(model, teacher, adversarial_inputs(model, x, y, hyper), y, hyper)


def _adversarial_distill(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                         hyper: Hyper) -> StepOutput:
    # Maroto et al.'s AKD: CE against α p^t(x') + (1-α) q, which equals the KD loss at τ = 1 up to a
    # constant; student and teacher both see the student's adversarial x'.
    return _distill(model, teacher, adversarial_inputs(model, x, y, hyper), y, hyper)


def _adversarial_virtual_teacher(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                                 hyper: Hyper) -> StepOutput:
    return _virtual_teacher(model, teacher, adversarial_inputs(model, x, y, hyper), y, hyper)


def _adversarial_self_distill(model: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                              hyper: Hyper) -> StepOutput:
    # The AT-pretrained teacher sees the clean x, the student the adversarial x'.
    clean_teacher = teacher_logits(teacher, x)
    logits = model(adversarial_inputs(model, x, y, hyper))
    loss = kd_loss(logits, clean_teacher, y, hyper.alpha, hyper.temperature, hyper.multiplier)
    return StepOutput(loss, logits)


HINTON = {"alpha": 0.9, "temperature": 4.0}
TFKD_SELF = {"alpha": 0.95, "temperature": 6.0, "elementwise_multiplier": 50.0}  # Yuan et al., ResNet18
TFKD_REG = {"alpha": 0.1, "temperature": 20.0, "a": 0.99, "elementwise_multiplier": 100.0}  # Yuan et al.

for _method in (
    Method("baseline", "cross-entropy H(q, p)", _cross_entropy),
    Method("kd", "Hinton KD: (1-α) H(q, p) + α τ² KL(p^t_τ ‖ p_τ)", _distill, teacher=("any",), defaults=HINTON),
    Method("rekd", "reversed KD: the KD loss with a smaller, weaker teacher", _distill, teacher=("smaller",),
           defaults=HINTON),
    Method("tfkd-self", "Tf-KD-self: KD from a pretrained model of the same architecture", _distill,
           teacher=("same",), defaults=TFKD_SELF),
    Method("tfkd-reg", "Tf-KD-reg: KD from the manually designed virtual teacher p^d_τ", _virtual_teacher,
           defaults=TFKD_REG),
    Method("at", "PGD-7 adversarial training: H(q, p(x'))", _adversarial_cross_entropy, adversarial=True,
           defaults=PGD7),
    Method("at-kd", "adversarial KD (AKD): student on x' from an adversarially trained teacher",
           _adversarial_distill, teacher=("adversarial",), adversarial=True,
           defaults={**PGD7, "alpha": 0.5, "temperature": 1.0}),
    Method("at-tfkd-reg", "(1-α) H(q, p(x')) + α KL(p^d_τ, p_τ(x'))", _adversarial_virtual_teacher,
           adversarial=True, defaults={**PGD7, **TFKD_REG}),
    Method("at-tfkd-self", "(1-α) H(q, p(x')) + α KL(p^t_τ(x), p_τ(x')), AT-pretrained teacher",
           _adversarial_self_distill, teacher=("same", "adversarial"), adversarial=True,
           defaults={**PGD7, **TFKD_SELF}),
):
    METHODS.add(_method.name, _method)
