"""Statistics of gradients split across processes: FSDP2, HSDP and tensor parallel (DTensor), and FSDP1.

Each rank reduces its own part of every gradient to the partial sums of `gradscope.stats` (Σg², Σ|g|,
max|g|, the non-finite count); one all-gather per recorded step, of one packed buffer, brings every
rank's partials to every rank, and each tensor's are combined over exactly the ranks whose parts make
it up once. For a DTensor those are the ranks whose mesh coordinates vary along the dimensions it is
``Shard``-ed on and are 0 along the others (``Replicate``), so a replicated copy is not counted
twice; ``Partial`` gradients (pending sums) are first reduced to ``Replicate``, since |a + b| is not
|a| + |b|. For FSDP1 with ``use_orig_params=True`` each rank holds a flat slice of a parameter (or
none): the ranks of the FSDP unit's process group. Rank 0 writes the record.

torch.distributed is imported only when a model holds such parameters, so ``import gradscope``
stays light.
"""

from __future__ import annotations

import sys
from typing import Any, cast

import torch
from torch import nn

from .stats import MAX_ABS, PARTIALS


def _dtensor_type() -> type | None:
    if not torch.distributed.is_available() or "torch.distributed.tensor" not in sys.modules:
        return None  # nothing can be a DTensor before its module is imported
    from torch.distributed.tensor import DTensor

    return DTensor


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a DTensor (FSDP2, tensor parallel, HSDP parameters and gradients)."""
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(t, dtensor)


def fsdp1_parts(model: nn.Module) -> dict[int, tuple[torch.Size, list[int]]]:
    """For each parameter FSDP1 (``use_orig_params=True``) splits: its full shape and the ranks sharing it.

    Keyed by ``id(parameter)``; empty for a model without sharded FSDP1 units (NO_SHARD units hold
    whole parameters, like DDP).
    """
    if "torch.distributed.fsdp" not in sys.modules or not torch.distributed.is_available():
        return {}
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel

    parts: dict[int, tuple[torch.Size, list[int]]] = {}
    for unit in model.modules():
        handle = getattr(unit, "_handle", None) if isinstance(unit, FullyShardedDataParallel) else None
        if handle is None or not handle.uses_sharded_strategy:
            continue
        flat = handle.flat_param
        ranks = dist.get_process_group_ranks(cast(dist.ProcessGroup, unit.process_group))
        for param, shape in zip(getattr(flat, "_params", None) or [], flat._shapes):
            parts[id(param)] = (shape, ranks)
    return parts


def local_part(grad: Any) -> torch.Tensor:
    """This rank's part of ``grad`` as a plain tensor (a view; a Partial gradient is summed first)."""
    if not is_dtensor(grad):
        return grad
    if any(p.is_partial() for p in grad.placements):
        from torch.distributed.tensor import Replicate

        grad = grad.redistribute(grad.device_mesh, [Replicate() if p.is_partial() else p for p in grad.placements])
    return grad.to_local()


def owner_ranks(grad: Any, split_over: list[int] | None = None) -> list[int]:
    """Global ranks whose local parts of ``grad`` together hold each element exactly once.

    A DTensor's parts vary along its ``Shard`` mesh dimensions; along the others (Replicate) the
    coordinate-0 copy counts. An FSDP1 parameter is split over ``split_over``. Any other tensor is
    whole on every rank: rank 0's copy counts.
    """
    if is_dtensor(grad):
        from torch.distributed.tensor import Shard

        index = tuple(slice(None) if isinstance(p, Shard) else 0 for p in grad.placements)
        return [int(r) for r in grad.device_mesh.mesh[index].flatten().tolist()]
    return split_over if split_over is not None else [0]


class ShardCombiner:
    """Combines every rank's ``(4, n)`` partials into the full tensors' with one all-gather.

    Built once per pattern of present gradients, from the gradients' placements (the parameter's
    where a rank has no gradient) and ``split_over``, the FSDP1 ranks of each parameter (None where
    it is not FSDP1's).
    """

    def __init__(self, tensors: list[Any], split_over: list[list[int] | None], device: torch.device) -> None:
        import torch.distributed as dist

        self.world = dist.get_world_size()
        owners = torch.zeros(self.world, len(tensors), dtype=torch.bool)
        for j, (tensor, ranks) in enumerate(zip(tensors, split_over)):
            owners[owner_ranks(tensor, ranks), j] = True
        self.owners = owners.to(device)[:, None, :]  # (world, 1, n), broadcast over the partials

    def __call__(self, partials: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Combined partials ``(4, n)`` and whether any rank had each gradient ``(n,)``, on the device.

        Args:
            partials: this rank's partials (zeros where it has no gradient).
            present: this rank's ``(n,)`` float flags, 1 where it has a gradient.
        """
        packed = torch.cat([partials, present[None]]).reshape(-1)
        gathered = packed.new_empty(self.world * packed.numel())
        _all_gather(gathered, packed)
        gathered = gathered.view(self.world, len(PARTIALS) + 1, -1)
        owned = torch.where(self.owners, gathered[:, : len(PARTIALS)], torch.zeros((), device=gathered.device))
        combined = owned.sum(0)  # Σg², Σ|g| and the non-finite count add up ...
        combined[MAX_ABS] = owned[:, MAX_ABS].amax(0)  # ... the maximum is the maximum of the parts'
        return combined, gathered[:, -1].amax(0) > 0


def _all_gather(output: torch.Tensor, local: torch.Tensor) -> None:
    """Every rank's ``local`` into ``output`` (rank-major), with the name this torch gives it."""
    import torch.distributed as dist

    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(output, local)
