"""Thin adapters that start `gradscope.record` inside training frameworks.

Each lives in its own module and imports its framework only when imported itself, so that
``import gradscope`` stays light: `gradscope.integrations.lightning` (a Lightning ``Callback``) and
`gradscope.integrations.huggingface` (a Hugging Face ``TrainerCallback``). Install them with
``pip install gradscope[integrations]``.

Both record at one of two moments, chosen by ``when`` (`WHEN`):

* ``"post_clip"`` (default): the optimizer's view, just before each optimizer step, after gradient
  accumulation, clipping and AMP unscaling; one recorded step per optimizer step.
* ``"pre_clip"``: the raw gradient at the end of every backward pass, before clipping; with gradient
  accumulation that is one recorded step per micro-batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import GradscopeError
from ..recorder import Recorder, record

WHEN: dict[str, str] = {
    "post_clip": "just before each optimizer step (after accumulation, clipping and unscaling)",
    "pre_clip": "at the end of every backward pass (the raw gradient)",
}


def check_when(when: str) -> str:
    """``when``, validated against `WHEN`."""
    if when not in WHEN:
        raise GradscopeError(f"when={when!r} is not one of {', '.join(map(repr, WHEN))}")
    return when


def torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside a framework's wrapper (accelerate's, Lightning's), whose hooks fire."""
    while not type(optimizer).__module__.startswith("torch.") and isinstance(
        getattr(optimizer, "optimizer", None), torch.optim.Optimizer
    ):
        optimizer = optimizer.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise GradscopeError(f"expected a torch optimizer (or a wrapper of one), got {type(optimizer).__name__}")
    return optimizer


def start(model: nn.Module, path: str | Path | None, optimizer: Any, when: str, options: dict[str, Any]) -> Recorder:
    """`gradscope.record` of ``model`` at the moment ``when`` names."""
    chosen = torch_optimizer(optimizer) if when == "post_clip" else None
    return record(model, path, optimizer=chosen, **options)
