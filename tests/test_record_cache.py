"""Reading records by statistic: the cache beside a record, window means and bins from block summaries,
and the normalised view (Figure 6 invariant to a loss weight). Checked against plain numpy on the
decoded frames."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyResNet, make_batch
from torch.nn import functional as F

import gradscope
from gradscope import GradscopeError
from gradscope.cache import BLOCK, CACHE_FOLDER
from gradscope.figures import heatmap, heatmap_grids
from gradscope.stats import STATS, aggregate
from gradscope.store import FRAMES_FILE, decode_frames

STEPS = 3 * BLOCK + 7  # whole blocks and a partial one


def write_record(path: Path, steps: int = STEPS, loss_scale: float = 1.0, seed: int = 0) -> Path:
    """``steps`` backward passes of a tiny ResNet on fixed batches, recorded without stepping."""
    torch.manual_seed(seed)
    model = TinyResNet()
    with gradscope.record(model, path, flush_every=16) as recorder:
        for i in range(steps):
            model.zero_grad()
            x, y = make_batch(4, seed=i)
            (loss_scale * F.cross_entropy(model(x), y)).backward()
    assert recorder.closed
    return path


@pytest.fixture(scope="module")
def record_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_record(tmp_path_factory.mktemp("cache") / "rec")


def reference(path: Path, level: str, stat: str) -> np.ndarray:
    """The statistic at ``level`` from every decoded frame, aggregated by `gradscope.stats.aggregate`."""
    record = gradscope.load(path)
    chunks = decode_frames((path / FRAMES_FILE).read_bytes()).chunks
    values = {s: np.concatenate([c.values[i] for c in chunks]) for i, s in enumerate(STATS)}
    if level == "param":
        return values[stat].astype(np.float64)
    names = record.names(level)
    group_of = np.array([names.index(p[level]) for p in record.meta["params"]])
    return aggregate(values, stat, group_of, record.numel, len(names))


@pytest.mark.parametrize("level", ["param", "layer", "block", "stage"])
def test_matrix_window_mean_and_bins_match_numpy_cold_and_cached(record_path: Path, level: str) -> None:
    expected = reference(record_path, level, "mean_abs")
    for _ in range(2):  # computed (and cached), then a new reader maps the cache
        record = gradscope.load(record_path)
        values = record.matrix(level, "mean_abs").values
        np.testing.assert_allclose(values, expected, rtol=1e-12)
        for window in [(0.0, 1.0), (0.1, 0.9), (0.0, 0.02), (0.5, 0.51), (0.77, 1.0)]:
            n = len(expected)
            lo = int(np.floor(window[0] * n))
            rows = expected[lo:max(int(np.ceil(window[1] * n)), lo + 1)]
            means = record.window_mean(level, "mean_abs", window)
            np.testing.assert_allclose(list(means.values()), np.nanmean(rows, axis=0), rtol=1e-12)
        for max_points, size in [(1000, 1), (30, 4), (4, BLOCK), (2, 2 * BLOCK)]:  # exact, from values, from blocks
            binned = record.binned(level, "mean_abs", max_points)
            assert binned.bin_size == size and len(binned.steps) <= max_points
            for b in range(len(binned.steps)):
                part = expected[b * size:(b + 1) * size]
                np.testing.assert_allclose(binned.mean[b], part.mean(axis=0), rtol=1e-12)
                np.testing.assert_array_equal(binned.low[b], part.min(axis=0))
                np.testing.assert_array_equal(binned.high[b], part.max(axis=0))
                assert binned.steps[b] == record.steps[b * size:(b + 1) * size].mean()
    assert any(f.name.startswith(f"{level}.mean_abs.none-") for f in (record_path / CACHE_FOLDER).iterdir())


def test_binned_picks_groups_and_names_an_unknown_one(record_path: Path) -> None:
    record = gradscope.load(record_path)
    binned = record.binned("stage", "l2", 10, names=["head", "stem"])
    full = record.binned("stage", "l2", 10)
    picked = [full.names.index("head"), full.names.index("stem")]
    np.testing.assert_allclose(binned.mean, full.mean[:, picked], rtol=1e-12)
    with pytest.raises(GradscopeError, match="no stage 'layer9'.*stem"):
        record.binned("stage", "l2", 10, names=["layer9"])
    with pytest.raises(GradscopeError, match="max_points must be a positive integer"):
        record.binned("stage", "l2", 0)


def test_cache_is_replaced_when_frames_are_appended(tmp_path: Path) -> None:
    path = write_record(tmp_path / "rec", steps=40)
    before = gradscope.load(path).matrix("stage", "l2").values.copy()
    cached = {f.name for f in (path / CACHE_FOLDER).iterdir()}
    torch.manual_seed(0)
    model = TinyResNet()
    with gradscope.record(model, path, append=True) as recorder:
        for i in range(5):
            model.zero_grad()
            x, y = make_batch(4, seed=100 + i)
            F.cross_entropy(model(x), y).backward()
    assert recorder.closed
    after = gradscope.load(path).matrix("stage", "l2")
    assert len(after.steps) == 45
    np.testing.assert_array_equal(after.values[:40], before)
    np.testing.assert_allclose(after.values, reference(path, "stage", "l2"), rtol=1e-12)
    now = {f.name for f in (path / CACHE_FOLDER).iterdir()}
    assert not cached & now, "entries of the old key must be gone"


def test_live_record_extends_its_views_and_caches_nothing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, path = TinyResNet(), tmp_path / "rec"
    recorder = gradscope.record(model, path, flush_every=4)
    for i in range(8):
        model.zero_grad()
        F.cross_entropy(model(make_batch(4, seed=i)[0]), make_batch(4, seed=i)[1]).backward()
    recorder.flush()
    live = gradscope.load(path)
    first = live.window_mean("layer", "l2")
    for i in range(8, 12):
        model.zero_grad()
        F.cross_entropy(model(make_batch(4, seed=i)[0]), make_batch(4, seed=i)[1]).backward()
    recorder.flush()
    assert live.refresh() == 4 and len(live.matrix("layer", "l2").values) == 12
    assert live.window_mean("layer", "l2") != first
    assert not (path / CACHE_FOLDER).exists()  # open and just written: not settled
    recorder.close()
    np.testing.assert_allclose(live.matrix("layer", "l2").values, reference(path, "layer", "l2"), rtol=1e-12)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_record_is_read_without_a_cache(tmp_path: Path) -> None:
    path = write_record(tmp_path / "rec", steps=20)
    os.chmod(path, stat.S_IRUSR | stat.S_IXUSR)
    try:
        record = gradscope.load(path)
        np.testing.assert_allclose(record.matrix("block", "max_abs").values, reference(path, "block", "max_abs"))
        assert not (path / CACHE_FOLDER).exists()
    finally:
        os.chmod(path, stat.S_IRWXU)


def test_unwritable_cache_folder_is_no_error(tmp_path: Path) -> None:
    path = write_record(tmp_path / "rec", steps=20)
    (path / CACHE_FOLDER).write_text("a file where the cache folder would go")
    record = gradscope.load(path)
    np.testing.assert_allclose(record.matrix("layer", "l2").values, reference(path, "layer", "l2"))
    assert record.window_mean("layer", "l2") and (path / CACHE_FOLDER).is_file()


def test_corrupt_cache_entries_are_recomputed(record_path: Path, tmp_path: Path) -> None:
    gradscope.load(record_path).matrix("stage", "mean_abs")  # make sure the entries exist
    for entry in (record_path / CACHE_FOLDER).iterdir():
        if entry.name.startswith("stage.mean_abs.none"):
            entry.write_bytes(b"not an array")
    record = gradscope.load(record_path)
    np.testing.assert_allclose(record.matrix("stage", "mean_abs").values, reference(record_path, "stage", "mean_abs"))


# -- the normalised view ----------------------------------------------------------------------------------

def test_normalised_heatmap_is_invariant_to_scaling_the_loss(tmp_path: Path) -> None:
    plain = write_record(tmp_path / "plain", steps=12)
    scaled = write_record(tmp_path / "scaled", steps=12, loss_scale=10.0)  # same model, same batches, 10x loss
    for stat_name in ("mean_abs", "l2", "max_abs"):
        raw = [g.values for g in heatmap_grids([plain, scaled], stat_name, "block")]
        np.testing.assert_allclose(raw[1], 10 * raw[0], rtol=1e-4)  # the raw view reads the loss weight
        norm = [g.values for g in heatmap_grids([plain, scaled], stat_name, "block", normalize="global")]
        np.testing.assert_allclose(norm[1], norm[0], rtol=1e-4)
        assert np.nanmax(norm[0]) <= 1.0 + 1e-6 or stat_name == "mean_abs"  # a part of the norm
    record = gradscope.load(plain)
    global_l2 = record.matrix("param", "l2").values
    total = np.sqrt(np.nansum(global_l2**2, axis=1))
    np.testing.assert_allclose(record.matrix("layer", "l2", normalize="global").values,
                               record.matrix("layer", "l2").values / total[:, None], rtol=1e-12)
    np.testing.assert_allclose(np.nansum(record.matrix("param", "l2", normalize="global").values ** 2, axis=1), 1.0)


def test_normalisation_is_named_in_the_figure_and_checked(record_path: Path) -> None:
    fig = heatmap(record_path, normalize="global", columns="block")
    title = fig.layout.title.text
    assert "mean |g| / global ‖g‖₂ per layer" in title and "normalised: each step divided by" in title
    assert "raw statistic" in heatmap(record_path).layout.title.text
    with pytest.raises(GradscopeError, match="unknown normalisation 'max'.*none, global"):
        heatmap(record_path, normalize="max")
    with pytest.raises(GradscopeError, match="not to nonfinite"):
        gradscope.load(record_path).window_mean("layer", "nonfinite", normalize="global")


def test_heatmap_has_the_dashboard_axis_titles(record_path: Path) -> None:
    for columns in ("stage", "block"):
        fig = heatmap({"a": record_path, "b": record_path}, columns=columns)
        assert fig.layout.xaxis.title.text == columns and fig.layout.xaxis2.title.text == columns
        assert fig.layout.yaxis.title.text == f"layer (named within its {columns})"
        assert fig.layout.coloraxis.colorbar.title.text == "log₁₀ mean |g|"
        assert fig.layout.title.text.startswith("mean |g| per layer, averaged over 0%–100% of training")


def test_loading_warns_once_per_problem(tmp_path: Path) -> None:
    path = write_record(tmp_path / "rec", steps=20)
    with open(path / FRAMES_FILE, "r+b") as f:
        f.truncate(100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = gradscope.load(path)
    assert len(caught) == 1 and record.problems and len(record) == 0


def test_rewritten_steps_replace_a_live_readers_view(tmp_path: Path) -> None:
    path = write_record(tmp_path / "rec", steps=8)
    reader = gradscope.load(path)
    before = reader.matrix("layer", "l2").values.copy()
    torch.manual_seed(1)  # another model: other gradients for the same step numbers
    model = TinyResNet()
    with gradscope.record(model, path, append=True, start_step=4, flush_every=16):
        for i in range(4):  # a resume that re-records steps 4-7: same count of steps, new values
            model.zero_grad()
            x, y = make_batch(4, seed=50 + i)
            F.cross_entropy(model(x), y).backward()
    assert reader.refresh() == 4 and len(reader) == 8
    after = reader.matrix("layer", "l2").values
    np.testing.assert_array_equal(after[:4], before[:4])
    assert not np.allclose(after[4:], before[4:])
    np.testing.assert_allclose(after, reference(path, "layer", "l2")[[0, 1, 2, 3, 8, 9, 10, 11]], rtol=1e-12)
