"""The run-record format: ``meta.json`` plus an append-only file of CRC-checked frames.

A record is a folder::

    meta.json    what was recorded: parameters, groups, statistics, versions, tags (written atomically)
    grads.gsr    frames appended by a background thread, one per flush

Each frame is a 48-byte header followed by its payload (all little-endian)::

    header   magic b"GSF1" | n_steps u32 | n_params u32 | n_stats u16 | reserved u16
             | first_step i64 | last_step i64 | payload_bytes u64 | payload_crc32 u32 | header_crc32 u32
    payload  steps i64[n] | times f64[n] | flags u8[n] (zero-padded to 8 bytes) | values f32[n_stats, n, n_params]

A reader stops at an incomplete last frame (a write in progress, or a process killed mid-write) and
skips a frame whose checksum fails, naming its steps and bytes; so a record stays readable while it
is written and after any crash, holding every frame that reached the file. See docs/format.md.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

META_FILE = "meta.json"
FRAMES_FILE = "grads.gsr"
FORMAT_NAME = "gradscope-record"
FORMAT_VERSION = 1
MAGIC = b"GSF1"
_HEAD = struct.Struct("<4sIIHHqqQI")
HEADER_BYTES = _HEAD.size + 4
FLAG_SKIPPED = 1  # the optimizer step was skipped (AMP GradScaler found inf/NaN)


@dataclass
class Chunk:
    """Consecutive recorded steps, as they travel from the recorder to the file."""

    steps: np.ndarray  # (n,) int64
    times: np.ndarray  # (n,) float64, seconds since the epoch
    flags: np.ndarray  # (n,) uint8, FLAG_* bits
    values: np.ndarray  # (n_stats, n, n_params) float32


def _pad8(n: int) -> int:
    return -n % 8


def encode_frame(chunk: Chunk) -> bytes:
    """Serialise one chunk as a frame."""
    n_stats, n, n_params = chunk.values.shape
    payload = b"".join(
        (
            np.ascontiguousarray(chunk.steps, dtype="<i8").tobytes(),
            np.ascontiguousarray(chunk.times, dtype="<f8").tobytes(),
            np.ascontiguousarray(chunk.flags, dtype="u1").tobytes(),
            bytes(_pad8(n)),
            np.ascontiguousarray(chunk.values, dtype="<f4").tobytes(),
        )
    )
    head = _HEAD.pack(
        MAGIC, n, n_params, n_stats, 0, int(chunk.steps[0]), int(chunk.steps[-1]),
        len(payload), zlib.crc32(payload),
    )
    return head + struct.pack("<I", zlib.crc32(head)) + payload


@dataclass(frozen=True)
class FrameInfo:
    """Where one intact frame lies in the frames file, and its small per-step columns.

    The values stay on disk: a reader fetches one statistic of a frame with `values_at` and
    ``n * n_params`` float32 from there, without touching the other statistics.
    """

    start: int  # offset of the header
    n: int
    n_params: int
    n_stats: int
    steps: np.ndarray  # (n,) int64
    times: np.ndarray  # (n,) float64
    flags: np.ndarray  # (n,) uint8

    @property
    def end(self) -> int:
        """Offset just after the frame."""
        return self.start + HEADER_BYTES + payload_bytes(self.n, self.n_params, self.n_stats)

    def values_at(self, stat: int) -> int:
        """File offset of statistic ``stat``'s ``(n, n_params)`` float32 block."""
        n = self.n
        return self.start + HEADER_BYTES + 17 * n + _pad8(n) + 4 * stat * n * self.n_params


def payload_bytes(n: int, n_params: int, n_stats: int) -> int:
    """The payload length a frame of these dimensions must have."""
    return 17 * n + _pad8(n) + 4 * n_stats * n * n_params


@dataclass
class FrameScan:
    """What `scan_frames` (or `decode_frames`) found in a byte range."""

    chunks: list[Chunk] = field(default_factory=list)  # filled by `decode_frames` only
    frames: list[FrameInfo] = field(default_factory=list)
    end: int = 0  # offset after the last complete frame: where the next read resumes
    problems: list[str] = field(default_factory=list)


Reader = Callable[[int, int], bytes]  # (offset, size) -> at most size bytes from offset


def scan_frames(read: Reader, size: int, start: int = 0, check: bool = True) -> FrameScan:
    """Find every complete frame from ``start`` to ``size``; skip and name corrupt ones.

    ``read`` gives bytes of the frames file (or of a buffer). Headers are always checked; payloads
    against their CRC when ``check`` (a reader that trusts an index it built earlier passes False).
    A frame whose length does not fit its own dimensions is corrupt; an incomplete last frame (a
    write in progress, or a writer killed mid-write) ends the scan at its start.
    """
    scan = FrameScan(end=start)
    pos = start
    unplaced: list[int] = []  # problems still waiting for the step the next intact frame starts at
    before: int | None = None  # last step of the previous intact frame
    while size - pos >= HEADER_BYTES:
        head = read(pos, HEADER_BYTES)
        ok = len(head) == HEADER_BYTES and head[:4] == MAGIC \
            and zlib.crc32(head[:_HEAD.size]) == struct.unpack_from("<I", head, _HEAD.size)[0]
        if ok:
            _, n, n_params, n_stats, _, first, last, nbytes, payload_crc = _HEAD.unpack_from(head)
            ok = n > 0 and nbytes == payload_bytes(n, n_params, n_stats)
        if not ok:
            resume = _find_magic(read, size, pos + 1)
            unplaced.append(len(scan.problems))
            scan.problems.append(f"bytes {pos}-{resume}: unreadable frame header; skipped")
            pos = scan.end = resume
            continue
        body = pos + HEADER_BYTES
        if size - body < nbytes:
            break  # incomplete last frame: still being written, or the writer died mid-write
        columns = read(body, 17 * n) if not check else read(body, nbytes)
        if check and zlib.crc32(columns) != payload_crc:
            scan.problems.append(
                f"steps {first}-{last} (bytes {pos}-{body + nbytes}): checksum mismatch; skipped"
            )
        else:
            for i in unplaced:
                where = f"between steps {before} and {first}" if before is not None else f"before step {first}"
                scan.problems[i] += f" (the steps {where})"
            unplaced, before = [], last
            scan.frames.append(FrameInfo(
                pos, n, n_params, n_stats, np.frombuffer(columns, "<i8", n, 0).astype(np.int64),
                np.frombuffer(columns, "<f8", n, 8 * n).astype(np.float64),
                np.frombuffer(columns, "u1", n, 16 * n).copy(),
            ))
        pos = scan.end = body + nbytes
    for i in unplaced:
        scan.problems[i] += f" (the steps after {before})" if before is not None else ""
    return scan


def _find_magic(read: Reader, size: int, pos: int, block: int = 1 << 20) -> int:
    """Offset of the next ``GSF1`` at or after ``pos`` (``size`` if none): where a reader resyncs."""
    while pos < size:
        chunk = read(pos, block + len(MAGIC) - 1)
        hit = chunk.find(MAGIC)
        if hit >= 0:
            return pos + hit
        pos += block
    return size


def buffer_reader(buf: bytes | memoryview) -> Reader:
    """A `Reader` over bytes in memory."""
    view = memoryview(buf)
    return lambda offset, size: bytes(view[offset:offset + size])


def file_reader(fd: int) -> Reader:
    """A `Reader` over an open file (positioned reads: safe to share between threads)."""
    return lambda offset, size: os.pread(fd, size, offset)


def decode_frames(buf: bytes | memoryview, start: int = 0) -> FrameScan:
    """Decode every complete frame of ``buf`` from ``start``; skip and name corrupt ones."""
    scan = scan_frames(buffer_reader(buf), len(buf), start)
    for f in scan.frames:
        body = f.start + HEADER_BYTES
        scan.chunks.append(_unpack_payload(buf[body:f.end], f.n, f.n_params, f.n_stats))
    return scan


def _unpack_payload(payload: bytes | memoryview, n: int, n_params: int, n_stats: int) -> Chunk:
    steps = np.frombuffer(payload, "<i8", n, 0)
    times = np.frombuffer(payload, "<f8", n, 8 * n)
    flags = np.frombuffer(payload, "u1", n, 16 * n)
    values_at = 16 * n + n + _pad8(n)
    values = np.frombuffer(payload, "<f4", n_stats * n * n_params, values_at)
    return Chunk(steps, times, flags, values.reshape(n_stats, n, n_params))


def written_extent(path: Path) -> dict[str, int]:
    """``{"bytes", "frames", "steps"}`` of a frames file, from its headers alone (no payload is read).

    The recorder stores this in ``meta.json`` when it closes, so a reader can tell a complete record
    from one that lost its end afterwards.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return {"bytes": 0, "frames": 0, "steps": 0}
    try:
        size = os.fstat(fd).st_size
        frames = steps = pos = 0
        while size - pos >= HEADER_BYTES:
            head = os.pread(fd, HEADER_BYTES, pos)
            if head[:4] != MAGIC or zlib.crc32(head[:_HEAD.size]) != struct.unpack_from("<I", head, _HEAD.size)[0]:
                break
            n, nbytes = _HEAD.unpack_from(head)[1], _HEAD.unpack_from(head)[7]
            if size - pos - HEADER_BYTES < nbytes:
                break
            frames, steps, pos = frames + 1, steps + n, pos + HEADER_BYTES + nbytes
        return {"bytes": size, "frames": frames, "steps": steps}
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_meta(folder: Path) -> dict[str, Any]:
    """Read a record's metadata and check every key a reader uses (`check_meta`)."""
    from .errors import GradscopeError

    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise GradscopeError(f"{folder} is not a gradscope record: it has no {META_FILE}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise GradscopeError(f"{meta_path} is unreadable: {exc}") from None
    return check_meta(meta, meta_path)


def _is_int(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _kind(value: Any) -> str:
    return type(value).__name__ if not isinstance(value, (str, int, float)) else repr(value)[:40]


# Optional top-level keys and the check each must pass when present (the required ones are checked in code).
_OPTIONAL_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "created_at": (lambda v: isinstance(v, str), "an ISO time string"),
    "closed_at": (lambda v: isinstance(v, str), "an ISO time string"),
    "resumed_at": (lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "a list of {at, step}"),
    "model": (lambda v: isinstance(v, str), "a class name"),
    "trigger": (lambda v: isinstance(v, str), '"optimizer.step" or "backward"'),
    "every": (lambda v: _is_int(v, 1), "a positive integer"),
    "tags": (lambda v: isinstance(v, dict), "a JSON object"),
    "versions": (lambda v: isinstance(v, dict), "a JSON object"),
    "written": (
        lambda v: isinstance(v, dict) and all(_is_int(v.get(k)) for k in ("bytes", "frames", "steps")),
        "{bytes, frames, steps} as non-negative integers",
    ),
}
_PARAM_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "numel": (_is_int, "a non-negative integer"),
    "shape": (lambda v: isinstance(v, list) and all(_is_int(x) for x in v), "a list of non-negative integers"),
    "layer": (lambda v: isinstance(v, str), "a string"),
    "block": (lambda v: isinstance(v, str), "a string"),
    "stage": (lambda v: isinstance(v, str), "a string"),
}


def check_meta(meta: Any, where: Path | str = META_FILE) -> dict[str, Any]:
    """``meta`` if it is record metadata this gradscope reads, else a one-line `GradscopeError`.

    Every key a reader relies on is checked for presence and type, so a damaged or hand-edited
    ``meta.json`` is named here instead of failing later as a KeyError or a wrong number.
    """
    from .errors import GradscopeError
    from .stats import STATS

    def bad(message: str) -> GradscopeError:
        return GradscopeError(f"{where}: {message}")

    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise bad(f"not gradscope record metadata (expected a JSON object with \"format\": \"{FORMAT_NAME}\")")
    version = meta.get("format_version")
    if not isinstance(version, int) or not _is_int(version, 1):
        raise bad(f"format_version must be a positive integer, got {_kind(version)}")
    if version > FORMAT_VERSION:
        raise bad(f"format version {version}; this gradscope reads up to {FORMAT_VERSION}: upgrade gradscope")
    if meta.get("stats") != list(STATS):
        got = _kind(meta.get("stats"))
        raise bad(f"stats must be {list(STATS)} (the order of the statistics in the frames), got {got}")
    params = meta.get("params")
    if not isinstance(params, list) or not params:
        raise bad(f"params must be a non-empty list of parameter entries, got {_kind(params)}")
    for i, param in enumerate(params):
        if not isinstance(param, dict):
            raise bad(f"params[{i}] must be an object, got {_kind(param)}")
        for key, (ok, wanted) in _PARAM_KEYS.items():
            if not ok(param.get(key)):
                raise bad(f"params[{i}].{key} must be {wanted}, got {_kind(param.get(key))}")
    names = [p["name"] for p in params]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise bad(f"parameter {twice!r} is listed twice in params")
    for key, (ok, wanted) in _OPTIONAL_KEYS.items():
        if key in meta and not ok(meta[key]):
            raise bad(f"{key} must be {wanted}, got {_kind(meta[key])}")
    return meta


class FrameWriter:
    """A background thread that encodes chunks and hands the bytes to a sink (file or memory).

    Disk I/O and encoding never run on the training thread. An error in the thread is kept and
    raised on the training thread at the next `submit` or `close`, so no failure passes silently.
    """

    def __init__(self, sink: Callable[[bytes], None], name: str = "gradscope-writer") -> None:
        self._sink = sink
        self._queue: queue.Queue[tuple[Chunk, Callable[[], None]] | None] = queue.Queue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, chunk: Chunk, ready: Callable[[], None] = lambda: None) -> None:
        """Queue ``chunk``; ``ready()`` runs on the writer thread before the chunk is read."""
        self.raise_if_failed()
        self._queue.put((chunk, ready))

    def drain(self) -> None:
        """Block until every submitted chunk has reached the sink."""
        self._queue.join()
        self.raise_if_failed()

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        """Re-raise, on the caller's thread, an error the writer thread met."""
        if self.error is not None:
            from .errors import GradscopeError

            raise GradscopeError(f"gradscope could not write its record: {self.error}") from self.error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                chunk, ready = item
                if self.error is None:
                    ready()
                    self._sink(encode_frame(chunk))
            except BaseException as exc:  # kept and re-raised on the training thread
                self.error = exc
            finally:
                self._queue.task_done()


class FileSink:
    """Appends frames to ``grads.gsr``; each frame goes out in one write and is flushed at once."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __call__(self, frame: bytes) -> None:
        """Append one frame (looping over short writes)."""
        view = memoryview(frame)
        while view:
            view = view[os.write(self._fd, view):]

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


class MemorySink:
    """Keeps frames in memory, for a recorder without a path."""

    def __init__(self) -> None:
        self.data = bytearray()

    def __call__(self, frame: bytes) -> None:
        """Keep one frame."""
        self.data += frame

    def close(self) -> None:
        """Nothing to release."""
