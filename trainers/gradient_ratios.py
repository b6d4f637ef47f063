"""Figure 6 as numbers: how much larger each layer's average gradient is in a run than in its baseline.

The poster reads Figure 6 as "significantly larger average gradients for layers in the Tf-KD models".
`layer_ratios` turns the heatmap into one ratio per layer (the run's time-averaged statistic over the
baseline's, same seed), and `compare` into what that claim needs: per run and seed, the geometric mean
ratio over layers and the share of layers that are larger, then their mean ± std over seeds. Both
raw and normalised (each step ÷ the run's global gradient norm, `gradscope.NORMALIZATIONS`): a
loss term's weight scales every gradient alike, so only the normalised ratio says whether the
*pattern* across layers changed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import gradscope
from gradscope import Record

from .errors import TrainersError
from .run_folder import RunFolder

VIEWS = ("none", "global")  # raw statistic, then normalised by the global gradient norm


@dataclass(frozen=True)
class RatioSummary:
    """One run against its seed's baseline, in one view."""

    run: str
    seed: str
    normalize: str
    geometric_mean: float  # exp(mean(log(run / baseline))) over the layers both have
    larger: float  # share of those layers where the run's statistic is larger
    layers: int


def layer_ratios(run: Record, baseline: Record, stat: str = "mean_abs", normalize: str = "none",
                 window: tuple[float, float] = (0.0, 1.0)) -> dict[str, float]:
    """``run / baseline`` of each layer's statistic averaged over ``window``, for layers both recorded."""
    ours = run.window_mean("layer", stat, window, normalize)
    theirs = baseline.window_mean("layer", stat, window, normalize)
    return {name: ours[name] / theirs[name] for name in ours
            if name in theirs and theirs[name] > 0 and math.isfinite(ours[name] / theirs[name])}


def summarize_ratios(ratios: dict[str, float], run: str, seed: str, normalize: str) -> RatioSummary:
    """Geometric mean and share of layers above 1."""
    values = np.array(list(ratios.values()))
    if values.size == 0:
        raise TrainersError(f"{seed}/{run}: no layer in common with the baseline")
    return RatioSummary(run, seed, normalize, float(np.exp(np.log(values).mean())), float((values > 1).mean()),
                        int(values.size))


def compare(folder: Path, baseline: str = "baseline", stat: str = "mean_abs",
            window: tuple[float, float] = (0.0, 1.0)) -> list[RatioSummary]:
    """Every run with a record beside a run called ``baseline`` (one seed folder each), against it.

    ``folder`` is a recipe's ``--out`` folder, a figure's folder or one seed's folder.
    """
    folder = Path(folder)
    seeds = sorted(p.parent for p in [folder / baseline, *folder.rglob(baseline)] if RunFolder(p).has_record())
    if not seeds:
        raise TrainersError(f"no run called {baseline!r} with a gradient record under {folder}")
    summaries = []
    for seed_folder in dict.fromkeys(seeds):
        reference = gradscope.load(RunFolder(seed_folder / baseline).record_path())
        for run_folder in sorted(p for p in seed_folder.iterdir() if p.name != baseline and p.is_dir()):
            if not RunFolder(run_folder).has_record():
                continue
            record = gradscope.load(RunFolder(run_folder).record_path())
            for view in VIEWS:
                summaries.append(summarize_ratios(layer_ratios(record, reference, stat, view, window),
                                                  run_folder.name, seed_folder.name, view))
    return summaries


def ratio_lines(summaries: list[RatioSummary], baseline: str = "baseline", stat: str = "mean_abs") -> list[str]:
    """Per run and view: each seed's figures, then mean ± std over seeds."""
    lines = [f"{stat} per layer, averaged over training, against {baseline} of the same seed "
             "(geometric mean of run / baseline over layers; share of layers larger)"]
    groups: dict[tuple[str, str], list[RatioSummary]] = {}
    for s in summaries:
        groups.setdefault((s.run, s.normalize), []).append(s)
    for (run, view), rows in groups.items():
        label = "raw" if view == "none" else f"normalised ({view})"
        per_seed = ", ".join(f"{s.seed} ×{s.geometric_mean:.2f} ({s.larger:.0%} of {s.layers})" for s in rows)
        means = [s.geometric_mean for s in rows]
        spread = f" ± {statistics.stdev(means):.2f}" if len(means) > 1 else ""
        share = statistics.mean(s.larger for s in rows)
        lines.append(f"  {run:<14} {label:<22} ×{statistics.mean(means):.2f}{spread} over {len(rows)} seed(s), "
                     f"{share:.0%} of layers larger  [{per_seed}]")
    return lines
