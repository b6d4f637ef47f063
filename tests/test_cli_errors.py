"""Every refused command is one line on stderr with exit status 2, and leaves nothing behind.

Each case checks the message and the disk: no ``--out`` folder created, no run changed.
"""

import json
import subprocess
import sys

import pytest
import torch

from trainers.checkpoint import load_checkpoint, save_checkpoint
from trainers.cli import main
from trainers.run_folder import RunFolder

QUICK = ["--dataset", "synthetic-mnist", "--epochs", "1", "--batch-size", "64", "--train-subset", "128",
         "--no-progress"]
STUDENT = ["--method", "baseline", "--model", "mlp-student", *QUICK]


def run_cli(capsys, argv):
    """(exit status, the stderr text) of ``python -m trainers ARGV`` run in this process."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err.strip()


def assert_one_line(status, err, message):
    assert status == 2
    assert message in err, err
    assert "\n" not in err and "Traceback" not in err and err.startswith("error: ")


def tree(path):
    """Every file and folder under ``path`` with its size, to compare before and after."""
    return sorted((str(p.relative_to(path)), p.stat().st_size if p.is_file() else -1) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A finished one-epoch teacher run (MLP teacher) to distil from."""
    out = tmp_path_factory.mktemp("teacher") / "teacher"
    assert main(["train", "--method", "baseline", "--model", "mlp-teacher", *QUICK, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--alpha", "5"], "--alpha must be in [0, 1], got 5.0"),
        (["--temperature", "0"], "--temperature must be > 0, got 0.0"),
        (["--eps", "-1"], "--eps must be >= 0, got -1.0"),
        (["--width", "0"], "--width must be >= 1, got 0"),
        (["--lr", "nan"], "--lr must be > 0, got nan"),
        (["--momentum", "1.5"], "--momentum must be in [0, 1), got 1.5"),
        (["--milestones", "3", "2"], "--milestones must increase, got [3, 2]"),
        (["--gamma", "0"], "--gamma must be in (0, 1], got 0.0"),
        (["--schedule", "cosine"], "unknown --schedule 'cosine'; expected one of: step, exponential, constant"),
        (["--select-on", "best"], "unknown --select-on 'best'"),
        (["--alpha", "much"], "argument --alpha: invalid float value: 'much'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--schedule", "step", "--schedule-preset", "mlp-exp"], "--schedule step needs --milestones"),
        (["--method", "nope"], "unknown method 'nope'"),
    ],
)
def test_bad_training_options_are_refused_before_anything_is_written(tmp_path, capsys, options, message):
    out = tmp_path / "run"
    status, err = run_cli(capsys, ["train", *STUDENT, "--out", out, *options])
    assert_one_line(status, err, message)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_data_set_leaves_no_out_folder(tmp_path, capsys):
    argv = ["train", "--method", "baseline", "--model", "resnet18", "--dataset", "cifar10", "--data-dir",
            tmp_path / "data", "--out", tmp_path / "run"]
    assert_one_line(*run_cli(capsys, argv), "python -m trainers download cifar10")
    assert not (tmp_path / "run").exists()


def test_out_that_is_a_file_or_lies_under_one(tmp_path, capsys):
    (tmp_path / "a_file").write_text("mine")
    before = tree(tmp_path)
    assert_one_line(*run_cli(capsys, ["train", *STUDENT, "--out", tmp_path / "a_file"]), "is a file; give a folder")
    assert_one_line(*run_cli(capsys, ["train", *STUDENT, "--out", tmp_path / "a_file" / "sub"]),
                    "lies under")
    assert_one_line(*run_cli(capsys, ["recipe", "fig4", "--out", tmp_path / "a_file"]), "lies under")
    assert_one_line(*run_cli(capsys, ["recipe", "fig1", "--out", tmp_path / "runs", "--alpha", "5"]),
                    "--alpha must be in [0, 1]")
    assert_one_line(*run_cli(capsys, ["recipe", "fig1", "--out", tmp_path / "runs", "--method", "kd"]),
                    "unrecognized arguments: --method")
    assert tree(tmp_path) == before


def checkpoint_files(tmp_path, teacher_run):
    """Broken teacher checkpoints: no config, an empty config, zero bytes, garbage, a plain state dict."""
    saved = load_checkpoint(teacher_run / "checkpoints" / "last.pt")
    files = {"noconfig": {"model": saved["model"]}, "emptyconfig": {"config": {}, "model": saved["model"]},
             "badconfig": {"config": {"method": "baseline", "lr": "fast"}, "model": saved["model"]}}
    paths = {}
    for name, state in files.items():
        paths[name] = tmp_path / f"{name}.pt"
        save_checkpoint(paths[name], state)
    paths["empty"] = tmp_path / "empty.pt"
    paths["empty"].write_bytes(b"")
    paths["garbage"] = tmp_path / "garbage.pt"
    paths["garbage"].write_bytes(bytes(range(256)) * 8)
    paths["statedict"] = tmp_path / "statedict.pt"
    torch.save(saved["model"], paths["statedict"])
    return paths


CHECKPOINT_MESSAGES = {
    "noconfig": "holds no training config",
    "emptyconfig": "holds no training config",
    "badconfig": "config: 'model' is missing",
    "empty": "the file is empty (0 bytes)",
    "garbage": "cannot read checkpoint",
    "statedict": "is not a trainers checkpoint",
}


@pytest.mark.parametrize("broken", sorted(CHECKPOINT_MESSAGES))
def test_broken_teacher_and_evaluated_checkpoints_are_one_line_errors(tmp_path, capsys, teacher_run, broken):
    path = checkpoint_files(tmp_path, teacher_run)[broken]
    before = tree(tmp_path)
    status, err = run_cli(capsys, ["train", "--method", "kd", "--model", "mlp-student", *QUICK, "--teacher", path,
                                   "--out", tmp_path / "kd"])
    assert_one_line(status, err, CHECKPOINT_MESSAGES[broken])
    assert "weights_only" not in err
    for command in (["evaluate", path, "--attacks", "clean", "--no-sweep"], ["attribute", path]):
        status, err = run_cli(capsys, command)
        assert_one_line(status, err, CHECKPOINT_MESSAGES[broken])
        assert "weights_only" not in err
    assert tree(tmp_path) == before


def test_an_incompatible_teacher_leaves_no_out_folder(tmp_path, capsys, teacher_run):
    argv = ["train", "--method", "rekd", "--model", "mlp-student", *QUICK, "--teacher", teacher_run,
            "--out", tmp_path / "rekd"]
    assert_one_line(*run_cli(capsys, argv), "smaller than the student")
    assert not (tmp_path / "rekd").exists()


def test_resume_and_overwrite_contradict_and_resume_keeps_the_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *STUDENT, "--out", str(out)]) == 0
    before = tree(out)
    assert_one_line(*run_cli(capsys, ["train", "--out", out, "--resume", "--overwrite"]),
                    "--resume and --overwrite exclude each other")
    assert_one_line(*run_cli(capsys, ["train", "--out", out, "--resume", "--lr", "0.5"]),
                    "--lr cannot change on --resume")
    assert_one_line(*run_cli(capsys, ["train", *STUDENT, "--out", out]), "holds another run")
    assert_one_line(*run_cli(capsys, ["train", "--out", tmp_path / "none", "--resume"]), "nothing to resume")
    assert_one_line(*run_cli(capsys, ["train", "--resume"]), "--out required")
    assert tree(out) == before and not (tmp_path / "none").exists()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *STUDENT, "--out", str(out)]) == 0
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from trainers.run_folder import RunFolder; "
                               "lock = RunFolder(sys.argv[1]).take_lock(); print('held', flush=True); sys.stdin.read()",
                               str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(out)
        for argv in (["train", *STUDENT, "--out", out, "--overwrite"], ["train", "--out", out, "--resume"],
                     ["evaluate", out, "--attacks", "clean", "--no-sweep"]):
            status, err = run_cli(capsys, argv)
            assert_one_line(status, err, f"is being written by another writer (pid {holder.pid} on")
        assert tree(out) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert main(["evaluate", str(out), "--attacks", "clean", "--no-sweep"]) == 0  # free again


def test_every_config_field_is_an_option_and_lands_in_the_config(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *STUDENT, "--out", out, "--momentum", "0.5", "--weight-decay", "0", "--gamma", "0.5",
            "--schedule", "step", "--milestones", "1", "2", "--no-record", "--eval-batch-size", "100"]
    assert main([str(a) for a in argv]) == 0
    stored = json.loads(RunFolder(out).config.read_text())
    assert (stored["momentum"], stored["weight_decay"], stored["gamma"], stored["milestones"]) == (0.5, 0, 0.5, [1, 2])
    assert stored["schedule"] == "step" and stored["record"] is False and stored["eval_batch_size"] == 100
    assert not RunFolder(out).record.exists()
    help_text = subprocess.run([sys.executable, "-m", "trainers", "train", "--help"], capture_output=True,
                               text=True, timeout=120).stdout
    for option in ("--momentum", "--weight-decay", "--gamma", "--milestones", "--schedule-preset", "--a ",
                   "--eval-pgd-steps", "--no-progress"):
        assert option in help_text, option
    assert "--num-classes" not in help_text and "--in-shape" not in help_text  # filled from the data set


def test_the_cli_run_as_a_program_prints_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trainers", "train", *STUDENT, "--out", str(tmp_path / "r"),
                           "--alpha", "5"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--alpha" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_overwrite_removes_all_of_a_runs_state(tmp_path, capsys):
    out = tmp_path / "run"
    folder = RunFolder(out)
    assert main(["train", *STUDENT, "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--attacks", "clean", "--n", "50", "--no-sweep"]) == 0
    folder.autoattack_state("last", "8/255", 50).write_text("{}")
    folder.attribution.mkdir()
    folder.attribution_meta.write_text('{"methods": []}')
    (out / "notes.txt").write_text("mine")
    assert folder.evaluation.exists()
    assert main(["train", *STUDENT, "--out", str(out), "--overwrite", "--epochs", "2"]) == 0
    assert not folder.evaluation.exists() and not folder.autoattack_states() and not folder.attribution.exists()
    assert [r["epoch"] for r in folder.read_metrics()] == [1, 2] and folder.read_results()["epochs"] == 2
    assert (out / "notes.txt").read_text() == "mine"
