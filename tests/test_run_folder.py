"""RunFolder: one owner of the layout, validated readers, confinement, the writer's lock, --overwrite."""

import json
import os
import subprocess
import sys

import pytest

from trainers.errors import TrainersError
from trainers.run_folder import RunFileError, RunFolder

CONFIG = {"method": "baseline", "model": "mlp-student", "dataset": "synthetic-mnist", "out": "x", "seed": 0,
          "lr": 0.01, "milestones": None}
RESULTS = {"method": "baseline", "epochs": 2, "best": {"test_acc": 50.0, "test_pgd20_acc": None},
           "last": {"test_acc": 49.0}}


def sound_run(root):
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(CONFIG))
    (root / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.5}) + "\n")
    (root / "results.json").write_text(json.dumps(RESULTS))
    return RunFolder(root)


def test_a_sound_run_reads_back(tmp_path):
    folder = sound_run(tmp_path / "run")
    assert folder.read_config()["lr"] == 0.01
    assert folder.read_train_config().model == "mlp-student"
    assert folder.read_metrics() == [{"epoch": 1, "train_loss": 1.5}]
    assert folder.read_results()["best"]["test_acc"] == 50.0
    assert folder.read_evaluation() == {"results": {}, "sweeps": {}, "flags": []}
    assert folder.read_attribution() is None
    assert folder.problems() == []


def test_the_layout_is_named_in_one_place(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.best == tmp_path / "checkpoints" / "best.pt" and folder.last.parent == folder.checkpoints
    assert folder.record_meta == tmp_path / "gradscope" / "meta.json"
    assert folder.attribution_meta == tmp_path / "attribution" / "meta.json"
    assert folder.autoattack_state("best", "8/255", 100).name == ".autoattack-best-8_255-100.json"
    assert folder.preferred_checkpoint() is None
    with pytest.raises(TrainersError, match="unknown checkpoint 'worst'"):
        folder.checkpoint("worst")


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("config.json", "null", "config.json: must hold an object, got None"),
        ("config.json", "[]", "config.json: must hold an object, got []"),
        ("config.json", "{not json", "config.json: is not valid JSON"),
        ("config.json", '{"method": "kd", "lr": "fast"}', "config.json: 'lr' must be a number or null, got 'fast'"),
        ("config.json", '{"method": "kd", "bogus": 1}', "config.json: unknown key 'bogus'"),
        ("config.json", '{"model": "x"}', "config.json: 'method' is missing"),
        ("results.json", '{"best": "x", "epochs": "many"}', "results.json: 'best' must be an object, got 'x'"),
        ("results.json", '{"best": {}, "epochs": "many"}', "results.json: 'epochs' must be an integer, got 'many'"),
        ("results.json", "[]", "results.json: must hold an object, got []"),
        ("results.json", '{"best": {"test_acc": "high"}}', "results.json: 'best.test_acc' must be a number or null"),
        ("metrics.jsonl", "[1, 2]\n", "metrics.jsonl: line 1: must hold an object, got [1, 2]"),
        ("metrics.jsonl", '{"epoch": 1}\n{"epoch": "two"}\n', "metrics.jsonl: line 2: 'epoch' must be an integer"),
        ("metrics.jsonl", '{"epoch": 1}\nnope\n', "metrics.jsonl: line 2 is not valid JSON"),
        ("evaluation.json", '{"results": {"k": {"attack": "pgd"}}}',
         "evaluation.json: 'results.k.checkpoint' is missing"),
        ("evaluation.json", '{"results": {}, "flags": "none"}', "evaluation.json: 'flags' must be a list"),
        ("evaluation.json", '{"results": {}, "sweeps": {"s": {"eps_labels": ["0"], "accuracy": [1, 2]}}}',
         "2 accuracies for 1 ε values"),
        ("attribution/meta.json", '{"methods": "saliency"}', "attribution/meta.json: 'methods' must be a list"),
    ],
)
def test_each_broken_file_is_one_run_file_error_naming_it(tmp_path, file, content, message):
    folder = sound_run(tmp_path / "run")
    (folder.root / file).parent.mkdir(exist_ok=True)
    (folder.root / file).write_text(content)
    readers = {"config.json": folder.read_config, "results.json": folder.read_results,
               "metrics.jsonl": folder.read_metrics, "evaluation.json": folder.read_evaluation,
               "attribution/meta.json": folder.read_attribution}
    with pytest.raises(RunFileError) as info:
        readers[file]()
    error = info.value
    assert message in str(error) and "\n" not in str(error)
    assert error.file == file and str(error) == f"{file}: {error.problem}"
    assert isinstance(error, TrainersError)
    assert [p.file for p in folder.problems()] == [file]


def test_a_metrics_line_being_written_is_left_out(tmp_path):
    folder = sound_run(tmp_path / "run")
    with open(folder.metrics, "a") as f:
        f.write('{"epoch": 2, "train_lo')
    assert [r["epoch"] for r in folder.read_metrics()] == [1]


def test_unreadable_files_are_run_file_errors(tmp_path):
    folder = sound_run(tmp_path / "run")
    folder.results.unlink()
    folder.results.mkdir()
    with pytest.raises(RunFileError, match="results.json: is a folder"):
        folder.read_results()
    folder.config.write_bytes(b"\xff\xfe{}")
    with pytest.raises(RunFileError, match="config.json: is not UTF-8"):
        folder.read_config()


def test_symlinks_leading_outside_the_runs_folder_are_refused(tmp_path):
    runs, outside = tmp_path / "runs", tmp_path / "secret"
    outside.mkdir()
    (outside / "config.json").write_text(json.dumps(CONFIG))
    (outside / "record").mkdir()
    folder = sound_run(runs / "run")
    folder.config.unlink()
    folder.config.symlink_to(outside / "config.json")
    folder.record.symlink_to(outside / "record")
    confined = RunFolder(folder.root, confine=runs)
    with pytest.raises(RunFileError, match="config.json: is a link that leads outside the runs folder"):
        confined.read_config()
    with pytest.raises(RunFileError, match="gradscope: is a link that leads outside"):
        confined.record_path()
    assert folder.read_config()["method"] == "baseline"  # without confine the link is followed
    # a link that stays inside the runs folder is fine
    folder.config.unlink()
    (runs / "shared.json").write_text(json.dumps(CONFIG))
    folder.config.symlink_to(runs / "shared.json")
    assert confined.read_config()["model"] == "mlp-student"


def test_a_record_file_linked_outside_is_refused(tmp_path):
    runs = tmp_path / "runs"
    folder = sound_run(runs / "run")
    folder.record.mkdir()
    (tmp_path / "meta.json").write_text("{}")
    folder.record_meta.symlink_to(tmp_path / "meta.json")
    with pytest.raises(RunFileError, match="gradscope/meta.json: is a link"):
        RunFolder(folder.root, confine=runs).record_path()


def test_overwrite_clears_all_of_a_runs_state_and_nothing_else(tmp_path):
    folder = sound_run(tmp_path / "run")
    for path in (folder.evaluation, folder.autoattack_state("last", "8/255", 10), folder.attribution_meta,
                 folder.record_meta, folder.last):
        path.parent.mkdir(exist_ok=True)
        path.write_text("{}")
    (folder.root / "notes.txt").write_text("mine")
    folder.claim(resume=False, overwrite=True).release()
    assert sorted(p.name for p in folder.root.iterdir()) == [".run.lock", "notes.txt"]


def test_claim_refuses_contradictions_and_other_runs(tmp_path):
    folder = sound_run(tmp_path / "run")
    with pytest.raises(TrainersError, match="--resume and --overwrite exclude each other"):
        folder.claim(resume=True, overwrite=True)
    with pytest.raises(TrainersError, match=r"holds another run \(baseline mlp-student on synthetic-mnist\)"):
        folder.claim(resume=False, overwrite=False)
    with pytest.raises(TrainersError, match="nothing to resume"):
        folder.claim(resume=True, overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrainersError, match="is a file"):
        RunFolder(tmp_path / "file").claim(resume=False, overwrite=False)
    with pytest.raises(TrainersError, match="lies under .*file, which is a file"):
        RunFolder(tmp_path / "file" / "sub").claim(resume=False, overwrite=False)
    assert not (tmp_path / "file").is_dir()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with folder.writing():
        with pytest.raises(TrainersError, match=rf"being written by another writer \(pid {os.getpid()} on") as info:
            folder.claim(resume=False, overwrite=False)
        assert "\n" not in str(info.value)
    folder.claim(resume=False, overwrite=False).release()  # free again


def test_the_lock_dies_with_a_killed_process(tmp_path):
    code = ("import sys, time; from trainers.run_folder import RunFolder; "
            "lock = RunFolder(sys.argv[1]).take_lock(); print('held', flush=True); time.sleep(300)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(TrainersError, match=f"pid {child.pid} on"):
            RunFolder(tmp_path / "run").take_lock()
    finally:
        child.kill()  # SIGKILL: no cleanup runs in the child
        child.wait(timeout=60)
    RunFolder(tmp_path / "run").take_lock().release()
