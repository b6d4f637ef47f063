"""Accuracy on clean and PGD inputs; counts stay on the device until the end (one sync per set)."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext

import torch
from torch import nn

from .attacks import pgd


def _autocast(device: torch.device, bf16: bool):  # type: ignore[no-untyped-def]
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, bf16: bool = False) -> float:
    """Top-1 accuracy in percent of ``model`` (put in eval mode) on clean batches."""
    model.eval()
    correct, seen = None, 0
    with torch.no_grad():
        for x, y in batches:
            with _autocast(x.device, bf16):
                hits = (model(x).argmax(1) == y).sum()
            correct = hits if correct is None else correct + hits
            seen += len(y)
    return 100.0 * float(correct) / seen if seen else float("nan")


def pgd_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    eps: float = 8 / 255,
    step_size: float = 2 / 255,
    steps: int = 10,
    seed: int = 0,
    bf16: bool = False,
) -> float:
    """Top-1 accuracy in percent under an L∞ PGD attack (random start seeded by ``seed``)."""
    model.eval()
    correct, seen, generator = None, 0, None
    for x, y in batches:
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(seed)
        with _autocast(x.device, bf16):
            x_adv = pgd(model, x, y, eps, step_size, steps, random_start=True, generator=generator)
            with torch.no_grad():
                hits = (model(x_adv).argmax(1) == y).sum()
        correct = hits if correct is None else correct + hits
        seen += len(y)
    return 100.0 * float(correct) / seen if seen else float("nan")
