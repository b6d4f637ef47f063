"""Gradients page: binning, smoothing and curves of a real record; Figure 6 and its difference view.

Numbers are checked against independent computations (block means, the EMA as a weighted average).
"""

from __future__ import annotations

import math

import app_helpers
import numpy as np
import pytest
from app_helpers import assert_titled

import gradscope
from app.errors import AppError
from app.pages import gradients as page
from gradscope.figures import heatmap_grids

one_thread, records, trained = app_helpers.one_thread, app_helpers.records, app_helpers.trained  # fixtures


# -- smoothing and binned curves -----------------------------------------------------------------------------------


def test_smooth_is_the_debiased_ema_and_skips_nan():
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    x[[5, 17]] = np.nan
    w = 0.8
    out = page.smooth(x, w)
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
    np.testing.assert_array_equal(page.smooth(x, 0.0), x)
    with pytest.raises(AppError, match=r"\[0, 1\)"):
        page.smooth(x, 1.0)


def test_layer_series_bins_and_smooths_a_real_record(trained):
    record = gradscope.load(trained)
    steps, names, values = record.matrix("stage", "l2")
    series = page.layer_series(record, "stage", "l2", max_points=2, smoothing=0.5)
    assert list(series) == names  # six stages: all of them
    size = math.ceil(len(steps) / 2)  # two bins of consecutive steps, means and maxima computed here
    halves = [values[:size], values[size:]]
    mean = np.array([np.nanmean(h, axis=0) for h in halves])
    high = np.array([np.nanmax(h, axis=0) for h in halves])
    for j, name in enumerate(names):
        np.testing.assert_allclose(series[name]["value"], mean[:, j], rtol=1e-12)
        np.testing.assert_allclose(series[name]["high"], high[:, j], rtol=1e-12)
        np.testing.assert_allclose(series[name]["smoothed"], page.smooth(mean[:, j], 0.5))
        np.testing.assert_allclose(series[name]["steps"], [steps[:size].mean(), steps[size:].mean()])
        assert series[name]["bin_size"] == size
    layers = page.layer_series(record, "layer", "mean_abs")
    assert len(record.names("layer")) == 41 and len(layers) == page.MAX_DEFAULT_GROUPS
    means = record.window_mean("layer", "mean_abs")
    top = sorted(means, key=means.get, reverse=True)[: page.MAX_DEFAULT_GROUPS]
    assert set(layers) == set(top)
    assert list(layers) == [n for n in record.names("layer") if n in top]  # model order
    rows = page.series_csv_rows({"run": series})
    assert len(rows) == 2 * len(names) and set(rows[0]) >= {"run", "group", "step", "value", "smoothed"}
    gap = {"steps": np.array([0.0, 1.0]), "value": np.array([np.nan, 2.0]), "low": np.array([np.nan, 2.0]),
           "high": np.array([np.nan, 2.0]), "smoothed": np.array([np.nan, 2.0]), "bin_size": 1}
    assert page.series_csv_rows({"r": {"g": gap}})[0]["value"] is None  # no NaN in JSON or CSV
    with pytest.raises(AppError, match="no stage 'layer9'"):
        page.layer_series(record, "stage", "l2", names=["layer9"])

    fig = page.series_figure({"a": series, "b": series}, log_y=True, stat="l2", level="stage")
    # binned: a smoothed curve per (run, group) and one band trace per run holding each group's min-max polygon
    assert len(fig.data) == 2 * len(names) + 2
    bands = [t for t in fig.data if t.fill == "toself"]
    assert [t.name for t in bands] == ["a min–max per bin", "b min–max per bin"]
    assert not any(t.showlegend for t in bands)
    polygon = 2 * len(series[names[0]]["steps"])  # there and back along the bins, then a gap
    assert list(bands[0].x).count(None) == len(names) and len(bands[0].x) == len(names) * (polygon + 1)
    first = series[names[0]]
    assert list(bands[0].y[:polygon]) == [*first["high"], *first["low"][::-1]]
    exact = page.layer_series(record, "stage", "l2", names=["layer1"])
    unbinned = page.series_figure({"a": exact}).data
    assert len(unbinned) == 2 and unbinned[0].name.endswith(" raw")  # no band: the raw curve, faded
    assert_titled(fig)


# -- the gradient heatmap ---------------------------------------------------------------------------------


def test_difference_view_is_zero_for_the_baseline_and_a_log_ratio_elsewhere(records):
    grids = {g.title: g for g in heatmap_grids(records, "mean_abs", "stage")}
    view = page.heatmap_view(records, "mean_abs", "stage", baseline="baseline")
    base, other = view.grids
    finite = np.isfinite(grids["baseline"].values)
    np.testing.assert_array_equal(base.values[finite], 0.0)
    np.testing.assert_allclose(other.values, np.log10(grids["tfkd-reg"].values / grids["baseline"].values))
    linear = page.heatmap_view(records, "mean_abs", "stage", log=False, baseline="tfkd-reg")
    np.testing.assert_allclose(linear.grids[0].values, grids["baseline"].values - grids["tfkd-reg"].values)
    rows = page.heatmap_csv_rows(records, baseline="baseline")
    assert {r["value"] for r in rows if r["run"] == "baseline"} == {0.0}
    assert rows[0]["quantity"] == "log10(mean_abs / baseline)"
    plain = page.heatmap_csv_rows(records)
    assert "quantity" not in plain[0] and len(plain) == len(rows)
    with pytest.raises(AppError, match="unknown baseline run 'nope'; expected one of: baseline, tfkd-reg"):
        page.heatmap_view(records, baseline="nope")

    fig = page.heatmap_figure(records, baseline="baseline", robust=True)
    assert len(fig.data) == 2 and fig.layout.coloraxis.cmid == 0
    assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax
    assert_titled(fig)
    plain_fig = page.heatmap_figure(records, columns="block")
    assert len(plain_fig.data) == 2 and list(plain_fig.data[0].x) == records["baseline"].names("block")
    assert_titled(plain_fig)


def test_empty_figures_still_have_titles_and_say_why():
    for fig in (page.heatmap_figure({}), page.series_figure({})):
        assert len(fig.data) == 0 and fig.layout.annotations
        assert_titled(fig)


def test_the_normalised_view_divides_by_the_global_norm_and_says_so(records):
    stage = {label: r.matrix("stage", "l2") for label, r in records.items()}
    record = records["baseline"]
    _, names, raw = record.matrix("layer", "mean_abs")
    _, _, total = record.matrix("stage", "l2")
    global_norm = np.sqrt(np.nansum(total**2, axis=1))  # every parameter lies in exactly one stage
    _, _, normalised = record.matrix("layer", "mean_abs", normalize="global")
    np.testing.assert_allclose(normalised, raw / global_norm[:, None], rtol=1e-5)
    assert stage  # both records have stages

    fig = page.heatmap_figure(records, normalize="global")
    assert "normalised" in fig.layout.title.text and "global" in fig.layout.coloraxis.colorbar.title.text
    raw_fig = page.heatmap_figure(records)
    assert "raw statistic" in raw_fig.layout.title.text
    rows = page.heatmap_csv_rows(records, normalize="global")
    assert {r["normalize"] for r in rows} == {"global"}
    difference = page.heatmap_figure(records, baseline="baseline", normalize="global")
    assert "global" in difference.layout.coloraxis.colorbar.title.text and "baseline" in difference.layout.title.text
    assert_titled(difference)
    series = page.layer_series(record, "stage", "l2", normalize="global")
    spec = page.series_figure_spec({"baseline": series}, stat="l2", level="stage", normalize="global")
    assert "global" in spec["layout"]["yaxis"]["title"]["text"]
    assert [o["value"] for o in page.NORMALIZE_OPTIONS] == list(page.NORMALIZATIONS)


def test_the_dashboards_heatmap_reads_like_the_librarys(records):
    from gradscope.figures import heatmap

    for options in ({}, {"columns": "block", "log": False, "normalize": "global", "window": (0.2, 0.8)}):
        ours, library = page.heatmap_figure(records, **options), heatmap(records, **options)
        assert_titled(ours)
        assert ours.layout.title.text == library.layout.title.text
        assert ours.layout.xaxis.title.text == library.layout.xaxis.title.text
        assert ours.layout.yaxis.title.text == library.layout.yaxis.title.text
        assert ours.layout.coloraxis.colorbar.title.text == library.layout.coloraxis.colorbar.title.text


def test_the_series_view_of_five_runs_is_one_small_panel_each_sharing_a_y_axis(records):
    series = page.layer_series(records["baseline"], "stage", "l2")
    runs = {f"run {i}": series for i in range(5)}
    spec = page.series_figure_spec(runs, stat="l2", level="stage")
    layout, traces = spec["layout"], spec["data"]
    panels = sorted({t["xaxis"] for t in traces})
    assert len(panels) == 5 and len({t["yaxis"] for t in traces}) == 5
    # one y range on every panel: log10 of the smallest and largest value drawn, padded
    ranges = [layout[f"yaxis{i if i > 1 else ''}"]["range"] for i in range(1, 6)]
    assert all(r == ranges[0] for r in ranges) and not layout["yaxis"]["autorange"]
    drawn = np.concatenate([np.concatenate([s["smoothed"], s["low"], s["high"]]) for s in series.values()])
    drawn = np.log10(drawn[np.isfinite(drawn) & (drawn > 0)])
    lo, hi = ranges[0]
    assert lo < drawn.min() < drawn.max() < hi and hi - lo == pytest.approx(1.08 * np.ptp(drawn))
    assert all(layout[f"xaxis{i}"]["matches"] == "x" for i in range(2, 6))  # zooming one panel zooms all
    titles = [a["text"] for a in layout["annotations"]]
    assert titles == [f"<b>run {i}</b>" for i in range(5)]
    legend = [t["name"] for t in traces if t.get("showlegend", True)]
    assert legend == list(series)  # each group once, not 5 x groups entries
    assert len({t["line"]["color"] for t in traces if t["name"] in series}) == len(series)
    assert layout["height"] >= 2 * page.SERIES_PANEL_HEIGHT  # two rows of panels, each readable
    y = layout["yaxis"]
    assert y["type"] == "log" and ("dtick" in y or y.get("tickformat") == ".0e")  # no tiny 2 and 5 minor labels


def test_the_shared_range_of_linear_axes_single_values_and_nothing_drawn():
    flat = {"steps": np.array([0.0, 1.0]), "value": np.array([2.0, 2.0]), "smoothed": np.array([2.0, np.nan]),
            "bin_size": 1}
    assert page.shared_range({"r": {"g": flat}}, log_y=False) == [1.8, 2.2]
    assert page.shared_range({"r": {"g": flat}}, log_y=True) == pytest.approx([np.log10(2) - 0.5, np.log10(2) + 0.5])
    assert page.shared_range({}, log_y=True) is None
    negative = {**flat, "value": np.array([-1.0, 3.0]), "smoothed": np.array([-1.0, 3.0])}
    assert page.shared_range({"r": {"g": negative}}, log_y=False) == pytest.approx([-1.16, 3.16])


def test_log_ticks_are_decades_over_a_wide_range_and_full_labels_over_a_narrow_one():
    assert page.log_ticks([1e-5, 1.0])["dtick"] == 1
    narrow = page.log_ticks([0.002, 0.009])
    assert narrow["tickformat"] == ".0e" and 0.002 in narrow["tickvals"] and 0.005 in narrow["tickvals"]
