"""Attribution page: maps scaled per tile, one entry per Grad-CAM layer, the grid figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from app_helpers import Run, assert_titled

from app.errors import AppError
from app.pages import attribution as page

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
    resnet = page.attribution_panels(Run("r", "resnet", tmp_path / "resnet"))
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
    assert page.attribution_panels(Run("none", "none", tmp_path / "nothing")) is None
    mlp = page.attribution_panels(Run("m", "mlp", tmp_path / "mlp"))
    assert len(page.attribution_csv_rows({"resnet": resnet, "mlp": mlp, "none": None})) == 4

    fig = page.attribution_figure({"resnet": resnet, "mlp": mlp, "none": None}, image_index=1)
    assert len(fig.data) == (1 + 3) + (1 + 1)  # inputs and the maps each run has; the MLP has no Grad-CAM
    assert "#4" in fig.layout.title.text
    assert_titled(fig)
    with pytest.raises(AppError, match="image 2 does not exist"):
        page.attribution_figure({"resnet": resnet}, image_index=2)
    (tmp_path / "broken" / "attribution").mkdir(parents=True)
    (tmp_path / "broken" / "attribution" / "attributions.npz").write_bytes(b"not an npz")
    with pytest.raises(AppError, match="cannot be read"):
        page.attribution_panels(Run("b", "broken", tmp_path / "broken"))


def test_no_attributions_give_a_titled_figure_that_says_why():
    fig = page.attribution_figure({"x": None})
    assert len(fig.data) == 0 and fig.layout.annotations
    assert_titled(fig)


def test_rows_name_classes_every_run_fits_and_the_slider_ends_at_the_last_image(tmp_path):
    rng = np.random.default_rng(5)
    saliency = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    runs = []
    for i in range(5):
        write_attribution(tmp_path / f"run{i}", {"saliency": saliency}, [])
        runs.append(Run(f"r{i}", f"run {i}", tmp_path / f"run{i}", {"dataset": "cifar10"}))
    panels = {r.label: page.attribution_panels(r) for r in runs}
    fig = page.attribution_figure(panels, image_index=1)
    assert "run 0<br>dog → automobile" in fig.layout.yaxis.title.text  # names, not "y=5 pred=1"
    rows = page.attribution_csv_rows(panels)
    assert (rows[0]["label_name"], rows[1]["prediction_name"]) == ("cat", "automobile")
    assert fig.layout.height == page.figure_height(5) >= 5 * page.ROW_HEIGHT  # 5 rows, not 2.5 of them
    assert fig.layout.width is None  # the card's width: the colour bar is not cut off
    assert page.image_count(panels) == 2  # the slider's max is 1, not 15
    assert page.image_count({"none": None}) == 0
    synthetic = page.attribution_csv_rows({"s": page.attribution_panels(Run("s", "s", tmp_path / "run0"))})
    assert synthetic[0]["label_name"] == "class 3"  # a data set without class names
