"""`gradscope.native`: the fused CPU kernel against float64 torch, its threads, and every way it falls back."""

from __future__ import annotations

import math
import stat

import numpy as np
import pytest
import torch

from gradscope import native, stats


@pytest.fixture
def kernel():
    found = native.partials_kernel()
    if found is None:
        pytest.skip(f"no fused CPU kernel here: {native.describe()}")
    return found


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A clean build state: no cached kernel in this process, an empty kernel cache folder."""
    native.partials_kernel.cache_clear()
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "kernels"))
    yield tmp_path
    native.partials_kernel.cache_clear()


needs_compiler = pytest.mark.skipif(native._compiler() is None, reason="no C compiler here")


def _reference(g: torch.Tensor) -> list[float]:
    d = g.double()
    return [d.square().sum().item(), d.abs().sum().item(), d.abs().max().item() if g.numel() else 0.0, 0.0]


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_partial_equals_float64_torch_across_threads_and_tensor_boundaries(kernel, threads, dtype):
    gen = torch.Generator().manual_seed(threads)
    sizes = [1, 0, 65_537, 3, 300_001, 4096, 4097, 1_000_003]  # blocks, thread splits and tensors all cut differently
    grads = [torch.randn(n, generator=gen, dtype=dtype) * 10.0 ** (j - 4) for j, n in enumerate(sizes)]
    grads[4][123_456] = -77.0  # a known max |g| on a thread boundary's side
    got = kernel(grads, threads=threads)
    np.testing.assert_allclose(got, [_reference(g) for g in grads], rtol=1e-6 if dtype == torch.float32 else 1e-12)
    assert got[4, 2] == 77.0


def test_the_kernel_is_more_accurate_than_float32_torch(kernel):
    g = torch.rand(4_000_000, generator=torch.Generator().manual_seed(0)) + 1.0
    exact = g.double().square().sum().item()
    kernel_error = abs(kernel([g], threads=2)[0, 0] - exact) / exact
    torch_error = abs(torch.dot(g, g).item() - exact) / exact
    assert kernel_error < 1e-7 and kernel_error <= torch_error


def test_cpu_partials_uses_the_kernel_for_dense_layouts_and_matches_torch(kernel):
    gen = torch.Generator().manual_seed(3)
    channels_last = torch.randn(4, 6, 5, 5, generator=gen).to(memory_format=torch.channels_last)
    strided = torch.randn(30, 20, generator=gen)[:, ::3]  # not dense: copied first
    grads = [channels_last, strided, torch.randn(7, generator=gen)]
    out = stats.cpu_partials(grads)
    expected = stats.chunked_partials([g.contiguous() for g in grads])
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5)


def test_nonfinite_tensors_are_redone_by_torch_so_nan_propagates_exactly(kernel):
    grads = [torch.tensor([1.0, math.nan, -3.0]), torch.tensor([math.inf, 2.0]), torch.tensor([3.0, -4.0])]
    out = stats.cpu_partials(grads)
    assert math.isnan(out[2, 0]) and math.isinf(out[2, 1]) and out[:, 2].tolist() == [25.0, 7.0, 4.0, 0.0]
    np.testing.assert_array_equal(out.numpy(), stats.chunked_partials(grads).numpy())


def test_the_library_is_cached_and_reused(fresh):
    first = native.partials_kernel()
    if first is None:
        pytest.skip(f"no fused CPU kernel here: {native.describe()}")
    built = sorted((fresh / "kernels").iterdir())
    assert [p.name for p in built] == [first.path.name]  # no temporary files left beside it
    mtime = first.path.stat().st_mtime_ns
    native.partials_kernel.cache_clear()
    assert native.partials_kernel().path == first.path and first.path.stat().st_mtime_ns == mtime
    assert "fused C kernel" in native.describe()


def test_turned_off_by_the_environment(fresh, monkeypatch):
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    assert native.partials_kernel() is None
    assert native.describe() == f"torch reductions (turned off by {native.DISABLE_ENV}=0)"
    g = torch.randn(100)
    np.testing.assert_allclose(stats.cpu_partials([g])[:3, 0].numpy(), _reference(g)[:3], rtol=1e-5)


def _fake_compiler(folder, body: str):
    path = folder / "cc"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_failing_compiler_falls_back_with_its_reason(fresh, monkeypatch):
    monkeypatch.setenv("CC", _fake_compiler(fresh, 'case "$1" in --version) echo fake 1.0;; *) '
                                                    'echo "fatal: cannot compile" >&2; exit 1;; esac\n'))
    assert native.partials_kernel() is None
    assert "build failed" in native.describe() and "fatal: cannot compile" in native.describe()
    assert list((fresh / "kernels").iterdir()) == []  # no half-written library left behind


@needs_compiler
def test_a_library_that_computes_wrongly_is_refused(fresh, monkeypatch):
    # a library that builds but answers wrongly: the known-values check refuses it before any use
    wrong = fresh / "wrong.c"
    wrong.write_text("#include <stdint.h>\nint gradscope_partials(const void *const *d, const int64_t *n, int64_t c, "
                     "int dbl, int t, double *out) { for (int64_t k = 0; k < 4 * c; k++) out[k] = 1.0; return 0; }\n")
    monkeypatch.setattr(native, "SOURCE", wrong)
    assert native.partials_kernel() is None
    assert "disagreed with torch" in native.describe()


def test_no_compiler_at_all(fresh, monkeypatch):
    monkeypatch.setattr(native, "_compiler", lambda: None)
    assert native.partials_kernel() is None
    assert "no C compiler found" in native.describe()


@needs_compiler
def test_an_unwritable_cache_falls_back_to_a_private_temporary_folder(fresh, monkeypatch):
    (fresh / "a-file").write_text("not a folder")
    monkeypatch.setenv(native.CACHE_ENV, str(fresh / "a-file" / "kernels"))
    monkeypatch.setattr(native.tempfile, "tempdir", str(fresh))
    found = native.partials_kernel()
    assert found is not None and found.path.parent.name.startswith("gradscope-kernels-")
