"""Gradients-page latency at scale: 12 runs x 80,000 recorded steps x 62 ResNet18 tensors.

    python benchmarks/dashboard_scale.py [--out /tmp/scale-runs]

Writes the records once with gradscope's own frame encoder (random statistics, real format), then
times what the Gradients callback does — load the cached records, build the Figure-6 heatmap and the
binned per-stage series, encode both as the JSON Dash sends — for 2 and for 12 selected runs: the
first call per statistic (aggregation of 80,000 steps per run) and then warm calls with a new step
window each time, so no figure cache can answer.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
from plotly.io.json import to_json_plotly

import gradscope
from app.pages import gradients
from app.runs import RunIndex
from gradscope.store import FRAMES_FILE, META_FILE, Chunk, encode_frame, write_json_atomic, written_extent
from trainers.models import build_model

RUN_NAMES = ("baseline", "tfkd-reg", "tfkd-self")


def write_runs(root: Path, runs: int, steps: int) -> None:
    model = build_model("resnet18", in_shape=(3, 32, 32), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    rng = np.random.default_rng(0)
    for i in range(runs):
        name, seed = RUN_NAMES[i % 3], i // 3
        folder = root / f"fig4/seed{seed}/{name}"
        if (folder / "results.json").exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        gradscope.record(model, folder / "gradscope").close()
        n_params = len(list(model.parameters()))
        with open(folder / "gradscope" / FRAMES_FILE, "ab") as f:
            for start in range(0, steps, 4096):
                n = min(4096, steps - start)
                values = (np.abs(rng.standard_normal((4, n, n_params))) * 1e-2).astype(np.float32)
                values[3] = 0
                f.write(encode_frame(Chunk(np.arange(start, start + n), np.zeros(n), np.zeros(n, np.uint8), values)))
        record = folder / "gradscope"  # say what was written, as a closing recorder does, or readers flag the frames
        meta = json.loads((record / META_FILE).read_text())
        write_json_atomic(record / META_FILE, {**meta, "written": written_extent(record / FRAMES_FILE)})
        config = {"method": name, "model": "resnet18", "dataset": "cifar10", "seed": seed, "epochs": 200,
                  "extras": {"recipe": "fig4", "run": name}}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": e, "train_loss": 1 / e}) + "\n" for e in range(1, 201)))
        (folder / "results.json").write_text(json.dumps({"best": {"test_acc": 95.0}, "last": {"test_acc": 95.0}}))


def gradients_call(index: RunIndex, run_ids: list[str], stat: str, window: tuple[float, float]) -> int:
    records, _ = index.records(run_ids)
    heat = gradients.heatmap_figure(records, stat, "stage", window, True, False, None)
    series = {label: gradients.cached_series(r, "stage", stat, 0.6) for label, r in records.items()}
    lines = gradients.series_figure_spec(series, True, stat, "stage")
    return len(to_json_plotly(heat)) + len(to_json_plotly(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/gradscope-scale-runs")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=80_000)
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args()
    root = Path(args.out)
    write_runs(root, args.runs, args.steps)
    index = RunIndex(root)
    ids = index.ids()
    for n in sorted({2, args.runs}):
        chosen = ids[:n]
        started = time.perf_counter()
        index.records(chosen)
        load_ms = (time.perf_counter() - started) * 1000
        first, warm, size = [], [], 0
        for k in range(3 + args.repeats):
            stat = ("mean_abs", "l2", "max_abs")[k % 3]
            started = time.perf_counter()
            size = gradients_call(index, chosen, stat, (0.02 * k, 1.0))
            (first if k < 3 else warm).append((time.perf_counter() - started) * 1000)
        warm.sort()
        p95 = warm[round(0.95 * (len(warm) - 1))]
        print(f"{n:2d} runs: records loaded in {load_ms:.0f} ms; first call per statistic "
              f"{', '.join(f'{x:.0f}' for x in first)} ms; warm p50 {statistics.median(warm):.0f} ms, "
              f"p95 {p95:.0f} ms; response {size / 1e6:.1f} MB")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
