"""``python -m trainers summarize DIR``: each figure's table, mean ± std over seeds, beside the poster."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from .errors import TrainersError
from .recipes import RECIPES

# What our runs report for each of the poster's metrics, until AutoAttack is evaluated.
MEASURED_AS = {"test_acc": ("test_acc", "clean"), "autoattack_acc": ("autoattack_acc", "AutoAttack")}
FALLBACK = {"autoattack_acc": ("test_pgd20_acc", "PGD-20 (poster: AutoAttack)")}


def collect(folder: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Map figure -> run name -> results of every seed, from ``<folder>/<figure>/seed*/<run>/results.json``."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(folder.glob("*/seed*/*/results.json")):
        figure, run = path.parts[-4], path.parts[-2]
        found[figure][run].append(json.loads(path.read_text()))
    return found


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (sample std; just the mean for a single seed)."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _metric(results: dict[str, Any], key: str) -> float | None:
    value = results.get("best", {}).get(key)
    return None if value is None else float(value)


def summarize(folder: Path) -> str:
    """The text of every figure's table found under ``folder``."""
    if not folder.is_dir():
        raise TrainersError(f"{folder} is not a folder")
    found = collect(folder)
    if not found:
        raise TrainersError(f"no finished runs under {folder} (expected <figure>/seed<N>/<run>/results.json)")
    blocks = []
    for figure, runs in found.items():
        recipe = RECIPES.get(figure) if figure in RECIPES else None
        lines = [f"{figure}: {recipe.title if recipe else '(not a recipe)'}"]
        names = [s.name for s in recipe.runs if s.name in runs] if recipe else sorted(runs)
        for name in names:
            poster = recipe.poster.get(name, {}) if recipe else {"test_acc": float("nan")}
            cells = []
            for metric in poster or {"test_acc": None}:
                key, label = MEASURED_AS[metric]
                values = [v for r in runs[name] if (v := _metric(r, key)) is not None]
                if not values and metric in FALLBACK:
                    key, label = FALLBACK[metric]
                    values = [v for r in runs[name] if (v := _metric(r, key)) is not None]
                reference = poster.get(metric)
                ref = f" (poster {reference:.2f})" if reference is not None else ""
                cells.append(f"{label} {mean_std(values)}{ref}")
            if recipe and recipe.show_parameters:
                first = runs[name][0]
                cells.append(f"{first['parameters_without_biases']:,} weights ({first['parameters']:,} with biases)")
            lines.append(f"  {name:14s} " + "; ".join(cells) + f"  [{len(runs[name])} seed(s)]")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
