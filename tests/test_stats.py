"""`gradscope.stats`: the fused per-tensor statistics and their aggregation, against direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import STAT_NAMES, direct_stats

from gradscope import native, stats
from gradscope.stats import STATS, aggregate, grad_stats


def _inv_numel(grads):
    return torch.tensor([1.0 / g.numel() for g in grads], dtype=torch.float32)


def test_stat_order_is_the_documented_one():
    assert STATS == STAT_NAMES


@pytest.fixture(params=["device default", "torch chunks", "fused"])
def strategy(request, monkeypatch):
    """Run `grad_stats` with the CPU kernel, the CPU torch fallback and the foreach path GPUs use."""
    if request.param == "device default" and native.partials_kernel() is None:
        pytest.skip(f"no fused CPU kernel here: {native.describe()}")
    if request.param == "torch chunks":
        monkeypatch.setattr(native, "partials_kernel", lambda: None)
    if request.param == "fused":
        monkeypatch.setattr(stats, "PARTIALS_BY_DEVICE", {})
    return request.param


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16]
)
def test_grad_stats_per_tensor(dtype, strategy):
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(shape, generator=gen).to(dtype) for shape in [(3,), (4, 5), (2, 3, 3, 3), (1,), (1000,)]]
    grads[1][2, 3] = -7.5  # a known max |g|
    out = grad_stats(grads, _inv_numel(grads))
    assert out.shape == (4, len(grads)) and out.dtype == torch.float32
    expected = np.array([direct_stats([g]) for g in grads]).T
    rtol = 1e-5 if dtype in (torch.float32, torch.float64) else 1e-3
    np.testing.assert_allclose(out.numpy(), expected, rtol=rtol)
    assert out[2, 1].item() == 7.5


def test_grad_stats_nonfinite(strategy):
    grads = [
        torch.tensor([1.0, math.inf, -2.0]),
        torch.tensor([1.0, math.nan]),
        torch.tensor([-math.inf]),
        torch.tensor([3.0, -4.0]),
        torch.zeros(4),
    ]
    out = grad_stats(grads, _inv_numel(grads))
    assert out[3].tolist() == [1, 1, 1, 0, 0]
    assert math.isinf(out[0, 0]) and math.isinf(out[2, 0])  # l2
    assert math.isnan(out[0, 1]) and math.isnan(out[1, 1])  # NaN propagates
    assert math.isnan(out[2, 1])  # max |g| of a NaN gradient is NaN, so it counts as non-finite
    assert out[:3, 3].tolist() == [5.0, 3.5, 4.0]
    assert out[:3, 4].tolist() == [0.0, 0.0, 0.0]


def test_cpu_chunks_and_empty_tensors_combine_exactly(monkeypatch):
    """A tensor longer than a chunk is reduced piece by piece; the partials must add up to the whole."""
    monkeypatch.setattr(stats, "CPU_CHUNK", 7)
    monkeypatch.setattr(stats, "_scratch", {})
    monkeypatch.setattr(native, "partials_kernel", lambda: None)  # the torch path chunks; the kernel does not
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(50, generator=gen), torch.zeros(0), torch.randn(3, 4, generator=gen), torch.randn(7)]
    grads[0][33] = -9.0
    grads[2] = grads[2].double()
    for group in ([g for g in grads if g.dtype == torch.float32], [grads[2]]):
        out = grad_stats(group, _inv_numel([g if g.numel() else torch.ones(1) for g in group]))
        for j, g in enumerate(group):
            if g.numel():
                np.testing.assert_allclose(out[:, j].numpy(), direct_stats([g]), rtol=1e-6)
            else:
                assert out[:, j].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert grad_stats([grads[0]], _inv_numel([grads[0]]))[2, 0].item() == 9.0


def test_partials_add_up_over_any_split(strategy):
    """Σg², Σ|g|, max|g| and the non-finite count of two halves combine into the whole's (sharded case)."""
    g = torch.randn(40, generator=torch.Generator().manual_seed(2))
    g[5] = math.inf
    halves = stats.partial_sums([g[:17], g[17:]])
    whole = stats.partial_sums([g])[:, 0]
    combined = torch.stack([halves[0].sum(), halves[1].sum(), halves[2].max(), halves[3].sum()])
    assert combined[3].item() == 1 and whole[3].item() == 1
    finite = torch.cat([g[:5], g[6:]])
    np.testing.assert_allclose(stats.partial_sums([finite[:20], finite[20:]]).sum(1)[:2].numpy(),
                               stats.partial_sums([finite])[:2, 0].numpy(), rtol=1e-6)
    assert torch.isinf(combined[0]) and torch.isinf(whole[0])


def _group_reference(grads_per_param, group_of, n_groups):
    """Direct: concatenate each group's present gradients."""
    out = np.full((len(STATS), n_groups), np.nan)
    for j in range(n_groups):
        members = [g for g, k in zip(grads_per_param, group_of) if k == j and g is not None]
        out[:, j] = direct_stats(members)
    return out


def _values_from(grads_per_param):
    """Per-parameter statistics as the recorder stores them (NaN x4 for a missing gradient)."""
    present = [g for g in grads_per_param if g is not None]
    stats = grad_stats(present, _inv_numel(present)).double().numpy()
    values = np.full((len(STATS), len(grads_per_param)), np.nan)
    values[:, [i for i, g in enumerate(grads_per_param) if g is not None]] = stats
    return values


def test_aggregate_matches_concatenation_with_missing_and_interleaved_groups():
    gen = torch.Generator().manual_seed(3)
    shapes = [(4, 3), (3,), (5,), (2, 2), (7,), (1,), (6,)]
    group_of = np.array([0, 2, 1, 0, 2, 3, 1])  # groups not contiguous in parameter order
    numel = np.array([math.prod(s) for s in shapes])
    steps = []
    for step in range(3):
        grads = [torch.randn(s, generator=gen) for s in shapes]
        if step == 1:
            grads[0] = None  # one member of group 0 missing
            grads[5] = None  # group 3's only member missing: the group is NaN
        if step == 2:
            grads[4] = grads[4].clone()
            grads[4][0] = math.inf  # a non-finite gradient in group 2
        steps.append(grads)
    per_step = [_values_from(g) for g in steps]
    values = {stat: np.stack([v[k] for v in per_step]).astype(np.float32) for k, stat in enumerate(STATS)}
    for k, stat in enumerate(STATS):
        got = aggregate(values, stat, group_of, numel, 4)
        want = np.stack([_group_reference(g, group_of, 4)[k] for g in steps])
        np.testing.assert_allclose(got, want, rtol=1e-5, equal_nan=True, err_msg=stat)
    assert np.isnan(aggregate(values, "l2", group_of, numel, 4)[1, 3])
    assert aggregate(values, "nonfinite", group_of, numel, 4)[2].tolist() == [0, 0, 1, 0]


def test_aggregate_nan_gradient_propagates_to_max():
    values = {
        "l2": np.array([[np.nan, 1.0]]), "mean_abs": np.array([[np.nan, 1.0]]),
        "max_abs": np.array([[np.nan, 1.0]]), "nonfinite": np.array([[1.0, 0.0]]),
    }
    group_of, numel = np.array([0, 0]), np.array([2, 2])
    assert np.isnan(aggregate(values, "max_abs", group_of, numel, 1)[0, 0])
    assert aggregate(values, "nonfinite", group_of, numel, 1)[0, 0] == 1


def test_aggregate_no_steps():
    values = {stat: np.zeros((0, 3), np.float32) for stat in STATS}
    out = aggregate(values, "l2", np.array([0, 1, 1]), np.array([1, 2, 3]), 2)
    assert out.shape == (0, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_grad_stats_on_cuda_fused_kernels(dtype):
    """The fused multi-tensor kernels: values, and NaN/inf counted as non-finite (not skipped by a max)."""
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(shape, generator=gen).to(dtype) for shape in [(3,), (64, 65), (1,), (4096,)]]
    grads[1][5, 7] = math.nan
    grads[3][100] = -math.inf
    cuda = [g.cuda() for g in grads]
    out = grad_stats(cuda, _inv_numel(grads).cuda()).cpu()
    assert out[3].tolist() == [0, 1, 0, 1]
    finite = [0, 2]
    expected = np.array([direct_stats([grads[i]]) for i in finite]).T
    np.testing.assert_allclose(out[:, finite].numpy(), expected, rtol=1e-3 if dtype != torch.float32 else 1e-5)
