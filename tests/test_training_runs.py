"""Slower end-to-end runs: DDP on gloo, a real Fashion-MNIST KD run, a recipe and its summary."""

import os
import subprocess
import sys

import pytest
import torch

from trainers.checkpoint import load_checkpoint
from trainers.config import TrainConfig
from trainers.data import DEBIAN_FASHION_MNIST
from trainers.errors import TrainersError
from trainers.loop import train
from trainers.recipes import plan, run_recipe
from trainers.run_folder import RunFolder
from trainers.summarize import summarize

ARGS = ["--method", "baseline", "--model", "mlp-student", "--dataset", "synthetic-mnist", "--epochs", "2",
        "--batch-size", "64", "--train-subset", "512", "--no-progress"]


@pytest.mark.slow
def test_ddp_on_two_gloo_processes_matches_one_process_on_the_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "trainers", "train", *ARGS, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29533", "-m", "trainers", "train", *ARGS, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    losses = [[r["train_loss"] for r in RunFolder(tmp_path / n).read_metrics()] for n in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    one, two = (load_checkpoint(RunFolder(tmp_path / n).last)["model"] for n in ("one", "two"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_teacher_and_students_with_and_without_kd_reach_sensible_accuracy(tmp_path):
    common = {"dataset": "fashion-mnist", "data_dir": str(tmp_path / "data"), "epochs": 2, "train_subset": 20000,
              "progress": False}
    teacher = train(TrainConfig(method="baseline", model="mlp-teacher", out=str(tmp_path / "t"), **common))
    student = train(TrainConfig(method="baseline", model="mlp-student", out=str(tmp_path / "s"), **common))
    kd = train(TrainConfig(method="kd", model="mlp-student", teacher=str(tmp_path / "t"), out=str(tmp_path / "kd"),
                           **common))
    for result in (teacher, student, kd):
        assert result["last"]["test_acc"] > 80, result


@pytest.mark.slow
def test_a_recipe_runs_teachers_first_skips_finished_runs_and_summarizes(tmp_path, capsys):
    overrides = {"dataset": "synthetic-mnist", "epochs": 1, "train_subset": 256, "progress": False}
    configs = plan("fig1", seeds=2, out=tmp_path, overrides=overrides)
    assert [(c.seed, c.method, c.model) for c in configs[:3]] == [
        (0, "baseline", "mlp-teacher"), (0, "baseline", "mlp-student"), (0, "kd", "mlp-student")]
    assert configs[2].teacher == str(tmp_path / "fig1" / "seed0" / "teacher")
    run_recipe("fig1", seeds=2, out=tmp_path, overrides=overrides)
    run_recipe("fig1", seeds=2, out=tmp_path, overrides=overrides)
    assert capsys.readouterr().out.count("finished, skipped") == 6
    table = summarize(tmp_path)
    assert "fig1" in table and "student-kd" in table and "± " in table
    assert "(poster 98.73)" not in table and "the poster's numbers are on mnist" in table  # ours: synthetic-mnist
    assert "317,600 weights (318,010 with biases)" in table


@pytest.mark.slow
def test_the_fig4_recipe_draws_figure_6_from_its_records(tmp_path):
    overrides = {"dataset": "synthetic", "epochs": 1, "train_subset": 128, "batch_size": 32, "width": 4,
                 "progress": False}
    run_recipe("fig4", seeds=1, out=tmp_path, overrides=overrides)
    seed = tmp_path / "fig4" / "seed0"
    html = (seed / "fig6.html").read_text()
    assert "plotly" in html.lower() and "tfkd-self" in html
    csv = (seed / "fig6.csv").read_text().splitlines()
    assert csv[0].startswith("run,column,row") and any(line.startswith("tfkd-reg,layer1") for line in csv)


@pytest.mark.slow
def test_a_compiled_model_trains_like_the_eager_one_and_is_recorded(tmp_path):
    import gradscope

    common = {"method": "baseline", "model": "mlp-student", "dataset": "synthetic-mnist", "epochs": 1,
              "train_subset": 256, "progress": False}
    eager = train(TrainConfig(**common, out=str(tmp_path / "e")))
    compiled = train(TrainConfig(**common, out=str(tmp_path / "c"), compile=True))
    assert compiled["last"]["test_acc"] == pytest.approx(eager["last"]["test_acc"], abs=1.0)
    losses = [RunFolder(tmp_path / n).read_metrics()[0]["train_loss"] for n in "ec"]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert len(gradscope.load(tmp_path / "c").steps) == 256 // 128


def test_an_interrupted_recipe_rerun_skips_finished_runs_and_resumes_the_rest(tmp_path, capsys):
    overrides = {"dataset": "synthetic-mnist", "epochs": 2, "train_subset": 128, "batch_size": 64, "progress": False}
    teacher, student, _ = plan("fig1", seeds=1, out=tmp_path, overrides=overrides)
    train(teacher)
    train(student, stop_after=1)  # as if the recipe had been killed during its second run
    seed = tmp_path / "fig1" / "seed0"
    finished_at = RunFolder(seed / "teacher").results.stat().st_mtime_ns
    capsys.readouterr()
    run_recipe("fig1", seeds=1, out=tmp_path, overrides=overrides)
    out = capsys.readouterr().out
    assert "fig1: 3 runs; 1 finished earlier, 1 to resume, 1 to train" in out
    assert "[1/3]" in out and "teacher: finished, skipped" in out
    assert "student: resuming baseline mlp-student" in out and "student-kd: training kd mlp-student" in out
    assert RunFolder(seed / "teacher").results.stat().st_mtime_ns == finished_at
    assert [r["epoch"] for r in RunFolder(seed / "student").read_metrics()] == [1, 2]
    run_recipe("fig1", seeds=1, out=tmp_path, overrides=overrides)
    assert "3 finished earlier, 0 to resume, 0 to train" in capsys.readouterr().out
    with pytest.raises(TrainersError, match="holds a run this recipe did not plan: it was trained with lr"):
        run_recipe("fig1", seeds=1, out=tmp_path, overrides={**overrides, "lr": 0.5})
