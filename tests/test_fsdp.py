"""Sharded gradients on two gloo CPU processes: FSDP2, HSDP with a Replicate dimension, tensor parallel, FSDP1.

Every rank records (each reduces its own shard; one collective per step), rank 0 writes. Every
statistic of every parameter must equal the one computed from the whole gradient,
``p.grad.full_tensor()``, snapshotted on rank 0 just before the optimizer step.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import STAT_NAMES, direct_stats
from torch import nn

import gradscope
from gradscope.grouping import clean_name

STEPS = 3
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="needs torch.distributed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlp() -> nn.Sequential:
    """Output sizes 10, 7, 3: shards of uneven length (7 rows over 2 ranks: 4 and 3)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 7), nn.Tanh(), nn.Linear(7, 3))


def _fsdp2(mesh_shape: tuple[int, ...]) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    names = ("replicate", "shard") if len(mesh_shape) == 2 else ("shard",)
    mesh = init_device_mesh("cpu", mesh_shape, mesh_dim_names=names)
    model = _mlp()
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _tensor_parallel(mesh_shape: tuple[int, ...]) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", mesh_shape)
    model = _mlp()  # layer 0 column-wise (Shard(0)), layer 2 row-wise (Shard(1), bias Replicate), layer 4 plain
    return parallelize_module(model, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})


def _fsdp1() -> nn.Module:
    """FSDP1 with the original parameters, one unit per Linear (names carry FSDP's wrapper levels)."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return FullyShardedDataParallel(_mlp(), use_orig_params=True, auto_wrap_policy=ModuleWrapPolicy({nn.Linear}),
                                    device_id=torch.device("cpu"))


SETUPS = {
    "fsdp2": lambda: _fsdp2((2,)),
    "fsdp2-backward": lambda: _fsdp2((2,)),  # recorded at the end of backward, no optimizer given
    "hsdp-2x1": lambda: _fsdp2((2, 1)),  # replicated over 2 ranks: counted once, not twice
    "hsdp-1x2": lambda: _fsdp2((1, 2)),
    "tp": lambda: _tensor_parallel((2,)),
    "fsdp1": _fsdp1,
}


def _full_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's whole gradient, gathered from the ranks (collectives: every rank calls this)."""
    if "fsdp1" in type(model).__module__ or type(model).__name__ == "FullyShardedDataParallel":
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, with_grads=True):
            return {clean_name(n): p.grad.clone() for n, p in model.named_parameters()}
    return {n: p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad for n, p in model.named_parameters()}


def _train(rank: int, setup: str, folder: Path) -> None:
    model = SETUPS[setup]()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trigger = None if setup.endswith("backward") else opt
    recorder = gradscope.record(model, folder / setup, optimizer=trigger, flush_every=2)
    gen = torch.Generator().manual_seed(100 + (rank if setup != "tp" else 0))  # TP ranks see one batch
    reference = []
    for _ in range(STEPS):
        x, y = torch.randn(4, 6, generator=gen), torch.randn(4, 3, generator=gen)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        full = _full_grads(model)
        reference.append({n: direct_stats([g]) for n, g in full.items()})
        opt.step()
    recorder.close()
    if rank == 0:
        (folder / f"{setup}.json").write_text(json.dumps(reference))
    else:
        assert not recorder.active and recorder.path is None


def _worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for setup in SETUPS:
            _train(rank, setup, Path(folder))
        dist.barrier()  # no rank tears gloo down while a peer's last collective is in flight (that aborted a peer)
    finally:
        dist.destroy_process_group()


def test_sharded_gradients_equal_the_full_gradients(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(SETUPS)
    for setup in SETUPS:
        reference = json.loads((tmp_path / f"{setup}.json").read_text())
        record = gradscope.load(tmp_path / setup)
        assert record.steps.tolist() == list(range(STEPS)), setup
        assert record.param_names == list(reference[0])
        assert [p["shape"] for p in record.meta["params"]][:2] == [[10, 6], [10]]  # global shapes
        for k, stat in enumerate(STAT_NAMES):
            expected = np.array([[step[n][k] for n in record.param_names] for step in reference])
            np.testing.assert_allclose(record.matrix("param", stat).values, expected, rtol=1e-5, atol=1e-7,
                                       err_msg=f"{setup}: {stat}")
        assert record.names("layer") == ["0", "2", "4"]
