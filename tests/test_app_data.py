"""The dashboard's data functions and figures, on a real tiny run, real records and real run-folder files.

Numbers are checked against independent computations (block means, the EMA as a weighted average, the
virtual teacher as a softmax, ``statistics``), never against the code under test.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_batch, make_resnet

import gradscope
from app import data, figures
from app.data import AppError
from app.runs import RunInfo as Run
from gradscope.figures import heatmap_grids
from trainers.config import TrainConfig
from trainers.loop import train
from trainers.losses import virtual_teacher
from trainers.recipes import RECIPES
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


# -- binning and smoothing -----------------------------------------------------------------------------------


def test_downsample_is_exact_when_the_points_fit():
    rng = np.random.default_rng(0)
    steps, values = np.arange(10) * 3, rng.random((10, 2))
    values[4, 1] = np.nan
    s, mean, low, high = data.downsample(steps, values, max_points=10)
    np.testing.assert_array_equal(s, steps)
    for out in (mean, low, high):
        np.testing.assert_array_equal(out, values)  # NaN where NaN: no gradient is shown as a gap
    assert data.downsample(steps, values[:, 0], 1000)[1].shape == (10,)
    with pytest.raises(AppError, match="max_points"):
        data.downsample(steps, values, 0)


def test_downsample_bins_80000_steps_into_block_statistics():
    rng = np.random.default_rng(1)
    n, max_points = 80_000, 1500
    steps = np.arange(n) + 100
    values = rng.lognormal(size=(n, 2))
    values[rng.random(n) < 0.01, 0] = np.nan
    values[:200, 1] = np.nan  # two whole bins with no gradient
    s, mean, low, high = data.downsample(steps, values, max_points)
    size = math.ceil(n / max_points)
    assert len(s) <= max_points and len(s) == math.ceil(n / size)
    full = n // size
    blocks = values[: full * size].reshape(full, size, 2)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(mean[:full], np.nanmean(blocks, axis=1), rtol=1e-12)
        np.testing.assert_array_equal(low[:full], np.nanmin(blocks, axis=1))
        np.testing.assert_array_equal(high[:full], np.nanmax(blocks, axis=1))
    np.testing.assert_allclose(s[:full], steps[: full * size].reshape(full, size).mean(axis=1))
    np.testing.assert_allclose(mean[-1], np.nanmean(values[full * size:], axis=0))  # the shorter last bin
    assert np.isnan(mean[:3, 1]).all() and not np.isnan(mean[4:, 1]).any()


def test_smooth_is_the_debiased_ema_and_skips_nan():
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    x[[5, 17]] = np.nan
    w = 0.8
    out = data.smooth(x, w)
    # debiased EMA = weighted average of the finite values so far, weights w^(k-i)
    finite = [v for v in x if not np.isnan(v)]
    expected, k = [], 0
    for v in x:
        if np.isnan(v):
            expected.append(np.nan)
            continue
        k += 1
        weights = w ** np.arange(k - 1, -1, -1)
        expected.append(float(np.dot(weights, finite[:k]) / weights.sum()))
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    np.testing.assert_array_equal(data.smooth(x, 0.0), x)
    with pytest.raises(AppError, match=r"\[0, 1\)"):
        data.smooth(x, 1.0)


def test_layer_series_bins_and_smooths_a_real_record(trained):
    record = gradscope.load(trained)
    steps, names, values = record.matrix("stage", "l2")
    series = data.layer_series(record, "stage", "l2", max_points=2, smoothing=0.5)
    assert list(series) == names  # six stages: all of them
    s, mean, low, high = data.downsample(steps, values, 2)
    for j, name in enumerate(names):
        np.testing.assert_allclose(series[name]["value"], mean[:, j])
        np.testing.assert_allclose(series[name]["high"], high[:, j])
        np.testing.assert_allclose(series[name]["smoothed"], data.smooth(mean[:, j], 0.5))
        assert series[name]["bin_size"] == 2 and len(series[name]["steps"]) == 2
    layers = data.layer_series(record, "layer", "mean_abs")
    assert len(record.names("layer")) == 41 and len(layers) == data.MAX_DEFAULT_GROUPS
    means = record.window_mean("layer", "mean_abs")
    top = sorted(means, key=means.get, reverse=True)[: data.MAX_DEFAULT_GROUPS]
    assert set(layers) == set(top)
    assert list(layers) == [n for n in record.names("layer") if n in top]  # model order
    rows = data.series_csv_rows({"run": series})
    assert len(rows) == 2 * len(names) and set(rows[0]) >= {"run", "group", "step", "value", "smoothed"}
    gap = {"steps": np.array([0.0, 1.0]), "value": np.array([np.nan, 2.0]), "low": np.array([np.nan, 2.0]),
           "high": np.array([np.nan, 2.0]), "smoothed": np.array([np.nan, 2.0]), "bin_size": 1}
    assert data.series_csv_rows({"r": {"g": gap}})[0]["value"] is None  # no NaN in JSON or CSV
    with pytest.raises(AppError, match="no stage 'layer9'"):
        data.layer_series(record, "stage", "l2", names=["layer9"])

    fig = figures.series_figure({"a": series, "b": series}, log_y=True, stat="l2", level="stage")
    assert len(fig.data) == 2 * len(names) * 3  # band, raw, smoothed per (run, group): binned
    exact = data.layer_series(record, "stage", "l2", names=["layer1"])
    assert len(figures.series_figure({"a": exact}).data) == 2  # no band when nothing is binned
    assert_titled(fig)


# -- the gradient heatmap ---------------------------------------------------------------------------------


def test_difference_view_is_zero_for_the_baseline_and_a_log_ratio_elsewhere(records):
    grids = {g.title: g for g in heatmap_grids(records, "mean_abs", "stage")}
    view = data.heatmap_view(records, "mean_abs", "stage", baseline="baseline")
    base, other = view.grids
    finite = np.isfinite(grids["baseline"].values)
    np.testing.assert_array_equal(base.values[finite], 0.0)
    np.testing.assert_allclose(other.values, np.log10(grids["tfkd-reg"].values / grids["baseline"].values))
    linear = data.heatmap_view(records, "mean_abs", "stage", log=False, baseline="tfkd-reg")
    np.testing.assert_allclose(linear.grids[0].values, grids["baseline"].values - grids["tfkd-reg"].values)
    rows = data.heatmap_csv_rows(records, baseline="baseline")
    assert {r["value"] for r in rows if r["run"] == "baseline"} == {0.0}
    assert rows[0]["quantity"] == "log10(mean_abs / baseline)"
    plain = data.heatmap_csv_rows(records)
    assert "quantity" not in plain[0] and len(plain) == len(rows)
    with pytest.raises(AppError, match="unknown baseline run 'nope'; expected one of: baseline, tfkd-reg"):
        data.heatmap_view(records, baseline="nope")

    fig = figures.heatmap_figure(records, baseline="baseline", robust=True)
    assert len(fig.data) == 2 and fig.layout.coloraxis.cmid == 0
    assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax
    assert_titled(fig)
    plain_fig = figures.heatmap_figure(records, columns="block")
    assert len(plain_fig.data) == 2 and list(plain_fig.data[0].x) == records["baseline"].names("block")
    assert_titled(plain_fig)


# -- the virtual teacher -------------------------------------------------------------------------------------


def test_virtual_teacher_curves_are_the_teachers_softmax():
    taus = [0.1, 1.0, 4.0, 20.0, 100.0]
    curves = data.virtual_teacher_curves(0.9, 10, taus)
    for tau, correct, incorrect in zip(taus, curves["correct"], curves["incorrect"]):
        teacher = virtual_teacher(torch.tensor([3]), 10, 0.9, tau)[0].double()
        assert correct == pytest.approx(teacher[3].item(), rel=1e-6)
        assert incorrect == pytest.approx(teacher[0].item(), rel=1e-6)
    np.testing.assert_allclose(curves["correct"] + 9 * curves["incorrect"], 1.0)
    assert np.all(np.diff(curves["correct"]) < 0) and curves["correct"][-1] == pytest.approx(0.1, abs=1e-3)
    assert len(data.virtual_teacher_csv_rows(curves)) == 5
    for bad in (1.5, None):
        with pytest.raises(AppError, match="a is the correct class's probability"):
            data.virtual_teacher_curves(bad)  # type: ignore[arg-type]
    with pytest.raises(AppError, match="positive"):
        data.virtual_teacher_curves(0.9, 10, [1.0, 0.0])

    runs = [fake_run("tfkd-reg", "tfkd-reg", 0, 95.0, temperature=20.0, a=0.99),
            fake_run("at-tfkd-reg", "at-tfkd-reg", 0, 82.0, temperature=20.0, a=0.9),
            fake_run("baseline", "baseline", 0, 94.0, temperature=1.0, a=0.99)]
    markers = data.temperature_markers(runs)
    assert [m["label"] for m in markers] == ["tfkd-reg s0", "at-tfkd-reg s0"]
    assert markers[1]["correct"] == pytest.approx(data.virtual_teacher_curves(0.9, 10, [20.0])["correct"][0])
    fig = figures.virtual_teacher_figure(data.virtual_teacher_curves(), markers)
    assert len(fig.data) == 3 and fig.layout.xaxis.type == "log"
    assert_titled(fig)
    assert len(figures.virtual_teacher_figure(curves, [], log_x=False).data) == 2


# -- robustness --------------------------------------------------------------------------------------------


def robust_runs() -> list[Run]:
    flag = [{"flag": "robust_above_clean", "message": "best: pgd at ε 8/255 gives 90.00% above clean 80.00%"}]
    return [
        fake_run("at", "at", 0, 84.0, pgd=50.0, aa=47.0, recipe="fig7", sweep=[84, 75, 64, 50, 20]),
        fake_run("at", "at", 1, 83.0, pgd=49.0, aa=46.0, recipe="fig7", sweep=[83, 74, 63, 49, 19]),
        fake_run("at-tfkd-reg", "at-tfkd-reg", 0, 82.0, pgd=51.0, recipe="fig7", flags=flag),
        fake_run("baseline", "baseline", 0, 94.0, recipe="fig4"),
    ]


def test_robustness_summary_is_mean_and_std_over_seeds_and_says_which_attack():
    summary = {row["method"]: row for row in data.robustness_summary(robust_runs())}
    at = summary["at"]
    assert at["n_seeds"] == 2 and at["robust_kind"] == "AutoAttack"
    assert at["clean_mean"] == pytest.approx(83.5) and at["clean_std"] == pytest.approx(statistics.stdev([84, 83]))
    assert at["robust_mean"] == pytest.approx(46.5) and at["robust_std"] == pytest.approx(statistics.stdev([47, 46]))
    reg = summary["at-tfkd-reg"]
    assert (reg["robust_kind"], reg["robust_mean"], reg["robust_std"]) == ("PGD-20", 51.0, None)
    assert summary["baseline"]["robust_kind"] is None and summary["baseline"]["robust_mean"] is None
    fig = figures.robustness_figure(list(summary.values()))
    assert len(fig.data) == 3  # two methods with a robust number, and the poster's points
    assert list(fig.data[0].error_y.array) == pytest.approx([statistics.stdev([47, 46])])
    assert_titled(fig)
    assert len(figures.robustness_figure([], poster=False).data) == 0


def test_eps_curves_breakdown_and_flags():
    runs = robust_runs()
    curves = data.eps_curves(runs)
    assert len(curves) == 10 and curves[3]["eps_255"] == pytest.approx(8.0) and curves[3]["accuracy"] == 50
    breakdown = data.attack_breakdown(runs)
    assert [r["stage"] for r in breakdown[:5]] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert len(breakdown) == 10 and breakdown[4]["accuracy"] == 47.0
    flags = data.sanity_flags(runs)
    assert flags == [{"run": "at-tfkd-reg s0", "id": "fig7/seed0/at-tfkd-reg", "flag": "robust_above_clean",
                      "message": "best: pgd at ε 8/255 gives 90.00% above clean 80.00%"}]
    for fig, traces in ((figures.eps_figure(curves), 2), (figures.breakdown_figure(breakdown), 2),
                        (figures.eps_figure([]), 0)):
        assert len(fig.data) == traces
        assert_titled(fig)


# -- tables -------------------------------------------------------------------------------------------------


def test_poster_tables_put_ours_beside_the_posters_numbers():
    runs = robust_runs() + [fake_run("tfkd-reg", "tfkd-reg", s, v, recipe="fig4") for s, v in ((0, 95.0), (1, 95.5))]
    tables = {t["figure"]: t for t in data.poster_tables(runs)}
    assert list(tables) == ["fig1", "fig2", "fig4", "fig7"]
    fig4 = {row["run"]: row for row in tables["fig4"]["rows"]}
    assert fig4["tfkd-reg"]["poster"] == 95.39 and fig4["tfkd-reg"]["ours"] == "95.25 ± 0.35"
    assert fig4["tfkd-self"]["ours"] == "—" and fig4["tfkd-self"]["poster"] == 95.42
    assert fig4["baseline"]["ours"] == "94.00 (1 seed)"
    fig7 = {(row["run"], row["metric"]): row for row in tables["fig7"]["rows"]}
    assert fig7[("at", "AutoAttack")]["poster"] == 46.99 and fig7[("at", "AutoAttack")]["mean"] == 46.5
    assert fig7[("at-tfkd-reg", "PGD-20 (poster: AutoAttack)")]["ours"] == "51.00 (1 seed)"
    poster_fig1 = RECIPES.get("fig1").poster
    assert [row["poster"] for row in tables["fig1"]["rows"]] == [v["test_acc"] for v in poster_fig1.values()]
    assert tables["fig7"]["datasets"] == ["cifar10"]
    flat = data.poster_table_csv_rows(list(tables.values()))
    assert len(flat) == sum(len(t["rows"]) for t in tables.values())


def test_runs_table_rows_for_finished_and_corrupt_runs(trained):
    finished = read_run(trained, "fig4/seed0/baseline", "baseline s0")
    corrupt = Run("fig4/seed1/baseline", "baseline s1", status="corrupt", problem="config.json is not valid JSON")
    rows = data.runs_table([finished, corrupt, robust_runs()[0]])
    results = json.loads((trained / "results.json").read_text())
    assert rows[0] | {} == {
        "id": "fig4/seed0/baseline", "label": "baseline s0", "recipe": None, "method": "baseline",
        "model": "resnet18", "dataset": "synthetic", "seed": 0, "epochs_done": 1, "epochs_planned": 1,
        "status": "finished", "clean": results["best"]["test_acc"], "pgd20": None, "autoattack": None,
        "best_epoch": 1, "problem": None}
    assert rows[1]["status"] == "corrupt" and rows[1]["problem"] == "config.json is not valid JSON"
    assert rows[1]["epochs_done"] == 0 and rows[1]["clean"] is None and rows[1]["method"] is None
    assert (rows[2]["pgd20"], rows[2]["autoattack"]) == (50.0, 47.0)
    parsed = list(csv.DictReader(io.StringIO(data.csv_text(rows))))
    assert len(parsed) == 3 and parsed[1]["clean"] == "" and parsed[0]["model"] == "resnet18"


def test_training_curves_of_a_real_run(trained):
    run = read_run(trained, "fig4/seed0/baseline", "baseline s0")
    rows = data.training_curves([run, robust_runs()[0]], "test_acc")
    assert [(r["run"], r["epoch"]) for r in rows] == [("baseline s0", 1), ("at s0", 1)]
    assert rows[0]["value"] == run.metrics[0]["test_acc"]
    assert data.training_curves([run], "val_pgd_acc") == []
    with pytest.raises(AppError, match="unknown training metric 'loss'; expected one of: train_loss"):
        data.training_curves([run], "loss")
    fig = figures.training_figure(rows, "test_acc")
    assert len(fig.data) == 2
    assert_titled(fig)


# -- attribution ------------------------------------------------------------------------------------------


def write_attribution(folder: Path, methods: dict[str, np.ndarray], layers: list[str]) -> None:
    rng = np.random.default_rng(3)
    (folder / "attribution").mkdir(parents=True)
    np.savez(folder / "attribution" / "attributions.npz", images=rng.random((2, 3, 8, 8), dtype=np.float32),
             labels=np.array([3, 5]), predictions=np.array([3, 1]), indices=np.array([17, 4]), **methods)
    meta = {"methods": list(methods), "gradcam_layers": layers, "skipped": {}}
    (folder / "attribution" / "meta.json").write_text(json.dumps(meta))


def test_attribution_panels_scale_each_map_by_its_99th_percentile(tmp_path):
    rng = np.random.default_rng(4)
    saliency = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    gradcam = rng.random((2, 2, 8, 8)).astype(np.float32)
    write_attribution(tmp_path / "resnet", {"saliency": saliency, "gradcam": gradcam}, ["layer1.1", "layer2.1"])
    write_attribution(tmp_path / "mlp", {"saliency": saliency}, [])
    resnet = data.attribution_panels(Run("r", "resnet", tmp_path / "resnet"))
    assert resnet is not None
    assert list(resnet["maps"]) == ["saliency", "gradcam layer1.1", "gradcam layer2.1"]
    assert resnet["images"].shape == (2, 8, 8, 3) and list(resnet["indices"]) == [17, 4]
    magnitude = np.abs(saliency[1]).sum(axis=0)
    expected = np.clip(magnitude / np.percentile(magnitude, 99), 0, 1)
    np.testing.assert_allclose(resnet["maps"]["saliency"][1], expected, rtol=1e-6)
    layer2 = gradcam[0, 1]
    np.testing.assert_allclose(resnet["maps"]["gradcam layer2.1"][0], np.clip(layer2 / np.percentile(layer2, 99), 0, 1),
                               rtol=1e-6)
    for maps in resnet["maps"].values():
        assert maps.shape == (2, 8, 8) and maps.min() >= 0 and maps.max() == pytest.approx(1.0)
    assert data.attribution_panels(Run("none", "none", tmp_path / "nothing")) is None
    mlp = data.attribution_panels(Run("m", "mlp", tmp_path / "mlp"))
    assert len(data.attribution_csv_rows({"resnet": resnet, "mlp": mlp, "none": None})) == 4

    fig = figures.attribution_figure({"resnet": resnet, "mlp": mlp, "none": None}, image_index=1)
    assert len(fig.data) == (1 + 3) + (1 + 1)  # inputs and the maps each run has; the MLP has no Grad-CAM
    assert "#4" in fig.layout.title.text
    assert_titled(fig)
    with pytest.raises(AppError, match="image 2 does not exist"):
        figures.attribution_figure({"resnet": resnet}, image_index=2)
    (tmp_path / "broken" / "attribution").mkdir(parents=True)
    (tmp_path / "broken" / "attribution" / "attributions.npz").write_bytes(b"not an npz")
    with pytest.raises(AppError, match="cannot be read"):
        data.attribution_panels(Run("b", "broken", tmp_path / "broken"))


def test_empty_figures_still_have_titles_and_say_why():
    for fig in (figures.heatmap_figure({}), figures.series_figure({}), figures.training_figure([], "lr"),
                figures.breakdown_figure([]), figures.attribution_figure({"x": None})):
        assert len(fig.data) == 0 and fig.layout.annotations
        assert_titled(fig)
