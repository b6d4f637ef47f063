"""The numbers behind every page of the dashboard: pure functions of runs and records, no Dash.

Each function takes what the run index (`app.runs`) hands out — objects shaped like `RunLike` — or
gradscope `Record` objects keyed by a display label, and returns numpy arrays or lists of plain dicts.
Lists of dicts go straight to a CSV writer (`csv_text`); the few results that are not lists have a
``*_csv_rows`` companion, so every figure of the app can offer its data as CSV. The figures themselves
are drawn in `app.figures`.

Where a number is the poster's, the reading rule lives in `trainers` (`trainers.summarize`,
`trainers.recipes`, `trainers.losses`) and is reused here, so the dashboard and
``python -m trainers summarize`` never disagree.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gradscope.figures import HeatmapGrid, heatmap_grids, heatmap_rows
from gradscope.record import Record
from trainers.losses import virtual_teacher_correct_prob
from trainers.recipes import RECIPES
from trainers.summarize import FALLBACK, MEASURED_AS, autoattack_accuracy, mean_std

from .errors import AppError


class RunLike(Protocol):
    """What the run index knows about one run folder (see docs/trainers.md, "Run folder").

    Attributes:
        id: path relative to the runs folder, posix (``fig4/seed0/baseline``); unique.
        label: short display name (``tfkd-reg s0``).
        path: the run folder.
        config: ``config.json`` as a dict (``{}`` when missing).
        metrics: one dict per finished epoch (``metrics.jsonl``).
        results: ``results.json`` once the run finished, else None.
        evaluation: ``evaluation.json`` as `trainers.robustness.read_evaluation` returns it.
        status: ``live``, ``finished``, ``failed`` or ``corrupt``.
        problem: what is wrong with the folder, in words, or None.
    """

    id: str
    label: str
    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    results: dict[str, Any] | None
    evaluation: dict[str, Any]
    status: str
    problem: str | None


Rows = list[dict[str, Any]]

ROBUST_EPS_LABEL = "8/255"  # the poster's (and RobustBench's) L∞ budget for CIFAR-10
TRAINING_METRICS = ("train_loss", "train_acc", "test_acc", "val_acc", "val_pgd_acc", "lr")
MAX_DEFAULT_GROUPS = 12  # more lines than this on one plot stop being readable
ATTRIBUTION_ARRAYS = ("images", "labels", "predictions", "indices")  # the npz keys that are not maps


# ---------------------------------------------------------------------------------------------------
# CSV


def csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows as CSV text (header = every key, in first-seen order; None as an empty cell).

    The app hands this to ``dcc.send_string``; rows need not share all keys, as tables mixing
    finished and live runs do not.
    """
    rows = list(rows)
    fields = list(dict.fromkeys(key for row in rows for key in row)) or ["empty"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    return out.getvalue()


def check_choice(kind: str, value: object, accepted: Sequence[str]) -> None:
    """Raise `AppError` naming ``value`` and the accepted ones unless ``value`` is among them."""
    if value not in accepted:
        raise AppError(f"unknown {kind} {value!r}; expected one of: {', '.join(map(str, accepted))}")


# ---------------------------------------------------------------------------------------------------
# Runs


def _best(run: RunLike, key: str) -> float | None:
    """``results.json``'s best-model value of ``key``: the number the poster's tables report."""
    value = ((run.results or {}).get("best") or {}).get(key)
    return None if value is None else float(value)


def _epochs_done(run: RunLike) -> int:
    if run.results and "epochs" in run.results:
        return int(run.results["epochs"])
    return int(run.metrics[-1].get("epoch", len(run.metrics))) if run.metrics else 0


def runs_table(runs: Iterable[RunLike]) -> Rows:
    """One row per run for the runs page: what it is, how far it got, its headline numbers.

    ``clean`` and ``pgd20`` are the best model's test accuracies from ``results.json`` (None until
    the run finishes; the poster reports the selected model, so a live run's latest epoch is shown by
    the training curves instead); ``autoattack`` is the standard AutoAttack accuracy at ε 8/255 when
    the run was evaluated (`trainers.summarize.autoattack_accuracy`).
    """
    rows = []
    for run in runs:
        config = run.config or {}
        extras = config.get("extras") or {}
        rows.append({
            "id": run.id, "label": run.label, "recipe": extras.get("recipe"), "method": config.get("method"),
            "model": config.get("model"), "dataset": config.get("dataset"), "seed": config.get("seed"),
            "epochs_done": _epochs_done(run), "epochs_planned": config.get("epochs"), "status": run.status,
            "clean": _best(run, "test_acc"), "pgd20": _best(run, "test_pgd20_acc"),
            "autoattack": autoattack_accuracy(run.evaluation or {}, ROBUST_EPS_LABEL),
            "best_epoch": (run.results or {}).get("best_epoch"), "problem": run.problem,
        })
    return rows


# ---------------------------------------------------------------------------------------------------
# Gradients: Figure 6 and its difference view


@dataclass(frozen=True)
class HeatmapView:
    """The panels of the gradient heatmap as drawn: statistics, or differences from a baseline run.

    With ``baseline`` set, each panel holds ``log10(run / baseline)`` when ``log`` (a ratio reads the
    same at every depth, where gradients differ by orders of magnitude: +1 is ten times the
    baseline's gradient) or ``run - baseline`` otherwise, cell by cell (same row and column names).
    """

    grids: list[HeatmapGrid]
    stat: str
    columns: str
    window: tuple[float, float]
    log: bool
    baseline: str | None


def difference_grids(grids: Sequence[HeatmapGrid], baseline: str, log: bool) -> list[HeatmapGrid]:
    """Each grid minus the grid titled ``baseline`` (log10 ratio when ``log``), matched by cell names.

    Cells that either grid lacks (another architecture), and with ``log`` cells that are not
    positive, are NaN. The baseline's own panel is all zeros, which marks it as the reference.
    """
    titles = [g.title for g in grids]
    check_choice("baseline run", baseline, titles)
    base = grids[titles.index(baseline)]
    base_cells = {(row, col): base.values[i, j]
                  for i, row in enumerate(base.rows) for j, col in enumerate(base.columns)}
    out = []
    for grid in grids:
        reference = np.array([[base_cells.get((row, col), np.nan) for col in grid.columns] for row in grid.rows])
        reference = reference.reshape(grid.values.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            if log:
                positive = (grid.values > 0) & (reference > 0)
                values = np.where(positive, np.log10(np.where(positive, grid.values / reference, 1.0)), np.nan)
            else:
                values = grid.values - reference
        out.append(HeatmapGrid(grid.title, list(grid.columns), list(grid.rows), values))
    return out


def heatmap_view(
    records: Mapping[str, Record], stat: str = "mean_abs", columns: str = "stage",
    window: tuple[float, float] = (0.0, 1.0), log: bool = True, baseline: str | None = None,
) -> HeatmapView:
    """Figure 6's panels (`gradscope.figures.heatmap_grids`), or their differences from ``baseline``.

    Args:
        records: display label -> record, one panel each, in this order.
        stat: one of `gradscope.STATS`.
        columns: ``"stage"`` or ``"block"`` along x.
        window: the part of training averaged over, as fractions of the recorded steps.
        log: log colour scale; with a baseline, the difference is a log10 ratio (see `HeatmapView`).
        baseline: label of the run every panel is compared with, or None for the statistic itself.
    """
    grids = heatmap_grids(dict(records), stat, columns, window)
    if baseline is not None:
        grids = difference_grids(grids, baseline, log)
    return HeatmapView(grids, stat, columns, (float(window[0]), float(window[1])), log, baseline)


def heatmap_csv_rows(
    records: Mapping[str, Record], stat: str = "mean_abs", columns: str = "stage",
    window: tuple[float, float] = (0.0, 1.0), log: bool = True, baseline: str | None = None,
) -> Rows:
    """The heatmap's cells in long format (run, column, row, value), as `app.figures.heatmap_figure` shows them.

    Takes the same arguments as the figure. Without a baseline the rows are gradscope's own
    (`gradscope.figures.heatmap_rows`, the statistic itself, never logged: the same file as the
    recipes' ``fig6.csv``); with one, ``value`` is the difference and ``quantity`` says which.
    """
    view = heatmap_view(records, stat, columns, window, log, baseline)
    rows = heatmap_rows(view.grids, stat, view.window)
    if baseline is not None:
        quantity = f"log10({stat} / baseline)" if log else f"{stat} - baseline"
        for row in rows:
            row.update(baseline=baseline, quantity=quantity)
    return rows


# ---------------------------------------------------------------------------------------------------
# Gradients: curves over training


def bin_size(n: int, max_points: int) -> int:
    """Steps per bin so that ``n`` steps make at most ``max_points`` bins (1: no binning)."""
    if not isinstance(max_points, int) or isinstance(max_points, bool) or max_points < 1:
        raise AppError(f"max_points must be a positive integer, got {max_points!r}")
    return max(1, math.ceil(n / max_points))


def downsample(
    steps: np.ndarray, values: np.ndarray, max_points: int = 1500,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bin the step axis into at most ``max_points`` bins: ``(steps, mean, low, high)`` per bin.

    A browser draws a few thousand points per line smoothly and 80,000 slowly, so long records are
    reduced on the server. Bins hold consecutive recorded steps, `bin_size` each (the last may hold
    fewer); a bin's step is the mean of its steps, its value the mean of its values, and ``low`` /
    ``high`` their min and max, so no spike is hidden by the averaging. NaN values (no gradient at that
    step) are left out of a bin; a bin of NaNs only is NaN. With ``n <= max_points`` nothing is
    binned and the values come back exactly (``low == high == mean``).

    Args:
        steps: ``(n,)`` recorded step numbers, ascending.
        values: ``(n,)`` or ``(n, groups)``; binned along the first axis.
        max_points: the most bins returned.
    """
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=np.float64)
    if steps.ndim != 1 or values.ndim not in (1, 2) or values.shape[0] != steps.shape[0]:
        raise AppError(f"downsample needs steps (n,) and values (n,) or (n, groups); got {steps.shape} and "
                       f"{values.shape}")
    size = bin_size(len(steps), max_points)
    if size == 1:
        return steps.astype(np.float64), values.copy(), values.copy(), values.copy()
    starts = np.arange(0, len(steps), size)
    counts = np.diff(np.append(starts, len(steps)))
    missing = np.isnan(values)
    present = np.add.reduceat(~missing, starts, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.add.reduceat(np.where(missing, 0.0, values), starts, axis=0) / present
    low = np.minimum.reduceat(np.where(missing, np.inf, values), starts, axis=0)
    high = np.maximum.reduceat(np.where(missing, -np.inf, values), starts, axis=0)
    empty = present == 0
    mean[empty], low[empty], high[empty] = np.nan, np.nan, np.nan
    bin_steps = np.add.reduceat(steps.astype(np.float64), starts) / counts
    return bin_steps, mean, low, high


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: a debiased exponential moving average, NaN-safe.

    ``s_k = m_k / (1 - w^k)`` with ``m_k = w m_{k-1} + (1 - w) x_k``, ``m_0 = 0``, ``k`` counting the
    finite values so far. The debiasing keeps the first points from being pulled towards 0; a
    non-finite value (no gradient, or an overflow) is passed through unchanged and skipped by the
    average, so one bad step neither poisons the rest nor disappears from view. ``weight`` 0 returns
    the values; it must be below 1 (at 1 nothing would ever move).
    """
    if not 0.0 <= weight < 1.0:
        raise AppError(f"smoothing weight must lie in [0, 1), got {weight!r}")
    raw = np.asarray(values, dtype=np.float64)
    if raw.ndim != 1:
        raise AppError(f"smooth needs a 1-D series, got shape {raw.shape}")
    if weight == 0.0:
        return raw.copy()
    out, mean, k = [], 0.0, 0
    for value in raw.tolist():
        if math.isfinite(value):
            mean = weight * mean + (1.0 - weight) * value
            k += 1
            value = mean / (1.0 - weight**k)
        out.append(value)
    return np.array(out, dtype=np.float64)


def default_groups(record: Record, level: str, stat: str, cap: int = MAX_DEFAULT_GROUPS) -> list[str]:
    """Every group of ``level``, or the ``cap`` with the largest mean ``stat`` over training, in model order.

    Largest because the curves are about where gradient is (and ResNet18 has 41 layers, too many to
    tell apart on one plot); the user can pick any others by name.
    """
    steps, names, values = record.matrix(level, stat)
    if len(names) <= cap:
        return list(names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # groups with no gradient at all
        means = np.nanmean(values, axis=0) if len(steps) else np.zeros(len(names))
    order = np.argsort(-np.nan_to_num(means, nan=-np.inf), kind="stable")[:cap]
    return [names[i] for i in sorted(order)]


def layer_series(
    record: Record, level: str = "layer", stat: str = "mean_abs", names: Sequence[str] | None = None,
    max_points: int = 1500, smoothing: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """Each group's statistic over training, binned for drawing (`downsample`) and smoothed (`smooth`).

    Args:
        record: the run's gradient record.
        level: ``param``, ``layer``, ``block`` or ``stage``.
        stat: one of `gradscope.STATS`.
        names: groups to return, in this order; default `default_groups` (at most 12, the largest).
        max_points: the most points per line.
        smoothing: EMA weight in [0, 1), applied to the binned means (what is drawn), as TensorBoard
            smooths the points it draws.

    Returns:
        ``name -> {"steps", "value", "low", "high", "smoothed"}`` (float arrays of one length) and
        ``"bin_size"``, the recorded steps per point (1: exact values, low == high == value).
    """
    steps, all_names, values = record.matrix(level, stat)
    chosen = default_groups(record, level, stat) if names is None else list(names)
    for name in chosen:
        if name not in all_names:
            shown = ", ".join(all_names[:20]) + (", ..." if len(all_names) > 20 else "")
            raise AppError(f"no {level} {name!r} in this record; its {level}s are: {shown}")
    columns = [all_names.index(name) for name in chosen]
    bin_steps, mean, low, high = downsample(steps, values[:, columns].reshape(len(steps), len(columns)), max_points)
    size = bin_size(len(steps), max_points)
    return {
        name: {"steps": bin_steps, "value": mean[:, j], "low": low[:, j], "high": high[:, j],
               "smoothed": smooth(mean[:, j], smoothing), "bin_size": size}
        for j, name in enumerate(chosen)
    }


def series_csv_rows(series_by_run: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Rows:
    """`layer_series` of several runs in long format: one row per run, group and drawn point."""
    rows = []
    for run, series in series_by_run.items():
        for group, s in series.items():
            columns = {key: [_number(v) for v in np.asarray(s[key], dtype=np.float64).tolist()]
                       for key in ("steps", "value", "low", "high", "smoothed")}
            for i in range(len(columns["steps"])):
                rows.append({"run": run, "group": group, "step": columns["steps"][i], "value": columns["value"][i],
                             "low": columns["low"][i], "high": columns["high"][i],
                             "smoothed": columns["smoothed"][i], "bin_size": s["bin_size"]})
    return rows


def _number(value: float) -> float | None:
    """None for NaN and inf: JSON (a Dash store) has no such numbers, and an empty CSV cell reads as missing."""
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------------
# Virtual teacher: Figure 5


def virtual_teacher_curves(
    a: float = 0.9, num_classes: int = 10, temperatures: Sequence[float] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Tf-KD-reg's virtual teacher p^d_τ at each temperature τ: Figure 5 of the poster.

    The teacher is the softmax at temperature τ of a distribution putting ``a`` on the correct class
    and (1-a)/(K-1) on each other one, so in closed form (`trainers.losses.virtual_teacher_correct_prob`)

        p_correct(τ) = 1 / (1 + (K-1) exp(-(a - (1-a)/(K-1)) / τ)),  p_incorrect = (1 - p_correct) / (K-1),

    both tending to 1/K as τ grows: the higher the temperature, the stronger the label smoothing.

    Args:
        a: probability given to the correct class before the softmax, in [1/K, 1] (poster: 0.9 to 1).
        num_classes: K, at least 2.
        temperatures: the τ values (positive); default 200 log-spaced from 0.05 to 100, which shows
            the teacher going from one-hot to uniform.

    Returns:
        ``{"temperature", "correct", "incorrect"}`` arrays, and ``"a"`` and ``"num_classes"``.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise AppError(f"num_classes must be an integer of at least 2, got {num_classes!r}")
    if not isinstance(a, (int, float)) or isinstance(a, bool) or not 1.0 / num_classes <= a <= 1.0:
        raise AppError(f"a is the correct class's probability and must lie in [1/K, 1] = [{1 / num_classes:.3g}, 1], "
                       f"got {a!r}")
    taus = np.geomspace(0.05, 100.0, 200) if temperatures is None else np.asarray(temperatures, dtype=np.float64)
    if taus.ndim != 1 or not len(taus) or not np.all(taus > 0):
        raise AppError(f"temperatures must be a non-empty list of positive numbers, got {temperatures!r}")
    correct = np.array([virtual_teacher_correct_prob(num_classes, a, tau) for tau in taus.tolist()])
    return {"temperature": taus, "correct": correct, "incorrect": (1.0 - correct) / (num_classes - 1),
            "a": float(a), "num_classes": num_classes}


def virtual_teacher_csv_rows(curves: Mapping[str, Any]) -> Rows:
    """`virtual_teacher_curves` as one row per temperature."""
    return [{"temperature": float(t), "correct": float(c), "incorrect": float(i), "a": curves["a"],
             "num_classes": curves["num_classes"]}
            for t, c, i in zip(curves["temperature"], curves["correct"], curves["incorrect"])]


def temperature_markers(runs: Iterable[RunLike]) -> Rows:
    """Where each Tf-KD-reg run (``tfkd-reg``, ``at-tfkd-reg``, ...) sits on Figure 5.

    Each marker carries the run's own τ, a and K, and the correct-class probability of its teacher,
    so a run trained with another ``a`` than the curve's is placed at its own value.
    """
    markers = []
    for run in runs:
        config = run.config or {}
        if "tfkd-reg" not in str(config.get("method", "")):
            continue
        tau, a = config.get("temperature"), config.get("a")
        if tau is None or a is None:
            continue
        k = int(config.get("num_classes") or 10)
        markers.append({"label": run.label, "id": run.id, "method": config["method"], "temperature": float(tau),
                        "a": float(a), "num_classes": k,
                        "correct": virtual_teacher_correct_prob(k, float(a), float(tau))})
    return markers


# ---------------------------------------------------------------------------------------------------
# Robustness: Figure 7


def autoattack_entry(evaluation: Mapping[str, Any], eps_label: str = ROBUST_EPS_LABEL) -> dict[str, Any] | None:
    """The AutoAttack result `trainers.summarize.autoattack_accuracy` reports (standard first, most images)."""
    entries = [e for e in (evaluation.get("results") or {}).values()
               if e.get("attack") == "autoattack" and e.get("eps_label") == eps_label]
    if not entries:
        return None
    return max(entries, key=lambda e: (e.get("version") == "standard", e.get("n", 0)))


def robust_accuracy_of(run: RunLike) -> tuple[float | None, str | None]:
    """(accuracy, kind): AutoAttack at 8/255 when evaluated, else the PGD-20 accuracy in ``results.json``.

    The poster reports AutoAttack; PGD-20 (what every adversarial run measures when it finishes) is an
    upper bound on it, so it stands in, labelled, until ``python -m trainers evaluate`` has run.
    """
    aa = autoattack_accuracy(run.evaluation or {}, ROBUST_EPS_LABEL)
    if aa is not None:
        return aa, "AutoAttack"
    pgd = _best(run, "test_pgd20_acc")
    return (pgd, "PGD-20") if pgd is not None else (None, None)


def _mean_and_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (None for the std of one seed, None for both with none)."""
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def robustness_summary(runs: Iterable[RunLike]) -> Rows:
    """Clean and robust accuracy per method, mean and sample std over seeds (Figure 7's table).

    Finished runs are grouped by (method, model, dataset), so a baseline MLP and a baseline ResNet
    never share a row. ``robust_kind`` says what ``robust_*`` measures: AutoAttack at 8/255 when at
    least one seed was evaluated with it (averaged over those seeds, ``n_robust`` of them; mixing it
    with PGD-20 would average two different attacks), else PGD-20, else None (a clean-only method).
    """
    groups: dict[tuple[str, str, str], list[RunLike]] = {}
    for run in runs:
        if run.results is None:
            continue
        config = run.config or {}
        key = tuple(str(config.get(k, run.results.get(k, "?"))) for k in ("method", "model", "dataset"))
        groups.setdefault(key, []).append(run)  # type: ignore[arg-type]
    rows = []
    for (method, model, dataset), members in groups.items():
        clean = [v for r in members if (v := _best(r, "test_acc")) is not None]
        robust = [robust_accuracy_of(r) for r in members]
        kind = next((k for k in ("AutoAttack", "PGD-20") if any(rk == k for _, rk in robust)), None)
        chosen = [v for v, rk in robust if rk == kind and v is not None]
        clean_mean, clean_std = _mean_and_std(clean)
        robust_mean, robust_std = _mean_and_std(chosen)
        rows.append({"method": method, "model": model, "dataset": dataset, "n_seeds": len(members),
                     "clean_mean": clean_mean, "clean_std": clean_std, "robust_mean": robust_mean,
                     "robust_std": robust_std, "robust_kind": kind, "n_robust": len(chosen),
                     "runs": ", ".join(r.label for r in members)})
    return rows


def eps_curves(runs: Iterable[RunLike]) -> Rows:
    """PGD-20 accuracy against ε for every run with a stored sweep (its sweep on the most images).

    One row per run and ε, in long format: ``run`` (label), ``id``, ``method``, ``checkpoint``,
    ``eps`` (as a fraction), ``eps_255`` (ε·255), ``eps_label``, ``accuracy`` (%), ``n`` (images).
    """
    rows = []
    for run in runs:
        sweeps = list(((run.evaluation or {}).get("sweeps") or {}).values())
        if not sweeps:
            continue
        sweep = max(sweeps, key=lambda s: s.get("n", 0))
        for eps, label, accuracy in zip(sweep["eps"], sweep["eps_labels"], sweep["accuracy"]):
            rows.append({"run": run.label, "id": run.id, "method": (run.config or {}).get("method"),
                         "checkpoint": sweep.get("checkpoint"), "eps": float(eps), "eps_255": float(eps) * 255,
                         "eps_label": label, "accuracy": float(accuracy), "n": sweep.get("n")})
    return rows


def attack_breakdown(runs: Iterable[RunLike], eps_label: str = ROBUST_EPS_LABEL) -> Rows:
    """Accuracy after each attack of AutoAttack (clean, then APGD-CE, APGD-T, FAB-T, Square), per run.

    Each attack runs on the points still robust, so accuracy falls along the list; where it stops
    falling shows which attack did the work (a big drop only at Square, a black-box attack, hints at
    gradient masking).
    """
    rows = []
    for run in runs:
        entry = autoattack_entry(run.evaluation or {}, eps_label)
        if entry is None:
            continue
        for order, (stage, accuracy) in enumerate((entry.get("breakdown") or {}).items()):
            rows.append({"run": run.label, "id": run.id, "method": (run.config or {}).get("method"),
                         "eps_label": eps_label, "n": entry.get("n"), "version": entry.get("version"),
                         "order": order, "stage": stage, "accuracy": float(accuracy)})
    return rows


def sanity_flags(runs: Iterable[RunLike]) -> Rows:
    """Warning signs stored by the evaluation (robust above clean, AutoAttack above PGD, flat ε curve)."""
    return [{"run": run.label, "id": run.id, "flag": flag.get("flag"), "message": flag.get("message")}
            for run in runs for flag in ((run.evaluation or {}).get("flags") or [])]


# ---------------------------------------------------------------------------------------------------
# Training curves


def training_curves(runs: Iterable[RunLike], metric: str = "test_acc") -> Rows:
    """``metric`` at every finished epoch of every run that logs it (``metrics.jsonl``), long format.

    ``val_pgd_acc`` exists for adversarial runs only and ``val_acc`` for runs with a validation split;
    runs without the metric give no rows.
    """
    check_choice("training metric", metric, TRAINING_METRICS)
    rows = []
    for run in runs:
        for row in run.metrics:
            value = row.get(metric)
            if value is None:
                continue
            rows.append({"run": run.label, "id": run.id, "method": (run.config or {}).get("method"),
                         "epoch": row.get("epoch"), "step": row.get("step"), "metric": metric,
                         "value": _number(float(value))})
    return rows


# ---------------------------------------------------------------------------------------------------
# Attribution


def attribution_panels(run: RunLike) -> dict[str, Any] | None:
    """A run's attribution maps ready to show, or None when ``python -m trainers attribute`` has not run.

    Reads ``attribution/attributions.npz`` (layout in `trainers.attribution`). Each map becomes a
    display map per image with `trainers.attribution.display_map` — magnitude summed over channels,
    divided by the image's own 99th percentile, clipped to [0, 1] — the scaling of the run's
    ``grid.png``, so colours compare within a tile, not across tiles (the npz keeps raw values).
    Methods with one map per layer (Grad-CAM: one per residual stage, named in ``meta.json``) become
    one entry per layer, ``"gradcam layer1.1"``: summing maps of different depths would mix scales.

    Returns:
        ``images`` (K, H, W, C) in [0, 1] (channels last, for drawing), ``labels``, ``predictions``
        and ``indices`` (K,) int, ``maps`` ``{name: (K, H, W)}``, and ``skipped`` ``{method: why}``.
    """
    from trainers.attribution import display_map

    folder = Path(run.path) / "attribution"
    path = folder / "attributions.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").is_file() else {}
    except (OSError, ValueError) as exc:
        raise AppError(f"{path} cannot be read ({exc}); run `python -m trainers attribute {run.path}` again") from exc
    missing = [key for key in ATTRIBUTION_ARRAYS if key not in arrays]
    if missing:
        raise AppError(f"{path} lacks {', '.join(missing)}; run `python -m trainers attribute {run.path}` again")
    images = arrays["images"]
    order = [m for m in meta.get("methods", []) if m in arrays]
    order += [k for k in arrays if k not in ATTRIBUTION_ARRAYS and k not in order]
    maps: dict[str, np.ndarray] = {}
    for method in order:
        raw = arrays[method]
        if raw.ndim != 4 or raw.shape[0] != images.shape[0] or raw.shape[-2:] != images.shape[-2:]:
            raise AppError(f"{path}: {method} has shape {raw.shape}; expected (K, P, H, W) with K, H, W of the "
                           f"images {images.shape}")
        layers = meta.get(f"{method}_layers") or []
        if layers and len(layers) == raw.shape[1]:
            for p, layer in enumerate(layers):
                maps[f"{method} {layer}"] = np.stack([display_map(m[p:p + 1]) for m in raw])
        else:
            maps[method] = np.stack([display_map(m) for m in raw])
    return {"images": np.clip(images.transpose(0, 2, 3, 1), 0.0, 1.0), "labels": arrays["labels"].astype(np.int64),
            "predictions": arrays["predictions"].astype(np.int64), "indices": arrays["indices"].astype(np.int64),
            "maps": maps, "skipped": dict(meta.get("skipped") or {})}


def attribution_csv_rows(panels_by_run: Mapping[str, Mapping[str, Any] | None]) -> Rows:
    """Which images each run was explained on, with label and prediction (the maps stay in the npz)."""
    rows = []
    for run, panels in panels_by_run.items():
        if panels is None:
            continue
        for i, (index, label, prediction) in enumerate(zip(panels["indices"], panels["labels"],
                                                           panels["predictions"])):
            rows.append({"run": run, "image": i, "test_index": int(index), "label": int(label),
                         "prediction": int(prediction), "correct": bool(label == prediction),
                         "maps": ", ".join(panels["maps"])})
    return rows


# ---------------------------------------------------------------------------------------------------
# The poster's tables


def _recipe_value(run: RunLike, key: str) -> float | None:
    if key == "autoattack_acc":
        return autoattack_accuracy(run.evaluation or {}, ROBUST_EPS_LABEL)
    return _best(run, key)


def poster_tables(runs: Iterable[RunLike]) -> list[dict[str, Any]]:
    """Figures 1, 2, 4 and 7 as ours (mean ± std over seeds) beside the poster's numbers.

    Runs belong to a table by ``config["extras"]`` (``recipe`` and ``run``, written by
    ``python -m trainers recipe``); finished runs only. Every recipe's table is returned with all of
    its rows, so the poster's numbers show before anything is trained (``ours`` is then "—"). As in
    ``python -m trainers summarize``, an AutoAttack cell falls back to PGD-20 until the run is
    evaluated, and its ``metric`` says so.

    Returns:
        ``[{"figure", "title", "datasets" (measured on), "rows": [{"run", "metric", "ours", "mean",
        "std", "n_seeds", "poster", "parameters"}]}]``; ``parameters`` (weights without biases) for
        Figure 1 only, which reports them.
    """
    found: dict[str, dict[str, list[RunLike]]] = {}
    for run in runs:
        extras = (run.config or {}).get("extras") or {}
        if run.results is not None and extras.get("recipe") in RECIPES and extras.get("run"):
            found.setdefault(extras["recipe"], {}).setdefault(extras["run"], []).append(run)
    tables = []
    for figure in RECIPES:
        recipe = RECIPES.get(figure)
        by_run = found.get(figure, {})
        rows = []
        for spec in recipe.runs:
            seeds = by_run.get(spec.name, [])
            for metric, poster in recipe.poster.get(spec.name, {"test_acc": None}).items():
                key, label = MEASURED_AS[metric]
                values = [v for r in seeds if (v := _recipe_value(r, key)) is not None]
                if not values and metric in FALLBACK:
                    key, label = FALLBACK[metric]
                    values = [v for r in seeds if (v := _recipe_value(r, key)) is not None]
                mean, std = _mean_and_std(values)
                parameters = (seeds[0].results or {}).get("parameters_without_biases") if seeds else None
                rows.append({"run": spec.name, "metric": label, "ours": mean_std(values), "mean": mean, "std": std,
                             "n_seeds": len(values), "poster": poster,
                             "parameters": parameters if recipe.show_parameters else None})
        datasets = sorted({str(r.config.get("dataset")) for seeds in by_run.values() for r in seeds})
        tables.append({"figure": figure, "title": recipe.title, "datasets": datasets, "rows": rows})
    return tables


def poster_table_csv_rows(tables: Sequence[Mapping[str, Any]]) -> Rows:
    """`poster_tables` flattened: one row per figure, run and metric."""
    return [{"figure": t["figure"], "measured_on": ", ".join(t["datasets"]), **row}
            for t in tables for row in t["rows"]]
