"""The record format: frames round-trip, incomplete and corrupt frames, kill -9, live reading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyMLP, make_batch
from torch.nn import functional as F

import gradscope
from gradscope import GradscopeError, RecordWarning
from gradscope.store import (
    FLAG_SKIPPED,
    FRAMES_FILE,
    HEADER_BYTES,
    MAGIC,
    Chunk,
    decode_frames,
    encode_frame,
    read_meta,
)


def _chunk(first: int, n: int, n_params: int = 5, seed: int = 0) -> Chunk:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((4, n, n_params)).astype(np.float32)
    values[0, 0, 0] = np.nan
    values[1, -1, -1] = np.inf
    return Chunk(
        steps=np.arange(first, first + n, dtype=np.int64),
        times=1.7e9 + rng.random(n),
        flags=(np.arange(n) % 2).astype(np.uint8),
        values=values,
    )


def _assert_same(a: Chunk, b: Chunk) -> None:
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.flags, b.flags)
    np.testing.assert_array_equal(a.values, b.values)  # bit-exact, NaN and inf included


# -- encode / decode -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, 8, 9])  # flags padding: n not a multiple of 8 and one that is
def test_encode_decode_round_trip(n):
    chunk = _chunk(40, n)
    frame = encode_frame(chunk)
    assert frame[:4] == MAGIC
    assert len(frame) == HEADER_BYTES + 8 * n + 8 * n + n + (-n % 8) + 4 * 4 * n * 5
    scan = decode_frames(frame)
    assert scan.problems == [] and scan.end == len(frame) and len(scan.chunks) == 1
    _assert_same(scan.chunks[0], chunk)


def test_decode_stops_at_incomplete_tail_and_reports_end():
    frames = [encode_frame(_chunk(3 * i, 3, seed=i)) for i in range(3)]
    whole = b"".join(frames)
    complete = len(frames[0]) + len(frames[1])
    for cut in (complete + 1, complete + HEADER_BYTES - 1, complete + HEADER_BYTES + 10, len(whole) - 1):
        scan = decode_frames(whole[:cut])
        assert [c.steps.tolist() for c in scan.chunks] == [[0, 1, 2], [3, 4, 5]]
        assert scan.end == complete and scan.problems == []
    # resuming from the reported end once the rest arrived reads the last frame
    scan = decode_frames(whole, start=complete)
    assert [c.steps.tolist() for c in scan.chunks] == [[6, 7, 8]] and scan.end == len(whole)
    assert decode_frames(b"").end == 0 and decode_frames(b"").chunks == []


def test_decode_skips_corrupt_payload_and_corrupt_header():
    frames = [encode_frame(_chunk(2 * i, 2, seed=i)) for i in range(4)]
    broken = [bytearray(f) for f in frames]
    broken[1][HEADER_BYTES + 5] ^= 0xFF  # payload byte of frame 1 (steps 2-3)
    broken[2][10] ^= 0xFF  # header byte of frame 2 (steps 4-5)
    scan = decode_frames(b"".join(bytes(b) for b in broken))
    assert [c.steps.tolist() for c in scan.chunks] == [[0, 1], [6, 7]]
    assert len(scan.problems) == 2
    assert "steps 2-3" in scan.problems[0] and "checksum" in scan.problems[0]
    start2 = len(frames[0]) + len(frames[1])
    assert f"bytes {start2}-{start2 + len(frames[2])}" in scan.problems[1]
    assert scan.end == sum(len(f) for f in frames)


def test_decode_garbage_is_a_problem_not_an_exception():
    scan = decode_frames(bytes(range(256)) * 2)
    assert scan.chunks == [] and scan.problems and scan.end == 512


# -- records on disk: truncation, corruption ----------------------------------------------------------------

def write_record(path: Path, steps: int = 6, flush_every: int = 2, model: torch.nn.Module | None = None) -> Path:
    """A closed record of ``steps`` SGD steps of ``model`` (a seeded `TinyMLP` by default) on one batch."""
    torch.manual_seed(0)
    model = model or TinyMLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = make_batch(4, shape=(12,))
    with gradscope.record(model, path, optimizer=opt, flush_every=flush_every):
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return path




def test_truncated_frames_file_loads_complete_frames(tmp_path):
    path = tmp_path / "rec"
    write_record(path)
    frames = path / FRAMES_FILE
    size = frames.stat().st_size
    frame = size // 3
    assert frame * 3 == size
    full = gradscope.load(path)
    full_l2 = full.matrix("block", "l2").values
    assert full.meta["written"] == {"bytes": size, "frames": 3, "steps": 6}
    open_meta = {k: v for k, v in full.meta.items() if k not in ("closed_at", "written")}
    for cut, steps in [(2 * frame + frame // 2, 4), (2 * frame + 20, 4), (2 * frame, 4), (frame - 1, 0)]:  # shrinking
        os.truncate(frames, cut)
        with pytest.warns(RecordWarning, match=f"cut off after the record was closed \\({6 - steps} of its 6 steps"):
            closed = gradscope.load(path)  # a closed record knows what it wrote: the loss is named
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an open record's incomplete tail is a write in progress: no warning
            record = gradscope.Record(open_meta, folder=path)
        for r in (closed, record):
            assert r.steps.tolist() == list(range(steps))
            np.testing.assert_array_equal(r.matrix("block", "l2").values, full_l2[:steps])
        assert record.problems == [] and len(closed.problems) == 1
        assert f"bytes {frame * (steps // 2)}-" in closed.problems[0]


def test_corrupt_middle_frame_is_skipped_and_named(tmp_path):
    path = tmp_path / "rec"
    write_record(path)
    frames = path / FRAMES_FILE
    data = bytearray(frames.read_bytes())
    frame = len(data) // 3
    for k in range(frame + HEADER_BYTES + 30, frame + HEADER_BYTES + 34):
        data[k] ^= 0x5A
    frames.write_bytes(bytes(data))
    with pytest.warns(RecordWarning, match="steps 2-3"):
        record = gradscope.load(path)
    assert record.steps.tolist() == [0, 1, 4, 5]
    assert len(record.problems) == 1 and "steps 2-3" in record.problems[0]
    assert np.isfinite(record.matrix("stage", "l2").values).all()


def test_load_accepts_a_run_folder(tmp_path):
    write_record(tmp_path / "run" / "gradscope", steps=2)
    assert gradscope.load(tmp_path / "run").steps.tolist() == [0, 1]


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "rec"
    write_record(path, steps=1)
    meta = path / "meta.json"
    meta.write_text(meta.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(GradscopeError, match="upgrade gradscope"):
        gradscope.load(path)
    meta.write_text("{not json")
    with pytest.raises(GradscopeError, match="unreadable"):
        read_meta(path)


def test_append_after_a_crash_mid_write_keeps_every_new_step(tmp_path):
    path = tmp_path / "rec"
    write_record(path)
    frames = path / FRAMES_FILE
    frame = frames.stat().st_size // 3
    os.truncate(frames, 2 * frame + frame // 2)  # killed while writing steps 4-5
    torch.manual_seed(0)
    model = TinyMLP()
    x, _ = make_batch(4, shape=(12,))
    with gradscope.record(model, path, append=True, flush_every=2) as recorder:
        assert recorder.step == 4
        for _ in range(4):
            model.zero_grad()
            model(x).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record = gradscope.load(path)
    assert record.problems == []
    assert record.steps.tolist() == list(range(8))


# -- kill -9 while recording -----------------------------------------------------------------------------

TRAINER = textwrap.dedent(
    """
    import sys, time
    import torch
    from torch import nn
    import gradscope

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 12), torch.randint(0, 10, (8,))
    gradscope.record(model, sys.argv[1], optimizer=opt, flush_every=2)
    print("recording", flush=True)
    while True:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        time.sleep(0.002)
    """
)


def test_kill_9_while_recording_keeps_every_written_step(tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    path = tmp_path / "rec"
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = 0
        deadline = time.monotonic() + 60
        while seen < 6:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the trainer wrote fewer than 6 steps in 60 s"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # a live record never looks corrupt
                    record = gradscope.load(path)
            except GradscopeError:  # meta.json not written yet
                time.sleep(0.05)
                continue
            assert record.problems == [] and not record.closed
            steps = record.steps.tolist()
            assert steps == list(range(len(steps)))
            seen = len(steps)
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record = gradscope.load(path)
    steps = record.steps.tolist()
    assert len(steps) >= seen and steps == list(range(len(steps)))
    assert record.problems == [] and not record.closed
    for stat in ("l2", "mean_abs", "max_abs"):
        assert np.isfinite(record.matrix("layer", stat).values).all()
    assert (record.matrix("stage", "nonfinite").values == 0).all()
    assert not record.skipped.any()


# -- readable while written -------------------------------------------------------------------------------

def test_flush_then_load_and_refresh_in_the_same_process(tmp_path):
    torch.manual_seed(0)
    model = TinyMLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = make_batch(4, shape=(12,))
    path = tmp_path / "rec"

    def steps(n):
        for _ in range(n):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

    recorder = gradscope.record(model, path, optimizer=opt, flush_every=1000, flush_secs=3600)
    steps(3)
    early = gradscope.load(path)  # nothing flushed yet: an empty, valid record
    assert len(early) == 0 and early.matrix("stage", "l2").values.shape == (0, 3)
    recorder.flush()
    record = gradscope.load(path)
    assert record.steps.tolist() == [0, 1, 2] and not record.closed
    assert record.matrix("param", "l2").values.shape == (3, 6)
    steps(2)
    assert record.refresh() == 0  # not flushed: nothing new on disk
    recorder.flush()
    assert record.refresh() == 2
    assert record.steps.tolist() == [0, 1, 2, 3, 4]
    assert record.matrix("param", "l2").values.shape == (5, 6)  # the matrix cache was refreshed
    assert early.refresh() == 5 and len(early) == 5
    live = recorder.load()  # the recorder's own view, without closing it
    np.testing.assert_array_equal(live.matrix("param", "l2").values, record.matrix("param", "l2").values)
    recorder.close()
    assert gradscope.load(path).closed
    assert record.refresh() == 0


def test_skipped_flag_round_trips(tmp_path):
    frame = encode_frame(Chunk(np.array([7]), np.array([1.0]), np.array([FLAG_SKIPPED], np.uint8),
                               np.zeros((4, 1, 2), np.float32)))
    assert decode_frames(frame).chunks[0].flags.tolist() == [FLAG_SKIPPED]


def test_unclosed_recorder_is_flushed_at_exit(tmp_path):
    script = tmp_path / "forgets_close.py"
    script.write_text(textwrap.dedent(
        """
        import sys
        import torch
        from torch import nn
        import gradscope

        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        recorder = gradscope.record(model, sys.argv[1], optimizer=opt, flush_every=100, flush_secs=3600)
        assert recorder.active
        for _ in range(5):
            opt.zero_grad()
            model(torch.ones(3, 4)).sum().backward()
            opt.step()
        """
    ))
    subprocess.run([sys.executable, str(script), str(tmp_path / "rec")], check=True, timeout=120)
    record = gradscope.load(tmp_path / "rec")
    assert record.steps.tolist() == [0, 1, 2, 3, 4] and record.closed
