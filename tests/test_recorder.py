"""The recorder against direct computation on real tiny trainings: both triggers, accumulation, AMP,
torch.compile, frozen and unused parameters, the options, and bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import (
    LEVEL_NAMES,
    STAT_NAMES,
    TinyMLP,
    TinyResNet,
    assert_matches_direct,
    make_batch,
    make_resnet,
    snapshot,
)
from torch import nn
from torch.nn import functional as F

import gradscope
from gradscope import GradscopeError


def train_optimizer_mode(model, batches, path, *, opt=None, backwards=1, **options):
    """Train with ``optimizer=``; returns the record and a gradient snapshot taken right before each step."""
    opt = opt or torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    snaps = []
    with gradscope.record(model, path, optimizer=opt, **options) as recorder:
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            for k in range(backwards):
                part = slice(k * len(x) // backwards, (k + 1) * len(x) // backwards)
                (F.cross_entropy(model(x[part]), y[part]) / backwards).backward()
            snaps.append(snapshot(model))
            opt.step()
    return recorder.load(), snaps


def train_backward_mode(model, batches, path, *, backwards=1, **options):
    """Train without ``optimizer=`` (the recorder triggers on backward); snapshot after every backward."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    snaps = []
    with gradscope.record(model, path, **options) as recorder:
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            for k in range(backwards):
                part = slice(k * len(x) // backwards, (k + 1) * len(x) // backwards)
                (F.cross_entropy(model(x[part]), y[part]) / backwards).backward()
                snaps.append(snapshot(model))
            opt.step()
    return recorder.load(), snaps


# -- every statistic at every level, both triggers ---------------------------------------------------------

def test_optimizer_mode_every_stat_every_level(tmp_path, resnet, batches):
    record, snaps = train_optimizer_mode(resnet, batches[:5], tmp_path / "rec", flush_every=2)
    assert record.steps.tolist() == [0, 1, 2, 3, 4]
    assert not record.skipped.any()
    assert record.meta["trigger"] == "optimizer.step"
    assert len(record.param_names) == 41
    assert_matches_direct(record, snaps)
    # the gradients really changed from step to step (the model trained), so each row is its own step
    l2 = record.matrix("stage", "l2").values
    assert len({tuple(row) for row in l2.round(6)}) == 5
    # and what reached the disk is what the recorder holds
    on_disk = gradscope.load(tmp_path / "rec")
    for level in LEVEL_NAMES:
        for stat in STAT_NAMES:
            np.testing.assert_array_equal(on_disk.matrix(level, stat).values, record.matrix(level, stat).values)


def test_backward_mode_every_stat_every_level(tmp_path, resnet, batches):
    record, snaps = train_backward_mode(resnet, batches[:4], tmp_path / "rec")
    assert record.steps.tolist() == [0, 1, 2, 3]
    assert record.meta["trigger"] == "backward"
    assert_matches_direct(record, snaps)


def test_in_memory_record_matches_too(resnet, batches):
    record, snaps = train_optimizer_mode(resnet, batches[:3], None)
    assert record.folder is None and record.steps.tolist() == [0, 1, 2]
    assert_matches_direct(record, snaps)


def test_grad_accumulation_optimizer_mode_records_once_per_step(tmp_path, resnet, batches):
    record, snaps = train_optimizer_mode(resnet, batches[:3], tmp_path / "rec", backwards=3)
    assert record.steps.tolist() == [0, 1, 2]  # 9 backward passes, 3 optimizer steps
    assert_matches_direct(record, snaps)


def test_grad_accumulation_backward_mode_records_every_backward(tmp_path, resnet, batches):
    record, snaps = train_backward_mode(resnet, batches[:2], tmp_path / "rec", backwards=3)
    assert record.steps.tolist() == list(range(6))
    assert_matches_direct(record, snaps)  # each row: the gradient accumulated so far
    l2 = record.matrix("param", "l2").values
    assert not np.allclose(l2[0], l2[2])  # the second and third backward add to the first


# -- AMP ---------------------------------------------------------------------------------------------------

def test_cpu_bfloat16_autocast(tmp_path, resnet, batches):
    opt = torch.optim.SGD(resnet.parameters(), lr=0.1)
    snaps = []
    with gradscope.record(resnet, tmp_path / "rec", optimizer=opt) as recorder:
        for x, y in batches[:3]:
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = resnet(x)
            assert logits.dtype == torch.bfloat16
            F.cross_entropy(logits.float(), y).backward()
            snaps.append(snapshot(resnet))
            opt.step()
    assert all(g.dtype == torch.float32 for g in snaps[0].values())
    assert_matches_direct(recorder.load(), snaps)


def test_bfloat16_and_mixed_dtype_gradients(tmp_path, resnet, batches):
    """Gradients in two dtypes are computed in two fused groups and scattered into the right columns."""
    resnet.layer1.to(torch.bfloat16)
    resnet.linear.to(torch.bfloat16)

    def forward(x):
        out = F.relu(resnet.bn1(resnet.conv1(x)))
        out = resnet.layer1(out.bfloat16()).float()
        out = torch.flatten(F.adaptive_avg_pool2d(resnet.layer2(out), 1), 1)
        return resnet.linear(out.bfloat16()).float()

    opt = torch.optim.SGD(resnet.parameters(), lr=0.1)
    snaps = []
    with gradscope.record(resnet, tmp_path / "rec", optimizer=opt) as recorder:
        for x, y in batches[:3]:
            opt.zero_grad()
            F.cross_entropy(forward(x), y).backward()
            snaps.append(snapshot(resnet))
            opt.step()
    dtypes = {g.dtype for g in snaps[0].values()}
    assert dtypes == {torch.float32, torch.bfloat16}
    record = recorder.load()
    assert {p["dtype"] for p in record.meta["params"]} == {"float32", "bfloat16"}
    assert_matches_direct(record, snaps, rtol=1e-4)


def test_float64_model(tmp_path, mlp):
    mlp.double()
    x, y = make_batch(4, shape=(12,))
    record, snaps = train_optimizer_mode(mlp, [(x.double(), y)] * 2, tmp_path / "rec")
    assert_matches_direct(record, snaps, group=lambda n, lv: n if lv == "param" else n.split(".")[0])


@pytest.mark.parametrize("inject", ["one_grad_inf", "loss_times_inf"])
def test_grad_scaler_records_skipped_step_and_unscaled_grads(tmp_path, mlp, inject):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    assert scaler.is_enabled()  # GradScaler is usable on CPU
    opt = torch.optim.SGD(mlp.parameters(), lr=0.1)
    at_step = []  # gradients as the optimizer sees them: captured by our own pre-hook
    opt.register_step_pre_hook(lambda *_: at_step.append(snapshot(mlp)))
    expected, poisoned = [], 2

    def poison(grad):
        grad = grad.clone()
        grad.view(-1)[0] = math.inf
        return grad

    x, y = make_batch(16, shape=(12,))
    with gradscope.record(mlp, tmp_path / "rec", optimizer=opt, scaler=scaler) as recorder:
        for step in range(5):
            opt.zero_grad()
            handle = None
            if step == poisoned and inject == "one_grad_inf":
                handle = mlp.fc2.weight.register_hook(poison)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(mlp(x).float(), y)
            if step == poisoned and inject == "loss_times_inf":
                loss = loss * math.inf
            scaler.scale(loss).backward()
            if handle:
                handle.remove()
            before = [p.detach().clone() for p in mlp.parameters()]
            scale = scaler.get_scale()
            scaler.step(opt)
            if step == poisoned:  # skipped: the optimizer never ran, the weights did not move
                assert len(at_step) == step
                assert all(torch.equal(b, p) for b, p in zip(before, mlp.parameters()))
                expected.append(snapshot(mlp))  # the unscaled gradients, holding the inf
            else:
                expected.append(at_step[-1])
            scaler.update()
            if step == poisoned:
                assert scaler.get_scale() == scale / 2
    assert len(at_step) == 4
    assert "step" not in scaler.__dict__  # close() took the wrapper off
    record = recorder.load()
    assert record.steps.tolist() == [0, 1, 2, 3, 4]
    assert record.skipped.tolist() == [False, False, True, False, False]
    steps, names, nonfinite = record.matrix("param", "nonfinite")
    assert nonfinite[poisoned, names.index("fc2.weight")] == 1
    assert (np.delete(nonfinite, poisoned, axis=0) == 0).all()
    if inject == "one_grad_inf":
        assert nonfinite.sum() == 1
        assert record.matrix("stage", "nonfinite").values[poisoned].tolist() == [0, 1, 0]
        assert np.isinf(record.matrix("layer", "max_abs").values[poisoned, 1])
    else:
        assert (nonfinite[poisoned] == 1).all()

    def mlp_group(name, level):
        return name if level == "param" else name.split(".")[0]

    # normal steps: the unscaled gradients the optimizer used; the skipped one: those scaler.step left
    assert_matches_direct(record, expected, group=mlp_group)


def test_grad_scaler_unscaled_values_differ_from_scaled(tmp_path, mlp):
    """Direct check that the record holds unscaled gradients: compare with an unscaled fp32 run."""
    x, y = make_batch(16, shape=(12,))
    reference = TinyMLP()
    reference.load_state_dict(mlp.state_dict())
    F.cross_entropy(reference(x), y).backward()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    opt = torch.optim.SGD(mlp.parameters(), lr=0.1)
    with gradscope.record(mlp, tmp_path / "rec", optimizer=opt, scaler=scaler) as recorder:
        scaler.scale(F.cross_entropy(mlp(x), y)).backward()
        scaler.step(opt)
        scaler.update()
    l2 = recorder.load().matrix("param", "l2").values[0]
    want = np.array([p.grad.norm().item() for p in reference.parameters()])
    np.testing.assert_allclose(l2, want, rtol=1e-5)


# -- torch.compile -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("trigger", ["optimizer", "backward"])
def test_compiled_model_fullgraph_no_graph_breaks(tmp_path, resnet, batches, trigger):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(resnet, backend="aot_eager", fullgraph=True)
    opt = torch.optim.SGD(resnet.parameters(), lr=0.1)
    snaps = []
    options = {"optimizer": opt} if trigger == "optimizer" else {}
    with gradscope.record(compiled, tmp_path / "rec", **options) as recorder:
        for x, y in batches[:3]:
            opt.zero_grad()
            F.cross_entropy(compiled(x), y).backward()
            snaps.append(snapshot(resnet))
            opt.step()
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] >= 1  # it really was compiled
    record = recorder.load()
    assert record.param_names == [n for n, _ in resnet.named_parameters()]
    assert not any("_orig_mod" in n for level in LEVEL_NAMES for n in record.names(level))
    assert record.meta["model"] == "TinyResNet"
    assert_matches_direct(record, snaps)


@pytest.mark.slow
def test_compiled_model_inductor(tmp_path, mlp):
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    # compile in this process: a pool of compile workers would keep both cores busy after the test
    with inductor_config.patch(compile_threads=1):
        _inductor_run(tmp_path, mlp)


def _inductor_run(tmp_path, mlp):
    compiled = torch.compile(mlp)
    opt = torch.optim.SGD(mlp.parameters(), lr=0.1)
    x, y = make_batch(8, shape=(12,))
    snaps = []
    with gradscope.record(compiled, tmp_path / "rec", optimizer=opt) as recorder:
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(compiled(x), y).backward()
            snaps.append(snapshot(mlp))
            opt.step()
    record = recorder.load()
    assert record.param_names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "out.weight", "out.bias"]
    assert_matches_direct(record, snaps, group=lambda n, lv: n if lv == "param" else n.split(".")[0])


# -- frozen and unused parameters ---------------------------------------------------------------------------

@pytest.mark.parametrize("trigger", ["optimizer", "backward"])
def test_frozen_stage_is_nan_and_left_out_of_aggregates(tmp_path, resnet, batches, trigger):
    resnet.layer1.requires_grad_(False)
    train = train_optimizer_mode if trigger == "optimizer" else train_backward_mode
    record, snaps = train(resnet, batches[:3], tmp_path / "rec")
    assert record.steps.tolist() == [0, 1, 2]
    assert all(snaps[0][n] is None for n in snaps[0] if n.startswith("layer1."))
    assert_matches_direct(record, snaps)  # NaN for the group without gradients, the others exact
    assert not any(p["requires_grad"] for p in record.meta["params"] if p["name"].startswith("layer1."))
    for stat in STAT_NAMES:
        steps, names, values = record.matrix("stage", stat)
        frozen = names.index("layer1")
        assert np.isnan(values[:, frozen]).all()
        assert np.isfinite(np.delete(values, frozen, axis=1)).all()
        _, block_names, blocks = record.matrix("block", stat)
        assert np.isnan(blocks[:, [block_names.index("layer1.0"), block_names.index("layer1.1")]]).all()


class Branchy(nn.Module):
    """A trunk and two heads; even steps use head_a, odd steps head_b."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(6, 8)
        self.head_a = nn.Linear(8, 3)
        self.head_b = nn.Linear(8, 3, bias=False)

    def forward(self, x: torch.Tensor, branch: str) -> torch.Tensor:
        return getattr(self, f"head_{branch}")(F.relu(self.trunk(x)))


@pytest.mark.parametrize("trigger", ["optimizer", "backward"])
def test_unused_branch_is_nan_that_step_only(tmp_path, trigger):
    torch.manual_seed(0)
    model = Branchy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(5, 6)
    snaps = []
    options = {"optimizer": opt} if trigger == "optimizer" else {}
    # both heads in one block/stage "heads": an aggregate over the head that had a gradient
    with gradscope.record(model, tmp_path / "rec", groups={r"^head_": "heads"}, **options) as recorder:
        for step in range(4):
            opt.zero_grad(set_to_none=True)
            model(x, "ab"[step % 2]).square().mean().backward()
            snaps.append(snapshot(model))
            opt.step()
    record = recorder.load()

    def group(name, level):
        if level == "param":
            return name
        if level == "layer":
            return name.rpartition(".")[0]
        return "heads" if name.startswith("head_") else "trunk"

    assert_matches_direct(record, snaps, group=group)
    _, names, l2 = record.matrix("param", "l2")
    a, b = names.index("head_a.weight"), names.index("head_b.weight")
    assert np.isnan(l2[1::2, a]).all() and np.isfinite(l2[0::2, a]).all()
    assert np.isnan(l2[0::2, b]).all() and np.isfinite(l2[1::2, b]).all()
    _, _, nonfinite = record.matrix("param", "nonfinite")
    assert np.isnan(nonfinite[1::2, a]).all()  # NaN = no gradient, not "non-finite gradient"
    # the block aggregates the head that was used, so it always has a value
    assert np.isfinite(record.matrix("block", "l2").values).all()


def test_nan_gradient_is_nonfinite_not_missing(tmp_path, mlp):
    x, _ = make_batch(4, shape=(12,))
    with gradscope.record(mlp, tmp_path / "rec") as recorder:
        mlp.fc1.weight.register_hook(lambda g: torch.full_like(g, math.nan))
        mlp(x).sum().backward()
    record = recorder.load()
    _, names, nonfinite = record.matrix("param", "nonfinite")
    assert nonfinite[0].tolist() == [1, 0, 0, 0, 0, 0]
    assert np.isnan(record.matrix("param", "max_abs").values[0, 0])
    assert record.matrix("stage", "nonfinite").values[0].tolist() == [1, 0, 0]


# -- options ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("trigger", ["optimizer", "backward"])
def test_every_k_records_every_kth_step(tmp_path, resnet, batches, trigger):
    train = train_optimizer_mode if trigger == "optimizer" else train_backward_mode
    record, snaps = train(resnet, batches[:6], tmp_path / "rec", every=3)
    assert record.steps.tolist() == [0, 3]
    assert record.meta["every"] == 3
    assert_matches_direct(record, [snaps[0], snaps[3]])


def test_every_k_with_start_step(tmp_path, resnet, batches):
    record, snaps = train_optimizer_mode(resnet, batches[:5], tmp_path / "rec", every=2, start_step=10)
    assert record.steps.tolist() == [10, 12, 14]
    assert_matches_direct(record, [snaps[0], snaps[2], snaps[4]])


@pytest.mark.parametrize(
    ("include", "exclude", "want"),
    [
        (r"^layer1\.", r"\.bn|shortcut\.1", lambda n: n.startswith("layer1.") and ".bn" not in n
         and "shortcut.1" not in n),
        ([r"^conv1\.", r"^layer2\.1\.", r"^linear\."], None,
         lambda n: n.split(".")[0] in ("conv1", "linear") or n.startswith("layer2.1.")),
        (None, "bias$", lambda n: not n.endswith("bias")),
        (lambda n: n.endswith("conv2.weight"), None, lambda n: n.endswith("conv2.weight")),
    ],
)
def test_include_exclude(tmp_path, resnet, batches, include, exclude, want):
    record, snaps = train_optimizer_mode(resnet, batches[:2], tmp_path / "rec", include=include, exclude=exclude)
    expected = [n for n, _ in resnet.named_parameters() if want(n)]
    assert expected and record.param_names == expected
    assert_matches_direct(record, snaps, params=set(expected))


@pytest.mark.parametrize("include", [r"^linear\.", [r"^conv1\.", r"^linear\."]])
def test_include_without_stages_keeps_head_grouping(include, resnet):
    recorder = gradscope.record(resnet, include=include)
    record = recorder.load()
    assert record.members("stage")["head"] == ["linear.weight", "linear.bias"]
    recorder.close()


def test_tags_stored_in_meta(tmp_path, mlp):
    tags = {"title": "baseline", "lr": 0.1, "seeds": [1, 2], "nested": {"ok": True}}
    with gradscope.record(mlp, tmp_path / "rec", tags=tags):
        pass
    meta = json.loads((tmp_path / "rec" / "meta.json").read_text())
    assert meta["tags"] == tags
    record = gradscope.load(tmp_path / "rec")
    assert record.tags == tags and record.closed and len(record) == 0


def test_start_step_numbers_the_first_step(tmp_path, resnet, batches):
    record, _ = train_optimizer_mode(resnet, batches[:3], tmp_path / "rec", start_step=100)
    assert record.steps.tolist() == [100, 101, 102]


def _train_plain(model, path, n, **options):
    x, y = make_batch(4, shape=(12,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snaps = []
    with gradscope.record(model, path, optimizer=opt, **options) as recorder:
        for _ in range(n):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            snaps.append(snapshot(model))
            opt.step()
    return recorder, snaps


def test_append_continues_numbering(tmp_path, mlp):
    path = tmp_path / "rec"
    _, first = _train_plain(mlp, path, 3, flush_every=2)
    recorder, second = _train_plain(mlp, path, 4, append=True)
    record = gradscope.load(path)
    assert record.steps.tolist() == list(range(7))
    assert recorder.meta["resumed_at"][0]["step"] == 3
    assert record.closed

    def group(name, level):
        return name if level == "param" else name.split(".")[0]

    assert_matches_direct(record, first + second, group=group)


def test_append_rewritten_step_wins(tmp_path, mlp):
    path = tmp_path / "rec"
    _, first = _train_plain(mlp, path, 5)
    torch.manual_seed(5)
    other = TinyMLP()  # same architecture, other weights: other gradients
    _, second = _train_plain(other, path, 3, append=True, start_step=3)
    record = gradscope.load(path)
    assert record.steps.tolist() == [0, 1, 2, 3, 4, 5]

    def group(name, level):
        return name if level == "param" else name.split(".")[0]

    assert_matches_direct(record, first[:3] + second, group=group)


def test_append_different_model_raises_naming_the_parameter(tmp_path, mlp):
    path = tmp_path / "rec"
    _train_plain(mlp, path, 1)
    wider = TinyMLP(hidden=32)
    with pytest.raises(GradscopeError, match=r"fc1\.weight.*shape"):
        gradscope.record(wider, path, append=True)
    with pytest.raises(GradscopeError, match=r"'conv1\.weight' is not in the recorded model"):
        gradscope.record(make_resnet(), path, append=True)
    with pytest.raises(GradscopeError, match=r"also has 'out\.bias'"):
        gradscope.record(mlp, path, append=True, exclude=r"^out\.bias$")
    assert gradscope.load(path).steps.tolist() == [0]  # untouched


def test_existing_record_without_append_raises(tmp_path, mlp):
    path = tmp_path / "rec"
    _train_plain(mlp, path, 2)
    with pytest.raises(GradscopeError, match="append=True"):
        gradscope.record(mlp, path)
    assert gradscope.load(path).steps.tolist() == [0, 1]


def test_path_that_is_a_file_raises(tmp_path, mlp):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(GradscopeError, match="is a file"):
        gradscope.record(mlp, tmp_path / "afile")


class _Ab(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)


class _Ba(nn.Module):  # the same names and shapes, registered the other way round
    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Linear(3, 3)
        self.a = nn.Linear(3, 3)


def test_append_same_names_in_another_order_keeps_columns_right(tmp_path):
    path = tmp_path / "rec"
    with gradscope.record(_Ab(), path):
        pass
    model = _Ba()
    x = torch.randn(2, 3)
    try:
        with gradscope.record(model, path, append=True) as recorder:
            model.a(x).sum().backward()  # only a has a gradient
    except GradscopeError:
        return  # refusing is a fine answer too
    _, names, l2 = recorder.load().matrix("param", "l2")
    assert np.isfinite(l2[0, names.index("a.weight")]) and np.isnan(l2[0, names.index("b.weight")])


def test_close_twice_and_hooks_removed(tmp_path, mlp):
    opt = torch.optim.SGD(mlp.parameters(), lr=0.1)
    x, y = make_batch(4, shape=(12,))
    for options in ({"optimizer": opt}, {}):
        path = tmp_path / f"rec{len(options)}"
        recorder = gradscope.record(mlp, path, **options)
        F.cross_entropy(mlp(x), y).backward()
        opt.step()
        recorder.close()
        recorder.close()
        F.cross_entropy(mlp(x), y).backward()
        opt.step()
        assert gradscope.load(path).steps.tolist() == [0]
        assert "closed" in repr(recorder)


def test_write_failure_is_raised_not_swallowed(tmp_path, mlp):
    path = tmp_path / "rec"
    path.mkdir()
    (path / "grads.gsr").symlink_to("/dev/full")  # every write fails with ENOSPC
    recorder = gradscope.record(mlp, path, flush_every=1)
    x, y = make_batch(4, shape=(12,))
    F.cross_entropy(mlp(x), y).backward()
    with pytest.raises(GradscopeError, match="could not write"):
        recorder.flush()
    with pytest.raises(GradscopeError, match="could not write"):
        recorder.close()


def test_flush_secs_writes_without_explicit_flush(tmp_path, mlp):
    import time

    x, y = make_batch(4, shape=(12,))
    recorder = gradscope.record(mlp, tmp_path / "rec", flush_every=1000, flush_secs=0.05)
    F.cross_entropy(mlp(x), y).backward()
    time.sleep(0.1)
    F.cross_entropy(mlp(x), y).backward()  # due: this step flushes both
    deadline = time.monotonic() + 10
    while len(gradscope.load(tmp_path / "rec")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gradscope.load(tmp_path / "rec").steps.tolist() == [0, 1]
    recorder.close()


# -- known gaps of the backward trigger -------------------------------------------------------------------

def test_backward_mode_recovers_after_a_failed_backward(tmp_path, mlp):
    x, y = make_batch(4, shape=(12,))
    with gradscope.record(mlp, tmp_path / "rec") as recorder:
        hidden = mlp.fc1(x.flatten(1))

        def fail(grad):
            raise RuntimeError("bad batch")

        hidden.register_hook(fail)  # runs after out/fc2 gradients have accumulated
        with pytest.raises(RuntimeError, match="bad batch"):
            mlp.out(F.relu(mlp.fc2(F.relu(hidden)))).sum().backward()
        for _ in range(2):
            mlp.zero_grad(set_to_none=True)
            F.cross_entropy(mlp(x), y).backward()
    record = recorder.load()
    assert len(record) in (2, 3)  # the failed pass may or may not leave a record; the two good ones must
    assert np.isfinite(record.matrix("param", "l2").values[-2:]).all()


def test_backward_mode_reentrant_checkpoint_records_once(tmp_path, mlp):
    from torch.utils.checkpoint import checkpoint

    x, y = make_batch(4, shape=(12,))

    def tail(h):
        return mlp.out(F.relu(mlp.fc2(h)))

    with gradscope.record(mlp, tmp_path / "rec") as recorder:
        for _ in range(2):
            mlp.zero_grad(set_to_none=True)
            logits = checkpoint(tail, F.relu(mlp.fc1(x)), use_reentrant=True)
            F.cross_entropy(logits, y).backward()
    record = recorder.load()
    assert record.steps.tolist() == [0, 1]
    assert np.isfinite(record.matrix("param", "l2").values).all()


# -- bad input ----------------------------------------------------------------------------------------------

def test_non_module_raises_naming_the_type():
    with pytest.raises(GradscopeError, match="dict"):
        gradscope.record({"weight": torch.zeros(2)})
    with pytest.raises(GradscopeError, match="Tensor"):
        gradscope.record(torch.zeros(2))


def test_bad_options_raise(mlp, tmp_path):
    with pytest.raises(GradscopeError, match="every must be a positive integer, got 0"):
        gradscope.record(mlp, every=0)
    with pytest.raises(GradscopeError, match="every"):
        gradscope.record(mlp, every=1.5)
    with pytest.raises(GradscopeError, match="flush_every"):
        gradscope.record(mlp, flush_every=0)
    with pytest.raises(GradscopeError, match="flush_secs"):
        gradscope.record(mlp, flush_secs=0)
    with pytest.raises(GradscopeError, match="optimizer"):
        gradscope.record(mlp, optimizer="sgd")
    with pytest.raises(GradscopeError, match="scaler= needs optimizer="):
        gradscope.record(mlp, scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(GradscopeError, match="include"):
        gradscope.record(mlp, include="([")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "options",
    [
        {"include": 123},
        {"flush_secs": None},
        {"start_step": "3"},
        {"tags": ["a"]},
    ],
)
def test_bad_option_types_raise_gradscope_error(mlp, options):
    with pytest.raises(GradscopeError):
        gradscope.record(mlp, **options)


def test_include_matching_nothing_lists_names(mlp):
    with pytest.raises(GradscopeError, match=r"selected no parameter.*fc1\.weight"):
        gradscope.record(mlp, include=r"^nothing")
    with pytest.raises(GradscopeError, match="selected no parameter"):
        gradscope.record(mlp, exclude=".")


def test_non_json_tags_raise(mlp, tmp_path):
    with pytest.raises(GradscopeError, match="JSON"):
        gradscope.record(mlp, tmp_path / "rec", tags={"model": mlp})
    with pytest.raises(GradscopeError, match="JSON"):
        gradscope.record(mlp, tags={"when": object()})
    assert not (tmp_path / "rec").exists()


def test_matrix_unknown_level_or_stat_lists_valid_ones(tmp_path, mlp):
    _train_plain(mlp, tmp_path / "rec", 1)
    record = gradscope.load(tmp_path / "rec")
    with pytest.raises(GradscopeError, match="unknown statistic 'norm'; expected one of: l2, mean_abs, max_abs, "
                                             "nonfinite"):
        record.matrix("layer", "norm")
    with pytest.raises(GradscopeError, match="unknown level 'module'; expected one of: param, layer, block, stage"):
        record.matrix("module", "l2")
    with pytest.raises(GradscopeError, match="expected one of: param, layer, block, stage"):
        record.names("blocks")


def test_load_folder_without_record(tmp_path):
    with pytest.raises(GradscopeError, match="holds no gradscope record"):
        gradscope.load(tmp_path)
    with pytest.raises(GradscopeError, match="does not exist"):
        gradscope.load(tmp_path / "missing")
    (tmp_path / "meta.json").write_text('{"format": "something else"}')
    with pytest.raises(GradscopeError, match="not gradscope record metadata"):
        gradscope.load(tmp_path)


def test_window_mean(tmp_path, resnet, batches):
    record, snaps = train_optimizer_mode(resnet, batches[:4], tmp_path / "rec")
    steps, names, values = record.matrix("block", "l2")
    means = record.window_mean("block", "l2", (0.5, 1.0))
    np.testing.assert_allclose([means[n] for n in names], values[2:].mean(axis=0))
    with pytest.raises(GradscopeError, match="window"):
        record.window_mean("block", "l2", (0.5, 0.5))


# -- import cost ---------------------------------------------------------------------------------------------

def test_import_does_not_load_heavy_extras():
    code = (
        "import json, sys, gradscope; "
        "print(json.dumps(sorted(m for m in ('dash', 'plotly', 'torchvision', 'captum') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_unwrap_data_parallel(tmp_path, resnet, batches):
    wrapped = nn.DataParallel(resnet)  # CPU-only: a plain pass-through wrapper
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recorder = gradscope.record(wrapped, tmp_path / "rec")
    assert recorder.names == [n for n, _ in resnet.named_parameters()]
    recorder.close()


def test_tiny_resnet_shape():
    model = TinyResNet()
    assert len(list(model.parameters())) == 41
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 10)
