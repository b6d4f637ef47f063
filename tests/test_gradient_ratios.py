"""`trainers.gradient_ratios`: Figure 6 as per-layer ratios against the baseline, raw and normalised."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradscope
from trainers.cli import main
from trainers.gradient_ratios import compare, layer_ratios, ratio_lines


def _record(folder, scale: float, steps: int = 4) -> None:
    """A tiny model's record whose every gradient is ``scale`` times the same seeded run's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    with gradscope.record(model, folder / "gradscope"):
        for _ in range(steps):
            model.zero_grad()
            (scale * nn.functional.cross_entropy(model(x), y)).backward()


@pytest.fixture
def runs(tmp_path):
    for seed in ("seed0", "seed1"):
        _record(tmp_path / "fig4" / seed / "baseline", 1.0)
        _record(tmp_path / "fig4" / seed / "louder", 2.0)
        _record(tmp_path / "fig4" / seed / "quieter", 0.5)
    (tmp_path / "fig4" / "seed1" / "no-record").mkdir()
    return tmp_path


def test_a_run_with_every_gradient_doubled_is_twice_the_baseline_raw_and_equal_normalised(runs):
    seed = runs / "fig4" / "seed0"
    louder, baseline = gradscope.load(seed / "louder" / "gradscope"), gradscope.load(seed / "baseline" / "gradscope")
    raw = layer_ratios(louder, baseline)
    assert set(raw) == {"0", "2"} and raw == pytest.approx({"0": 2.0, "2": 2.0})
    assert layer_ratios(louder, baseline, normalize="global") == pytest.approx({"0": 1.0, "2": 1.0})
    summaries = {(s.run, s.seed, s.normalize): s for s in compare(runs)}
    assert len(summaries) == 2 * 2 * 2  # two runs, two seeds, two views; the folder without a record is skipped
    assert summaries["louder", "seed1", "none"].geometric_mean == pytest.approx(2.0)
    assert summaries["louder", "seed1", "none"].larger == 1.0
    assert summaries["quieter", "seed0", "none"].geometric_mean == pytest.approx(0.5)
    assert summaries["quieter", "seed0", "none"].larger == 0.0
    assert summaries["quieter", "seed0", "global"].geometric_mean == pytest.approx(1.0)
    lines = ratio_lines(list(summaries.values()))
    assert any(line.split()[:2] == ["louder", "raw"] and "×2.00 ± 0.00 over 2 seed(s), 100% of layers" in line
               for line in lines)


def test_the_command_prints_the_table_and_refuses_bad_input_in_one_line(runs, capsys):
    assert main(["gradient-ratios", str(runs / "fig4" / "seed0")]) == 0
    assert "louder" in capsys.readouterr().out
    assert main(["gradient-ratios", str(runs), "--window", "0.5", "0.2"]) == 2
    assert capsys.readouterr().err.strip() == "error: --window 0.5 0.2: expected 0 <= START < STOP <= 1"
    assert main(["gradient-ratios", str(runs), "--stat", "nonfinite"]) == 2
    assert "expected one of: l2, mean_abs, max_abs" in capsys.readouterr().err
    assert main(["gradient-ratios", str(runs), "--baseline", "teacher"]) == 2
    assert "no run called 'teacher' with a gradient record" in capsys.readouterr().err
