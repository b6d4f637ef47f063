"""Records that validate themselves, one writer per record, and damage that is named, never raised.

Real records of a tiny MLP, damaged on disk the way crashes, disks and people do: a meta.json that
does not match its frames, truncations and byte flips at random offsets, a second writer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyMLP
from test_store import write_record as write_store_record
from torch import nn

import gradscope
from gradscope import GradscopeError
from gradscope.lock import FolderLock
from gradscope.store import FRAMES_FILE, HEADER_BYTES, META_FILE, file_reader, scan_frames

STEPS, FLUSH = 12, 2  # six frames of two steps


def write_record(path: Path, model: nn.Module | None = None, steps: int = STEPS) -> Path:
    return write_store_record(path, steps, FLUSH, model)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_record(tmp_path_factory.mktemp("faults") / "rec")


def frame_spans(path: Path) -> list[tuple[int, int, list[int]]]:
    """(start, end, steps) of every frame of an intact record."""
    with open(path / FRAMES_FILE, "rb") as f:
        scan = scan_frames(file_reader(f.fileno()), (path / FRAMES_FILE).stat().st_size)
    return [(fr.start, fr.end, fr.steps.tolist()) for fr in scan.frames]


def copy_record(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in (META_FILE, FRAMES_FILE):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def load_quietly(path: Path) -> gradscope.Record:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradscope.RecordWarning)
        return gradscope.load(path)


# -- meta.json checked against the frames -----------------------------------------------------------------

def edit_meta(path: Path, edit) -> None:
    meta = json.loads((path / META_FILE).read_text())
    (path / META_FILE).write_text(json.dumps(edit(meta)))


def test_meta_of_six_tensors_over_four_columns_and_the_reverse_are_refused(tmp_path: Path) -> None:
    four = write_record(tmp_path / "four", nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 10)))
    six = write_record(tmp_path / "six")  # TinyMLP: 3 layers, 6 tensors
    six_meta, four_meta = (six / META_FILE).read_bytes(), (four / META_FILE).read_bytes()
    (four / META_FILE).write_bytes(six_meta)
    (six / META_FILE).write_bytes(four_meta)
    with pytest.raises(GradscopeError, match=r"describes 6 parameter tensors .* holds 4 x 4"):
        gradscope.load(four)
    with pytest.raises(GradscopeError, match=r"describes 4 parameter tensors .* holds 6 x 4"):
        gradscope.load(six)  # today's silent wrong answer: 4 names over 6 columns


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: {k: v for k, v in m.items() if k != "params"}, "params must be a non-empty list"),
        (lambda m: {**m, "format_version": "2"}, "format_version must be a positive integer, got '2'"),
        (lambda m: {**m, "format_version": True}, "format_version must be a positive integer"),
        (lambda m: {**m, "params": [{**m["params"][0], "numel": "many"}, *m["params"][1:]]},
         r"params\[0\].numel must be a non-negative integer"),
        (lambda m: {**m, "params": [*m["params"], m["params"][0]]}, "listed twice"),
        (lambda m: {**m, "params": ["fc1.weight"]}, r"params\[0\] must be an object"),
        (lambda m: {**m, "stats": ["l2"]}, "stats must be"),
        (lambda m: {**m, "every": 0}, "every must be a positive integer"),
        (lambda m: {**m, "tags": []}, "tags must be a JSON object"),
        (lambda m: {**m, "written": {"bytes": "x"}}, "written must be"),
        (lambda m: [m], "not gradscope record metadata"),
    ],
)
def test_every_key_of_meta_is_checked_with_one_line(pristine: Path, tmp_path: Path, edit, message: str) -> None:
    path = copy_record(pristine, tmp_path / "rec")
    edit_meta(path, edit)
    with pytest.raises(GradscopeError, match=message) as caught:
        gradscope.load(path)
    assert "\n" not in str(caught.value)


def test_frames_file_that_is_a_folder_is_one_line(pristine: Path, tmp_path: Path) -> None:
    path = copy_record(pristine, tmp_path / "rec")
    (path / FRAMES_FILE).unlink()
    (path / FRAMES_FILE).mkdir()
    with pytest.raises(GradscopeError, match="grads.gsr is not a file"):
        gradscope.load(path)


# -- damage at random places: only GradscopeError, every intact frame kept, the rest named ------------------

def test_truncation_at_20_random_offsets_keeps_every_whole_frame_and_names_the_loss(pristine: Path,
                                                                                     tmp_path: Path) -> None:
    spans, size = frame_spans(pristine), (pristine / FRAMES_FILE).stat().st_size
    rng = np.random.default_rng(9)
    offsets = sorted(set(rng.integers(0, size, 18).tolist()) | {spans[3][0], 0})  # two on a frame boundary
    for k, cut in enumerate(offsets):
        path = copy_record(pristine, tmp_path / f"cut{k}")
        with open(path / FRAMES_FILE, "r+b") as f:
            f.truncate(cut)
        record = load_quietly(path)
        whole = [step for start, end, steps in spans if end <= cut for step in steps]
        assert record.steps.tolist() == whole, cut
        assert len(record.problems) == 1 and "cut off after the record was closed" in record.problems[0], cut
        assert f"{STEPS - len(whole)} of its {STEPS} steps missing" in record.problems[0]
        record.matrix("stage", "l2"), record.window_mean("layer", "mean_abs")  # readable to the end


def test_20_random_byte_flips_skip_only_the_frame_they_hit_and_name_it(pristine: Path, tmp_path: Path) -> None:
    spans, size = frame_spans(pristine), (pristine / FRAMES_FILE).stat().st_size
    full = load_quietly(pristine).matrix("param", "mean_abs").values
    rng = np.random.default_rng(3)
    for k, at in enumerate(rng.integers(0, size, 20).tolist()):
        path = copy_record(pristine, tmp_path / f"flip{k}")
        data = bytearray((path / FRAMES_FILE).read_bytes())
        data[at] ^= 1 << int(rng.integers(0, 8))
        (path / FRAMES_FILE).write_bytes(bytes(data))
        try:
            record = load_quietly(path)
        except GradscopeError:
            continue  # allowed, though a flip is always found by a checksum here
        hit = next(i for i, (start, end, _) in enumerate(spans) if start <= at < end)
        intact = [step for i, (_, _, steps) in enumerate(spans) if i != hit for step in steps]
        assert record.steps.tolist() == intact, at
        assert len(record.problems) == 1, record.problems
        start, end, steps = spans[hit]
        in_header = at < start + HEADER_BYTES
        if in_header:  # the steps are named by their neighbours
            after = f"between steps {steps[0] - 1} and {steps[-1] + 1}" if 0 < hit < len(spans) - 1 else (
                f"before step {steps[-1] + 1}" if hit == 0 else f"after step {steps[0] - 1}")
            assert record.problems[0].startswith(f"bytes {start}-{end}: unreadable frame header"), record.problems
            assert f"(the steps {after})" in record.problems[0], record.problems
        else:
            assert f"steps {steps[0]}-{steps[-1]} (bytes {start}-{end}): checksum" in record.problems[0]
        np.testing.assert_array_equal(record.matrix("param", "mean_abs").values, full[intact])


def test_truncated_open_record_is_quiet_and_extra_bytes_after_close_are_named(pristine: Path, tmp_path: Path) -> None:
    path = copy_record(pristine, tmp_path / "open")
    edit_meta(path, lambda m: {k: v for k, v in m.items() if k not in ("closed_at", "written")})
    with open(path / FRAMES_FILE, "r+b") as f:
        f.truncate(frame_spans(pristine)[2][1] + 7)  # a frame being written
    assert load_quietly(path).problems == [] and len(load_quietly(path)) == 6
    extra = copy_record(pristine, tmp_path / "extra")
    with open(extra / FRAMES_FILE, "ab") as f:
        f.write(b"\0" * 100)
    problems = load_quietly(extra).problems
    assert any("added after the record was closed" in p for p in problems), problems


# -- one writer -----------------------------------------------------------------------------------------

def test_second_writer_is_refused_naming_the_holder_and_close_frees_the_record(tmp_path: Path) -> None:
    model, path = TinyMLP(), tmp_path / "rec"
    first = gradscope.record(model, path)
    for append in (False, True):
        with pytest.raises(GradscopeError, match=r"record folder .* writer \(pid \d+ on .*, this very process\)"):
            gradscope.record(model, path, append=append)
    model(torch.randn(2, 12)).sum().backward()
    first.close()
    second = gradscope.record(model, path, append=True)  # the lock went with the close
    model(torch.randn(2, 12)).sum().backward()
    second.close()
    assert load_quietly(path).steps.tolist() == [0, 1]


def test_writer_in_another_process_is_named_and_its_lock_dies_with_it(tmp_path: Path) -> None:
    path = tmp_path / "rec"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import TinyMLP
        import gradscope
        recorder = gradscope.record(TinyMLP(), {str(path)!r})
        print("locked", flush=True)
        sys.stdin.read()  # hold the record until killed
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(GradscopeError, match=rf"another writer \(pid {child.pid} on .* since "):
            gradscope.record(TinyMLP(), path, append=True)
    finally:
        child.kill()  # SIGKILL: no close, no atexit
        child.wait(timeout=60)
    assert child.returncode == -9
    assert f"pid {child.pid}" in FolderLock(path, what="record").holder()  # its description remains ...
    gradscope.record(TinyMLP(), path, append=True).close()  # ... but not its lock


def test_folder_lock_is_reusable_for_run_folders(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with FolderLock(run, what="run") as lock:
        assert lock.held and (run / ".run.lock").is_file()
        with pytest.raises(GradscopeError, match="run folder .* another writer"):
            FolderLock(run, what="run").acquire()
        FolderLock(run, what="record").acquire().release()  # another kind of lock in the same folder
    assert not lock.held
    FolderLock(run, what="run").acquire().release()
    (tmp_path / "file").write_text("")
    with pytest.raises(GradscopeError, match="cannot lock run folder"):
        FolderLock(tmp_path / "file" / "run", what="run").acquire()
