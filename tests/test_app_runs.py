"""The run index: safe ids (no escape from the runs folder), statuses, deleted runs; URL selection.

Over ``mixed_runs`` (real tiny trainings and one run per broken file of issue 9): each broken file is a
problem of its own run only, naming the file; symlinked files leading out of the runs folder are
refused; a hundred runs are listed in well under a second.
"""

import json
import os
import shutil
import time

import pytest
from broken_runs import GOOD, LEAK

from app.cli import main
from app.pages import PAGES
from app.runs import MAX_RUN_ID, RunAccessError, RunIndex
from app.selection import Selection


@pytest.fixture
def root(tmp_path):
    runs = tmp_path / "runs"
    for run, results in (("fig4/seed0/baseline", True), ("old", False), ("live", False)):
        folder = runs / run
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"method": "baseline", "seed": 0}))
        (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.0}) + "\n")
        if results:
            (folder / "results.json").write_text(json.dumps({"best": {"test_acc": 50.0}}))
    stale = time.time() - 3600
    for path in (runs / "old").iterdir():
        os.utime(path, (stale, stale))
    (runs / "broken").mkdir()
    (runs / "broken" / "config.json").write_text("{not json")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "config.json").write_text("{}")
    (runs / "escape").symlink_to(secret, target_is_directory=True)
    return runs


@pytest.mark.parametrize("bad", ["../secret", "/etc", "fig4/../../secret", "escape", "~root", "", "a\\b", "nope",
                                 "r" * 5000, "r" * (MAX_RUN_ID + 1), "x" * 300, "é" * 200, "a\x00b", "fig4/\udcff",
                                 "file:///etc/passwd", None, 7, ["old"]])
def test_ids_outside_the_runs_folder_or_unknown_are_refused(root, bad):
    with pytest.raises(RunAccessError):
        RunIndex(root).resolve(bad)


def test_scan_finds_runs_with_their_status_and_does_not_follow_symlinks_out(root):
    runs = {r.id: r for r in RunIndex(root).scan()}
    assert set(runs) == {"fig4/seed0/baseline", "old", "live", "broken"}
    assert runs["fig4/seed0/baseline"].status == "finished"
    assert runs["live"].status == "live"
    assert runs["old"].status == "failed" and "--resume" in runs["old"].problem
    assert runs["broken"].status == "corrupt" and runs["broken"].problem.startswith("config.json: is not valid JSON")
    assert [p.file for p in runs["broken"].problems] == ["config.json"]


def test_a_run_deleted_while_the_app_runs_drops_out(root):
    index = RunIndex(root)
    assert "live" in index.ids()
    for path in (root / "live").iterdir():
        path.unlink()
    (root / "live").rmdir()
    assert "live" not in index.ids()
    with pytest.raises(RunAccessError):
        index.run("live")


def test_selection_round_trips_through_the_url_and_refuses_escapes(root):
    selection = Selection(RunIndex(root), [page.name for page in PAGES])
    search = selection.search(["fig4/seed0/baseline", "old"], "gradients")
    assert selection.parse(search) == (["fig4/seed0/baseline", "old"], "gradients")
    assert selection.parse("?page=nope") == ([], None)
    kept, refused = selection.check(["old", "../secret"])
    assert kept == ["old"] and len(refused) == 1 and "../secret" in refused[0]


def test_cli_refuses_a_file_as_runs_folder(tmp_path, capsys):
    file = tmp_path / "f"
    file.write_text("x")
    try:
        code = main(["--runs", str(file)])
    except SystemExit as exc:  # argparse's own exit for a bad argument
        code = exc.code
    assert code == 2
    assert "is a file" in capsys.readouterr().err


def test_each_broken_file_is_a_problem_of_its_own_run_naming_the_file(mixed_runs):
    folder, blamed = mixed_runs
    runs = {r.id: r for r in RunIndex(folder / "runs").scan()}
    assert set(runs) == set(GOOD) | set(blamed)
    for run_id in GOOD:
        assert runs[run_id].problems == [] and runs[run_id].status == "finished" and runs[run_id].problem is None
    for run_id, file in blamed.items():
        problems = runs[run_id].problems
        assert problems and all(p.file.startswith(file) and p.problem for p in problems), (run_id, problems)
        assert "Traceback" not in runs[run_id].problem
        assert runs[run_id].problem == "; ".join(f"{p.file}: {p.problem}" for p in problems)
    assert runs["broken/config-null"].status == "corrupt" and runs["broken/config-null"].config == {}
    assert runs["broken/results-strings"].results is None
    assert runs["broken/metrics-list-line"].metrics == [] and runs["broken/metrics-list-line"].status == "finished"
    assert "checksum" in runs["broken/frame-checksum"].problem
    assert "after the record was closed" in runs["broken/truncated-after-close"].problem


def test_symlinked_files_leading_out_of_the_runs_folder_are_refused(mixed_runs):
    folder, _ = mixed_runs
    index = RunIndex(folder / "runs")
    config, record = index.run("broken/config-symlink-out"), index.run("broken/record-symlink-out")
    assert "outside the runs folder" in config.problem and config.config == {} and LEAK not in config.label
    assert "outside the runs folder" in record.problem
    attribution = index.run("broken/attribution-symlink-out")
    assert {p.file for p in attribution.problems} == {"attribution/meta.json", "attribution/attributions.npz"}
    loaded, problems = index.records(["broken/record-symlink-out", GOOD[0]])
    assert list(problems) == ["broken/record-symlink-out"] and len(loaded) == 1
    assert not any(LEAK in str(r.tags) for r in loaded.values())


def test_records_come_with_their_problems_and_bad_ones_stay_out(mixed_runs):
    folder, blamed = mixed_runs
    index = RunIndex(folder / "runs")
    loaded, problems = index.records(sorted(blamed) + list(GOOD))
    record_faults = {run_id for run_id, file in blamed.items() if file == "gradscope"}
    assert set(problems) == record_faults
    drawn_with_problems = {"broken/frame-checksum", "broken/truncated-after-close"}
    assert all(problems[r] for r in record_faults)
    assert len(loaded) == len(GOOD) + len(blamed) - len(record_faults) + len(drawn_with_problems)
    assert len(index.record("broken/frame-checksum").steps) == 2  # the intact frame's steps load
    with pytest.raises(Exception, match="meta.json"):
        index.record("broken/meta-list")


def test_a_hundred_runs_are_listed_within_a_second(mixed_runs, tmp_path):
    folder, _ = mixed_runs
    good = folder / "runs" / GOOD[0]
    for i in range(100):
        shutil.copytree(good, tmp_path / "runs" / f"seed{i}", ignore=shutil.ignore_patterns("checkpoints", "cache"))
    index = RunIndex(tmp_path / "runs")
    start = time.process_time()  # CPU time: what the listing costs, whatever else the machine runs
    cold = index.scan()
    cold_s = time.process_time() - start
    start = time.process_time()
    warm = index.scan()
    warm_s = time.process_time() - start
    assert len(cold) == len(warm) == 100 and not any(r.problems for r in warm)
    assert cold_s < 1.0 and warm_s < 0.5, (cold_s, warm_s)


def test_a_run_whose_writer_still_runs_is_live_even_when_its_files_are_old(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from app.runs import LIVE_SECONDS, RunIndex

    run = tmp_path / "quiet"
    run.mkdir()
    (run / "config.json").write_text('{"method": "baseline"}')
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from gradscope.lock import FolderLock; lock = FolderLock(sys.argv[1], what='run'); "
        "lock.acquire(); print('locked', flush=True); time.sleep(60)"), str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        old = time.time() - 10 * LIVE_SECONDS  # a long evaluation has written nothing for a while
        for path in run.iterdir():
            os.utime(path, (old, old))
        os.utime(run, (old, old))
        assert {r.id: r.status for r in RunIndex(tmp_path, warm=False).scan()}["quiet"] == "live"
    finally:
        holder.kill()
        holder.wait()
    assert {r.id: r.status for r in RunIndex(tmp_path, warm=False).scan()}["quiet"] == "failed"  # killed: not live
