"""Loading a teacher checkpoint and checking it fits the method (Re-KD, self-training, adversarial)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .checkpoint import checkpoint_config, load_checkpoint, load_weights
from .config import TrainConfig
from .data import DatasetInfo
from .errors import TrainersError
from .methods import METHODS, Method
from .models import build_model, count_parameters

TeacherCheck = Callable[[TrainConfig, TrainConfig, nn.Module, nn.Module], "str | None"]


def _any(student_cfg: TrainConfig, teacher_cfg: TrainConfig, student: nn.Module, teacher: nn.Module) -> str | None:
    return None


def _smaller(student_cfg: TrainConfig, teacher_cfg: TrainConfig, student: nn.Module, teacher: nn.Module) -> str | None:
    t, s = count_parameters(teacher), count_parameters(student)
    if t >= s:
        return f"reversed KD needs a teacher smaller than the student; it has {t:,} parameters against {s:,}"
    return None


def _same(student_cfg: TrainConfig, teacher_cfg: TrainConfig, student: nn.Module, teacher: nn.Module) -> str | None:
    if (teacher_cfg.model, teacher_cfg.width) != (student_cfg.model, student_cfg.width):
        return (f"self-training needs a teacher of the student's architecture ({student_cfg.model}, width "
                f"{student_cfg.width}); it is a {teacher_cfg.model} of width {teacher_cfg.width}")
    return None


def _adversarial(student_cfg: TrainConfig, teacher_cfg: TrainConfig, student: nn.Module,
                 teacher: nn.Module) -> str | None:
    if teacher_cfg.method not in METHODS or not METHODS.get(teacher_cfg.method).adversarial:
        adversarial = ", ".join(n for n, m in METHODS.items() if m.adversarial)
        return f"the method needs an adversarially trained teacher ({adversarial}), not one of {teacher_cfg.method}"
    return None


TEACHER_CHECKS: dict[str, TeacherCheck] = {"any": _any, "smaller": _smaller, "same": _same, "adversarial": _adversarial}


def load_teacher(config: TrainConfig, method: Method, student: nn.Module, info: DatasetInfo,
                 device: torch.device) -> nn.Module:
    """The frozen teacher for ``method``: eval mode, no gradients, checked against its rules."""
    assert config.teacher is not None
    saved = load_checkpoint(config.teacher, map_location=device)
    teacher_cfg = checkpoint_config(saved, config.teacher)
    if teacher_cfg.num_classes not in (None, info.num_classes):
        raise TrainersError(f"teacher {config.teacher} predicts {teacher_cfg.num_classes} classes "
                            f"({teacher_cfg.dataset}); {config.dataset} has {info.num_classes}")
    teacher = build_model(teacher_cfg.model, in_shape=info.shape, num_classes=info.num_classes, mean=info.mean,
                          std=info.std, width=teacher_cfg.width)
    load_weights(teacher, saved["model"], f"teacher {config.teacher} does not fit a {teacher_cfg.model} on "
                 f"{config.dataset} inputs {tuple(info.shape)}")
    for rule in method.teacher:
        problem = TEACHER_CHECKS[rule](config, teacher_cfg, student, teacher)
        if problem:
            raise TrainersError(f"teacher {config.teacher}: {problem}")
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    return teacher.to(device, memory_format=memory_format).eval().requires_grad_(False)
