"""The layout of a run folder, and the rule that a folder holds one run."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TrainersError


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run's folder (see docs/runs.md)."""

    root: Path

    @property
    def config(self) -> Path:
        """The fully resolved `TrainConfig`, JSON."""
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        """One JSON object per finished epoch."""
        return self.root / "metrics.jsonl"

    @property
    def record(self) -> Path:
        """The gradscope record of the run's gradients."""
        return self.root / "gradscope"

    @property
    def best(self) -> Path:
        """Checkpoint of the epoch chosen by ``select_on``."""
        return self.root / "checkpoints" / "best.pt"

    @property
    def last(self) -> Path:
        """Checkpoint after the last finished epoch (what ``--resume`` continues)."""
        return self.root / "checkpoints" / "last.pt"

    @property
    def results(self) -> Path:
        """Final evaluation; present once the run finished."""
        return self.root / "results.json"

    def holds_run(self) -> bool:
        """Whether a run was started here."""
        return self.config.exists()

    def read_config(self) -> dict[str, Any]:
        """The stored config as a dict."""
        return json.loads(self.config.read_text())

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every epoch's metrics written so far."""
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def claim(self, *, resume: bool, overwrite: bool) -> None:
        """Make the folder ready for a new run, or check it can be resumed.

        A folder that holds another run is refused unless ``resume`` (continue it) or ``overwrite``
        (delete that run's files first) is given; files that are not a run's are never deleted.
        """
        if resume and overwrite:
            raise TrainersError("--resume and --overwrite exclude each other")
        if self.root.exists() and not self.root.is_dir():
            raise TrainersError(f"output path {self.root} is a file; give a folder")
        if resume:
            if not self.last.exists():
                raise TrainersError(f"nothing to resume in {self.root}: no checkpoints/last.pt")
            return
        if self.holds_run():
            if not overwrite:
                old = self.read_config()
                raise TrainersError(
                    f"{self.root} holds another run ({old.get('method')} {old.get('model')} on {old.get('dataset')}); "
                    "pass --resume to continue it or --overwrite to replace it"
                )
            for path in (self.config, self.metrics, self.results):
                path.unlink(missing_ok=True)
            for folder in (self.record, self.best.parent):
                shutil.rmtree(folder, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one epoch's metrics (one line, flushed)."""
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the first ``epochs`` rows: a resumed run rewrites epochs after its last checkpoint."""
        rows = [r for r in self.read_metrics() if r["epoch"] <= epochs]
        self.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
