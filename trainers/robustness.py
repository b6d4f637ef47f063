"""``python -m trainers evaluate``: clean, PGD-20, ε sweep and AutoAttack of a run, merged into its folder.

Every result lands in ``RUN/evaluation.json`` under a key naming checkpoint, attack, ε and number of
images, with its provenance (the checkpoint's sha256, the images, the attacks actually run, ε,
precision, seed, batch size), time and library versions. A later evaluation adds keys and drops only
the results of checkpoints that have changed since (stale: `trainers.provenance`). The sanity flags
(signs of gradient masking or a bug, Carlini et al. 2019; Croce & Hein 2020) are recomputed from
everything stored after each call. All of it runs in float32.
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
from .labels import eps_label, robust_label
from .provenance import Provenance, current_results, of_checkpoint
from .restore import data_of, restore
from .run_folder import EVALUATION_FILE, RunFolder

__all__ = ["EVALUATION_FILE", "eps_sweep", "evaluate_run", "evaluation_lines", "read_evaluation", "sanity_flags"]

SEED = 0  # of the attacks' random starts (PGD, AutoAttack), recorded in each result's provenance
PGD_STEPS = 20
SWEEP_EPS = (0, 2, 4, 8, 16)  # /255, the robustness curve
TOLERANCE = 0.5  # percentage points of noise allowed before a flag fires


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
    """The stored evaluation of a run, validated (empty when there is none); stale entries included."""
    return RunFolder(Path(run_dir)).read_evaluation()


def _write(folder: RunFolder, evaluation: dict[str, Any]) -> None:
    folder.evaluation_tmp.write_text(json.dumps(evaluation, indent=2) + "\n")
    os.replace(folder.evaluation_tmp, folder.evaluation)


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

    Everything is checked (ε, attack names, the checkpoint, the data) before anything is written. Every
    result records its `trainers.provenance.Provenance` (the checkpoint's sha256, images, attacks, ε,
    precision, seed, batch size); results of a checkpoint that has changed since are stale and are
    dropped here, and the AutoAttack resume state only resumes a run on the same checkpoint bytes.
    Evaluation runs in float32, whatever precision the run trained in. The caller holds the folder's
    writer lock (`RunFolder.writing`), as the CLI does.
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
    folder = RunFolder(restored.run_dir)
    evaluation = current_results(folder.root, folder.read_evaluation())
    base = of_checkpoint(folder.root, restored.checkpoint, dataset=restored.config.dataset, n=n, eps=None,
                         attacks=[], seed=SEED, batch_size=batch_size)
    common = {"checkpoint": restored.which, "n": n, "batch_size": batch_size, "device": device,
              "versions": versions()}
    for attack in attacks:
        entry = _evaluate_one(restored.model, x, y, attack, eps, base, folder, restored.which, attacks_to_run,
                              show_progress)
        evaluation["results"][f"{restored.which}/{attack}/eps={entry['eps_label']}/n={n}"] = {**common, **entry}
        _write(folder, evaluation)
    if sweep:
        curve = eps_sweep(restored.model, x, y, batch_size=batch_size,
                          num_classes=restored.config.num_classes or 10)
        prov = base.with_(eps=max(curve["eps"]), attacks=["clean", "pgd-20"])
        evaluation["sweeps"][f"{restored.which}/pgd-20/n={n}"] = {"checkpoint": restored.which, "n": n, **curve,
                                                                  "provenance": prov.to_json()}
    evaluation["flags"] = sanity_flags(evaluation)
    _write(folder, evaluation)
    return evaluation


def _evaluate_one(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float,
                  base: Provenance, folder: RunFolder, which: str, attacks_to_run: list[str] | None,
                  show_progress: bool) -> dict[str, Any]:
    """One attack's entry: accuracy, what ran (provenance), time."""
    started = time.perf_counter()
    entry: dict[str, Any] = {"attack": attack, "eps": 0.0 if attack == "clean" else eps}
    if attack == "autoattack":
        chosen = list(attacks_to_run or STANDARD_AUTOATTACK)
        prov = base.with_(eps=eps, attacks=chosen)
        state = folder.autoattack_state(which, eps_label(eps), base.n)
        seconds: dict[str, float] = {}
        breakdown = autoattack_breakdown(model, x, y, eps=eps, batch_size=base.batch_size, attacks_to_run=chosen,
                                         seed=base.seed, state_path=state, show_progress=show_progress,
                                         seconds=seconds, state_key=prov.to_json())
        entry.update(accuracy=breakdown[chosen[-1]], breakdown=breakdown, attacks_to_run=chosen,
                     attack_seconds=seconds,
                     version="standard" if chosen == list(STANDARD_AUTOATTACK) else "custom subset")
    else:
        options = {"steps": PGD_STEPS, "step_size": eps / 4} if attack == "pgd" else {}
        prov = base.with_(eps=entry["eps"], attacks=[f"pgd-{PGD_STEPS}" if attack == "pgd" else attack])
        entry.update(accuracy=robust_accuracy(model, x, y, attack, eps, batch_size=base.batch_size, seed=base.seed,
                                              **options), **options)
    elapsed = time.perf_counter() - started
    if attack == "autoattack":  # its work over every resumed call, not only this one's
        elapsed = max(elapsed, sum(entry["attack_seconds"].values()))
    entry.update(eps_label=eps_label(entry["eps"]), provenance=prov.to_json(), time_s=elapsed,
                 images_per_s=base.n / elapsed, at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return entry


def evaluation_lines(evaluation: dict[str, Any]) -> list[str]:
    """The evaluation as lines for a terminal: each result named by what it measured, then curves and flags."""
    lines = []
    for entry in evaluation.get("results", {}).values():
        what = "clean" if entry["attack"] == "clean" else f"{robust_label(entry)} at ε {entry['eps_label']}"
        breakdown = entry.get("breakdown")
        detail = f"  ({', '.join(f'{k} {v:.2f}' for k, v in breakdown.items())})" if breakdown else ""
        lines.append(f"{entry['checkpoint']}: {what} on {entry['n']} test images: {entry['accuracy']:.2f}%{detail}")
    for sweep in evaluation.get("sweeps", {}).values():
        pairs = ", ".join(f"{e} {a:.2f}" for e, a in zip(sweep["eps_labels"], sweep["accuracy"]))
        lines.append(f"{sweep.get('checkpoint')}: PGD-20 accuracy by ε on {sweep.get('n')} test images: {pairs}")
    lines += [f"WARNING {flag['flag']}: {flag['message']}" for flag in evaluation.get("flags", [])]
    return lines
