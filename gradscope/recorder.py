"""`record()`: per-step gradient statistics of a model, with no host–device sync in the training step.

At each recorded step the recorder computes the four statistics of every gradient with fused
``torch._foreach_norm`` kernels (one launch set per device and dtype), writes them into a
preallocated buffer on the gradients' device, and every ``flush_every`` steps (or ``flush_secs``
seconds) copies the filled rows to pinned host memory without blocking. A background thread waits
for the copy and appends a frame to the record (see `gradscope.store`). The training thread never
waits on the device, so the cost is a few small kernels per step.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union, cast

import numpy as np
import torch
from torch import nn

from ._version import __version__
from .errors import GradscopeError
from .grouping import GroupSpec, clean_name, resolve
from .record import Record
from .sharded import ShardCombiner, fsdp1_parts, is_dtensor, local_part
from .stats import STATS, finish, partial_sums
from .store import (
    FLAG_SKIPPED,
    FORMAT_NAME,
    FORMAT_VERSION,
    FRAMES_FILE,
    META_FILE,
    Chunk,
    FileSink,
    FrameWriter,
    MemorySink,
    read_meta,
    write_json_atomic,
)

ParamFilter = Union[str, Sequence[str], Callable[[str], bool], None]
_open_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


@atexit.register
def _close_open_recorders() -> None:
    for recorder in list(_open_recorders):
        recorder.close()


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (
            model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else None
        )
        if inner is None:
            return model
        model = inner


def _matcher(spec: ParamFilter, what: str) -> Callable[[str], bool] | None:
    if spec is None:
        return None
    if callable(spec):
        return spec
    if not isinstance(spec, (str, Sequence)):
        raise GradscopeError(
            f"{what}: expected a regex, a list of regexes or a predicate over parameter names, got {spec!r}"
        )
    patterns = [spec] if isinstance(spec, str) else list(spec)
    try:
        compiled = [re.compile(p) for p in patterns]
    except (re.error, TypeError) as exc:
        raise GradscopeError(f"{what}: expected regexes over parameter names, got {spec!r} ({exc})") from None
    return lambda name: any(c.search(name) for c in compiled)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small host tensor to ``device`` without blocking the host (pinned, non_blocking)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _home_of(grads: Sequence[torch.Tensor | None]) -> torch.device:
    """The device of the first gradient present (CPU when there is none)."""
    return next((g.device for g in grads if g is not None), torch.device("cpu"))


def _is_rank_zero() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@dataclass
class _DeviceGroup:
    """Gradients that share a device and dtype: one fused statistics call."""

    device: torch.device
    indices: list[int]
    columns: torch.Tensor | None  # buffer columns to scatter into; None when they are all, in order


@dataclass
class _Plan:
    groups: list[_DeviceGroup]
    missing: torch.Tensor | None  # columns of parameters without a gradient this step
    combine: ShardCombiner | None  # sharded gradients: every rank's partials into the full tensors'
    present: torch.Tensor  # 1.0 where this rank has the gradient, 0.0 where not


class Recorder:
    """Records gradient statistics of a model's parameters at every ``every``-th step.

    Create it with `gradscope.record`; use it as a context manager or call `close` (which flushes).
    On ranks other than 0 of a distributed job it is inactive (``active`` is False) and writes
    nothing. With DDP it adds no hooks either, since the averaged gradients are the same on every
    rank; with sharded (DTensor) parameters every rank reduces its shard and joins one collective per
    recorded step (`gradscope.sharded`), so every rank must create its recorder.
    """

    def __init__(
        self,
        model: nn.Module,
        path: str | Path | None = None,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scaler: torch.amp.GradScaler | None = None,
        every: int = 1,
        include: ParamFilter = None,
        exclude: ParamFilter = None,
        groups: GroupSpec = None,
        tags: dict[str, Any] | None = None,
        flush_every: int = 256,
        flush_secs: float = 10.0,
        start_step: int | None = None,
        append: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise GradscopeError(f"record() needs a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise GradscopeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if scaler is not None and optimizer is None:
            raise GradscopeError("scaler= needs optimizer= too: skipped steps are those of that optimizer")
        for name, value in (("every", every), ("flush_every", flush_every)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GradscopeError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(flush_secs, bool) or not isinstance(flush_secs, (int, float)) or not flush_secs > 0:
            raise GradscopeError(f"flush_secs must be a positive number of seconds, got {flush_secs!r}")
        if start_step is not None and (type(start_step) is not int or start_step < 0):
            raise GradscopeError(f"start_step must be None or a non-negative integer, got {start_step!r}")
        if tags is not None and not isinstance(tags, dict):
            raise GradscopeError(f"tags must be a dict of JSON-serialisable values, got {type(tags).__name__}")
        module = unwrap(model)
        keep, drop = _matcher(include, "include"), _matcher(exclude, "exclude")
        named = [
            (n, p) for n, p in module.named_parameters()
            if (keep is None or keep(n)) and (drop is None or not drop(n))
        ]
        if not named:
            some = ", ".join(n for n, _ in list(module.named_parameters())[:5]) or "none"
            raise GradscopeError(f"include/exclude selected no parameter (the model's first names: {some})")
        self.names = [clean_name(n) for n, _ in named]
        self._params = [p for _, p in named]
        split = fsdp1_parts(module)  # FSDP1 (use_orig_params=True): full shapes, ranks holding the slices
        self._shapes = [split[id(p)][0] if id(p) in split else p.shape for p in self._params]
        self._split_over = [split[id(p)][1] if id(p) in split else None for p in self._params]
        self.every, self.flush_every, self.flush_secs = every, flush_every, flush_secs
        self.meta = self._describe(module, resolve(module, self.names, groups), optimizer, tags or {})
        self.active = _is_rank_zero()
        self.sharded = bool(split) or any(is_dtensor(p) for p in self._params)
        self.path = Path(path) if path is not None and self.active else None
        self.closed = not (self.active or self.sharded)
        self._handles: list[Any] = []
        self._scaler, self._optimizer = scaler, optimizer
        if self.closed:
            return

        self._start_step = self._open_folder(append, start_step) if self.path else (start_step or 0)
        self._next_step = self._start_step
        self._sink = FileSink(self.path / FRAMES_FILE) if self.path else MemorySink()
        self._writer = FrameWriter(self._sink)
        n = len(self._params)
        self._buffer: torch.Tensor | None = None  # (flush_every, n_stats, n_params), on first use
        self._steps = np.zeros(flush_every, np.int64)
        self._times = np.zeros(flush_every, np.float64)
        self._flags = np.zeros(flush_every, np.uint8)
        self._filled = 0
        self._last_flush = time.monotonic()
        self._copy_done: torch.cuda.Event | None = None
        self._plans: dict[tuple[bool, ...], _Plan] = {}
        self._numel = torch.tensor([math.prod(s) for s in self._shapes], dtype=torch.float32)  # whole tensors
        self._inv_numel: torch.Tensor | None = None  # on the buffer's device, on first use
        self._stepped = False
        self._queued_tasks: set[int] = set()
        self.n_params = n
        self._attach(optimizer, scaler)
        _open_recorders.add(self)

    # -- setup ------------------------------------------------------------------------------------
    def _describe(self, module: nn.Module, groups: list, optimizer: Any, tags: dict[str, Any]) -> dict[str, Any]:
        params = [
            {
                "name": name, "shape": list(shape), "numel": math.prod(shape),
                "dtype": str(p.dtype).removeprefix("torch."), "requires_grad": p.requires_grad,
                "layer": g.layer, "block": g.block, "stage": g.stage,
            }
            for name, p, shape, g in zip(self.names, self._params, self._shapes, groups)
        ]
        meta = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": type(module).__name__, "stats": list(STATS), "params": params,
            "trigger": "optimizer.step" if optimizer is not None else "backward", "every": self.every,
            "tags": tags,
            "versions": {"gradscope": __version__, "torch": torch.__version__, "python": sys.version.split()[0]},
        }
        try:
            import json

            json.dumps(tags)
        except (TypeError, ValueError) as exc:
            raise GradscopeError(f"tags must be JSON-serialisable (str, numbers, lists, dicts): {exc}") from None
        return meta

    def _open_folder(self, append: bool, start_step: int | None) -> int:
        """Create the record folder, or check an existing one and continue it; returns the first step."""
        from .lock import FolderLock

        assert self.path is not None
        if self.path.exists() and not self.path.is_dir():
            raise GradscopeError(f"record path {self.path} is a file; give a folder")
        self._folder_lock = FolderLock(self.path, what="record").acquire()  # one writer; dies with the process
        try:
            return self._continue_or_create(append, start_step)
        except BaseException:
            self._folder_lock.release()
            raise

    def _continue_or_create(self, append: bool, start_step: int | None) -> int:
        """The part of `_open_folder` that runs under the folder's lock."""
        assert self.path is not None
        if (self.path / META_FILE).exists():
            old = read_meta(self.path)
            mismatch = _model_mismatch(old["params"], self.meta["params"])
            if mismatch:
                raise GradscopeError(f"{self.path} holds the record of a different model ({old['model']}): {mismatch}")
            if not append:
                raise GradscopeError(
                    f"{self.path} already holds a record of this model; pass append=True to continue it "
                    "or choose another path"
                )
            existing = Record(old, folder=self.path)
            steps = existing.steps
            frames = self.path / FRAMES_FILE
            if frames.exists() and frames.stat().st_size > existing.complete_bytes:
                # A writer killed mid-frame left a partial frame: drop it, or it would swallow ours.
                os.truncate(frames, existing.complete_bytes)
            first = start_step if start_step is not None else (int(steps[-1]) + 1 if len(steps) else 0)
            old.pop("closed_at", None)
            old.pop("written", None)  # known again at the next close
            old["tags"] = {**old.get("tags", {}), **self.meta["tags"]}  # a resumed run may add facts
            old["resumed_at"] = [*old.get("resumed_at", []), {"at": self.meta["created_at"], "step": first}]
            self.meta = old
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            first = start_step or 0
        write_json_atomic(self.path / META_FILE, self.meta)
        return first

    def _attach(self, optimizer: torch.optim.Optimizer | None, scaler: Any) -> None:
        if optimizer is not None:
            self._handles.append(optimizer.register_step_pre_hook(self._on_optimizer_step))
            if scaler is not None:
                self._wrap_scaler_step(scaler)
        else:
            for p in self._params:
                if p.requires_grad:
                    self._handles.append(p.register_post_accumulate_grad_hook(self._on_grad_accumulated))

    def _wrap_scaler_step(self, scaler: Any) -> None:
        """Record a step the GradScaler skips (it never calls optimizer.step then), marked skipped."""
        original = scaler.step

        def step(optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
            self._stepped = False
            result = original(optimizer, *args, **kwargs)
            if optimizer is self._optimizer and not self._stepped and not self.closed:
                self._on_step(skipped=True)
            return result

        scaler.step = step

    # -- hooks (the hot path) -----------------------------------------------------------------------
    def _on_optimizer_step(self, optimizer: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict] | None:
        self._stepped = True
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)  # args[0] is the optimizer
        if closure is None:
            self._on_step(skipped=False)
            return None
        # step(closure) runs backward (and, in Lightning, clipping) inside the closure, after this
        # hook: record once the first call of it returns, when the gradients are what the step uses.
        pending = [True]

        def closure_then_record() -> Any:
            loss = closure()
            if pending:
                pending.clear()
                self._on_step(skipped=False)
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_then_record}
        return (args[0], closure_then_record, *args[2:]), kwargs

    def _on_grad_accumulated(self, param: torch.Tensor) -> None:
        # Keyed by graph task, so a backward pass that raised (its callback never ran) cannot block
        # the next one, and a reentrant inner pass (checkpointing) gets its own callback.
        task = torch._C._current_graph_task_id()
        if task not in self._queued_tasks:
            self._queued_tasks.add(task)
            torch.autograd.Variable._execution_engine.queue_callback(self._after_backward)

    def _after_backward(self) -> None:
        # Queue once more so that callbacks queued during backward (DDP's gradient averaging) run first.
        torch.autograd.Variable._execution_engine.queue_callback(self._on_backward_end)

    def _on_backward_end(self) -> None:
        if torch._C._current_autograd_node() is not None:
            # The end of a reentrant pass nested in an outer one (use_reentrant=True checkpointing):
            # the outer pass records once its gradients are complete too.
            self._queued_tasks.discard(torch._C._current_graph_task_id())
            return
        self._queued_tasks.clear()
        self._on_step(skipped=False)

    def _on_step(self, skipped: bool) -> None:
        step = self._next_step
        self._next_step += 1
        if step % self.every == 0:  # multiples of every: a resumed run records the steps it would have
            self._record(step, skipped)

    @torch.no_grad()
    def _record(self, step: int, skipped: bool) -> None:
        grads = [p.grad for p in self._params]
        plan = self._plan(grads)
        if self.sharded:
            grads = [None if g is None else local_part(g) for g in grads]
        if self._buffer is None:
            device = plan.groups[0].device if plan.groups else torch.device("cpu")
            self._buffer = torch.empty(self.flush_every, len(STATS), self.n_params, device=device)
            self._inv_numel = _to_device(1.0 / self._numel, device)
        if self._copy_done is not None:  # the last flush's copy must read the buffer before we overwrite it
            torch.cuda.current_stream(self._buffer.device).wait_event(self._copy_done)
            self._copy_done = None
        row = self._buffer[self._filled]
        if plan.missing is not None:
            row.zero_()  # a rank without a gradient its peers have adds nothing to the combined sums
        for group in plan.groups:
            values = partial_sums(cast(list[torch.Tensor], [grads[i] for i in group.indices]))
            if group.device != row.device:
                values = values.to(row.device, non_blocking=True)
            if group.columns is None:
                row.copy_(values)
            else:
                row.index_copy_(1, group.columns, values)
        if plan.combine is not None:
            combined, present = plan.combine(row, plan.present)
            if not self.active:
                return
            finish(row.copy_(combined), cast(torch.Tensor, self._inv_numel))
            row.masked_fill_(~present, math.nan)  # no rank had this gradient
        else:
            finish(row, cast(torch.Tensor, self._inv_numel))
            if plan.missing is not None:
                row.index_fill_(1, plan.missing, math.nan)
        i = self._filled
        self._steps[i], self._times[i], self._flags[i] = step, time.time(), FLAG_SKIPPED if skipped else 0
        self._filled += 1
        if self._filled == self.flush_every or time.monotonic() - self._last_flush >= self.flush_secs:
            self._flush_buffer()

    def _plan(self, grads: list[torch.Tensor | None]) -> _Plan:
        """How to compute this step's statistics; cached per pattern of which gradients exist."""
        key = tuple(g is None for g in grads)
        plan = self._plans.get(key)
        first = next((g for g in grads if g is not None), None)
        if plan is None or (plan.groups and first is not None and first.device != plan.groups[0].device):
            plan = self._plans[key] = self._make_plan(grads)
        return plan

    def _make_plan(self, grads: list[torch.Tensor | None]) -> _Plan:
        by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        combine = None
        if self.sharded:
            placed = [p if g is None else g for g, p in zip(grads, self._params)]
            combine = ShardCombiner(placed, self._split_over, self._buffer.device if self._buffer is not None
                                    else _home_of(grads))
        for i, g in enumerate(grads):
            if g is not None:
                if g.is_sparse:
                    raise GradscopeError(f"parameter {self.names[i]!r} has a sparse gradient; exclude it")
                by_kind.setdefault((g.device, g.dtype), []).append(i)
        home = next(iter(by_kind))[0] if by_kind else torch.device("cpu")
        if self._buffer is not None:
            home = self._buffer.device
        groups = []
        for (device, _), indices in by_kind.items():
            everything = indices == list(range(self.n_params))
            columns = None if everything else _to_device(torch.tensor(indices), home)
            groups.append(_DeviceGroup(device, indices, columns))
        absent = [i for i, g in enumerate(grads) if g is None]
        present = _to_device(torch.tensor([g is not None for g in grads], dtype=torch.float32), home)
        return _Plan(groups, _to_device(torch.tensor(absent), home) if absent else None, combine, present)

    def _flush_buffer(self) -> None:
        n, self._filled = self._filled, 0
        self._last_flush = time.monotonic()
        if n == 0 or self._buffer is None:
            return
        steps, times, flags = self._steps[:n].copy(), self._times[:n].copy(), self._flags[:n].copy()
        if self._buffer.is_cuda:
            host = torch.empty((n, *self._buffer.shape[1:]), pin_memory=True)
            host.copy_(self._buffer[:n], non_blocking=True)
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(self._buffer.device))
            self._copy_done = done
            self._writer.submit(Chunk(steps, times, flags, host.numpy().transpose(1, 0, 2)), ready=done.synchronize)
        else:
            self._writer.submit(Chunk(steps, times, flags, self._buffer[:n].numpy().transpose(1, 0, 2).copy()))

    # -- public --------------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        """The number the next recorded step will get."""
        return self._next_step if self.active else 0

    def flush(self) -> None:
        """Write every recorded step to the record now (blocks until it is written)."""
        if self.closed:
            return
        self._flush_buffer()
        self._writer.drain()

    def close(self) -> None:
        """Flush, stop the writer and remove every hook. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        _open_recorders.discard(self)
        for handle in self._handles:
            handle.remove()
        if self._scaler is not None:
            self._scaler.__dict__.pop("step", None)
        try:
            try:
                self._flush_buffer()
                self._writer.close()
            finally:
                self._sink.close()
            if self.path is not None:
                from .store import written_extent

                self.meta["closed_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                self.meta["written"] = written_extent(self.path / FRAMES_FILE)  # so a later truncation shows
                write_json_atomic(self.path / META_FILE, self.meta)
        finally:
            if self.path is not None:
                self._folder_lock.release()

    def load(self) -> Record:
        """The record so far (flushes first), without closing the recorder."""
        if not self.active:
            raise GradscopeError("this recorder is inactive (a distributed rank other than 0) and holds no record")
        if not self.closed:
            self.flush()
        if self.path is not None:
            return Record(read_meta(self.path), folder=self.path)
        assert isinstance(self._sink, MemorySink)
        return Record(self.meta, data=bytes(self._sink.data))

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.path or "memory"
        state = "closed" if self.closed else f"next step {self.step}"
        return f"Recorder({len(self.names)} parameters -> {where}, every={self.every}, {state})"


def _model_mismatch(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> str:
    """'' when both parameter lists describe the same model, in the same order, else the first difference.

    The order matters: the columns of the stored frames follow the recorded parameter order.
    """
    old_shapes = {p["name"]: p["shape"] for p in old}
    new_shapes = {p["name"]: p["shape"] for p in new}
    for name, shape in new_shapes.items():
        if name not in old_shapes:
            return f"parameter {name!r} is not in the recorded model"
        if old_shapes[name] != shape:
            return f"parameter {name!r} has shape {old_shapes[name]} there and {shape} here"
    extra = [n for n in old_shapes if n not in new_shapes]
    if extra:
        return f"the recorded model also has {extra[0]!r}"
    for i, (before, now) in enumerate(zip(old, new)):
        if before["name"] != now["name"]:
            return f"parameter {i} is {before['name']!r} there and {now['name']!r} here (another order)"
    return ""


def record(
    model: nn.Module,
    path: str | Path | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    every: int = 1,
    include: ParamFilter = None,
    exclude: ParamFilter = None,
    groups: GroupSpec = None,
    tags: dict[str, Any] | None = None,
    flush_every: int = 256,
    flush_secs: float = 10.0,
    start_step: int | None = None,
    append: bool = False,
) -> Recorder:
    """Start recording per-parameter gradient statistics of ``model``.

    With ``optimizer`` the statistics are taken just before each ``optimizer.step()``, when the
    gradients are final: accumulated, clipped, unscaled by AMP's GradScaler, averaged by DDP (with
    ``optimizer.step(closure)``, once the closure has run). Without one, once at the end of every
    backward pass: the raw gradient, before any clipping. Nothing in the training loop has to change.
    Sharded (DTensor) models must create a recorder on every rank; rank 0 writes.

    Args:
        model: the model; DDP, DataParallel and torch.compile wrappers are looked through.
        path: folder for the record (created); ``None`` keeps it in memory (`Recorder.load`).
        optimizer: record at this optimizer's steps (recommended).
        scaler: the GradScaler stepping ``optimizer``, so that steps it skips are recorded and marked.
        every: record the steps whose number is a multiple of n (others cost nothing), so a record
            continued with ``start_step`` keeps the steps of an uninterrupted one.
        include: regex (or list of them, or a predicate) a parameter name must match to be recorded.
        exclude: regex (or list, or predicate) for names to leave out.
        groups: block/stage mapping for models the automatic rules do not fit (`grouping.resolve`).
        tags: JSON-serialisable facts about the run, stored in the metadata.
        flush_every: steps held on the device between writes.
        flush_secs: write at least this often, so a live record stays fresh.
        start_step: number of the first recorded step (default 0, or the next one when appending).
        append: continue the record already at ``path`` (same model only), e.g. after a resume.
    """
    return Recorder(
        model, path, optimizer=optimizer, scaler=scaler, every=every, include=include, exclude=exclude,
        groups=groups, tags=tags, flush_every=flush_every, flush_secs=flush_secs, start_step=start_step,
        append=append,
    )
