r"""Distillation losses as pure functions of logits, with the poster's symbols.

Notation (poster): q the one-hot label, p = softmax(z) the student's prediction, p_τ = softmax(z/τ)
its softened prediction, p^t_τ the teacher's, α the weight of the distillation term, τ the
temperature, a the virtual teacher's correct-class probability, K the number of classes.

Every KL term here is a *batch mean*: the sum over classes, averaged over the batch
(``F.kl_div(..., reduction="batchmean")``), which is the KL divergence as defined. Yuan et al.'s
published Tf-KD code and the poster's notebook take ``nn.KLDivLoss()``'s default element-wise mean
instead, i.e. the batch-mean KL divided by K; their ``multiplier`` therefore equals ours times K
(`multiplier_from_elementwise`). `trainers.presets` sets the scales.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import TrainersError


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise TrainersError(f"{name} must lie in [0, 1], got {value!r}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise TrainersError(f"temperature must be positive, got {temperature!r}")


def soft_kl(target_probs: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r"""KL(target ‖ softmax(z/τ)), summed over classes and averaged over the batch.

    Computed in float32 whatever the autocast dtype: a log-softmax in bfloat16 loses the small
    probabilities that carry the dark knowledge.
    """
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_p, target_probs.float(), reduction="batchmean")


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
    multiplier: float = 1.0,
    temperature_squared: bool = True,
) -> torch.Tensor:
    r"""Hinton et al.'s distillation loss, L = (1-α) H(q, p) + α · m · τ² · KL(p^t_τ ‖ p_τ).

    The τ² factor keeps the soft term's gradients on the scale of the hard term's as τ changes
    (Hinton et al., 2015, section 2). ``multiplier`` m (default 1) is the extra weight Yuan et al.'s
    Tf-KD-self configurations put on the KL term. ``temperature_squared=False`` drops τ², as the
    poster's notebook did. The teacher's logits are detached.
    """
    _check_unit("alpha", alpha)
    _check_temperature(temperature)
    hard = F.cross_entropy(student_logits.float(), labels)
    teacher = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    soft = soft_kl(teacher, student_logits, temperature)
    scale = temperature**2 if temperature_squared else 1.0
    return (1.0 - alpha) * hard + alpha * multiplier * scale * soft


def virtual_teacher(labels: torch.Tensor, num_classes: int, a: float, temperature: float) -> torch.Tensor:
    r"""The manually designed teacher of Tf-KD-reg, p^d_τ (Yuan et al., 2020; poster Figure 5).

    A distribution puts a on the correct class and (1-a)/(K-1) on each other class; the teacher is
    the softmax of those *probabilities* at temperature τ:

        p^d_τ(k) = exp(u_k/τ) / Σ_j exp(u_j/τ),  u_k = a if k = y else (1-a)/(K-1)

    so its correct-class probability is 1 / (1 + (K-1) exp(-(a - (1-a)/(K-1))/τ)), which falls
    towards 1/K as τ grows: a high temperature makes the virtual teacher a strong label smoother.

    Returns:
        ``(B, K)`` float32 probabilities on the labels' device.
    """
    _check_unit("a", a)
    _check_temperature(temperature)
    if num_classes < 2:
        raise TrainersError(f"num_classes must be at least 2, got {num_classes!r}")
    off = (1.0 - a) / (num_classes - 1)
    manual = torch.full((labels.shape[0], num_classes), off, device=labels.device, dtype=torch.float32)
    manual.scatter_(1, labels.view(-1, 1), a)
    return F.softmax(manual / temperature, dim=1)


def virtual_teacher_correct_prob(num_classes: int, a: float, temperature: float) -> float:
    """Closed form of `virtual_teacher`'s correct-class probability (for Figure 5 and the tests)."""
    gap = a - (1.0 - a) / (num_classes - 1)
    return 1.0 / (1.0 + (num_classes - 1) * math.exp(-gap / temperature))


def tfkd_reg_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
    a: float,
    multiplier: float = 1.0,
    student_temperature: float = 1.0,
) -> torch.Tensor:
    r"""Tf-KD-reg: L = (1-α) H(q, p) + α · m · KL(p^d_τ ‖ p_{τ_s}).

    The poster writes the soft term as KL(p^d_τ, p_τ). Yuan et al.'s published implementation keeps
    the student at temperature 1 (τ_s = 1: the temperature only softens the virtual teacher) and has
    no τ² factor; that is the default here. ``student_temperature=temperature`` gives the poster's
    notation, which its notebook ran (still without τ²); `trainers.presets` chooses between them.
    """
    _check_unit("alpha", alpha)
    _check_temperature(student_temperature)
    hard = F.cross_entropy(student_logits.float(), labels)
    teacher = virtual_teacher(labels, student_logits.shape[1], a, temperature)
    return (1.0 - alpha) * hard + alpha * multiplier * soft_kl(teacher, student_logits, student_temperature)


def multiplier_from_elementwise(elementwise_multiplier: float, num_classes: int) -> float:
    """Convert a multiplier for an element-wise-mean KL (Yuan et al.'s configs) to our batch-mean KL.

    Their term is m · S/(B·K) with S the summed pointwise KL over a batch of B; ours is m' · S/B.
    The two agree when m' = m / K.
    """
    return elementwise_multiplier / num_classes
