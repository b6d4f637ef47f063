"""The real dashboard in headless Chromium over runs made by tiny real trainings.

Every page renders; selecting runs, changing the statistic or level redraws; every download format
produces a real file, built on the server; a corrupt run shows its badge; a run id outside the runs
folder is refused. Nothing is written into the repository: downloads go to dash_duo's temporary
folder, and the README's screenshots are made by their own command (`python -m app.screenshots`).
"""

import json
from pathlib import Path

import pytest

from app.server import create_app
from trainers.attribution import attribute_run
from trainers.loop import train
from trainers.recipes import plan
from trainers.robustness import evaluate_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]
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


def open_page(dash_duo, page, runs=(BASELINE, REG)):
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?page={page}&runs={','.join(runs)}")


def test_runs_page_lists_runs_and_badges_the_corrupt_one(dash_duo, runs):
    dash_duo.start_server(create_app(runs))
    dash_duo.wait_for_contains_text("#runs-table", "tfkd-reg", timeout=20)
    dash_duo.wait_for_contains_text("#runs-notes", "corrupt", timeout=10)
    assert "broken" in dash_duo.find_element("#runs-notes").text


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
    dash_duo.find_element("#grad-normalize input[value='global']").click()  # Figure 6 over the global norm
    dash_duo.wait_for_contains_text(heatmap, "normalised", timeout=30)
    dash_duo.wait_for_contains_text(series, "global", timeout=30)


def test_every_download_format_gives_a_real_file(dash_duo, runs):
    dash_duo.start_server(create_app(runs))
    open_page(dash_duo, "gradients")
    dash_duo.wait_for_contains_text("#card-heatmap .js-plotly-plot", "tfkd-reg", timeout=30)
    download = Path(dash_duo.download_path)
    for fmt in ("csv", "html", "svg", "png", "pdf"):
        dash_duo.find_element(f"#card-heatmap button[data-fmt='{fmt}']").click()
        dash_duo._wait_for(lambda d, fmt=fmt: (download / f"heatmap.{fmt}").is_file()
                           and (download / f"heatmap.{fmt}").stat().st_size > 0, timeout=60,
                           msg=f"no heatmap.{fmt} downloaded")
    assert (download / "heatmap.csv").read_text().startswith("run,")
    html = (download / "heatmap.html").read_text()
    assert "plotly" in html.lower() and "tfkd-reg" in html
    svg = (download / "heatmap.svg").read_text()
    assert svg.lstrip().startswith("<svg") or "<svg" in svg[:500]
    assert (download / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (download / "heatmap.pdf").read_bytes()[:5] == b"%PDF-"
    dash_duo.find_element("#card-series button[data-fmt='csv']").click()
    dash_duo._wait_for(lambda d: (download / "series.csv").is_file(), timeout=60, msg="no series.csv downloaded")
    assert "smoothed" in (download / "series.csv").read_text().splitlines()[0]


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


def test_tables_page_shows_the_poster_numbers(dash_duo, runs):
    dash_duo.start_server(create_app(runs))
    open_page(dash_duo, "tables")
    dash_duo.wait_for_contains_text("#tables", "95.39", timeout=30)  # the poster's Tf-KD-reg accuracy


def test_a_run_outside_the_runs_folder_is_refused(dash_duo, runs):
    dash_duo.start_server(create_app(runs))
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?page=gradients&runs=../../etc,{BASELINE}")
    dash_duo.wait_for_contains_text("#selection-notes", "refused", timeout=20)
    # the good run stays selected and the refused one leaves the URL
    dash_duo.wait_for_contains_text("#run-select", BASELINE, timeout=20)  # the good run stays selected
    assert "etc" not in dash_duo.find_element("#run-select").text  # and the refused one is not


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


def test_the_screenshot_command_writes_one_png_per_page_outside_the_tests(runs, tmp_path):
    from app.screenshots import main

    out = tmp_path / "img"
    assert main(["--runs", str(runs), "--out", str(out), "--pages", "runs,gradients", "--size", "1000x800"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["gradients.png", "runs.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in out.iterdir())
    assert main(["--runs", str(tmp_path / "none"), "--out", str(out)]) == 2
