"""DDP with gloo on two CPU processes: rank 0 records DDP's averaged gradients, rank 1 stays inactive.

Each rank trains on its half of a global batch; averaged over the two ranks that is the gradient of
the mean loss over the whole batch, so the record must equal a single-process run on the whole batch.
BatchNorm runs in eval mode so that a sample's gradient does not depend on which rank holds the rest.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import assert_matches_direct, make_batch, make_resnet, snapshot
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import gradscope
from gradscope import GradscopeError

STEPS = 3
GLOBAL_BATCH = 8


def _batches():
    return [make_batch(GLOBAL_BATCH, seed=20 + s) for s in range(STEPS)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_rank(rank: int, path: Path, with_optimizer: bool) -> dict:
    model = make_resnet().eval()
    ddp = DDP(model, bucket_cap_mb=0.002)  # several buckets, reduced asynchronously during backward
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    recorder = gradscope.record(ddp, path, optimizer=opt if with_optimizer else None, flush_every=2)
    local = []
    for x, y in _batches():
        half = slice(rank * GLOBAL_BATCH // 2, (rank + 1) * GLOBAL_BATCH // 2)
        opt.zero_grad()
        F.cross_entropy(ddp(x[half]), y[half]).backward()
        local.append(float(model.linear.weight.grad.norm()))
        opt.step()
    try:
        recorder.load()
        load_raises = False
    except GradscopeError:
        load_raises = True
    recorder.close()
    return {"active": recorder.active, "step": recorder.step, "load_raises": load_raises, "linear_l2": local}


def _worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        out = {}
        for trigger in ("optimizer", "backward"):
            out[trigger] = _train_rank(rank, Path(folder) / trigger, trigger == "optimizer")
        if rank == 1:  # a path only rank 1 knows of: an inactive recorder must not even create it
            lonely = gradscope.record(make_resnet(), Path(folder) / "rank1-only")
            out["lonely_active"] = lonely.active
            lonely.close()
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps(out))
        dist.barrier()  # no rank tears gloo down while a peer's last collective is in flight (that aborted a peer)
    finally:
        dist.destroy_process_group()


def _single_process_reference():
    model = make_resnet().eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    snaps = []
    for x, y in _batches():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        snaps.append(snapshot(model))
        opt.step()
    return snaps


def test_ddp_gloo_two_ranks_equals_single_process_global_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    reference = _single_process_reference()
    for trigger in ("optimizer", "backward"):
        assert ranks[0][trigger]["active"] and not ranks[0][trigger]["load_raises"]
        assert ranks[0][trigger]["step"] == STEPS
        assert not ranks[1][trigger]["active"] and ranks[1][trigger]["load_raises"]
        assert ranks[1][trigger]["step"] == 0
        # each rank saw the same averaged gradient, not its own half's
        assert ranks[0][trigger]["linear_l2"] == pytest.approx(ranks[1][trigger]["linear_l2"], rel=1e-6)
        record = gradscope.load(tmp_path / trigger)
        assert record.meta["trigger"] == ("optimizer.step" if trigger == "optimizer" else "backward")
        assert record.steps.tolist() == list(range(STEPS)) and record.closed
        assert not any(n.startswith("module.") for n in record.param_names)
        assert_matches_direct(record, reference, rtol=1e-4)
    assert ranks[1]["lonely_active"] is False
    assert not (tmp_path / "rank1-only").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backward", "optimizer", "rank0.json", "rank1.json"]
