"""A Hugging Face ``TrainerCallback`` recording the model's gradients: ``Trainer(callbacks=[GradscopeCallback()])``.

The Trainer clips gradients just before ``optimizer.step()``; gradscope records at that step
(``when="post_clip"``, on the torch optimizer inside accelerate's wrapper), or at the end of every
backward (``when="pre_clip"``). See `gradscope.integrations` for the two moments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..recorder import Recorder
from . import check_when, start

RECORD_FOLDER = "gradscope"  # default record folder inside the Trainer's output_dir


class GradscopeCallback(TrainerCallback):
    """Records the model's gradient statistics from the start to the end of ``Trainer.train``.

    Args:
        path: record folder; ``None`` puts it at ``<output_dir>/gradscope``.
        when: ``"post_clip"`` (the optimizer's view, default) or ``"pre_clip"`` (raw, every backward).
        options: any other `gradscope.record` option (``every``, ``include``, ``groups``, ``tags`` ...).
    """

    def __init__(self, path: str | Path | None = None, *, when: str = "post_clip", **options: Any) -> None:
        self.path, self.when, self.options = path, check_when(when), options
        self.recorder: Recorder | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: nn.Module | None = None, optimizer: Any = None, **kwargs: Any) -> None:
        """Start recording: the Trainer has built its optimizer by now."""
        assert model is not None, "the Trainer passes its model to callbacks"
        path = self.path if self.path is not None else Path(str(args.output_dir)) / RECORD_FOLDER
        self.recorder = start(model, path, optimizer, self.when, self.options)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        """Flush and close the record."""
        if self.recorder is not None:
            self.recorder.close()
