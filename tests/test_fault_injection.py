"""A training killed with SIGKILL and resumed equals the uninterrupted run: weights, losses, record.

The child process trains through the real CLI with one fault armed: it kills itself in the middle of
an epoch, right after a checkpoint is written, or halfway through writing a record frame. The
resumed run must then hold every epoch and every recorded step exactly once, with the numbers of a
run that was never interrupted (CPU training is deterministic given the seed).
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import gradscope
from trainers.checkpoint import load_checkpoint
from trainers.cli import main
from trainers.run_folder import RunFolder

# 128 images in batches of 32: 4 optimizer steps per epoch, 3 epochs, steps 0..11.
TRAIN = ["train", "--method", "baseline", "--model", "mlp-student", "--dataset", "synthetic-mnist", "--epochs", "3",
         "--batch-size", "32", "--train-subset", "128", "--test-subset", "200", "--no-progress"]
STEPS = 12

CHILD = r"""
import os, signal, sys
from torch.optim.optimizer import register_optimizer_step_post_hook
import trainers.loop
from gradscope import store
from trainers.cli import main

point, out = sys.argv[1], sys.argv[2]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "mid-epoch":  # after the 6th optimizer step: halfway through epoch 2
    steps = []
    def after_step(optimizer, args, kwargs):
        steps.append(1)
        if len(steps) == 6:
            die()
    register_optimizer_step_post_hook(after_step)
elif point == "after-checkpoint":  # epoch 2's last.pt is on disk, nothing after it ran
    save = trainers.loop.save_checkpoint
    def save_then_die(path, state):
        save(path, state)
        if path.name == "last.pt" and state["state"]["epoch"] == 2:
            die()
    trainers.loop.save_checkpoint = save_then_die
elif point == "record-flush":  # half of epoch 2's frame reaches the file
    write = store.FileSink.__call__
    frames = []
    def write_half_then_die(self, frame):
        frames.append(1)
        if len(frames) == 2:
            write(self, frame[: len(frame) // 2])
            die()
        write(self, frame)
    store.FileSink.__call__ = write_half_then_die
sys.exit(main([*sys.argv[3:], "--out", out]))
"""


def _state(run):
    folder = RunFolder(run)
    weights = load_checkpoint(folder.last)["model"]
    rows = folder.read_metrics()
    record = gradscope.load(run)
    return weights, rows, record


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("whole") / "run"
    assert main([*TRAIN, "--out", str(run)]) == 0
    return _state(run)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["mid-epoch", "after-checkpoint", "record-flush"])
def test_a_killed_training_resumes_to_the_uninterrupted_run(tmp_path, uninterrupted, point):
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", CHILD, point, str(run), *TRAIN], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not RunFolder(run).results.exists()
    resumed = subprocess.run([sys.executable, "-m", "trainers", "train", "--out", str(run), "--resume",
                              "--no-progress"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    weights, rows, record = _state(run)
    whole_weights, whole_rows, whole_record = uninterrupted
    for key, value in whole_weights.items():
        torch.testing.assert_close(weights[key], value, rtol=0, atol=0)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("step", "lr", "train_loss", "train_acc", "test_acc"):
        assert [r[key] for r in rows] == [r[key] for r in whole_rows], key
    assert record.steps.tolist() == list(range(STEPS)) and not record.problems
    for stat in ("l2", "mean_abs", "max_abs"):
        np.testing.assert_allclose(record.matrix("layer", stat).values, whole_record.matrix("layer", stat).values,
                                   rtol=1e-6, err_msg=stat)
    assert json.loads(RunFolder(run).results.read_text())["epochs"] == 3
