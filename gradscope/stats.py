"""The four gradient statistics: fused on-device computation per tensor, and aggregation to groups.

Per parameter tensor ``g`` with ``n`` elements, at one recorded step:

* ``l2``        = ‖g‖₂
* ``mean_abs``  = Σ|gᵢ| / n
* ``max_abs``   = maxᵢ |gᵢ|
* ``nonfinite`` = 1 if any gᵢ is inf or NaN else 0

A parameter without a gradient at that step is stored as NaN in all four; ``nonfinite`` tells the two
kinds of NaN apart (NaN there = no gradient, 1 = a gradient holding inf/NaN).

A group G (layer, block, stage) aggregates the parameters that have a gradient at that step as if
their gradients were one flat tensor: l2 = sqrt(Σ l2²), mean_abs = Σ(mean_absₚ·nₚ) / Σ nₚ,
max_abs = max, nonfinite = max. A group with no gradient at all is NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch

STATS: tuple[str, ...] = ("l2", "mean_abs", "max_abs", "nonfinite")
L2, MEAN_ABS, MAX_ABS, NONFINITE = range(len(STATS))


def grad_stats(grads: list[torch.Tensor], inv_numel: torch.Tensor) -> torch.Tensor:
    """All four statistics of ``grads`` as a ``(4, len(grads))`` float32 tensor on their device.

    Three fused ``torch._foreach_norm`` calls (orders 2, 1, ∞, accumulated in float32) replace a
    Python loop of per-tensor reductions, and nothing is read back to the host. ``max_abs`` is
    finite exactly when every element is, so it also yields ``nonfinite`` without another pass.

    Args:
        grads: gradient tensors, all on one device with one dtype.
        inv_numel: ``1 / numel`` of each tensor, float32, on the same device.
    """
    norms = (
        *torch._foreach_norm(grads, 2, dtype=torch.float32),
        *torch._foreach_norm(grads, 1, dtype=torch.float32),
        *torch._foreach_norm(grads, math.inf, dtype=torch.float32),
    )
    out = torch.empty(len(STATS), len(grads), dtype=torch.float32, device=inv_numel.device)
    torch.stack(norms, out=out[:3].view(-1))
    out[MEAN_ABS].mul_(inv_numel)
    torch.logical_not(torch.isfinite(out[MAX_ABS]), out=out[NONFINITE])
    return out


def _sum_of_squares_root(v: np.ndarray, present: np.ndarray, numel: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.sqrt(np.add.reduceat(np.where(present, v * v, 0.0), starts, axis=1))


def _element_weighted_mean(
    v: np.ndarray, present: np.ndarray, numel: np.ndarray, starts: np.ndarray
) -> np.ndarray:
    total = np.add.reduceat(np.where(present, v * numel, 0.0), starts, axis=1)
    return total / np.add.reduceat(present * numel, starts, axis=1)


def _maximum(v: np.ndarray, present: np.ndarray, numel: np.ndarray, starts: np.ndarray) -> np.ndarray:
    # A present parameter's NaN (a broken gradient) propagates; absent ones are skipped.
    return np.maximum.reduceat(np.where(present, v, -np.inf), starts, axis=1)


AGGREGATORS = {
    "l2": _sum_of_squares_root, "mean_abs": _element_weighted_mean, "max_abs": _maximum, "nonfinite": _maximum,
}


def aggregate(
    values: dict[str, np.ndarray], stat: str, group_of: np.ndarray, numel: np.ndarray, n_groups: int
) -> np.ndarray:
    """Aggregate one statistic from parameters to groups, following the rules in the module docstring.

    Args:
        values: per-parameter arrays ``(n_steps, n_params)`` for every name in `STATS`.
        stat: the statistic to aggregate.
        group_of: the group index (0..n_groups-1) of every parameter; every group has one at least.
        numel: the element count of every parameter.
        n_groups: number of groups.

    Returns:
        ``(n_steps, n_groups)`` float64 array.
    """
    order = np.argsort(group_of, kind="stable")
    starts = np.searchsorted(group_of[order], np.arange(n_groups))
    present = ~np.isnan(values["nonfinite"][:, order])
    v = values[stat][:, order].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = AGGREGATORS[stat](v, present, numel[order].astype(np.float64), starts)
    out[np.add.reduceat(present, starts, axis=1) == 0] = np.nan
    return out
