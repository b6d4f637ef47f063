"""Checkpoints: written atomically, read with ``weights_only=True`` (no pickled code runs on load)."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

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
        for candidate in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt"):
            if candidate.exists():
                path = candidate
                break
        else:
            raise TrainersError(f"{path} is a folder without checkpoints/best.pt or checkpoints/last.pt")
    if not path.exists():
        raise TrainersError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainersError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainersError(f"{path} is not a trainers checkpoint (no '{FORMAT}' marker)")
    return state


def load_weights(model: torch.nn.Module, weights: dict[str, Any], source: str) -> None:
    """``model.load_state_dict(weights)``; a mismatch is one line naming ``source`` and the first bad key."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        detail = next((line.strip() for line in lines if "size mismatch" in line or "key" in line), lines[0])
        raise TrainersError(f"{source}: {detail}") from None
