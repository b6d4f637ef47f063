"""Shared pieces of the dashboard's page tests: runs shaped as the run index reads them, a tiny real
training run and two in-memory records, and the check that a figure is titled.

Imported by tests/test_app_pages_*.py (the fixtures are imported by name, which registers them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_batch, make_resnet

import gradscope
from app.runs import RunInfo as Run
from trainers.config import TrainConfig
from trainers.loop import train
from trainers.robustness import read_evaluation


def read_run(folder: Path, run_id: str, label: str) -> Run:
    """What the run index reads from a run folder, read here directly from its files."""
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    results = json.loads((folder / "results.json").read_text()) if (folder / "results.json").exists() else None
    return Run(run_id, label, folder, json.loads((folder / "config.json").read_text()), metrics, results,
               read_evaluation(folder), "finished" if results else "live")


def fake_run(name: str, method: str, seed: int, clean: float, *, pgd: float | None = None, aa: float | None = None,
             recipe: str | None = None, sweep: list[float] | None = None, flags: list[dict[str, str]] | None = None,
             **config: Any) -> Run:
    """A finished run with the given numbers, shaped as results.json and evaluation.json store them."""
    best: dict[str, Any] = {"test_acc": clean} if pgd is None else {"test_acc": clean, "test_pgd20_acc": pgd}
    evaluation: dict[str, Any] = {"results": {}, "sweeps": {}, "flags": flags or []}
    if aa is not None:
        breakdown = {"clean": clean, "apgd-ce": aa + 3, "apgd-t": aa + 1, "fab-t": aa + 0.5, "square": aa}
        evaluation["results"]["best/autoattack/eps=8/255/n=100"] = {
            "attack": "autoattack", "eps": 8 / 255, "eps_label": "8/255", "n": 100, "accuracy": aa,
            "breakdown": breakdown, "checkpoint": "best", "version": "standard"}
    if sweep is not None:
        evaluation["sweeps"]["best/pgd-20/n=100"] = {
            "checkpoint": "best", "n": 100, "eps": [k / 255 for k in (0, 2, 4, 8, 16)],
            "eps_labels": ["0", "2/255", "4/255", "8/255", "16/255"], "accuracy": sweep, "num_classes": 10}
    extras = {"recipe": recipe, "run": name} if recipe else {}
    cfg = {"method": method, "model": "resnet18", "dataset": "cifar10", "seed": seed, "epochs": 50,
           "num_classes": 10, "extras": extras, **config}
    results = {"method": method, "model": "resnet18", "dataset": "cifar10", "seed": seed, "epochs": 50,
               "best_epoch": 40, "parameters": 11_000_000, "parameters_without_biases": 10_990_000,
               "last": best, "best": best}
    return Run(f"{recipe or 'runs'}/seed{seed}/{name}", f"{name} s{seed}", Path("."), cfg,
               [{"epoch": 1, "step": 10, "test_acc": clean}], results, evaluation)


def assert_titled(fig: Any) -> None:
    """A title, and a title on some x axis and some y axis (subplot grids title the outer ones)."""
    assert fig.layout.title.text
    for axis in ("xaxis", "yaxis"):
        assert any(fig.layout[key].title.text for key in fig.layout if key.startswith(axis)), axis


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared machine: thread hand-offs cost more than they save (seconds per step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real tiny training run (ResNet18 of width 4, one epoch of 128 synthetic images), recorded."""
    folder = tmp_path_factory.mktemp("app") / "fig4" / "seed0" / "baseline"
    train(TrainConfig(method="baseline", model="resnet18", dataset="synthetic", width=4, epochs=1, train_subset=128,
                      batch_size=32, out=str(folder), progress=False))
    return folder


@pytest.fixture(scope="module")
def records() -> dict[str, gradscope.Record]:
    """Two in-memory records of the conftest ResNet, different seeds, a few steps each."""
    out = {}
    for seed, label in ((0, "baseline"), (1, "tfkd-reg")):
        model = make_resnet(seed)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with gradscope.record(model, None, optimizer=opt) as recorder:
            for step in range(5):
                x, y = make_batch(seed=10 * seed + step)
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            out[label] = recorder.load()
    return out


def robust_runs() -> list[Run]:
    flag = [{"flag": "robust_above_clean", "message": "best: pgd at ε 8/255 gives 90.00% above clean 80.00%"}]
    return [
        fake_run("at", "at", 0, 84.0, pgd=50.0, aa=47.0, recipe="fig7", sweep=[84, 75, 64, 50, 20]),
        fake_run("at", "at", 1, 83.0, pgd=49.0, aa=46.0, recipe="fig7", sweep=[83, 74, 63, 49, 19]),
        fake_run("at-tfkd-reg", "at-tfkd-reg", 0, 82.0, pgd=51.0, recipe="fig7", flags=flag),
        fake_run("baseline", "baseline", 0, 94.0, recipe="fig4"),
    ]
