r"""Projected gradient descent (Madry et al., 2018) in pixel space, L∞ threat model.

x' = Π_{B∞(x, ε) ∩ [0,1]^d} (x' + η · sign(∇_{x'} H(f(x'), y))), repeated ``steps`` times from a
uniform random start in the ε-ball. Inputs live in [0, 1] and the model normalises internally, so ε
is in pixel units (8/255 means what papers mean by it).

Only the input gradient is taken (``torch.autograd.grad`` w.r.t. x'), so the parameters' ``.grad``
and the gradscope recorder's hooks are untouched by the attack.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import TrainersError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
        random_start: start from a uniform point in the ball rather than at x.
        loss_fn: ``(logits, y) -> scalar`` to maximise; summed cross-entropy by default.
        generator: random source for the start, for reproducible attacks.

    Returns:
        x' detached, same shape, dtype and memory format as ``x``.
    """
    if eps < 0 or step_size < 0:
        raise TrainersError(f"eps and step_size must be non-negative, got eps={eps!r}, step_size={step_size!r}")
    if steps < 0 or int(steps) != steps:
        raise TrainersError(f"steps must be a non-negative integer, got {steps!r}")
    x = x.detach()
    lower, upper = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    if random_start and eps > 0:
        noise = torch.rand(x.shape, generator=generator, device=generator.device if generator else x.device)
        x_adv = x + (noise.to(x.device, x.dtype) * 2 - 1) * eps
        x_adv = torch.max(torch.min(x_adv, upper), lower)
    else:
        x_adv = x.clone()
    for _ in range(int(steps)):
        x_adv.requires_grad_(True)
        loss = loss_fn(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.max(torch.min(x_adv, upper), lower)
    return x_adv.detach()
