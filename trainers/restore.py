"""A trained model back from a run folder or a checkpoint file, with its config and test data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import checkpoint_config, load_checkpoint, load_weights
from .config import TrainConfig
from .data import DataSplits, load_data
from .errors import TrainersError
from .models import build_model
from .run_folder import CHECKPOINT_FOLDER, RunFolder


@dataclass
class Restored:
    """A model in eval mode, the config it was trained with, and where it came from."""

    model: nn.Module
    config: TrainConfig
    checkpoint: Path  # the file read
    run_dir: Path  # the run folder results are written to

    @property
    def which(self) -> str:
        """``best`` or ``last`` (or the file's stem for a checkpoint elsewhere)."""
        return self.checkpoint.stem


def checkpoint_path(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(checkpoint file, run folder) for a run folder (its best, else last checkpoint) or a file."""
    path = Path(path)
    if path.is_dir():
        folder = RunFolder(path)
        found = folder.preferred_checkpoint()
        if found is None:
            raise TrainersError(f"{path} holds no {folder.name_of(folder.best)} or {folder.name_of(folder.last)}")
        return found, path
    if not path.exists():
        raise TrainersError(f"{path} does not exist; give a run folder or a checkpoint file")
    run_dir = path.parent.parent if path.parent.name == CHECKPOINT_FOLDER else path.parent
    return path, run_dir


def restore(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Restored:
    """Rebuild the model a checkpoint holds (eval mode, float32, on ``device``).

    A checkpoint whose weights do not fit the architecture its config names is a one-line error.
    """
    file, run_dir = checkpoint_path(path)
    saved = load_checkpoint(file, map_location=device)
    config = checkpoint_config(saved, file)
    shape, mean, std = _input_spec(saved, config)
    model = build_model(config.model, in_shape=shape, num_classes=config.num_classes or 10, mean=mean, std=std,
                        width=config.width)
    load_weights(model, saved["model"], f"{file} does not fit a {config.model} (width {config.width})")
    return Restored(model.to(device).float().eval(), config, file, run_dir)


def _input_spec(saved: dict, config: TrainConfig) -> tuple[tuple[int, ...], list[float], list[float]]:
    """Input shape (from the config, else the data set) and normalisation (from the Normalize buffers)."""
    state = saved["model"]
    if "normalize.mean" not in state or "normalize.std" not in state:
        raise TrainersError("the checkpoint has no normalize buffers: not a trainers model")
    shape = config.in_shape or data_of(config).info.shape
    return tuple(shape), state["normalize.mean"].flatten().tolist(), state["normalize.std"].flatten().tolist()


def data_of(config: TrainConfig) -> DataSplits:
    """The data set a run was trained on (its test split is what evaluation reads)."""
    return load_data(config.dataset, root=Path(config.data_dir), download=config.download)
