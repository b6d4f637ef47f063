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


@dataclass
class FrameScan:
    """What `decode_frames` found in a byte range."""

    chunks: list[Chunk] = field(default_factory=list)
    end: int = 0  # offset after the last complete frame: where the next read resumes
    problems: list[str] = field(default_factory=list)


def decode_frames(buf: bytes | memoryview, start: int = 0) -> FrameScan:
    """Decode every complete frame of ``buf`` from ``start``; skip and name corrupt ones."""
    scan = FrameScan(end=start)
    pos, size = start, len(buf)
    while size - pos >= HEADER_BYTES:
        head = bytes(buf[pos:pos + _HEAD.size])
        (crc,) = struct.unpack_from("<I", buf, pos + _HEAD.size)
        if head[:4] != MAGIC or zlib.crc32(head) != crc:
            nxt = bytes(buf[pos + 1:]).find(MAGIC)
            resume = size if nxt < 0 else pos + 1 + nxt
            scan.problems.append(f"bytes {pos}-{resume}: unreadable frame header; skipped")
            pos = scan.end = resume
            continue
        _, n, n_params, n_stats, _, first, last, nbytes, payload_crc = _HEAD.unpack(head)
        body = pos + HEADER_BYTES
        if size - body < nbytes:
            break  # incomplete last frame: still being written, or the writer died mid-write
        payload = buf[body:body + nbytes]
        if zlib.crc32(payload) != payload_crc:
            scan.problems.append(
                f"steps {first}-{last} (bytes {pos}-{body + nbytes}): checksum mismatch; skipped"
            )
        else:
            scan.chunks.append(_unpack_payload(payload, n, n_params, n_stats))
        pos = scan.end = body + nbytes
    return scan


def _unpack_payload(payload: bytes | memoryview, n: int, n_params: int, n_stats: int) -> Chunk:
    steps = np.frombuffer(payload, "<i8", n, 0)
    times = np.frombuffer(payload, "<f8", n, 8 * n)
    flags = np.frombuffer(payload, "u1", n, 16 * n)
    values_at = 16 * n + n + _pad8(n)
    values = np.frombuffer(payload, "<f4", n_stats * n * n_params, values_at)
    return Chunk(steps, times, flags, values.reshape(n_stats, n, n_params))


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_meta(folder: Path) -> dict[str, Any]:
    """Read and check a record's metadata."""
    from .errors import GradscopeError

    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise GradscopeError(f"{folder} is not a gradscope record: it has no {META_FILE}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise GradscopeError(f"{meta_path} is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise GradscopeError(f"{meta_path} is not gradscope record metadata")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise GradscopeError(
            f"{folder} has format version {meta['format_version']}; this gradscope reads up to "
            f"{FORMAT_VERSION}: upgrade gradscope"
        )
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
