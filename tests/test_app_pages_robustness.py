"""Robustness page: Figure 7 from `trainers.summarize`'s rows, labelled by what was measured, references
only in their data set's panel; ε curves, the attacks' breakdown, flags."""

from __future__ import annotations

import statistics

import pytest
from app_helpers import assert_titled, robust_runs
from test_summarize import autoattack, run, single

from app.pages import robustness as page

AA = "best/autoattack/eps=8/255/n=200"


def test_figure7_is_mean_and_std_over_seeds_and_says_what_was_measured():
    runs = [run("at", "at", 0, 90.0, entries={AA: autoattack(47.0, clean=84.0)}),
            run("at", "at", 1, 90.0, entries={AA: autoattack(46.0, clean=83.0)}),
            run("at-kd", "at-kd", 0, 90.0, entries={AA: autoattack(44.0, clean=80.0, attacks=["apgd-ce"])}),
            run("at-tfkd-reg", "at-tfkd-reg", 0, 82.0, pgd=51.0),
            run("baseline", "baseline", 0, 94.0, recipe="fig4")]
    panels = page.robustness_panels(page.run_results([]) + runs)
    assert [p.dataset for p in panels] == ["cifar10"]
    fig = page.robustness_figure(panels)
    names = [t.name for t in fig.data]
    assert "at (resnet18) · AutoAttack" in names
    assert "at-kd (resnet18) · APGD-CE" in names  # a subset is named by its attacks, never "AutoAttack"
    assert "at-tfkd-reg (resnet18) · PGD-20 (fallback: AutoAttack not run)" in names
    assert not any(n.startswith("baseline") for n in names)  # clean only: no point on a robust axis
    at = fig.data[names.index("at (resnet18) · AutoAttack")]
    assert (at.x[0], at.y[0]) == (pytest.approx(83.5), pytest.approx(46.5))
    assert list(at.error_y.array) == pytest.approx([statistics.stdev([47, 46])])
    assert any("poster" in n for n in names) and any("literature" in n for n in names)
    assert_titled(fig)
    rows = page.figure7_rows(panels)
    assert {r["kind"] for r in rows} >= {"ours", "poster"} and rows[0]["robust_label"] == "AutoAttack"


def test_references_only_beside_runs_on_their_data_set():
    fashion = run("at", "at", 0, 80.0, pgd=40.0, dataset="fashion-mnist")
    cifar = run("at", "at", 0, 84.0, entries={AA: autoattack(47.0, clean=84.0)})
    fig = page.robustness_figure(page.robustness_panels([fashion]))
    assert all(t.name.startswith("at ") for t in fig.data)  # no poster or literature point on Fashion-MNIST's axes
    assert "fashion-mnist · ε 8/255 (no published points on this data set)" in [a.text for a in fig.layout.annotations]
    both = page.robustness_figure(page.robustness_panels([fashion, cifar]))
    refs = [t for t in both.data if not t.name.startswith("at ")]
    assert refs and {t.xaxis for t in refs} == {"x"}  # cifar10 is the first panel: references there only
    assert {t.xaxis for t in both.data if t.name.startswith("at ")} == {"x", "x2"}


def test_with_no_adversarial_run_the_message_is_a_title_not_drawn_over_the_posters_labels():
    fig = page.robustness_figure([])
    texts = [a.text for a in fig.layout.annotations]
    assert len(texts) == 1 and texts[0].startswith(page.NO_RUNS)
    assert fig.layout.annotations[0].y >= 1.0  # above the plot area, where no point's label is
    assert any(t.mode == "markers+text" for t in fig.data)  # the poster's points, named, still drawn
    assert_titled(fig)


def test_clean_and_robust_come_from_the_same_images():
    entries = {AA: autoattack(45.0, clean=88.0, n=200), "best/clean/eps=0/n=1000": single("clean", 90.0, n=1000)}
    fig = page.robustness_figure(page.robustness_panels([run("at", "at", 0, 91.0, entries=entries)]))
    assert fig.data[0].x[0] == 88.0  # AutoAttack's own clean pass, not results.json's 91 or the 1000-image 90


def test_eps_curves_breakdown_and_flags():
    sweep = {"checkpoint": "best", "n": 200, "eps": [k / 255 for k in (0, 2, 4, 8, 16)],
             "eps_labels": ["0", "2/255", "4/255", "8/255", "16/255"], "accuracy": [84, 75, 64, 50, 20],
             "provenance": autoattack(0, 0)["provenance"] | {"attacks": ["pgd-20"], "eps": None}}
    runs = [run("at", "at", 0, 90.0, entries={AA: autoattack(47.0, clean=84.0)}, sweeps={"best/pgd-20/n=200": sweep}),
            run("at-kd", "at-kd", 0, 90.0, entries={AA: autoattack(44.0, clean=80.0, attacks=["apgd-ce"])})]
    curves = page.eps_curves(runs)
    assert len(curves) == 5 and curves[3]["eps_255"] == pytest.approx(8.0) and curves[3]["accuracy"] == 50
    breakdown = page.attack_breakdown(runs)
    assert [r["stage"] for r in breakdown[:5]] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert [r["stage"] for r in breakdown[5:]] == ["clean", "apgd-ce"]
    bars = page.breakdown_figure(breakdown)
    assert [t.name for t in bars.data] == ["at s0 · AutoAttack", "at-kd s0 · APGD-CE"]
    assert "AutoAttack" not in bars.layout.title.text  # the card holds subsets too
    flags = page.sanity_flags(robust_runs())
    assert flags == [{"run": "at-tfkd-reg s0", "id": "fig7/seed0/at-tfkd-reg", "flag": "robust_above_clean",
                      "message": "best: pgd at ε 8/255 gives 90.00% above clean 80.00%"}]
    for fig, traces in ((page.eps_figure(curves), 1), (bars, 2), (page.eps_figure([]), 0)):
        assert len(fig.data) == traces
        assert_titled(fig)


def test_an_empty_breakdown_is_titled_and_says_why():
    fig = page.breakdown_figure([])
    assert len(fig.data) == 0 and fig.layout.annotations
    assert_titled(fig)
