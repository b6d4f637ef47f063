"""Runs page and Training page on a real tiny run: the table rows and the training curves."""

from __future__ import annotations

import csv
import io
import json
import shutil

import app_helpers
import pytest
from app_helpers import Run, assert_titled, read_run, robust_runs

from app.errors import AppError
from app.pages import runs as page
from app.pages import training
from app.shared import csv_text
from trainers.robustness import evaluate_run

one_thread, trained = app_helpers.one_thread, app_helpers.trained  # fixtures


def test_runs_table_rows_for_finished_and_corrupt_runs(trained):
    finished = read_run(trained, "fig4/seed0/baseline", "baseline s0")
    corrupt = Run("fig4/seed1/baseline", "baseline s1", status="corrupt", problem="config.json is not valid JSON")
    rows = page.runs_table([finished, corrupt])
    results = json.loads((trained / "results.json").read_text())
    assert rows[0] | {} == {
        "id": "fig4/seed0/baseline", "label": "baseline s0", "recipe": None, "method": "baseline",
        "model": "resnet18", "dataset": "synthetic", "seed": 0, "epochs_done": 1, "epochs_planned": 1,
        "status": "finished", "clean": results["best"]["test_acc"], "pgd20": None, "robust": None,
        "measured_as": None, "n_images": results["provenance"]["best"]["n"], "best_epoch": 1, "stale": None,
        "problem": None}
    assert rows[1]["status"] == "corrupt" and rows[1]["problem"] == "config.json is not valid JSON"
    assert rows[1]["epochs_done"] == 0 and rows[1]["clean"] is None and rows[1]["method"] is None
    parsed = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert len(parsed) == 2 and parsed[1]["clean"] == "" and parsed[0]["model"] == "resnet18"
    assert set(page.COLUMNS) <= set(rows[0])


def test_pgd20_is_filled_from_evaluation_json_and_a_stale_one_is_shown_as_stale(trained, tmp_path):
    folder = tmp_path / "fig4" / "seed0" / "baseline"
    shutil.copytree(trained, folder)
    evaluation = evaluate_run(folder, attacks=["clean", "pgd"], n=16, show_progress=False)
    pgd = next(e for e in evaluation["results"].values() if e["attack"] == "pgd")
    row = page.runs_table([read_run(folder, "fig4/seed0/baseline", "baseline s0")])[0]
    assert row["pgd20"] == pgd["accuracy"] and row["robust"] == pgd["accuracy"]  # the flaw: pgd20 was empty
    assert row["measured_as"] == "PGD-20 (fallback: AutoAttack not run)" and row["n_images"] == 16
    assert row["stale"] is None
    checkpoint = folder / json.loads((folder / "results.json").read_text())["provenance"]["best"]["checkpoint_file"]
    checkpoint.write_bytes(checkpoint.read_bytes() + b"retrained")  # another model now: every number is stale
    row = page.runs_table([read_run(folder, "fig4/seed0/baseline", "baseline s0")])[0]
    assert row["pgd20"] is None and row["robust"] is None and row["clean"] is None
    assert "results.json" in row["stale"] and "evaluation.json" in row["stale"]


def test_ticking_rows_edits_the_selection_and_keeps_runs_not_in_the_table():
    table = ["a", "b", "c"]
    assert page.ticked_selection(["x", "a", "b"], table, {"a"}) == ["x", "a"]  # b unticked: removed
    assert page.ticked_selection(["a"], table, {"a", "c"}) == ["a", "c"]  # c ticked: appended
    assert page.ticked_selection([], table, set()) == []


def test_training_curves_of_a_real_run(trained):
    run = read_run(trained, "fig4/seed0/baseline", "baseline s0")
    rows = training.training_curves([run, robust_runs()[0]], "test_acc")
    assert [(r["run"], r["epoch"]) for r in rows] == [("baseline s0", 1), ("at s0", 1)]
    assert rows[0]["value"] == run.metrics[0]["test_acc"]
    assert training.training_curves([run], "val_pgd_acc") == []
    with pytest.raises(AppError, match="unknown training metric 'loss'; expected one of: train_loss"):
        training.training_curves([run], "loss")
    fig = training.training_figure(rows, "test_acc")
    assert len(fig.data) == 2
    assert_titled(fig)


def test_an_empty_training_figure_is_titled_and_says_why():
    fig = training.training_figure([], "lr")
    assert len(fig.data) == 0 and fig.layout.annotations
    assert_titled(fig)


def test_epoch_ticks_are_whole_epochs():
    rows = [{"run": "r", "id": "r", "epoch": e, "value": 1.0} for e in (1, 2, 3)]
    axis = training.training_figure(rows, "test_acc").layout.xaxis
    assert (axis.dtick, axis.tickformat, axis.tickmode) == (1, "d", "linear")  # not 1.2, 1.4, ...
    many = [{"run": "r", "id": "r", "epoch": e, "value": 1.0} for e in range(1, 201)]
    assert training.training_figure(many, "test_acc").layout.xaxis.dtick == 20  # at most ten ticks
