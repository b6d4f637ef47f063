"""Downloads are built on the server: the client names a figure and a format, nothing else.

Posts are made to the real Flask server of the app (its test client), the way a browser or a
hostile client would: crafted button ids (the old ``fmt: "html/../../x.html"`` attack), hostile
control values, a client-made figure. None creates a file, none is answered 500, and a good one
returns the page's own figure rendered in memory.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest

from app.errors import AppError
from app.export import FORMATS, inline_images_only, render
from app.pages import PAGES
from app.pages.base import AppContext
from app.runs import RunIndex
from app.selection import Selection
from app.server import create_app

PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAcCBlCwAA"
         "AABJRU5ErkJggg==")


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A runs folder with one finished run (no gradient record) and one Tf-KD-reg run."""
    root = tmp_path / "runs"
    for name, method in (("a", "baseline"), ("b", "tfkd-reg")):
        folder = root / name
        folder.mkdir(parents=True)
        config = {"method": method, "model": "mlp-student", "seed": 0, "temperature": 20.0, "a": 0.99,
                  "num_classes": 10}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.5, "test_acc": 40.0}) + "\n")
        (folder / "results.json").write_text(json.dumps({"best": {"test_acc": 40.0}, "epochs": 1}))
    return root


class Client:
    """Posts callback requests to the app as dash-renderer does, shaped from ``_dash-dependencies``."""

    def __init__(self, runs: Path) -> None:
        self.client = create_app(runs).server.test_client()
        deps = self.client.get("/_dash-dependencies").get_json()
        self.download = next(d for d in deps if "download.data" in d["output"])

    def post(self, body: Any) -> Any:
        return self.client.post("/_dash-update-component", json=body)

    def click(self, button: Any, states: dict[str, Any] | None = None, clicks: Any = 1) -> Any:
        """Press ``button`` (any JSON as its id) with the controls at ``states`` (None elsewhere)."""
        key = json.dumps(button, sort_keys=True, separators=(",", ":")) if isinstance(button, dict) else str(button)
        states = states or {}
        return self.post({
            "output": self.download["output"],
            "outputs": [{"id": "download", "property": "data"}, {"id": "download-notes", "property": "children"}],
            "inputs": [[{"id": button, "property": "n_clicks", "value": clicks}]],
            "changedPropIds": [f"{key}.n_clicks"],
            "state": [{"id": s["id"], "property": s["property"], "value": states.get(s["id"])}
                      for s in self.download["state"]],
        })


def button(page: Any = "teacher", figure: Any = "teacher", fmt: Any = "csv") -> dict[str, Any]:
    return {"type": "export", "page": page, "figure": figure, "fmt": fmt}


def files_under(*folders: Path) -> set[Path]:
    return {p for folder in folders for p in folder.rglob("*")}


def test_a_download_is_the_pages_figure_rendered_on_the_server(runs):
    client = Client(runs)
    answer = client.click(button(fmt="csv"), {"vt-a": 0.8, "vt-k": 5, "run-select": ["b"]})
    assert answer.status_code == 200
    sent = answer.get_json()["response"]["download"]["data"]
    assert sent["filename"] == "teacher.csv" and sent["base64"]
    text = base64.b64decode(sent["content"]).decode()
    assert text.splitlines()[0] == "temperature,correct,incorrect,a,num_classes"
    assert text.splitlines()[1].endswith(",0.8,5")  # the control values read from the page, checked
    html = client.click(button(fmt="html"), {"run-select": ["b"]}).get_json()["response"]["download"]["data"]
    page = base64.b64decode(html["content"]).decode()
    assert html["filename"] == "teacher.html" and "plotly" in page and "tfkd-reg s0" in page


@pytest.mark.parametrize("crafted", [
    button(fmt="html/../../../../../../../../../../TARGET/x.html"),  # the old attack, on the new button
    {"type": "export", "name": "heatmap", "fmt": "html/../../../../../../../../../TARGET/x.html"},  # old id
    button(page="../../TARGET", figure="../x", fmt="png"),
    button(figure="heatmap"),  # a figure of another page
    button(fmt="exe"), button(fmt=["png"]), button(fmt=None), button(page={"a": 1}), button(fmt="x" * 5000),
    "not-a-dict", None,
])
def test_crafted_buttons_create_no_file_and_get_a_note(runs, tmp_path, monkeypatch, crafted):
    monkeypatch.chdir(tmp_path)
    crafted = json.loads(json.dumps(crafted).replace("TARGET", str(tmp_path).lstrip("/")))
    before = files_under(tmp_path)
    answer = Client(runs).click(crafted)
    assert answer.status_code in (200, 204), answer.get_data(as_text=True)[:300]
    if answer.status_code == 200:
        response = answer.get_json()["response"]
        assert "download" not in response
        assert "download refused" in json.dumps(response) or not isinstance(crafted, dict)
    assert files_under(tmp_path) == before  # the crafted paths lead here: nothing was written


@pytest.mark.parametrize(("target", "states"), [
    (button("gradients", "heatmap", "svg"),
     {"grad-stat": {"data": [], "layout": {"images": [{"source": "file:///etc/hostname"}]}}}),  # a figure as value
    (button("gradients", "series", "png"), {"grad-window": ["../x", 1], "series-smoothing": "abc"}),
    (button(fmt="svg"), {"vt-a": "file:///etc/passwd", "vt-k": "../../x"}),
    (button(fmt="pdf"), {"vt-a": 7, "vt-k": 2.5}),
    (button(fmt="html"), {"vt-log": ["log", "../x"]}),
    (button("training", "training", "png"), {"train-metric": "bogus"}),
    (button("attribution", "attribution", "png"), {"attr-image": "x"}),
])
def test_hostile_control_values_are_refused_with_a_note(runs, target, states):
    answer = Client(runs).click(target, states)
    assert answer.status_code == 200
    response = answer.get_json()["response"]
    assert "download" not in response and "download refused" in json.dumps(response)


@pytest.mark.parametrize(("selection", "shown"), [
    (["../../etc", "/etc", "b"], True), (["a" * 5000, "b"], False), ("a" * 5000, False), ({"x": 1}, False),
    ([None, 3], False),
])
def test_a_hostile_selection_leaves_out_what_is_not_a_run(runs, selection, shown):
    answer = Client(runs).click(button(fmt="html"), {"run-select": selection})
    assert answer.status_code == 200
    sent = answer.get_json()["response"]["download"]["data"]
    page = base64.b64decode(sent["content"]).decode()
    assert "../../etc" not in page and ("tfkd-reg s0" in page) == shown


def test_clicks_that_are_not_clicks_do_nothing(runs):
    client = Client(runs)
    for clicks in (0, None, "1", [1]):
        assert client.click(button(), clicks=clicks).status_code in (200, 204)


def test_a_request_for_an_unknown_callback_is_refused_not_a_server_error(runs):
    client = Client(runs)
    old = {"output": '{"name":"heatmap","type":"download"}.data',
           "outputs": {"id": {"name": "heatmap", "type": "download"}, "property": "data"},
           "inputs": [[{"id": {"type": "export", "name": "heatmap", "fmt": "html/../../x.html"},
                        "property": "n_clicks", "value": 1}]],
           "changedPropIds": ['{"fmt":"html/../../x.html","name":"heatmap","type":"export"}.n_clicks'],
           "state": [{"id": {"type": "graph", "name": "heatmap"}, "property": "figure",
                      "value": {"layout": {"images": [{"source": "file:///etc/hostname"}]}}}]}
    assert client.post(old).status_code == 400
    short = {"output": client.download["output"], "outputs": [], "inputs": [], "changedPropIds": [], "state": []}
    assert client.post(short).status_code == 400


def test_layout_images_are_kept_only_when_inline():
    fig = go.Figure(layout={"images": [{"source": "file:///etc/hostname"}, {"source": "/etc/x.png"},
                                       {"source": "http://example.com/x.png"}, {"source": PIXEL}]})
    kept = inline_images_only(fig)
    assert [im.source for im in kept.layout.images] == [PIXEL]
    html = render(go.Figure(layout={"images": [{"source": "file:///etc/hostname"}]}), [], "html").decode()
    assert "file:///etc/hostname" not in html
    with pytest.raises(AppError, match="unknown download format"):
        render(fig, [], "html/../x.html")
    assert render(fig, [{"a": 1, "b": None}], "csv") == b"a,b\n1,\n"


def test_no_server_built_figure_carries_a_layout_image(runs):
    index = RunIndex(runs)
    ctx = AppContext(index, Selection(index, [p.name for p in PAGES]))
    for page in PAGES:
        for spec in page.figures:
            figure, _ = spec.build(page.view(ctx, ["a", "b"], [None] * len(page.controls)))
            images = (figure.to_dict() if isinstance(figure, go.Figure) else figure)["layout"].get("images", [])
            assert all(str(im.get("source", "")).startswith("data:") for im in images), spec.name


def test_static_formats_render_in_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]), layout={"title": {"text": "in memory"}})
    svg = render(fig, [], "svg").decode()
    assert "<svg" in svg[:300] and "in memory" in svg
    assert render(fig, [], "png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert render(fig, [], "pdf")[:5] == b"%PDF-"
    assert list(tmp_path.iterdir()) == []
    assert set(FORMATS) == {"png", "svg", "pdf", "html", "csv"}
