"""A runs folder mixing good runs (tiny real trainings) with one run per broken file of issue 9.

`make_runs(root)` trains two real runs, then copies a good run once per fault and breaks one file of
the copy, so each broken run has exactly one thing wrong. `BROKEN` names the file each fault must be
reported against; the app tests check that the badge names it and that every other run is unaffected.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import torch
from torch import nn

import gradscope
from gradscope.store import FRAMES_FILE, HEADER_BYTES, META_FILE
from trainers.attribution import attribute_run
from trainers.loop import train
from trainers.recipes import plan
from trainers.robustness import evaluate_run

GOOD = ("fig4/seed0/baseline", "fig4/seed0/tfkd-reg")
OVERRIDES = {"dataset": "synthetic", "epochs": 2, "train_subset": 64, "batch_size": 32, "width": 4,
             "progress": False}
LEAK = "outside-secret-7f3a"  # written only outside the runs folder: no answer of the app may contain it
_PAYLOAD_SIZE = struct.Struct("<4sIIHHqqQI")  # the frame header up to payload_bytes (see gradscope.store)


def _write(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    path.write_text(text)


def _frame_offsets(frames: Path) -> list[tuple[int, int]]:
    """(start, end) of every frame in a frames file, read from the headers."""
    data, out, pos = frames.read_bytes(), [], 0
    while pos + HEADER_BYTES <= len(data):
        nbytes = _PAYLOAD_SIZE.unpack_from(data, pos)[7]
        out.append((pos, pos + HEADER_BYTES + nbytes))
        pos += HEADER_BYTES + nbytes
    return out


def _flip_payload_byte(run: Path) -> None:
    frames = run / "gradscope" / FRAMES_FILE
    data = bytearray(frames.read_bytes())
    start, end = _frame_offsets(frames)[0]
    data[end - 1] ^= 0xFF
    frames.write_bytes(bytes(data))


def _truncate_last_frame(run: Path) -> None:
    frames = run / "gradscope" / FRAMES_FILE
    offsets = _frame_offsets(frames)
    assert len(offsets) >= 2, "the good run needs several frames to truncate one"
    with open(frames, "r+b") as f:
        f.truncate(offsets[-1][0])


def _record_file(run: Path) -> None:
    shutil.rmtree(run / "gradscope")
    (run / "gradscope").write_text("not a folder")


def _mlp_record(folder: Path, widths: tuple[int, ...]) -> None:
    """A real record of a small MLP (two tensors per layer), three steps."""
    torch.manual_seed(0)
    layers = [nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
    model = nn.Sequential(*layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.record(model, folder, optimizer=optimizer, flush_every=1):
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.randn(4, widths[0])).sum().backward()
            optimizer.step()


def _mismatched_meta(run: Path, meta_widths: tuple[int, ...], frame_widths: tuple[int, ...]) -> None:
    """The meta.json of one model over the frames of another (6 tensors against 4, or the reverse)."""
    shutil.rmtree(run / "gradscope")
    scratch = run.parent / f".{run.name}-scratch"
    _mlp_record(scratch / "meta", meta_widths)
    _mlp_record(run / "gradscope", frame_widths)
    shutil.copy(scratch / "meta" / META_FILE, run / "gradscope" / META_FILE)
    shutil.rmtree(scratch)


def _symlink_out(run: Path, name: str, outside: Path) -> None:
    """Move ``name`` outside the runs folder, marked with `LEAK`, and leave a symlink to it."""
    target = outside / f"{run.name}-{name}"
    source = run / name
    if source.is_dir():
        shutil.copytree(source, target)
        shutil.rmtree(source)
        meta = json.loads((target / META_FILE).read_text())
        meta["tags"] = {"secret": LEAK}
        (target / META_FILE).write_text(json.dumps(meta))
    else:
        config = json.loads(source.read_text())
        target.write_text(json.dumps({**config, "method": LEAK, "extras": {"run": LEAK}}))
        source.unlink()
    source.symlink_to(target, target_is_directory=target.is_dir())


# run name -> (the file the badge must name, how to break a copy of a good run)
BROKEN = {
    "config-null": ("config.json", lambda run, out: _write(run / "config.json", "null")),
    "config-list": ("config.json", lambda run, out: _write(run / "config.json", "[]")),
    "config-not-json": ("config.json", lambda run, out: _write(run / "config.json", "{not json")),
    "results-strings": ("results.json",
                        lambda run, out: _write(run / "results.json", '{"best": "x", "epochs": "many"}')),
    "results-list": ("results.json", lambda run, out: _write(run / "results.json", "[]")),
    "metrics-list-line": ("metrics.jsonl",
                          lambda run, out: (run / "metrics.jsonl").open("a").write("[1, 2]\n")),
    "evaluation-list": ("evaluation.json", lambda run, out: _write(run / "evaluation.json", "[]")),
    "frame-checksum": ("gradscope", lambda run, out: _flip_payload_byte(run)),
    "meta-invalid": ("gradscope", lambda run, out: _write(run / "gradscope" / META_FILE, "{not json")),
    "meta-list": ("gradscope", lambda run, out: _write(run / "gradscope" / META_FILE, "[]")),
    "record-is-file": ("gradscope", lambda run, out: _record_file(run)),
    "truncated-after-close": ("gradscope", lambda run, out: _truncate_last_frame(run)),
    "meta-6-over-4": ("gradscope", lambda run, out: _mismatched_meta(run, (3, 3, 3, 2), (3, 3, 2))),
    "meta-4-over-6": ("gradscope", lambda run, out: _mismatched_meta(run, (3, 3, 2), (3, 3, 3, 2))),
    "config-symlink-out": ("config.json", lambda run, out: _symlink_out(run, "config.json", out)),
    "record-symlink-out": ("gradscope", lambda run, out: _symlink_out(run, "gradscope", out)),
    "attribution-symlink-out": ("attribution", lambda run, out: _symlink_out(run, "attribution", out)),
}


def train_good_runs(root: Path) -> list[Path]:
    """Two finished, evaluated and attributed runs of Figure 4 (seconds on a CPU)."""
    folders = []
    for config in plan("fig4", seeds=1, out=root, overrides=OVERRIDES)[:2]:
        train(config)
        evaluate_run(config.out, attacks=["clean", "pgd"], n=32, show_progress=False)
        attribute_run(config.out, images=2)
        folders.append(Path(config.out))
    return folders


def make_runs(root: Path, outside: Path) -> dict[str, str]:
    """Good runs plus ``broken/<fault>`` runs under ``root``; returns ``{run id: file it must be blamed on}``.

    ``outside`` is a folder next to (not inside) ``root`` that the symlinked files point into.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared machine: thread hand-offs cost more than they save
    try:
        good = train_good_runs(root)[0]
    finally:
        torch.set_num_threads(threads)
    outside.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (blamed, breaks) in BROKEN.items():
        run = root / "broken" / name
        shutil.copytree(good, run, symlinks=True)
        breaks(run, outside)
        expected[f"broken/{name}"] = blamed
    return expected
