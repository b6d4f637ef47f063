"""Attribution maps of real tiny runs: shapes, references by plain autograd, files written, skips and errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from trainers.attribution import (
    ATTRIBUTIONS,
    DEFAULT_METHODS,
    AttributionNotApplicable,
    AttributionSettings,
    attribute,
    attribute_run,
    display_map,
    fixed_images,
    fixed_indices,
    gradcam_layers,
)
from trainers.cli import main
from trainers.config import TrainConfig
from trainers.errors import TrainersError
from trainers.loop import train
from trainers.provenance import file_sha256, stale_reason
from trainers.restore import data_of, restore

TINY = {"method": "baseline", "epochs": 1, "train_subset": 128, "batch_size": 32, "progress": False, "record": False}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two ResNet-18s (width 4) on synthetic data that differ only in seed, and an MLP on synthetic-mnist."""
    # Tiny models: thread hand-offs cost more than they save, and on a shared machine far more.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("attribution")
    specs = {"a": {"model": "resnet18", "dataset": "synthetic", "width": 4, "seed": 0},
             "b": {"model": "resnet18", "dataset": "synthetic", "width": 4, "seed": 1},
             "mlp": {"model": "mlp-student", "dataset": "synthetic-mnist"}}
    for name, spec in specs.items():
        train(TrainConfig(**TINY, **spec, out=str(root / name)))
    yield {name: root / name for name in specs}
    torch.set_num_threads(threads)


def test_every_run_of_a_data_set_is_explained_on_the_same_images(runs):
    splits = [data_of(restore(runs[name]).config).test for name in ("a", "b")]
    first, second = (fixed_indices(split, 8) for split in splits)
    assert torch.equal(first, second)
    assert torch.equal(fixed_indices(splits[0], 12)[:8], first)  # more images keep the earlier ones
    assert not torch.equal(fixed_indices(splits[0], 8, seed=1), first)
    x, y = fixed_images(splits[0], 8)
    assert x.dtype == torch.float32 and x.shape == (8, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    assert y.tolist() == list(range(8))  # one image per class, classes in order
    torch.testing.assert_close(x, splits[0].images[first].float() / 255)
    for bad in (0, len(splits[0]) + 1, True, 2.0):
        with pytest.raises(TrainersError, match=f"from 1 to {len(splits[0])}"):
            fixed_indices(splits[0], bad)


@pytest.fixture(scope="module")
def explained(runs):
    """Both ResNets, their fixed images and every method's maps, computed once."""
    models = {name: restore(runs[name]).model for name in ("a", "b")}
    x, y = fixed_images(data_of(restore(runs["a"]).config).test, 4)
    return models, x, y, {name: attribute(model, x, y, DEFAULT_METHODS) for name, model in models.items()}


def test_maps_have_the_documented_shapes_are_finite_and_differ_between_models(explained):
    models, x, y, maps = explained
    for name in ("a", "b"):
        assert list(maps[name]) == list(DEFAULT_METHODS)
        assert maps[name]["saliency"].shape == maps[name]["ig"].shape == tuple(x.shape)
        assert maps[name]["gradcam"].shape == (4, 4, 32, 32)  # one map per stage, at the input's size
        for array in maps[name].values():
            assert array.dtype == np.float32 and np.isfinite(array).all() and np.abs(array).max() > 0
        assert (maps[name]["saliency"] >= 0).all() and (maps[name]["gradcam"] >= 0).all()
        assert all(p.grad is None for p in models[name].parameters())  # input gradients only
    for method in DEFAULT_METHODS:
        assert not np.allclose(maps["a"][method], maps["b"][method]), method


def test_saliency_is_the_absolute_input_gradient_of_the_true_logit(explained):
    models, x, y, maps = explained
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(models["a"](leaf).gather(1, y[:, None]).sum(), leaf)
    np.testing.assert_allclose(maps["a"]["saliency"], grad.abs().numpy(), rtol=1e-5, atol=1e-7)


def test_integrated_gradients_add_up_to_the_logit_gap_from_black(explained):
    models, x, y, _ = explained
    ig = attribute(models["a"], x, y, ["ig"], AttributionSettings(n_steps=64))["ig"]
    with torch.no_grad():
        gap = (models["a"](x) - models["a"](torch.zeros_like(x))).gather(1, y[:, None]).squeeze(1).numpy()
    np.testing.assert_allclose(ig.sum(axis=(1, 2, 3)), gap, atol=0.1 * np.abs(gap).max())


def logits_and_output_of(model, block, x):
    """The model's logits and ``block``'s output A on ``x``, both in one graph."""
    seen = []
    handle = block.register_forward_hook(lambda module, inputs, output: seen.append(output))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, seen[0]


def test_gradcam_matches_a_hook_reference_on_each_stages_last_block(explained):
    models, x, y, maps = explained
    model = models["a"]
    layers = gradcam_layers(model)
    assert [name for name, _ in layers] == ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    for stage, (_, block) in enumerate(layers):
        logits, features = logits_and_output_of(model, block, x)
        (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), features)
        cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * features).sum(1, keepdim=True))
        expected = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)
        np.testing.assert_allclose(maps["a"]["gradcam"][:, stage], expected[:, 0].detach().numpy(),
                                   rtol=1e-4, atol=1e-6)


def test_attribute_run_writes_the_maps_meta_and_grid(runs, explained):
    models, x, y, maps = explained
    folder = attribute_run(runs["a"], images=4)
    assert folder == runs["a"] / "attribution"
    with np.load(folder / "attributions.npz") as saved:
        assert set(saved.files) == {"images", "labels", "predictions", "indices", *DEFAULT_METHODS}
        np.testing.assert_array_equal(saved["images"], x.numpy())
        np.testing.assert_array_equal(saved["labels"], y.numpy())
        np.testing.assert_array_equal(saved["predictions"], models["a"](x).argmax(1).numpy())
        for method in DEFAULT_METHODS:
            np.testing.assert_allclose(saved[method], maps["a"][method], rtol=1e-5, atol=1e-7)
    meta = json.loads((folder / "meta.json").read_text())
    split = data_of(restore(runs["a"]).config).test
    assert meta["methods"] == list(DEFAULT_METHODS) and meta["skipped"] == {}
    assert meta["images"]["indices"] == fixed_indices(split, 4).tolist()
    assert meta["gradcam_layers"] == ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert meta["checkpoint"].endswith("last.pt") and meta["settings"] == {"n_steps": 32, "internal_batch_size": 128}
    assert meta["versions"]["torch"] == torch.__version__ and meta["seconds"]["total"] > 0
    prov = meta["provenance"]  # which checkpoint bytes and images the maps explain
    assert prov["checkpoint_sha256"] == file_sha256(runs["a"] / "checkpoints" / "last.pt")
    assert (prov["checkpoint_file"], prov["dataset"], prov["split"], prov["n"], prov["indices"], prov["attacks"],
            prov["precision"]) == ("checkpoints/last.pt", meta["dataset"], "test", 4, meta["images"]["indices"],
                                   list(DEFAULT_METHODS), "float32")
    assert stale_reason(runs["a"], meta) is None
    with Image.open(folder / "grid.png") as grid:
        assert grid.format == "PNG" and grid.height > 4 * 32 and grid.width > 6 * 32  # input, 2 maps, 4 stages


def test_an_mlp_run_skips_gradcam_and_says_why(runs):
    folder = attribute_run(runs["mlp"], images=3)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["methods"] == ["saliency", "ig"] and list(meta["skipped"]) == ["gradcam"]
    assert "MLP has none" in meta["skipped"]["gradcam"]
    with np.load(folder / "attributions.npz") as saved:
        assert "gradcam" not in saved.files and saved["saliency"].shape == (3, 1, 28, 28)
    model = restore(runs["mlp"]).model
    x, y = fixed_images(data_of(restore(runs["mlp"]).config).test, 2)
    with pytest.raises(AttributionNotApplicable, match="gradcam needs residual stages"):
        attribute(model, x, y, ["gradcam"])  # asked for directly, it is an error


def test_unknown_methods_and_bad_image_counts_are_one_line_errors(runs):
    with pytest.raises(TrainersError, match="unknown attribution method 'lime'; expected one of: saliency, ig, "
                                            "gradcam"):
        attribute_run(runs["b"], methods=("saliency", "lime"))
    with pytest.raises(TrainersError, match="no attribution methods"):
        attribute_run(runs["b"], methods=())
    with pytest.raises(TrainersError, match="positive integer, got 0"):
        attribute_run(runs["b"], images=0)
    with pytest.raises(TrainersError, match="from 1 to 500"):
        attribute_run(runs["b"], images=501)
    with pytest.raises(TrainersError, match="n_steps must be a positive integer"):
        AttributionSettings(n_steps=0)
    assert not (runs["b"] / "attribution").exists()  # nothing written for a bad request


def test_display_scales_each_map_alone_and_leaves_blank_maps_black():
    assert (display_map(np.zeros((3, 8, 8), np.float32)) == 0).all()
    values = np.linspace(-1, 1, 3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8)
    shown = display_map(values)
    assert shown.shape == (8, 8) and shown.min() >= 0 and shown.max() == 1
    np.testing.assert_allclose(display_map(1000 * values), shown, rtol=1e-6)


def test_cli_attribute_writes_the_folder_and_rejects_unknown_methods(runs, capsys):
    assert main(["attribute", str(runs["mlp"]), "--images", "2", "--methods", "saliency"]) == 0
    assert "attributions written to" in capsys.readouterr().out
    assert main(["attribute", str(runs["mlp"]), "--methods", "shap"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown attribution method 'shap'" in err and "\n" not in err


def test_importing_the_module_leaves_captum_and_matplotlib_unloaded():
    code = "import sys, trainers.attribution; print('captum' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert list(ATTRIBUTIONS) == ["saliency", "ig", "gradcam"]
