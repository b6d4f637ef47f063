"""The training loop end to end on generated data: run folder, record, checkpoints, resume, teachers, CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import gradscope
from trainers.checkpoint import load_checkpoint
from trainers.cli import main
from trainers.config import TrainConfig
from trainers.errors import TrainersError
from trainers.loop import train
from trainers.run_folder import RunFolder

QUICK = {"dataset": "synthetic-mnist", "epochs": 2, "batch_size": 64, "train_subset": 512, "progress": False}


def config(tmp_path, name="run", **options):
    return TrainConfig(**{"method": "baseline", "model": "mlp-student", "out": str(tmp_path / name),
                          **QUICK, **options})


def test_a_run_leaves_config_metrics_record_checkpoints_and_results(tmp_path):
    # the documented layout (docs/trainers.md, Run folder) written out, not taken from RunFolder
    results = train(config(tmp_path))
    run = tmp_path / "run"
    stored = json.loads((run / "config.json").read_text())
    assert stored["lr"] == 1e-2 and stored["schedule"] == "exponential" and stored["num_classes"] == 10
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["lr"] == pytest.approx(1e-2 * 0.95)
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    record = gradscope.load(run)
    assert record.steps.tolist() == list(range(2 * 512 // 64))
    assert record.tags["method"] == "baseline" and record.closed
    assert (run / "checkpoints" / "last.pt").exists()
    assert results == json.loads((run / "results.json").read_text())
    assert results["last"]["test_acc"] > 30  # ten-class generated data, learnable in two epochs
    assert results["parameters_without_biases"] == 784 * 400 + 400 * 10


def test_resume_repeats_an_uninterrupted_run_exactly(tmp_path):
    train(config(tmp_path, "whole", epochs=3))
    interrupted = config(tmp_path, "parts", epochs=3)
    assert train(interrupted, stop_after=1) == {"interrupted_at_epoch": 1}
    train(TrainConfig(method="", model="", dataset="", out=str(tmp_path / "parts"), progress=False), resume=True)
    whole = load_checkpoint(RunFolder(tmp_path / "whole").last)
    parts = load_checkpoint(RunFolder(tmp_path / "parts").last)
    for key, value in whole["model"].items():
        torch.testing.assert_close(parts["model"][key], value, rtol=0, atol=0)
    losses = [[r["train_loss"] for r in RunFolder(tmp_path / n).read_metrics()] for n in ("whole", "parts")]
    assert losses[0] == losses[1]
    assert gradscope.load(tmp_path / "parts").steps.tolist() == gradscope.load(tmp_path / "whole").steps.tolist()


def test_a_folder_holding_another_run_is_refused_unless_overwritten(tmp_path):
    train(config(tmp_path, epochs=1))
    with pytest.raises(TrainersError, match="holds another run.*--resume.*--overwrite"):
        train(config(tmp_path, epochs=1))
    train(config(tmp_path, epochs=1), overwrite=True)


def test_distillation_from_a_teacher_run_and_the_teacher_rules(tmp_path):
    train(config(tmp_path, "teacher", model="mlp-teacher", epochs=1))
    results = train(config(tmp_path, "kd", method="kd", teacher=str(tmp_path / "teacher"), epochs=1))
    assert results["last"]["test_acc"] > 20
    with pytest.raises(TrainersError, match="smaller than the student"):
        train(config(tmp_path, "rekd", method="rekd", teacher=str(tmp_path / "teacher"), epochs=1))
    with pytest.raises(TrainersError, match="same|architecture"):
        train(config(tmp_path, "self", method="tfkd-self", teacher=str(tmp_path / "teacher"), epochs=1))
    with pytest.raises(TrainersError, match="adversarially trained teacher"):
        train(config(tmp_path, "atkd", method="at-kd", teacher=str(tmp_path / "teacher"), epochs=1,
                             val_size=100))
    with pytest.raises(TrainersError, match="needs a teacher"):
        train(config(tmp_path, "noteacher", method="kd"))


def test_a_teacher_of_the_wrong_shape_is_a_one_line_error(tmp_path):
    train(config(tmp_path, "teacher", model="mlp-teacher", epochs=1))
    wrong = config(tmp_path, "kd", method="kd", teacher=str(tmp_path / "teacher"), dataset="synthetic", epochs=1)
    with pytest.raises(TrainersError, match="does not fit") as info:
        train(wrong)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--method", "nope", "--model", "mlp-student", "--dataset", "synthetic"], "unknown method 'nope'"),
        (["train", "--method", "baseline", "--model", "vgg", "--dataset", "synthetic"], "unknown model 'vgg'"),
        (["train", "--method", "baseline", "--model", "mlp-student", "--dataset", "imagenet"],
         "unknown dataset 'imagenet'"),
        (["train", "--method", "baseline", "--model", "resnet18", "--dataset", "cifar10"],
         "python -m trainers download cifar10"),
        (["train", "--method", "baseline", "--model", "mlp-student"], "--dataset"),
        (["recipe", "fig9"], "unknown recipe 'fig9'"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    extra = ["--out", str(tmp_path / "x")] if "--out" not in argv else []
    if argv[0] == "train":
        extra += ["--data-dir", str(tmp_path / "data")]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_cli_train_runs_and_prints_the_result(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "trainers", "train", "--method", "tfkd-reg", "--model", "mlp-student", "--dataset",
         "synthetic-mnist", "--epochs", "1", "--train-subset", "256", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tfkd-reg mlp-student seed 0: test_acc" in proc.stdout
    assert RunFolder(out).read_config()["multiplier"] == pytest.approx(1.0)  # yuan-strength: 100/100


def test_adversarial_runs_select_on_validation_pgd_accuracy_and_stop_early(tmp_path):
    results = train(config(tmp_path, method="at", epochs=4, val_size=128, patience=1, lr=1e-12, schedule="constant",
                           attack_steps=2))
    rows = RunFolder(tmp_path / "run").read_metrics()
    assert all("val_pgd_acc" in r and "val_acc" in r for r in rows)
    assert len(rows) == 2  # lr 0: nothing improves after the first epoch, patience 1 stops after the second
    assert results["best_epoch"] == 1 and RunFolder(tmp_path / "run").best.exists()
    assert set(results["best"]) == {"test_acc", "test_pgd20_acc"}


def test_bf16_autocast_and_channels_last_train(tmp_path):
    results = train(config(tmp_path, model="resnet18", dataset="synthetic", width=4, epochs=1, train_subset=128,
                           batch_size=32, bf16=True, channels_last=True))
    assert results["last"]["test_acc"] >= 0


def test_cli_resume_continues_the_run(tmp_path):
    out = str(tmp_path / "run")
    common = ["--method", "baseline", "--model", "mlp-student", "--dataset", "synthetic-mnist", "--train-subset",
              "128", "--out", out, "--no-progress"]
    assert main(["train", *common, "--epochs", "1"]) == 0
    assert main(["train", "--out", out, "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert len(RunFolder(tmp_path / "run").read_metrics()) == 2


def test_record_every_keeps_its_phase_across_a_resume(tmp_path):
    # 4 steps per epoch, every 3rd step recorded: a resume at step 4 must still record 6 and 9, not 4 and 7
    options = {"epochs": 3, "record_every": 3, "train_subset": 256}
    train(config(tmp_path, "whole", **options))
    assert train(config(tmp_path, "parts", **options), stop_after=1) == {"interrupted_at_epoch": 1}
    train(TrainConfig(method="", model="", dataset="", out=str(tmp_path / "parts"), progress=False), resume=True)
    whole, parts = (gradscope.load(tmp_path / name) for name in ("whole", "parts"))
    assert whole.steps.tolist() == [0, 3, 6, 9]
    assert parts.steps.tolist() == whole.steps.tolist()
    np.testing.assert_array_equal(parts.matrix("layer", "l2").values, whole.matrix("layer", "l2").values)


def test_the_final_pgd20_attacks_at_the_runs_own_eps(tmp_path):
    # an MNIST-scale run (ε 0.1) was once reported at CIFAR's 8/255
    from trainers.evaluate import pgd_accuracy
    from trainers.restore import data_of, restore

    results = train(config(tmp_path, method="at", epochs=1, val_size=64, eps=0.1, step_size=0.025, attack_steps=2,
                           test_subset=128))
    assert results["provenance"]["last"]["eps"] == pytest.approx(0.1)
    restored = restore(str(tmp_path / "run"), "cpu")
    test = data_of(restored.config).test
    loader = [(test.images[:128].float().div(255), test.labels[:128])]
    expected = pgd_accuracy(restored.model, loader, eps=0.1, step_size=0.025, steps=20, seed=0)
    assert results["last"]["test_pgd20_acc"] == pytest.approx(expected)
