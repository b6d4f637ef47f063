"""``python -m trainers evaluate``: clean, PGD-20, ε sweep and AutoAttack of a run, merged into its folder.

Every result lands in ``RUN/evaluation.json`` under a key naming checkpoint, attack, ε and number of
images, with its settings, time and library versions; a later evaluation adds keys and never removes
one. The sanity flags (signs of gradient masking or a bug, Carlini et al. 2019; Croce & Hein 2020)
are recomputed from everything stored after each call.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .errors import TrainersError
from .evaluate import ATTACKS, STANDARD_AUTOATTACK, autoattack_breakdown, check_eps, robust_accuracy
from .restore import data_of, restore

EVALUATION_FILE = "evaluation.json"
SWEEP_EPS = (0, 2, 4, 8, 16)  # /255, the robustness curve
TOLERANCE = 0.5  # percentage points of noise allowed before a flag fires


def eps_label(eps: float) -> str:
    """8/255 for multiples of 1/255 (0 for none), else the number."""
    if eps == 0:
        return "0"
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.6g}"


def versions() -> dict[str, str]:
    """Library versions an evaluation depends on."""
    import pyautoattack

    out = {"torch": torch.__version__, "python": sys.version.split()[0]}
    out["pyautoattack"] = getattr(pyautoattack, "__version__", _dist_version("pyautoattack"))
    return out


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def read_evaluation(run_dir: Path) -> dict[str, Any]:
    """The stored evaluation of a run (empty when there is none)."""
    path = run_dir / EVALUATION_FILE
    if not path.exists():
        return {"results": {}, "sweeps": {}, "flags": []}
    return json.loads(path.read_text())


def _write(run_dir: Path, evaluation: dict[str, Any]) -> None:
    path = run_dir / EVALUATION_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(evaluation, indent=2) + "\n")
    os.replace(tmp, path)


def sanity_flags(evaluation: dict[str, Any]) -> list[dict[str, str]]:
    """Robust above clean, AutoAttack above PGD, accuracy not falling with ε: each a warning sign."""
    flags = []
    results = evaluation["results"].values()
    for r in results:
        clean = _find(results, r["checkpoint"], "clean", None, r["n"])
        if r["attack"] != "clean" and clean is not None and r["accuracy"] > clean + TOLERANCE:
            flags.append({"flag": "robust_above_clean", "message": f"{r['checkpoint']}: {r['attack']} at ε "
                          f"{r['eps_label']} gives {r['accuracy']:.2f}% above clean {clean:.2f}%"})
        if r["attack"] == "autoattack":
            pgd = _find(results, r["checkpoint"], "pgd", r["eps"], r["n"])
            if pgd is not None and r["accuracy"] > pgd + TOLERANCE:
                flags.append({"flag": "autoattack_above_pgd", "message": f"{r['checkpoint']}: AutoAttack "
                              f"{r['accuracy']:.2f}% above PGD {pgd:.2f}% at ε {r['eps_label']}"})
    for key, sweep in evaluation["sweeps"].items():
        acc = sweep["accuracy"]
        rises = [i for i in range(1, len(acc)) if acc[i] > acc[i - 1] + TOLERANCE]
        above_chance = acc[0] > 1.5 * 100.0 / sweep["num_classes"]  # a model at chance has nothing to lose
        if rises or (len(acc) > 1 and acc[-1] >= acc[0] - TOLERANCE and above_chance):
            flags.append({"flag": "accuracy_not_falling_with_eps", "message": f"{key}: accuracy "
                          f"{', '.join(f'{a:.1f}' for a in acc)}% over ε {', '.join(sweep['eps_labels'])}"})
    return flags


def _find(results: Any, checkpoint: str, attack: str, eps: float | None, n: int) -> float | None:
    for r in results:
        if (r["checkpoint"], r["attack"], r["n"]) == (checkpoint, attack, n) and (
                eps is None or abs(r["eps"] - eps) < 1e-9):
            return float(r["accuracy"])
    return None


def eps_sweep(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 128,
              num_classes: int = 10, eps_255: tuple[int, ...] = SWEEP_EPS) -> dict[str, Any]:
    """PGD-20 accuracy (step ε/4) at each ε in ``eps_255``/255; ε = 0 is clean accuracy."""
    accs = [robust_accuracy(model, x, y, "clean", batch_size=batch_size) if k == 0 else
            robust_accuracy(model, x, y, "pgd", k / 255, steps=20, step_size=k / 255 / 4, batch_size=batch_size)
            for k in eps_255]
    return {"attack": "pgd-20", "eps": [k / 255 for k in eps_255], "eps_labels": [eps_label(k / 255) for k in eps_255],
            "accuracy": accs, "num_classes": num_classes}


def evaluate_run(path: str | os.PathLike[str], *, attacks: list[str], eps: float = 8 / 255, n: int | None = None,
                 batch_size: int | None = None, device: str = "cpu", sweep: bool = True,
                 attacks_to_run: list[str] | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Evaluate a run's checkpoint and merge the results into its ``evaluation.json``; returns the file's content.

    Everything is checked (ε, attack names, the checkpoint, the data) before anything is written.
    """
    check_eps(eps)
    for attack in attacks:
        ATTACKS.get(attack)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainersError(f"--device {device}: no CUDA device is available here; use --device cpu")
    restored = restore(path, device)
    test = data_of(restored.config).test
    if n is not None and not 1 <= n <= len(test):
        raise TrainersError(f"--n must lie in 1..{len(test)}, got {n}")
    n = n or len(test)
    x, y = test.images[:n].float().div(255), test.labels[:n]
    batch_size = batch_size or (1000 if device.startswith("cuda") else 128)
    evaluation = read_evaluation(restored.run_dir)
    common = {"checkpoint": restored.which, "n": n, "batch_size": batch_size, "device": device,
              "versions": versions()}
    model = restored.model
    for attack in attacks:
        started = time.perf_counter()
        entry: dict[str, Any] = {**common, "attack": attack, "eps": 0.0 if attack == "clean" else eps}
        if attack == "autoattack":
            state = restored.run_dir / f".autoattack-{restored.which}-{eps_label(eps).replace('/', '_')}-{n}.json"
            chosen = attacks_to_run or list(STANDARD_AUTOATTACK)
            seconds: dict[str, float] = {}
            breakdown = autoattack_breakdown(model, x, y, eps=eps, batch_size=batch_size, attacks_to_run=chosen,
                                             state_path=state, show_progress=show_progress, seconds=seconds)
            entry.update(accuracy=breakdown[chosen[-1]], breakdown=breakdown, attacks_to_run=chosen,
                         attack_seconds=seconds,
                         version="standard" if chosen == list(STANDARD_AUTOATTACK) else "custom subset")
        else:
            options = {"steps": 20, "step_size": eps / 4} if attack == "pgd" else {}
            entry.update(accuracy=robust_accuracy(model, x, y, attack, eps, batch_size=batch_size, **options),
                         **options)
        elapsed = time.perf_counter() - started
        entry.update(eps_label=eps_label(entry["eps"]), time_s=elapsed, images_per_s=n / elapsed,
                     at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        evaluation["results"][f"{restored.which}/{attack}/eps={entry['eps_label']}/n={n}"] = entry
        _write(restored.run_dir, evaluation)
    if sweep:
        curve = eps_sweep(model, x, y, batch_size=batch_size, num_classes=restored.config.num_classes or 10)
        evaluation["sweeps"][f"{restored.which}/pgd-20/n={n}"] = {"checkpoint": restored.which, "n": n, **curve}
    evaluation["flags"] = sanity_flags(evaluation)
    _write(restored.run_dir, evaluation)
    return evaluation
