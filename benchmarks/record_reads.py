"""Cold and warm reads of long records: 12 runs x 80,000 recorded steps x 62 ResNet18 tensors.

    python benchmarks/record_reads.py [--out /tmp/gradscope-read-runs] [--runs 12] [--steps 80000]

Writes the records once (random statistics in the real frame format, closed by a real recorder so
``meta.json`` knows what was written), then times, each in a fresh Python process so that nothing
is held in memory between them:

* the first read ever, no ``cache/`` yet (index and CRC-check every frame, aggregate, write cache);
* a new process with that cache (what a restarted dashboard sees): the "first view" of issue 13;
* warm: the same records again, another window and binning.

For every level and statistic: load all runs afresh, `Record.matrix`, `Record.window_mean` (what
the Figure-6 heatmap reads) and `Record.binned` into 1,500 points (what the series plot reads).
The peak resident memory of each process is printed, and beside each wall time the CPU time of the
process (on a busy machine the wall time mostly measures the wait for a core). The OS page cache is
warm in all three (the files were just written), so this measures gradscope, not the disk.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LEVELS = ("param", "layer", "block", "stage")
STATS = ("mean_abs", "l2", "max_abs")


def write_runs(root: Path, runs: int, steps: int) -> list[Path]:
    """``runs`` closed records under ``root``, each ``steps`` long; kept if already there."""
    import gradscope
    from gradscope.store import FRAMES_FILE, Chunk, encode_frame
    from trainers.models import build_model

    model = build_model("resnet18", in_shape=(3, 32, 32), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    n_params = len(list(model.parameters()))
    rng = np.random.default_rng(0)
    folders = []
    for i in range(runs):
        folder = root / f"run{i:02d}"
        folders.append(folder)
        if (folder / "meta.json").exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / FRAMES_FILE, "wb") as f:  # frames first: the recorder's close counts them
            for start in range(0, steps, 4096):
                n = min(4096, steps - start)
                values = (np.abs(rng.standard_normal((4, n, n_params))) * 1e-2).astype(np.float32)
                values[3] = 0
                f.write(encode_frame(Chunk(np.arange(start, start + n), np.zeros(n), np.zeros(n, np.uint8), values)))
        gradscope.record(model, folder, start_step=steps).close()
    return folders


def measure(folders: list[Path]) -> dict[str, list[float]]:
    """Per (level, stat): ms for a first view (load every run afresh, then its matrix, a window mean
    and a binned series) and for a warm one (another window and binning on the same records)."""
    import gc
    import warnings

    import gradscope

    times: dict[str, list[float]] = {}
    for level in LEVELS:
        for stat in STATS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gc.collect()
                started, cpu = time.perf_counter(), time.process_time()
                records = [gradscope.load(f) for f in folders]
                for r in records:
                    r.matrix(level, stat)
                    r.window_mean(level, stat, (0.0, 1.0))
                    r.binned(level, stat, 1500)
                first = [(time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000]
                started, cpu = time.perf_counter(), time.process_time()
                for r in records:
                    r.window_mean(level, stat, (0.1, 0.9))
                    r.binned(level, stat, 1000)
                warm = [(time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000]
                times[f"{level} {stat}"] = first + warm
                del records
    times["peak_rss_mb"] = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/gradscope-read-runs")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=80_000)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # set in the child processes that measure
    args = parser.parse_args()
    root = Path(args.out)
    folders = sorted(p for p in root.glob("run*") if p.is_dir()) if args.measure else write_runs(
        root, args.runs, args.steps)
    if args.measure:
        print(json.dumps(measure(folders)))
        return
    for folder in folders:
        shutil.rmtree(folder / "cache", ignore_errors=True)

    def child() -> dict[str, list[float]]:
        out = subprocess.run([sys.executable, __file__, "--out", str(root), "--measure", "1"],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out.splitlines()[-1])

    first, cold = child(), child()
    print(f"{len(folders)} runs x {args.steps} steps; ms over all runs (load + matrix + window mean + binned), "
          "wall (CPU of this process)")
    print("  level stat             no cache yet (first ever) | cache, new process | warm (same process)")
    for key in first:
        if key != "peak_rss_mb":
            print(f"  {key:22s} {first[key][0]:8.0f} ({first[key][1]:6.0f}) | {cold[key][0]:6.0f} ({cold[key][1]:5.0f})"
                  f" | {cold[key][2]:6.0f} ({cold[key][3]:5.0f})")
    rss = first["peak_rss_mb"][0], cold["peak_rss_mb"][0]
    print(f"  peak RSS per process (MB): {rss[0]:.0f} without cache, {rss[1]:.0f} with")


if __name__ == "__main__":
    main()
