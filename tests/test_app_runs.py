"""The run index: safe ids (no escape from the runs folder), statuses, deleted runs; URL selection."""

import json
import os
import time

import pytest

from app.callbacks import checked_selection, parse_selection, selection_search
from app.cli import main
from app.runs import RunAccessError, RunIndex


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


@pytest.mark.parametrize("bad", ["../secret", "/etc", "fig4/../../secret", "escape", "~root", "", "a\\b", "nope"])
def test_ids_outside_the_runs_folder_or_unknown_are_refused(root, bad):
    with pytest.raises(RunAccessError):
        RunIndex(root).resolve(bad)


def test_scan_finds_runs_with_their_status_and_does_not_follow_symlinks_out(root):
    runs = {r.id: r for r in RunIndex(root).scan()}
    assert set(runs) == {"fig4/seed0/baseline", "old", "live", "broken"}
    assert runs["fig4/seed0/baseline"].status == "finished"
    assert runs["live"].status == "live"
    assert runs["old"].status == "failed" and "--resume" in runs["old"].problem
    assert runs["broken"].status == "corrupt" and "unreadable" in runs["broken"].problem


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
    search = selection_search(["fig4/seed0/baseline", "old"], "gradients")
    assert parse_selection(search) == (["fig4/seed0/baseline", "old"], "gradients")
    assert parse_selection("?page=nope") == ([], None)
    kept, refused = checked_selection(RunIndex(root), ["old", "../secret"])
    assert kept == ["old"] and len(refused) == 1 and "../secret" in refused[0]


def test_cli_refuses_a_file_as_runs_folder(tmp_path, capsys):
    file = tmp_path / "f"
    file.write_text("x")
    assert main(["--runs", str(file)]) == 2
    assert "is a file" in capsys.readouterr().err
