"""The fused CPU kernel behind `gradscope.stats.cpu_partials`, compiled on first use.

ATen reduces one statistic per pass, so Σg², Σ|g| and max|g| through torch read every gradient
several times; on a CPU that made a recorded step cost about three naive ``norm()`` loops.
``kernels/partials.c`` reads each element once and updates all four partial sums from it. It is a
plain C file (no Python or torch headers), so the system C compiler builds it in well under a second;
the shared library is cached per source, compiler and CPU under ``~/.cache/gradscope/kernels`` (or
``$GRADSCOPE_KERNEL_CACHE``) and checked against torch on known values before it is used.

Where no C compiler is found, the build fails or ``GRADSCOPE_NATIVE=0`` is set, `partials_kernel`
returns None and gradscope falls back to its torch path; `describe` says which is in use and why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

SOURCE = Path(__file__).with_name("kernels") / "partials.c"
DISABLE_ENV = "GRADSCOPE_NATIVE"  # "0": never build or load the kernel
CACHE_ENV = "GRADSCOPE_KERNEL_CACHE"
FLAG_SETS = (("-O3", "-march=native"), ("-O3",))  # the second where the compiler cannot target this CPU
COMMON_FLAGS = ("-fopenmp-simd", "-shared", "-fPIC", "-pthread")
DTYPES = {torch.float32: 0, torch.float64: 1}  # the kernel's dtype codes

_why_not: str = ""


class BuildError(RuntimeError):
    """The compiler ran and refused the source (as opposed to a cache folder that cannot be written)."""


class PartialsKernel:
    """``gradscope_partials`` of a loaded library, called on lists of dense float32 or float64 tensors."""

    def __init__(self, library: ctypes.CDLL, path: Path) -> None:
        self.path = path
        self._function = library.gradscope_partials
        self._function.restype = ctypes.c_int
        self._function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_void_p]

    def __call__(self, grads: list[torch.Tensor], threads: int) -> np.ndarray | None:
        """``(len(grads), 4)`` float64: Σg², Σ|g|, max|g|, non-finite count; None if a thread failed to start.

        Every tensor must be dense (no gaps or overlaps in memory) and of one dtype in `DTYPES`; the
        ctypes call releases the GIL.
        """
        count = len(grads)
        data = np.fromiter((g.data_ptr() for g in grads), dtype=np.uintp, count=count)
        numel = np.fromiter((g.numel() for g in grads), dtype=np.int64, count=count)
        out = np.empty((count, 4), dtype=np.float64)
        status = self._function(data.ctypes.data, numel.ctypes.data, count, DTYPES[grads[0].dtype], threads,
                                out.ctypes.data)
        return out if status == 0 else None


def _cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gradscope" / "kernels"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cpu_signature() -> str:
    """What the library's -march=native depends on: a home folder shared by other CPUs gets other files."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            flags = next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()} {flags}"


def _build(compiler: str, folder: Path) -> Path:
    """Compile `SOURCE` into ``folder`` (atomically: concurrent processes may build the same file)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, version, _cpu_signature(), *flags]).encode())
        target = folder / f"partials-{key.hexdigest()[:16]}{suffix}"
        if target.exists():
            return target
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle, temporary = tempfile.mkstemp(suffix=suffix, dir=folder)
        os.close(handle)
        done = subprocess.run([compiler, *flags, *COMMON_FLAGS, "-o", temporary, str(SOURCE)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            os.replace(temporary, target)
            return target
        os.unlink(temporary)
        errors.append(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    raise BuildError(f"{compiler} could not build {SOURCE.name}: {'; '.join(errors)}")


def _agrees_with_torch(kernel: PartialsKernel) -> bool:
    """The library's answers on known values, threads and tensor boundaries included, equal torch's."""
    generator = torch.Generator().manual_seed(0)
    for dtype in DTYPES:
        grads = [torch.randn(n, generator=generator, dtype=dtype) for n in (1, 70_001, 200_003)]
        got = kernel(grads, threads=3)
        if got is None:
            return False
        expected = np.array([[g.double().square().sum().item(), g.double().abs().sum().item(),
                              g.abs().max().item(), 0.0] for g in grads])
        if not np.allclose(got, expected, rtol=1e-5, atol=0):
            return False
    return True


@functools.cache
def partials_kernel() -> PartialsKernel | None:
    """The fused kernel, built and checked once per process; None where it is unavailable (see `describe`)."""
    global _why_not
    if os.environ.get(DISABLE_ENV, "1") == "0":
        _why_not = f"turned off by {DISABLE_ENV}=0"
        return None
    compiler = _compiler()
    if compiler is None:
        _why_not = "no C compiler found (set CC, or install gcc or clang)"
        return None
    private = Path(tempfile.gettempdir()) / f"gradscope-kernels-{getattr(os, 'getuid', lambda: 0)()}"
    try:
        try:
            path = _build(compiler, _cache_dir())
        except OSError:  # the cache folder cannot be written: a folder of this user's in the temporary one
            path = _build(compiler, private)
        kernel = PartialsKernel(ctypes.CDLL(str(path)), path)
    except (BuildError, OSError, subprocess.SubprocessError) as error:
        _why_not = f"build failed: {error}"
        return None
    if not _agrees_with_torch(kernel):
        _why_not = f"{path} disagreed with torch on known values"
        return None
    return kernel


def describe() -> str:
    """Which CPU path computes the partials here, in words (for benchmarks and ``gradscope info``)."""
    kernel = partials_kernel()
    if kernel is not None:
        return f"fused C kernel ({kernel.path})"
    return f"torch reductions ({_why_not})"
