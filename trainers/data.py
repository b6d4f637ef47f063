"""Data sets as uint8 tensors, and a loader that keeps them on the training device.

A whole data set (CIFAR-10 is 150 MB as uint8) fits on any GPU, so `DeviceLoader` moves it once and
slices batches by index there; augmentation (random crop with 4-pixel zero padding, horizontal flip)
is vectorised on the device. The only host work per epoch is one permutation, drawn from a CPU
generator seeded by (seed, epoch) so that order and augmentation are the same on every device and a
resumed run repeats them.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import TrainersError
from .registry import Registry

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the loader need to know about a data set."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # crop + flip for CIFAR-style colour images


@dataclass
class Split:
    """Images (N, C, H, W) uint8 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Split:
        """The images at ``index``."""
        return Split(self.images[index], self.labels[index])


@dataclass
class DataSplits:
    """A data set's training, validation (held out of training; may be empty) and test splits."""

    info: DatasetInfo
    train: Split
    val: Split | None
    test: Split


Loader = Callable[[Path, bool], tuple[DatasetInfo, Split, Split]]
DATASETS = Registry[Loader]("dataset")


def _missing(name: str, root: Path) -> TrainersError:
    return TrainersError(f"{name} not found in {root}: fetch it with `python -m trainers download {name} "
                         f"--data-dir {root}` (or add --download)")


def _from_hwc(array: np.ndarray) -> torch.Tensor:
    """(N, H, W[, C]) uint8 -> (N, C, H, W) tensor, without per-image Python."""
    tensor = torch.from_numpy(np.require(array, requirements=["C", "W"]))
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(-1)
    return tensor.permute(0, 3, 1, 2).contiguous()


def _torchvision(cls_name: str, name: str, root: Path, download: bool) -> tuple[Split, Split]:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        parts = [cls(str(root), train=train, download=download) for train in (True, False)]
    except RuntimeError as exc:
        if "not found" in str(exc).lower():
            raise _missing(name, root) from None
        raise TrainersError(f"cannot read {name} from {root}: {str(exc).splitlines()[0]}") from None
    except OSError as exc:  # no network, refused, ...
        raise TrainersError(f"cannot download {name} into {root}: {exc}") from None
    splits = []
    for part in parts:
        data = part.data.numpy() if isinstance(part.data, torch.Tensor) else part.data
        splits.append(Split(_from_hwc(data), torch.as_tensor(np.asarray(part.targets), dtype=torch.int64)))
    return splits[0], splits[1]


@DATASETS.register("cifar10")
def cifar10(root: Path, download: bool) -> tuple[DatasetInfo, Split, Split]:
    """CIFAR-10 through torchvision (50,000 / 10,000 colour 32x32 images)."""
    info = DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True)
    return (info, *_torchvision("CIFAR10", "cifar10", root, download))


@DATASETS.register("mnist")
def mnist(root: Path, download: bool) -> tuple[DatasetInfo, Split, Split]:
    """MNIST through torchvision (60,000 / 10,000 grey 28x28 digits)."""
    info = DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,), False)
    return (info, *_torchvision("MNIST", "mnist", root, download))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST family's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(int)
    return np.frombuffer(raw, np.uint8, int(np.prod(dims)), 4 + 4 * ndim).reshape(dims)


def _idx_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    for suffix in (".gz", ""):
        images, labels = folder / f"{prefix}-images-idx3-ubyte{suffix}", folder / f"{prefix}-labels-idx1-ubyte{suffix}"
        if images.exists() and labels.exists():
            return read_idx(images), read_idx(labels)
    return None


@DATASETS.register("fashion-mnist")
def fashion_mnist(root: Path, download: bool) -> tuple[DatasetInfo, Split, Split]:
    """Fashion-MNIST from ``root`` (torchvision layout), Debian's ``dataset-fashion-mnist``, or a download."""
    info = DatasetInfo("fashion-mnist", 10, (1, 28, 28), (0.2860,), (0.3530,), False)
    for folder in (root / "FashionMNIST" / "raw", root, DEBIAN_FASHION_MNIST):
        train, test = _idx_pair(folder, "train"), _idx_pair(folder, "t10k")
        if train and test:
            return info, *(Split(_from_hwc(x), torch.from_numpy(y.astype(np.int64))) for x, y in (train, test))
    return (info, *_torchvision("FashionMNIST", "fashion-mnist", root, download))


def _generated(name: str, shape: tuple[int, int, int], n_train: int, n_test: int) -> tuple[DatasetInfo, Split, Split]:
    """Ten classes, each a fixed random pattern plus noise: learnable in an epoch, no files needed."""
    g = torch.Generator().manual_seed(1234)
    patterns = torch.rand(10, *shape, generator=g)

    def draw(n: int) -> Split:
        labels = torch.randint(0, 10, (n,), generator=g)
        images = 0.6 * patterns[labels] + 0.4 * torch.rand(n, *shape, generator=g)
        return Split((images * 255).round().to(torch.uint8), labels)

    c = shape[0]
    info = DatasetInfo(name, 10, shape, (0.5,) * c, (0.25,) * c, c == 3)
    return info, draw(n_train), draw(n_test)


@DATASETS.register("synthetic")
def synthetic(root: Path, download: bool) -> tuple[DatasetInfo, Split, Split]:
    """Generated CIFAR-shaped data (3x32x32, 2,000 / 500 images), for tests and demos."""
    return _generated("synthetic", (3, 32, 32), 2000, 500)


@DATASETS.register("synthetic-mnist")
def synthetic_mnist(root: Path, download: bool) -> tuple[DatasetInfo, Split, Split]:
    """Generated MNIST-shaped data (1x28x28, 2,000 / 500 images), for the MLP tests."""
    return _generated("synthetic-mnist", (1, 28, 28), 2000, 500)


def download_dataset(name: str, root: Path) -> None:
    """Fetch ``name`` into ``root`` (what the 'not found' error tells users to run)."""
    DATASETS.get(name)(root, True)


def load_data(name: str, *, root: Path, download: bool = False, val_size: int = 0, train_subset: int | None = None,
              seed: int = 0) -> DataSplits:
    """Load a registered data set; optionally keep a seeded subset and hold out a validation split.

    The validation split is taken from the training images (never the test set), so early stopping
    and model selection do not look at the test set.
    """
    info, train, test = DATASETS.get(name)(Path(os.path.expanduser(root)), download)
    g = torch.Generator().manual_seed(seed)
    if train_subset is not None:
        if not 1 <= train_subset <= len(train):
            raise TrainersError(f"--train-subset must lie in 1..{len(train)} for {name}, got {train_subset}")
        train = train.subset(torch.randperm(len(train), generator=g)[:train_subset])
    if not 0 <= val_size < len(train):
        raise TrainersError(f"--val-size must lie in 0..{len(train) - 1} for {name}, got {val_size}")
    val = None
    if val_size:
        order = torch.randperm(len(train), generator=g)
        val, train = train.subset(order[:val_size]), train.subset(order[val_size:])
    return DataSplits(info, train, val, test)


class DeviceLoader:
    """Batches ``(x in [0, 1] float32, y int64)`` of a split held on ``device``.

    With ``world_size`` > 1 every rank draws the same permutation and takes the positions
    ``rank::world_size`` of each global batch of ``batch_size * world_size``, so the ranks together
    see exactly the batches a single process with the global batch size would.
    """

    def __init__(self, split: Split, info: DatasetInfo, batch_size: int, *, device: torch.device | str, train: bool,
                 seed: int, drop_last: bool | None = None, channels_last: bool = False, rank: int = 0,
                 world_size: int = 1) -> None:
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.augment = train and info.augment
        self.drop_last = train if drop_last is None else drop_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        global_batch = self.batch_size * self.world_size
        n = len(self.labels)
        return n // global_batch if self.drop_last else -(-n // global_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, global_batch = len(self.labels), self.batch_size * self.world_size
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        if self.augment:
            shifts = torch.randint(0, 9, (n, 2), generator=g).to(self.device, non_blocking=True)
            flips = (torch.rand(n, generator=g) < 0.5).to(self.device, non_blocking=True)
        order = order.to(self.device, non_blocking=True)
        for b in range(len(self)):
            index = order[b * global_batch:(b + 1) * global_batch][self.rank::self.world_size]
            x = self.images[index].float().div_(255)
            if self.augment:
                x = crop_and_flip(x, shifts[index], flips[index])
            yield x.contiguous(memory_format=self.memory_format), self.labels[index]


def crop_and_flip(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random crops of the zero-padded images (offsets ``shifts`` in 0..2·pad) and horizontal flips.

    One gather over the padded batch: no per-image Python.
    """
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (torch.arange(h, device=x.device) + shifts[:, :1])  # (B, H)
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols) + shifts[:, 1:]  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)
