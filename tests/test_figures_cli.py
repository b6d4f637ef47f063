"""Heatmap numbers, the figure, file export and the ``gradscope`` CLI, on real tiny recordings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradscope
from gradscope.cli import main
from gradscope.figures import heatmap_grid, heatmap_grids, log_ticks


class TinyBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn1(self.conv1(x)) + x)


class TinyResNet(nn.Module):
    def __init__(self, c: int = 4, stages: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 3, padding=1)
        for i in range(1, stages + 1):
            setattr(self, f"layer{i}", nn.Sequential(TinyBlock(c), TinyBlock(c)))
        self.fc = nn.Linear(c, 3)
        self.stages = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for i in range(1, self.stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(x.mean((2, 3)))


def train_recorded(path: Path, seed: int, steps: int = 6, stages: int = 2) -> Path:
    torch.manual_seed(seed)
    model = TinyResNet(stages=stages)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.record(model, path, optimizer=opt, tags={"title": path.name}):
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(8, 3, 6, 6)), torch.randint(0, 3, (8,))).backward()
            opt.step()
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    return [train_recorded(root / "baseline", 0), train_recorded(root / "tfkd", 1, stages=3)]


def test_grid_cells_are_window_means_of_layer_statistics(runs: list[Path]) -> None:
    record = gradscope.load(runs[0])
    grid = heatmap_grid(record, "l2", "block", window=(0.5, 1.0))
    steps, names, values = record.matrix("layer", "l2")
    expected = values[len(steps) // 2:].mean(axis=0)
    assert grid.columns == ["stem", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "head"]
    assert grid.rows == ["conv1", "bn1", "fc"]
    cell = grid.values[grid.rows.index("bn1"), grid.columns.index("layer2.1")]
    assert cell == pytest.approx(expected[names.index("layer2.1.bn1")])
    assert np.isnan(grid.values[grid.rows.index("fc"), grid.columns.index("layer1.0")])


def test_stage_columns_name_rows_relative_to_the_stage(runs: list[Path]) -> None:
    grid = heatmap_grid(gradscope.load(runs[0]), "mean_abs", "stage")
    assert grid.columns == ["stem", "layer1", "layer2", "head"]
    assert {"0.conv1", "1.bn1", "conv1", "fc"} <= set(grid.rows)


def test_panels_share_rows_and_one_colour_scale(runs: list[Path]) -> None:
    grids = heatmap_grids({"a": runs[0], "b": runs[1]}, "mean_abs", "stage")
    assert grids[0].rows == grids[1].rows
    assert grids[1].columns[-2] == "layer3"
    fig = gradscope.heatmap({"a": runs[0], "b": runs[1]}, stat="mean_abs", columns="stage")
    assert [t.name for t in fig.data] == ["a", "b"]
    assert {t.coloraxis for t in fig.data} == {"coloraxis"}
    finite = np.concatenate([np.asarray(t.z, float).ravel() for t in fig.data])
    finite = finite[np.isfinite(finite)]
    assert fig.layout.coloraxis.cmin == pytest.approx(finite.min())
    assert fig.layout.coloraxis.cmax == pytest.approx(finite.max())


def test_log_ticks_cover_the_range() -> None:
    assert log_ticks(-2.2, -0.1) == pytest.approx([1e-2, 2e-2, 5e-2, 1e-1, 2e-1, 5e-1])
    assert log_ticks(-9, 1) == pytest.approx([10.0**e for e in range(-9, 2)])


def test_bad_statistic_and_column_level_are_named(runs: list[Path]) -> None:
    with pytest.raises(gradscope.GradscopeError, match="unknown statistic 'mean'.*mean_abs"):
        gradscope.heatmap(runs, stat="mean")
    with pytest.raises(gradscope.GradscopeError, match="unknown column level 'layer'"):
        gradscope.heatmap(runs, columns="layer")
    with pytest.raises(gradscope.GradscopeError, match="window"):
        gradscope.heatmap(runs, window=(0.5, 0.2))


def browser_available() -> bool:
    found = any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome"))
    if not found and os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium: static export is tested there")
    return found


@pytest.mark.browser
def test_cli_exports_every_format(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not browser_available():
        pytest.skip("no Chromium for static export")
    outputs = [tmp_path / f"fig6.{ext}" for ext in ("png", "svg", "pdf", "html", "csv")]
    args = ["heatmap", *map(str, runs), "--columns", "block", "--window", "0:0.5", "--titles", "base,tf"]
    assert main(args + [a for out in outputs for a in ("-o", str(out))]) == 0
    signatures = {"png": b"\x89PNG", "svg": b"<svg", "pdf": b"%PDF", "html": b"<html"}
    for out in outputs[:-1]:
        head = out.read_bytes()[:4096]
        assert signatures[out.suffix[1:]] in head, out
    html = outputs[3].read_text()
    assert '<script src="http' not in html and "Plotly.newPlot" in html  # self-contained, works offline
    csv_lines = outputs[4].read_text().splitlines()
    assert csv_lines[0] == "run,column,row,stat,normalize,window_start,window_stop,value"
    assert {line.split(",")[0] for line in csv_lines[1:]} == {"base", "tf"}
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["heatmap", "{run}", "-o", "{tmp}/x.jpg"], "unknown output format 'jpg'"),
        (["heatmap", "{tmp}/missing", "-o", "{tmp}/x.csv"], "does not exist"),
        (["heatmap", "{tmp}", "-o", "{tmp}/x.csv"], "holds no gradscope record"),
        (["heatmap", "{run}", "-o", "{tmp}/x.csv", "--titles", "a,b"], "--titles has 2 names for 1 runs"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(runs: list[Path], tmp_path: Path, args: list[str], message: str) -> None:
    argv = [a.format(run=runs[0], tmp=tmp_path) for a in args]
    result = subprocess.run([sys.executable, "-m", "gradscope", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_cli_info_describes_the_record(runs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(runs[0])]) == 0
    out = capsys.readouterr().out
    assert "6 recorded (steps 0..5)" in out and "stages (4): stem, layer1, layer2, head" in out and "closed" in out


def _damaged_copy(run: Path, tmp: Path, edit: str) -> Path:
    """A copy of ``run`` whose meta.json is damaged as ``edit`` says."""
    import json

    copy = tmp / f"damaged-{edit}"
    shutil.copytree(run, copy)
    meta = json.loads((copy / "meta.json").read_text())
    if edit == "no-params":
        del meta["params"]
    elif edit == "string-version":
        meta["format_version"] = "2"
    elif edit == "fewer-names":  # a meta of fewer tensors than the frames' columns
        meta["params"] = meta["params"][:-2]
    (copy / "meta.json").write_text(json.dumps(meta))
    return copy


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "{no-params}"], "params must be a non-empty list of parameter entries, got NoneType"),
        (["info", "{string-version}"], "format_version must be a positive integer, got '2'"),
        (["heatmap", "{fewer-names}", "-o", "{tmp}/out/x.csv"], "does not belong to these frames"),
        (["heatmap", "{run}", "-o", "{tmp}/a_file/x.csv"], "a_file is a file, not a folder"),
        (["heatmap", "{run}", "-o", "{tmp}/out/x.csv", "-o", "{tmp}/out/x.html", "--scale", "-1"],
         "--scale -1 must be a pixel scale above 0"),
        (["heatmap", "{run}", "-o", "{tmp}/out/x.csv", "--normalize", "max"], "invalid choice: 'max'"),
        (["heatmap", "{run}", "-o", "{tmp}/out/x.csv", "--window", "0.5:0.2"], "needs 0 <= START < STOP <= 1"),
    ],
)
def test_cli_damaged_records_and_bad_outputs_are_one_line_and_leave_nothing(
    runs: list[Path], tmp_path: Path, args: list[str], message: str,
) -> None:
    (tmp_path / "a_file").write_text("a file, not a folder")
    work = tmp_path / "work"
    work.mkdir()
    names = {edit: _damaged_copy(runs[0], work, edit) for edit in ("no-params", "string-version", "fewer-names")}
    argv = [a.format(run=runs[0], tmp=tmp_path, **names) for a in args]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = subprocess.run([sys.executable, "-m", "gradscope", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "cache" not in p.parts)
    assert after == [p for p in before if "cache" not in p.parts]  # nothing written, not even out/
    assert (tmp_path / "a_file").read_text() == "a file, not a folder"


def test_cli_normalised_csv_and_info_problems(runs: list[Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "n.csv"
    assert main(["heatmap", str(runs[0]), "-o", str(out), "--normalize", "global", "--stat", "l2"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "run,column,row,stat,normalize,window_start,window_stop,value"
    assert all(",l2,global," in line and 0 < float(line.split(",")[-1]) <= 1 for line in lines[1:])
    cut = tmp_path / "cut"
    shutil.copytree(runs[0], cut)
    frames = cut / "grads.gsr"
    os.truncate(frames, frames.stat().st_size - 10)
    capsys.readouterr()
    assert main(["info", str(cut)]) == 0
    out_text = capsys.readouterr().out
    assert "problem: bytes" in out_text and "cut off after the record was closed (6 of its 6 steps missing)" in out_text
    assert main(["info", str(runs[0])]) == 0 and "no problems found" in capsys.readouterr().out


def test_cli_cache_prepares_every_view(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns("cache"))
    assert main(["cache", str(run), "--normalize", "none", "--normalize", "global"]) == 0
    assert "6 steps, every view computed; kept in its cache/" in capsys.readouterr().out
    names = {p.name.split("-")[0] for p in (run / "cache").iterdir()}
    views = {f"{level}.{stat}.{view}" for level in gradscope.LEVELS for stat in gradscope.STATS
             for view in ("none", "global") if view == "none" or stat != "nonfinite"}
    assert names == {"index"} | views | {f"{v}.blocks" for v in views}
    assert main(["info", str(run)]) == 0 and "closed after writing 6 steps in 1 frames" in capsys.readouterr().out
