"""Recorder checks that need CUDA: statistics on the device, and no host sync in the recorded step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import gradscope

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def small_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)
    )


def test_recorded_step_never_synchronises(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = small_model().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 3, 8, 8, device="cuda"), torch.randint(0, 10, (16,), device="cuda")
    recorder = gradscope.record(model, tmp_path / "rec", optimizer=opt, flush_every=4)
    expected = []
    for _ in range(10):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        expected.append(torch.stack([p.grad.norm() for p in model.parameters()]))
        torch.cuda.set_sync_debug_mode("error")  # any synchronising call in step() raises
        try:
            opt.step()  # records, and flushes at steps 3 and 7
        finally:
            torch.cuda.set_sync_debug_mode("default")
    recorder.close()
    steps, _, l2 = gradscope.load(tmp_path / "rec").matrix("param", "l2")
    assert steps.tolist() == list(range(10))
    torch.testing.assert_close(torch.from_numpy(l2).float(), torch.stack(expected).cpu(), rtol=1e-5, atol=0)


def test_bfloat16_channels_last_compiled(tmp_path: Path) -> None:
    model = small_model().cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    compiled = torch.compile(model)
    x = torch.randn(16, 3, 8, 8, device="cuda").to(memory_format=torch.channels_last)
    with gradscope.record(compiled, tmp_path / "rec", optimizer=opt) as recorder:
        for _ in range(3):
            opt.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = compiled(x).float().logsumexp(1).mean()
            loss.backward()
            opt.step()
    record = recorder.load()
    assert len(record) == 3 and not any(n.startswith("_orig_mod") for n in record.param_names)
    assert (record.matrix("layer", "nonfinite").values == 0).all()
