"""A Lightning ``Callback`` that records the module's gradients: ``Trainer(callbacks=[GradscopeCallback(path)])``.

Lightning steps its optimizers with a closure that runs the training step, backward and gradient
clipping; gradscope records once that closure has run (``when="post_clip"``), or at the end of every
backward (``when="pre_clip"``). See `gradscope.integrations` for the two moments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..recorder import Recorder
from . import check_when, start

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError:  # the older package name
    from pytorch_lightning import Callback, LightningModule, Trainer  # type: ignore[assignment]


class GradscopeCallback(Callback):
    """Records the LightningModule's gradient statistics from the start to the end of ``fit``.

    Args:
        path: record folder (``None``: in memory, read it with ``callback.recorder.load()``).
        when: ``"post_clip"`` (the optimizer's view, default) or ``"pre_clip"`` (raw, every backward).
        optimizer_index: which of the module's optimizers' steps to record at (``post_clip``).
        options: any other `gradscope.record` option (``every``, ``include``, ``groups``, ``tags`` ...).
    """

    def __init__(self, path: str | Path | None = None, *, when: str = "post_clip", optimizer_index: int = 0,
                 **options: Any) -> None:
        self.path, self.when, self.optimizer_index = path, check_when(when), optimizer_index
        self.options = options
        self.recorder: Recorder | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start recording: the optimizers exist by now."""
        optimizer = trainer.optimizers[self.optimizer_index] if self.when == "post_clip" else None
        self.recorder = start(pl_module, self.path, optimizer, self.when, self.options)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Flush and close the record."""
        if self.recorder is not None:
            self.recorder.close()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Keep what was recorded before a crash."""
        self.on_train_end(trainer, pl_module)
