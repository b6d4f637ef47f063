"""Checkpoints: written atomically, read with ``weights_only=True`` (no pickled code runs on load)."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .errors import TrainersError

FORMAT = "trainers-checkpoint"
VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` through a temporary file and a rename.

    A crash mid-write leaves the previous checkpoint intact.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (or the best/last one of a run folder).

    A missing, foreign or corrupt file is a one-line `TrainersError`.
    """
    path = Path(path)
    if path.is_dir():
        from .run_folder import RunFolder

        folder = RunFolder(path)
        found = folder.preferred_checkpoint()
        if found is None:
            raise TrainersError(f"{path} is a folder without {folder.name_of(folder.best)} or "
                                f"{folder.name_of(folder.last)}")
        path = found
    if not path.exists():
        raise TrainersError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise TrainersError(f"checkpoint {path} is not a file")
    if path.stat().st_size == 0:
        raise TrainersError(f"cannot read checkpoint {path}: the file is empty (0 bytes)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise TrainersError(f"cannot read checkpoint {path}: {_unpickling_problem(exc)}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in first:
            first = type(exc).__name__
        raise TrainersError(f"cannot read checkpoint {path}: truncated or not a PyTorch file ({first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainersError(f"{path} is not a trainers checkpoint (no '{FORMAT}' marker)")
    if not isinstance(state.get("model"), dict) or not state["model"]:
        raise TrainersError(f"checkpoint {path} holds no model weights")
    return state


def _unpickling_problem(exc: pickle.UnpicklingError) -> str:
    """Why the weights-only loader refused a file, without PyTorch's advice to load it unsafely."""
    detail = next((line.split(":", 1)[1].strip() for line in str(exc).splitlines()
                   if line.startswith("WeightsUnpickler error:")), "")
    reason = f": {detail}" if detail else ""
    return f"not a checkpoint of weights (truncated, corrupt or holding pickled objects{reason})"


def checkpoint_config(state: dict[str, Any], path: str | os.PathLike[str]) -> TrainConfig:
    """The `TrainConfig` a checkpoint was trained with; a missing or malformed one is a one-line error."""
    config = state.get("config")
    if not isinstance(config, dict) or not config:
        raise TrainersError(f"checkpoint {path} holds no training config (saved by something other than trainers?)")
    try:
        return TrainConfig.from_json(config)
    except TrainersError as exc:
        raise TrainersError(f"checkpoint {path}: {exc}") from None


def load_weights(model: torch.nn.Module, weights: dict[str, Any], source: str) -> None:
    """``model.load_state_dict(weights)``; a mismatch is one line naming ``source`` and the first bad key."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        detail = next((line.strip() for line in lines if "size mismatch" in line or "key" in line), lines[0])
        raise TrainersError(f"{source}: {detail}") from None
