"""The four gradient statistics: partial sums per tensor on its device, and aggregation to groups.

Per parameter tensor ``g`` with ``n`` elements, at one recorded step:

* ``l2``        = ‖g‖₂
* ``mean_abs``  = Σ|gᵢ| / n
* ``max_abs``   = maxᵢ |gᵢ|
* ``nonfinite`` = 1 if any gᵢ is inf or NaN else 0

They are finished from four *partial sums* of the tensor, which add up over any split of its
elements: Σgᵢ², Σ|gᵢ|, max|gᵢ| and the count of non-finite elements (`PARTIALS`). A tensor sharded
across processes (FSDP, tensor parallel) is reduced shard by shard and the partials combined
(`gradscope.sharded`); a large tensor on a CPU is reduced chunk by chunk the same way.

A parameter without a gradient at that step is stored as NaN in all four; ``nonfinite`` tells the two
kinds of NaN apart (NaN there = no gradient, 1 = a gradient holding inf/NaN).

A group G (layer, block, stage) aggregates the parameters that have a gradient at that step as if
their gradients were one flat tensor: l2 = sqrt(Σ l2²), mean_abs = Σ(mean_absₚ·nₚ) / Σ nₚ,
max_abs = max, nonfinite = max. A group with no gradient at all is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

STATS: tuple[str, ...] = ("l2", "mean_abs", "max_abs", "nonfinite")
L2, MEAN_ABS, MAX_ABS, NONFINITE = range(len(STATS))
PARTIALS: tuple[str, ...] = ("sum_sq", "sum_abs", "max_abs", "n_nonfinite")
SUM_SQ, SUM_ABS = 0, 1  # rows 2 and 3 share MAX_ABS and NONFINITE's index
CPU_CHUNK = 1 << 22  # elements reduced at once on a CPU: 16 MiB of float32 stays in the L3 cache between passes

# One thread: right after backward the gradients come from memory, which one core already saturates, and
# torch's OpenMP workers spin for a while after each parallel op, so a second thread of ours waits for a
# core: measured 2.35 ms alone with one thread against 3.0 ms with two, the naive loop 2.0-2.3 ms
# (benchmarks/recorder_overhead.py, docs/performance.md). Cache-warm gradients would gain from two.
CPU_KERNEL_THREADS = 1

PartialsFn = Callable[[list[torch.Tensor]], torch.Tensor]


def _foreach_norm32(grads: list[torch.Tensor], order: float) -> list[torch.Tensor]:
    """``torch._foreach_norm`` in float32; float64 gradients in float64, then cast.

    ``_foreach_norm`` refuses to narrow float64 to a float32 accumulator.
    """
    if grads[0].dtype == torch.float64:
        return [n.float() for n in torch._foreach_norm(grads, order)]
    return list(torch._foreach_norm(grads, order, dtype=torch.float32))


def fused_partials(grads: list[torch.Tensor]) -> torch.Tensor:
    """Partials from three ``torch._foreach_norm`` calls (orders 2, 1, ∞): a few multi-tensor GPU kernels.

    Returns a ``(4, len(grads))`` float32 tensor on the gradients' device; nothing is read back.
    """
    device = grads[0].device
    out = torch.empty(len(PARTIALS), len(grads), dtype=torch.float32, device=device)
    norms = [n for order in (2, 1, math.inf) for n in _foreach_norm32(grads, order)]
    torch.stack(norms, out=out[:3].view(-1))
    out[SUM_SQ].square_()
    torch.logical_not(torch.isfinite(out[MAX_ABS]), out=out[NONFINITE])
    return out


_scratch: dict[torch.dtype, torch.Tensor] = {}


def _cpu_scratch(dtype: torch.dtype) -> torch.Tensor:
    """A reused buffer of `CPU_CHUNK` elements: fresh large buffers would cost page faults every step."""
    buffer = _scratch.get(dtype)
    if buffer is None:
        buffer = _scratch[dtype] = torch.empty(CPU_CHUNK, dtype=dtype)
    return buffer


def cpu_partials(grads: list[torch.Tensor]) -> torch.Tensor:
    """Partials on a CPU: the fused kernel (`gradscope.native`) where it is available, else torch's.

    The kernel reads every element once, on `CPU_KERNEL_THREADS` threads, and accumulates more
    accurately than the torch path (float32 blocks added into float64). Tensors holding inf or NaN
    are redone by the torch path, so that ``max_abs`` propagates NaN exactly as documented above.
    """
    from . import native  # lazy: building the kernel is for the first recorded step, not for `import gradscope`

    kernel = native.partials_kernel() if grads[0].dtype in native.DTYPES else None
    if kernel is None:
        return chunked_partials(grads)
    dense = [g if g.is_contiguous() or _dense(g) else g.contiguous() for g in grads]
    values = kernel(dense, threads=CPU_KERNEL_THREADS)
    if values is None:
        return chunked_partials(grads)
    out = torch.from_numpy(values.T.astype(np.float32))
    broken = np.flatnonzero(values[:, 3])
    if broken.size:
        out[:, broken] = chunked_partials([grads[j] for j in broken])
    return out


def _dense(tensor: torch.Tensor) -> bool:
    """Elements fill one block of memory without gaps (channels-last gradients too): reducible in any order."""
    return tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)


def chunked_partials(grads: list[torch.Tensor]) -> torch.Tensor:
    """Partials through torch on a CPU: |g| of each chunk once into a cached buffer, three reductions of it.

    ``_foreach_norm`` is a plain loop on CPUs with slow order-1 and order-∞ kernels; here each chunk
    of at most `CPU_CHUNK` elements is read from memory once (``abs`` into the buffer) and summed,
    maxed and dotted with itself while it is still in cache. Sums accumulate in float32 (float64 for
    float64 gradients), like the GPU kernels.
    """
    out = torch.zeros(len(PARTIALS), len(grads), dtype=torch.float32)
    values: list[torch.Tensor] = []
    multi: list[tuple[int, int]] = []  # (tensor, number of chunks) where a tensor needed several
    for j, grad in enumerate(grads):
        flat = grad.reshape(-1)
        n = flat.numel()
        if n == 0:
            values += [out[0, j]] * 3
            continue
        wide = torch.float64 if grad.dtype == torch.float64 else torch.float32
        buffer = _cpu_scratch(wide)
        chunks = 0
        for start in range(0, n, CPU_CHUNK):
            piece = flat[start:start + CPU_CHUNK]
            absolute = buffer[: piece.numel()]
            if piece.dtype == wide:
                torch.abs(piece, out=absolute)
            else:
                absolute.copy_(piece).abs_()
            values += [torch.dot(absolute, absolute), absolute.sum(), absolute.amax()]
            chunks += 1
        if chunks > 1:
            multi.append((j, chunks))
    stacked = torch.stack(values).float().view(-1, 3)
    if not multi:
        out[:3] = stacked.T
    else:
        rows = torch.repeat_interleave(torch.arange(len(grads)), _chunk_counts(len(grads), multi))
        out[:2].index_add_(1, rows, stacked[:, :2].T)
        out[MAX_ABS].scatter_reduce_(0, rows, stacked[:, 2], "amax", include_self=False)
    torch.logical_not(torch.isfinite(out[MAX_ABS]), out=out[NONFINITE])
    return out


def _chunk_counts(n: int, multi: list[tuple[int, int]]) -> torch.Tensor:
    counts = torch.ones(n, dtype=torch.long)
    for j, chunks in multi:
        counts[j] = chunks
    return counts


PARTIALS_BY_DEVICE: dict[str, PartialsFn] = {"cpu": cpu_partials}  # any other device: fused_partials


def partial_sums(grads: list[torch.Tensor]) -> torch.Tensor:
    """The `PARTIALS` of every tensor as a ``(4, len(grads))`` float32 tensor on their device.

    The strategy is the device's fastest (`PARTIALS_BY_DEVICE`); nothing is read back to the host.
    ``max_abs`` propagates inf and NaN, so it yields the non-finite flag without another pass.

    Args:
        grads: gradient tensors, all on one device with one dtype (local shards for sharded ones).
    """
    return PARTIALS_BY_DEVICE.get(grads[0].device.type, fused_partials)(grads)


def finish(partials: torch.Tensor, inv_numel: torch.Tensor) -> torch.Tensor:
    """`STATS` from `PARTIALS` (in place): l2 = sqrt(Σg²), mean_abs = Σ|g| / n, nonfinite = count > 0."""
    partials[L2].sqrt_()
    partials[MEAN_ABS].mul_(inv_numel)
    partials[NONFINITE] = (partials[NONFINITE] > 0) | ~torch.isfinite(partials[MAX_ABS])
    return partials


def grad_stats(grads: list[torch.Tensor], inv_numel: torch.Tensor) -> torch.Tensor:
    """All four statistics of ``grads`` as a ``(4, len(grads))`` float32 tensor on their device.

    Args:
        grads: gradient tensors, all on one device with one dtype.
        inv_numel: ``1 / numel`` of each tensor, float32, on the same device.
    """
    return finish(partial_sums(grads), inv_numel)


def _sum_of_squares_root(v: np.ndarray, absent: np.ndarray | None, numel: np.ndarray, starts: np.ndarray) -> np.ndarray:
    v = v * v
    if absent is not None:
        v[absent] = 0.0
    return np.sqrt(np.add.reduceat(v, starts, axis=0))


def _element_weighted_mean(
    v: np.ndarray, absent: np.ndarray | None, numel: np.ndarray, starts: np.ndarray
) -> np.ndarray:
    weights = np.broadcast_to(numel[:, None], v.shape)
    v = v * weights
    if absent is not None:
        v[absent] = 0.0
        weights = np.where(absent, 0.0, weights)
    return np.add.reduceat(v, starts, axis=0) / np.add.reduceat(weights, starts, axis=0)


def _maximum(v: np.ndarray, absent: np.ndarray | None, numel: np.ndarray, starts: np.ndarray) -> np.ndarray:
    # A present parameter's NaN (a broken gradient) propagates; absent ones are skipped.
    if absent is not None:
        v[absent] = -np.inf
    return np.maximum.reduceat(v, starts, axis=0)


AGGREGATORS = {
    "l2": _sum_of_squares_root, "mean_abs": _element_weighted_mean, "max_abs": _maximum, "nonfinite": _maximum,
}


def aggregate(
    values: dict[str, np.ndarray], stat: str, group_of: np.ndarray, numel: np.ndarray, n_groups: int
) -> np.ndarray:
    """Aggregate one statistic from parameters to groups, following the rules in the module docstring.

    The reductions run on the transposed ``(n_params, n_steps)`` copy, where a group is a run of
    contiguous rows; parameters already in group order (the usual case: model order) are not
    permuted, and the absent-gradient mask is applied only when some gradient is absent. On an
    80,000-step ResNet18 record this is 1.7-2.6x faster than reducing along the columns.

    Args:
        values: per-parameter arrays ``(n_steps, n_params)`` for every name in `STATS`.
        stat: the statistic to aggregate.
        group_of: the group index (0..n_groups-1) of every parameter; every group has one at least.
        numel: the element count of every parameter.
        n_groups: number of groups.

    Returns:
        ``(n_steps, n_groups)`` float64 array.
    """
    order: slice | np.ndarray = slice(None)
    if not (np.diff(group_of) >= 0).all():
        order = np.argsort(group_of, kind="stable")
    starts = np.searchsorted(np.asarray(group_of)[order], np.arange(n_groups))
    absent = np.isnan(values["nonfinite"].T[order])
    mask = absent if absent.any() else None
    v = np.array(values[stat].T[order], dtype=np.float64)  # one contiguous copy: it is changed in place
    with np.errstate(invalid="ignore", divide="ignore"):
        out = AGGREGATORS[stat](v, mask, np.asarray(numel)[order].astype(np.float64), starts)
    if mask is not None:
        out[np.logical_and.reduceat(absent, starts, axis=0)] = np.nan
    return np.ascontiguousarray(out.T)
