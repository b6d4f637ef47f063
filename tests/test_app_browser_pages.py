"""The flaws issue 13 found on the pages' screenshots, each checked in headless Chromium.

Five runs: two copies of one tiny real training run (gradient record included) and three finished
runs written as their files store them (two Tf-KD-reg seeds at the same τ and a = 0.99, one
adversarial run); every run has attribution maps of 6 CIFAR-10-labelled images. Everything lives in
pytest's temporary folders; nothing is written into the repository.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.server import create_app
from trainers.config import TrainConfig
from trainers.loop import train

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TRAINED = ("fig4/seed0/baseline", "fig4/seed1/baseline")
WRITTEN = ("fig4/seed0/tfkd-reg", "fig4/seed1/tfkd-reg", "fig7/seed0/at")
ALL = TRAINED + WRITTEN
IMAGES = 6


def write_run(folder: Path, method: str, seed: int, **config: Any) -> None:
    """A finished run's config, metrics and results (no checkpoint: its numbers are not current)."""
    folder.mkdir(parents=True)
    cfg = {"method": method, "model": "resnet18", "dataset": "cifar10", "seed": seed, "epochs": 3,
           "num_classes": 10, **config}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "step": 10 * e, "train_loss": 2.0 / e, "test_acc": 30.0 + e}) + "\n"
        for e in (1, 2, 3)))
    best = {"test_acc": 33.0}
    (folder / "results.json").write_text(json.dumps({"method": method, "epochs": 3, "best_epoch": 3,
                                                     "best": best, "last": best}))


def write_attribution(folder: Path) -> None:
    """Saliency maps of 6 images, as `trainers.attribution` stores them."""
    rng = np.random.default_rng(0)
    (folder / "attribution").mkdir(parents=True, exist_ok=True)
    np.savez(folder / "attribution" / "attributions.npz", images=rng.random((IMAGES, 3, 8, 8), dtype=np.float32),
             labels=np.arange(IMAGES), predictions=np.arange(IMAGES)[::-1].copy(), indices=np.arange(IMAGES),
             saliency=rng.normal(size=(IMAGES, 3, 8, 8)).astype(np.float32))
    (folder / "attribution" / "meta.json").write_text(json.dumps({"methods": ["saliency"], "skipped": {}}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pages")
    first = root / TRAINED[0]
    train(TrainConfig(method="baseline", model="resnet18", dataset="synthetic", width=4, epochs=1, train_subset=128,
                      batch_size=32, out=str(first), progress=False))
    shutil.copytree(first, root / TRAINED[1])
    config = root / TRAINED[1] / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "seed": 1}))  # its label: baseline s1
    write_run(root / WRITTEN[0], "tfkd-reg", 0, a=0.99, temperature=20.0)
    write_run(root / WRITTEN[1], "tfkd-reg", 1, a=0.99, temperature=20.0)
    write_run(root / WRITTEN[2], "at", 0)
    for run_id in ALL:
        write_attribution(root / run_id)
    return root


def open_page(dash_duo, runs: Path, page: str, selected=ALL) -> None:
    dash_duo.driver.set_window_size(1400, 1000)
    dash_duo.start_server(create_app(runs))
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?page={page}&runs={','.join(selected)}")


def rect(dash_duo, element) -> dict[str, float]:
    return dash_duo.driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                          "return {left: r.left, right: r.right, top: r.top, bottom: r.bottom};",
                                          element)


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def ticked(dash_duo) -> list[str]:
    """The ids of the runs table's ticked rows."""
    return dash_duo.driver.execute_script(
        "return [...document.querySelectorAll('#runs-table tr')].filter(r => {"
        "  const box = r.querySelector('input[type=checkbox]'); return box && box.checked;"
        "}).map(r => r.querySelector('td[data-dash-column=id]').innerText);")


def test_ticks_follow_the_url_and_unticking_removes_the_run(dash_duo, runs):
    open_page(dash_duo, runs, "runs")
    dash_duo.wait_for_contains_text("#runs-table", "tfkd-reg", timeout=30)
    dash_duo._wait_for(lambda d: sorted(ticked(dash_duo)) == sorted(ALL), timeout=30,
                       msg=f"ticked rows {ticked(dash_duo)} do not follow the 5 selected in the URL")
    row = next(r for r in dash_duo.find_elements("#runs-table tr") if WRITTEN[2] in r.text)
    row.find_element("css selector", "input[type=checkbox]").click()
    dash_duo._wait_for(lambda d: WRITTEN[2] not in d.current_url.replace("%2F", "/"), timeout=30,
                       msg="unticking a row did not remove its run from the selection")
    assert sorted(ticked(dash_duo)) == sorted(r for r in ALL if r != WRITTEN[2])


def test_gradient_heatmaps_fill_the_card_and_series_are_one_panel_per_run(dash_duo, runs):
    open_page(dash_duo, runs, "gradients", selected=TRAINED)
    dash_duo.wait_for_contains_text("#card-heatmap .js-plotly-plot", "baseline s1", timeout=60)
    card, plot = dash_duo.find_element("#card-heatmap"), dash_duo.find_element("#card-heatmap .main-svg")
    assert rect(dash_duo, plot)["right"] - rect(dash_duo, plot)["left"] > 0.9 * (
        rect(dash_duo, card)["right"] - rect(dash_duo, card)["left"] - 30)  # not half the card
    dash_duo.wait_for_contains_text("#card-series .js-plotly-plot", "baseline s1", timeout=60)
    titles = [t.text for t in dash_duo.find_elements("#card-series .annotation-text")]
    assert titles == ["baseline s0", "baseline s1"]  # a panel each
    legend = [t.text for t in dash_duo.find_elements("#card-series .legendtext")]
    assert len(legend) == len(set(legend))  # each group once
    assert dash_duo.find_element("#grad-scale label").text == "log"  # option labels as written, not capitals


def test_teacher_sliders_start_at_the_runs_a_and_their_marks_do_not_collide(dash_duo, runs):
    open_page(dash_duo, runs, "teacher", selected=WRITTEN[:2])
    dash_duo.wait_for_contains_text("#card-teacher .js-plotly-plot", "tfkd-reg s1", timeout=30)
    dash_duo.wait_for_contains_text("#vt-runs", "loss-minimising", timeout=30)
    dash_duo._wait_for(lambda d: "a = 0.99" in dash_duo.find_element("#card-teacher .gtitle").text, timeout=30,
                       msg="the curve is not drawn at the runs' a = 0.99")
    for slider in ("vt-a", "vt-k"):
        boxes = [rect(dash_duo, m) for m in dash_duo.find_elements(f"#{slider} .dash-slider-mark")]
        assert len(boxes) >= 3, slider
        assert not any(overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), slider  # no "210"
        frame = rect(dash_duo, dash_duo.find_element(".controls"))
        assert all(frame["left"] <= b["left"] and b["right"] <= frame["right"] for b in boxes), slider  # 0.5 whole
    legend = [t.text for t in dash_duo.find_elements("#card-teacher .legendtext")]
    assert "tfkd-reg s0" in legend and "tfkd-reg s1" in legend  # two runs at one τ: two markers
    xticks = dash_duo.find_elements("#card-teacher .xtick text")
    yticks = dash_duo.find_elements("#card-teacher .ytick text")
    assert not any(overlap(rect(dash_duo, x), rect(dash_duo, y)) for x in xticks for y in yticks)


def test_robustness_message_does_not_cover_the_posters_labels(dash_duo, runs):
    open_page(dash_duo, runs, "robustness", selected=TRAINED)
    dash_duo.wait_for_contains_text("#card-robust .js-plotly-plot", "No finished adversarial runs yet", timeout=30)
    message = next(a for a in dash_duo.find_elements("#card-robust .annotation-text")
                   if "No finished" in a.text)
    labels = dash_duo.find_elements("#card-robust .textpoint text")
    assert labels  # the poster's points, named
    assert not any(overlap(rect(dash_duo, message), rect(dash_duo, t)) for t in labels)


def test_training_ticks_are_whole_epochs(dash_duo, runs):
    open_page(dash_duo, runs, "training", selected=WRITTEN)
    dash_duo.wait_for_contains_text("#card-training .js-plotly-plot", "tfkd-reg s0", timeout=30)
    ticks = [t.text for t in dash_duo.find_elements("#card-training .xtick text")]
    assert ticks and all(t.isdigit() for t in ticks), ticks


def test_attribution_fits_five_runs_names_classes_and_stops_at_the_last_image(dash_duo, runs):
    open_page(dash_duo, runs, "attribution")
    dash_duo.wait_for_contains_text("#card-attribution .js-plotly-plot", "at s0", timeout=60)
    svg = rect(dash_duo, dash_duo.find_element("#card-attribution .main-svg"))
    card = rect(dash_duo, dash_duo.find_element("#card-attribution"))
    assert svg["bottom"] <= card["bottom"] + 1 and svg["right"] <= card["right"] + 1  # every row and the colour bar
    titles = " ".join(dash_duo.driver.execute_script(  # each row's y title: ytitle, y5title, ...
        "return [...document.querySelectorAll('#card-attribution text')]"
        ".filter(t => /^y\\d*title$/.test(t.getAttribute('class'))).map(t => t.textContent);"))
    assert titles.count("at s0") == 1 and "airplane" in titles  # class names, not indices
    dash_duo._wait_for(lambda d: [m.text for m in dash_duo.find_elements("#attr-image .dash-slider-mark")][-1:]
                       == [str(IMAGES - 1)], timeout=30, msg="the image slider does not end at the last image")


def test_ticks_redraw_a_live_page_only_when_a_selected_run_changes(dash_duo, runs, tmp_path):
    # every tick once redrew every figure of the page, finished runs included (~0.3 s of drawing each time)
    root = tmp_path / "runs"
    shutil.copytree(runs / WRITTEN[0], root / WRITTEN[0])
    dash_duo.driver.set_window_size(1400, 1000)
    dash_duo.start_server(create_app(root, refresh_seconds=0.3))
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?page=training&runs={WRITTEN[0]}")
    dash_duo.wait_for_contains_text("#graph-training .js-plotly-plot", "train", timeout=60)
    dash_duo.driver.execute_script(
        "window.__draws = 0; window.__requests = 0; const send = window.fetch;"
        "window.fetch = function (...a) { window.__requests += 1; return send.apply(this, a); };"
        "document.querySelector('#graph-training .js-plotly-plot')"
        ".on('plotly_afterplot', () => { window.__draws += 1; });")
    settled, last = time.monotonic() + 30, -1  # the page's first draws (selection from the URL, then its version)
    while time.monotonic() < settled:
        draws = dash_duo.driver.execute_script("return window.__draws")
        if draws == last:
            break
        last = draws
        time.sleep(2.0)
    dash_duo.driver.execute_script("window.__draws = 0; window.__requests = 0;")
    time.sleep(3.0)  # ten ticks with nothing changed: the server is asked, nothing is redrawn
    assert dash_duo.driver.execute_script("return window.__requests") >= 5
    assert dash_duo.driver.execute_script("return window.__draws") == 0
    with open(root / WRITTEN[0] / "metrics.jsonl", "a") as metrics:
        metrics.write(json.dumps({"epoch": 4, "step": 40, "train_loss": 0.4, "test_acc": 35.0}) + "\n")
    dash_duo._wait_for(lambda d: d.execute_script("return window.__draws") >= 1, timeout=15,
                       msg="a selected run's new metrics were not drawn")
