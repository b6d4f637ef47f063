"""benchmarks/recorder_overhead.py: the model, a tiny run of all four variants, and its helpers."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "recorder_overhead.py"
_spec = importlib.util.spec_from_file_location("recorder_overhead", PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules["recorder_overhead"] = bench  # dataclasses look their module up by name
_spec.loader.exec_module(bench)


def test_the_library_holds_no_benchmark():
    import gradscope

    assert not (Path(gradscope.__file__).parent / "bench.py").exists()
    assert "_on_" not in PATH.read_text()  # no private recorder hook: public API only


def test_model_has_the_62_tensors_of_resnet18():
    model = bench.resnet18(width=8)
    assert len(list(model.parameters())) == 62
    stages = ["layer1", "layer2", "layer3", "layer4"]
    assert [name for name, _ in model.named_children()] == ["conv1", "bn1", *stages, "linear"]


def test_tiny_run_writes_all_four_variants(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main([
        "--device", "cpu", "--width", "8", "--batch-size", "2", "--rounds", "1", "--steps-per-round", "1",
        "--warmup", "1", "--alone-calls", "5", "--json", str(out),
    ])
    data = json.loads(out.read_text())
    assert set(data["variants"]) == {"none", "gradscope", "naive", "histogram"}
    for figures in data["variants"].values():
        assert figures["median_ms"] > 0
        assert len(figures["samples_ms"]) == 1
    for name in ("gradscope", "naive", "histogram"):
        assert data["variants"][name]["alone_ms"] > 0
    assert data["config"]["width"] == 8
    assert data["targets"]["alone_vs_naive_max"] == 1.5 and data["targets"]["alone_vs_naive"] > 0
    printed = capsys.readouterr().out
    assert "gradscope adds" in printed and "naive adds" in printed and "x the naive loop's cost" in printed


def test_the_gradscope_variant_records_every_step(tmp_path):
    runner = bench.make_runners(bench.Config("cpu", 2, 1, 1, 0, 1, 1, width=4), tmp_path)[1]
    for _ in range(3):
        runner.step()
    record = runner.variant.recorder.load()
    runner.variant.close()
    assert record.steps.tolist() == [0, 1, 2] and record.meta["trigger"] == "optimizer.step"


def test_histogram_skips_nonfinite_values():
    counts, low, high = bench.host_histogram(torch.tensor([1.0, float("inf"), -1.0, float("nan")]))
    assert (low, high) == (-1.0, 1.0)
    assert sum(counts) == 2 and len(counts) == bench.HISTOGRAM_BINS


def test_times_less_handles_unmeasurable_added_time():
    assert bench.times_less(10.0, 1.0) == 10.0
    assert bench.times_less(10.0, 0.0) == float("inf")
    assert bench.times_less(-1.0, 2.0) == 0.0


@pytest.mark.parametrize("flag", ["--rounds", "--batch-size"])
def test_rejects_nonpositive_settings(flag):
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", flag, "0"])
