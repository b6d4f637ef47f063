"""Virtual-teacher page: Figure 5 checked against the teacher's softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from app_helpers import assert_titled, fake_run

from app.errors import AppError
from app.pages import teacher as page
from trainers.losses import virtual_teacher

# -- the virtual teacher -------------------------------------------------------------------------------------


def test_virtual_teacher_curves_are_the_teachers_softmax():
    taus = [0.1, 1.0, 4.0, 20.0, 100.0]
    curves = page.virtual_teacher_curves(0.9, 10, taus)
    for tau, correct, incorrect in zip(taus, curves["correct"], curves["incorrect"]):
        teacher = virtual_teacher(torch.tensor([3]), 10, 0.9, tau)[0].double()
        assert correct == pytest.approx(teacher[3].item(), rel=1e-6)
        assert incorrect == pytest.approx(teacher[0].item(), rel=1e-6)
    np.testing.assert_allclose(curves["correct"] + 9 * curves["incorrect"], 1.0)
    assert np.all(np.diff(curves["correct"]) < 0) and curves["correct"][-1] == pytest.approx(0.1, abs=1e-3)
    assert len(page.virtual_teacher_csv_rows(curves)) == 5
    for bad in (1.5, None):
        with pytest.raises(AppError, match="a is the correct class's probability"):
            page.virtual_teacher_curves(bad)  # type: ignore[arg-type]
    with pytest.raises(AppError, match="positive"):
        page.virtual_teacher_curves(0.9, 10, [1.0, 0.0])

    runs = [fake_run("tfkd-reg", "tfkd-reg", 0, 95.0, temperature=20.0, a=0.99),
            fake_run("at-tfkd-reg", "at-tfkd-reg", 0, 82.0, temperature=20.0, a=0.9),
            fake_run("baseline", "baseline", 0, 94.0, temperature=1.0, a=0.99)]
    markers = page.temperature_markers(runs)
    assert [m["label"] for m in markers] == ["tfkd-reg s0", "at-tfkd-reg s0"]
    assert markers[1]["correct"] == pytest.approx(page.virtual_teacher_curves(0.9, 10, [20.0])["correct"][0])
    fig = page.virtual_teacher_figure(page.virtual_teacher_curves(), markers)
    assert len(fig.data) == 4 and fig.layout.xaxis.type == "log"  # two curves, a marker per run
    assert_titled(fig)
    assert len(page.virtual_teacher_figure(curves, [], log_x=False).data) == 2


def test_two_runs_at_one_temperature_are_both_seen_and_each_shows_its_loss_minimiser():
    seeds = [fake_run("tfkd-reg", "tfkd-reg", s, 95.0, temperature=20.0, a=0.99, preset="yuan-literal")
             for s in (0, 1)]
    markers = page.temperature_markers(seeds)
    xs = page.spread(markers)
    assert xs[0] != xs[1] and np.sqrt(xs[0] * xs[1]) == pytest.approx(20.0)  # apart, centred on the true τ
    fig = page.virtual_teacher_figure(page.virtual_teacher_curves(0.99), markers)
    runs = [t for t in fig.data if t.name in ("tfkd-reg s0", "tfkd-reg s1")]
    assert len(runs) == 2 and {t.customdata[0][0] for t in runs} == {20.0}  # hover gives the true τ
    assert page.first_setting(seeds) == (0.99, 10)  # the a slider starts at the runs' a, not 0.9
    assert page.first_setting([fake_run("baseline", "baseline", 0, 94.0)]) == (None, None)
    settings = page.run_settings(seeds + [fake_run("baseline", "baseline", 0, 94.0)])
    from trainers.presets import config_loss_minimiser

    assert [s["run"] for s in settings] == ["tfkd-reg s0", "tfkd-reg s1", "baseline s0"]
    expected = config_loss_minimiser(seeds[0].config)
    assert expected is not None and settings[0]["loss-minimising p(true)"] == pytest.approx(expected, abs=1e-4)
    assert (settings[0]["a"], settings[0]["K"], settings[0]["τ"]) == (0.99, 10, 20.0)
    assert settings[2]["loss-minimising p(true)"] is None  # plain cross-entropy: no distillation formula


def test_the_axes_ticks_do_not_collide():
    fig = page.virtual_teacher_figure(page.virtual_teacher_curves())
    assert fig.layout.xaxis.dtick == 1  # decades only on the log axis: no "5" of 0.05 beside the y axis's "0"
    assert fig.layout.yaxis.range[0] < 0  # the y axis's 0 sits above the x axis's labels
