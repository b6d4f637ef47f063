"""``python -m trainers summarize DIR``: each figure's table, mean ± std over seeds, beside the poster."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from .errors import TrainersError
from .recipes import RECIPES
from .robustness import read_evaluation

# What our runs report for each of the poster's metrics, until AutoAttack is evaluated.
MEASURED_AS = {"test_acc": ("test_acc", "clean"), "autoattack_acc": ("autoattack_acc", "AutoAttack")}
FALLBACK = {"autoattack_acc": ("test_pgd20_acc", "PGD-20 (poster: AutoAttack)")}


def collect(folder: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Map figure -> run name -> results of every seed, from ``<folder>/<figure>/seed*/<run>/results.json``."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(folder.glob("*/seed*/*/results.json")):
        figure, run = path.parts[-4], path.parts[-2]
        results = json.loads(path.read_text())
        results["evaluation"] = read_evaluation(path.parent)
        found[figure][run].append(results)
    return found


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (sample std; just the mean for a single seed)."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _metric(results: dict[str, Any], key: str) -> float | None:
    if key == "autoattack_acc":
        return autoattack_accuracy(results["evaluation"])
    value = results.get("best", {}).get(key)
    return None if value is None else float(value)


def autoattack_accuracy(evaluation: dict[str, Any], eps_label: str = "8/255") -> float | None:
    """The AutoAttack accuracy at ``eps_label`` on the most images (the standard version preferred)."""
    entries = [e for e in evaluation.get("results", {}).values()
               if e["attack"] == "autoattack" and e["eps_label"] == eps_label]
    if not entries:
        return None
    best = max(entries, key=lambda e: (e.get("version") == "standard", e["n"]))
    return float(best["accuracy"])


def eps_curves(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per run with a stored ε sweep: mean PGD-20 accuracy over seeds at each ε."""
    lines = []
    for name, seeds in runs.items():
        sweeps = [max(r["evaluation"]["sweeps"].values(), key=lambda s: s["n"])
                  for r in seeds if r["evaluation"].get("sweeps")]
        if sweeps:
            labels = sweeps[0]["eps_labels"]
            means = [statistics.mean(s["accuracy"][i] for s in sweeps) for i in range(len(labels))]
            lines.append(f"  {name:14s} PGD-20 accuracy by ε: "
                         + ", ".join(f"{lab} {m:.2f}" for lab, m in zip(labels, means)) + f"  [{len(sweeps)} seed(s)]")
    return lines


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
        datasets = sorted({r["dataset"] for seeds in runs.values() for r in seeds})
        lines = [f"{figure}: {recipe.title if recipe else '(not a recipe)'} — measured on {', '.join(datasets)}"]
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
        curves = eps_curves(runs)
        if curves:
            lines += ["  ε curves:", *curves]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
