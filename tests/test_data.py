"""Data sets and the device-resident loader: generated data, real Fashion-MNIST files, order, augmentation, shards."""

from __future__ import annotations

import gzip
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainers import data
from trainers.data import (
    CROP_PADDING,
    DATASETS,
    DEBIAN_FASHION_MNIST,
    DatasetInfo,
    DeviceLoader,
    Split,
    crop_and_flip,
    load_data,
    read_idx,
)
from trainers.errors import TrainersError

ID_INFO = DatasetInfo("ids", 10, (1, 2, 2), (0.5,), (0.25,), augment=False)


def id_split(n: int = 1000) -> Split:
    """Images that spell their own index (low byte, high byte), so a batch says which images it holds."""
    index = torch.arange(n)
    pixels = torch.stack([index % 256, index // 256, index % 7, index % 11], 1).to(torch.uint8)
    return Split(pixels.view(n, 1, 2, 2), index % 10)


def ids_of(x: torch.Tensor) -> torch.Tensor:
    pixels = (x * 255).round().long().flatten(1)
    return pixels[:, 0] + 256 * pixels[:, 1]


def epoch_ids(loader: DeviceLoader, epoch: int) -> list[torch.Tensor]:
    loader.set_epoch(epoch)
    return [ids_of(x) for x, _ in loader]


@pytest.fixture(scope="module")
def synthetic() -> data.DataSplits:
    return load_data("synthetic", root=Path("unused"))


# --- data sets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape", "augment"), [("synthetic", (3, 32, 32), True),
                                                        ("synthetic-mnist", (1, 28, 28), False)])
def test_synthetic_shapes_dtypes_and_determinism(name: str, shape: tuple[int, int, int], augment: bool) -> None:
    splits = load_data(name, root=Path("unused"))
    assert splits.info.shape == shape and splits.info.num_classes == 10 and splits.info.augment is augment
    assert splits.val is None
    for split, n in ((splits.train, 2000), (splits.test, 500)):
        assert split.images.shape == (n, *shape) and split.images.dtype == torch.uint8
        assert split.labels.shape == (n,) and split.labels.dtype == torch.int64
        assert set(split.labels.tolist()) == set(range(10))
    scaled = splits.train.images.double() / 255
    assert torch.allclose(scaled.mean(dim=(0, 2, 3)), torch.tensor(splits.info.mean, dtype=torch.double), atol=1e-3)
    assert torch.allclose(scaled.std(dim=(0, 2, 3)), torch.tensor(splits.info.std, dtype=torch.double), atol=1e-3)
    again = load_data(name, root=Path("unused"))
    assert torch.equal(again.train.images, splits.train.images) and torch.equal(again.test.labels, splits.test.labels)


def test_synthetic_is_learnable(synthetic: data.DataSplits) -> None:
    """Nearest class mean, fitted on the training images, classifies the test images."""
    train, test = synthetic.train, synthetic.test
    means = torch.stack([train.images[train.labels == k].flatten(1).float().mean(0) for k in range(10)])
    predicted = torch.cdist(test.images.flatten(1).float(), means).argmin(1)
    assert (predicted == test.labels).float().mean() > 0.9


def test_unknown_dataset_lists_the_names() -> None:
    with pytest.raises(TrainersError, match="unknown dataset 'imagenet'") as error:
        load_data("imagenet", root=Path("unused"))
    for name in ("cifar10", "mnist", "fashion-mnist", "synthetic", "synthetic-mnist"):
        assert name in str(error.value)
    assert set(DATASETS) >= {"cifar10", "mnist", "fashion-mnist", "synthetic", "synthetic-mnist"}


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_missing_torchvision_dataset_says_how_to_fetch_it(tmp_path: Path, name: str) -> None:
    with pytest.raises(TrainersError) as error:
        load_data(name, root=tmp_path)
    message = str(error.value)
    assert f"python -m trainers download {name} --data-dir {tmp_path}" in message
    assert "\n" not in message


def test_missing_fashion_mnist_mentions_download_and_debian(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")
    with pytest.raises(TrainersError, match="python -m trainers download fashion-mnist") as error:
        load_data("fashion-mnist", root=tmp_path)
    assert "dataset-fashion-mnist" in str(error.value)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files_from_root_first(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", 12), ("t10k", 5)):
        arrays[prefix] = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", arrays[prefix][0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", arrays[prefix][1])
    splits = load_data("fashion-mnist", root=tmp_path)
    assert splits.train.images.shape == (12, 1, 28, 28) and splits.test.images.shape == (5, 1, 28, 28)
    assert np.array_equal(splits.train.images[:, 0].numpy(), arrays["train"][0])
    assert np.array_equal(splits.test.labels.numpy(), arrays["t10k"][1])
    assert splits.train.labels.dtype == torch.int64


def test_mnist_goes_through_torchvision(tmp_path: Path) -> None:
    """torchvision reads (ungzipped) idx files in MNIST/raw without checksums, so tiny ones stand in."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)
    for prefix in ("train", "t10k"):
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = raw / f"{prefix}-{kind}-ubyte"
            write_idx(path.with_suffix(".gz"), array)
            path.write_bytes(gzip.decompress(path.with_suffix(".gz").read_bytes()))
    splits = load_data("mnist", root=tmp_path)
    assert splits.info.shape == (1, 28, 28) and not splits.info.augment
    assert splits.train.images.shape == (7, 1, 28, 28) and splits.train.images.is_contiguous()
    assert np.array_equal(splits.test.images[:, 0].numpy(), images)
    assert splits.train.labels.dtype == torch.int64 and splits.train.labels.tolist() == labels.tolist()


def test_channels_last_arrays_become_nchw_tensors() -> None:
    """CIFAR-10's numpy data is (N, H, W, C); the conversion must move channels, not reshape."""
    hwc = np.random.default_rng(2).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    nchw = data._nchw(hwc)
    assert nchw.shape == (4, 3, 5, 6) and nchw.is_contiguous()
    assert nchw[2, 1, 3, 4] == hwc[2, 3, 4, 1]


def test_read_idx_rejects_a_bad_magic_and_a_short_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad-idx"
    bad.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 2, 1, 2]))  # 0x0D: float, not unsigned byte
    with pytest.raises(TrainersError, match="not an unsigned-byte IDX file"):
        read_idx(bad)
    short = tmp_path / "short-idx"
    short.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(TrainersError, match="truncated or corrupt"):
        read_idx(short)


@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason=f"Debian's dataset-fashion-mnist is not installed in {DEBIAN_FASHION_MNIST}")
def test_fashion_mnist_from_the_debian_package(tmp_path: Path) -> None:
    splits = load_data("fashion-mnist", root=tmp_path)
    assert splits.train.images.shape == (60000, 1, 28, 28) and splits.test.images.shape == (10000, 1, 28, 28)
    assert splits.train.images.dtype == torch.uint8
    for split in (splits.train, splits.test):
        assert split.labels.dtype == torch.int64 and split.labels.unique().tolist() == list(range(10))
    assert splits.train.images.float().mean().item() / 255 == pytest.approx(splits.info.mean[0], abs=1e-3)


# --- subsets and validation ------------------------------------------------------------------------


def image_keys(split: Split) -> set[bytes]:
    return {bytes(image) for image in split.images.flatten(1).numpy()}


def test_train_subset_and_val_split_are_seeded_and_disjoint(synthetic: data.DataSplits) -> None:
    splits = load_data("synthetic", root=Path("unused"), train_subset=600, val_size=100, seed=3)
    assert splits.val is not None and len(splits.train) == 500 and len(splits.val) == 100
    train, val, everything = image_keys(splits.train), image_keys(splits.val), image_keys(synthetic.train)
    assert len(train) == 500 and len(val) == 100 and not train & val
    assert train | val <= everything
    assert torch.equal(splits.test.images, synthetic.test.images)  # the test set is never touched
    same = load_data("synthetic", root=Path("unused"), train_subset=600, val_size=100, seed=3)
    other = load_data("synthetic", root=Path("unused"), train_subset=600, val_size=100, seed=4)
    assert torch.equal(same.train.images, splits.train.images) and torch.equal(same.val.labels, splits.val.labels)
    assert image_keys(other.val) != val


@pytest.mark.parametrize(("kwargs", "match"), [({"train_subset": 0}, "train subset 0"),
                                               ({"train_subset": 2001}, "train subset 2001"),
                                               ({"val_size": 2000}, "validation size 2000"),
                                               ({"val_size": -1}, "validation size -1"),
                                               ({"train_subset": 10, "val_size": 10}, "validation size 10")])
def test_bad_sizes_are_rejected(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(TrainersError, match=match):
        load_data("synthetic-mnist", root=Path("unused"), **kwargs)


# --- the loader ------------------------------------------------------------------------------------


def test_loader_covers_every_image_once_in_float_batches() -> None:
    split = id_split(1000)
    loader = DeviceLoader(split, ID_INFO, 64, device="cpu", train=True, seed=0, drop_last=False)
    assert len(loader) == 16
    seen, sizes = [], []
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (1, 2, 2)
        assert x.min() >= 0 and x.max() <= 1
        assert torch.equal(y, ids_of(x) % 10)
        seen.append(ids_of(x))
        sizes.append(len(y))
    assert sizes == [64] * 15 + [40]
    order = torch.cat(seen)
    assert sorted(order.tolist()) == list(range(1000))
    assert not torch.equal(order, torch.arange(1000))  # shuffled


def test_order_is_reproducible_per_epoch_and_resumable() -> None:
    split = id_split(500)
    loader = DeviceLoader(split, ID_INFO, 50, device="cpu", train=True, seed=7)
    first, second = epoch_ids(loader, 0), epoch_ids(loader, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, epoch_ids(loader, 0)))
    assert not torch.equal(torch.cat(first), torch.cat(second))
    resumed = DeviceLoader(split, ID_INFO, 50, device="cpu", train=True, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(second, epoch_ids(resumed, 1)))
    other_seed = DeviceLoader(split, ID_INFO, 50, device="cpu", train=True, seed=8)
    assert not torch.equal(torch.cat(first), torch.cat(epoch_ids(other_seed, 0)))


def test_drop_last_defaults_train_full_batches_eval_everything_in_order() -> None:
    split = id_split(130)
    train = DeviceLoader(split, ID_INFO, 32, device="cpu", train=True, seed=0)
    assert len(train) == 4 and [len(y) for _, y in train] == [32] * 4
    evaluation = DeviceLoader(split, ID_INFO, 32, device="cpu", train=False, seed=0)
    assert len(evaluation) == 5
    assert torch.equal(torch.cat([ids_of(x) for x, _ in evaluation]), torch.arange(130))
    with pytest.raises(TrainersError, match="no full batch"):
        DeviceLoader(split, ID_INFO, 200, device="cpu", train=True, seed=0)
    with pytest.raises(TrainersError, match="rank 2 of world size 2"):
        DeviceLoader(split, ID_INFO, 8, device="cpu", train=True, seed=0, rank=2, world_size=2)


def test_crop_and_flip_matches_slicing_the_padded_image() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 8, 6), generator=g, dtype=torch.uint8)
    p = CROP_PADDING
    padded = F.pad(images, (p, p, p, p))
    shifts = torch.tensor([[0, 8], [3, 5], [p, p]])
    flips = torch.tensor([False, True, True])
    out = crop_and_flip(padded, shifts, flips, (8, 6))
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i, ((r, c), flip) in enumerate(zip(shifts.tolist(), flips.tolist())):
        expected = padded[i, :, r:r + 8, c:c + 6]
        assert torch.equal(out[i], expected.flip(-1) if flip else expected)
    assert torch.equal(out[2], images[2].flip(-1))  # centred crop + flip is a plain mirror image


def all_crops(x: torch.Tensor) -> torch.Tensor:
    """Every crop offset and flip of each image, by direct slicing: (B, 2 * (2p + 1)^2, C, H, W)."""
    p, (h, w) = CROP_PADDING, x.shape[2:]
    padded = F.pad(x, (p, p, p, p))
    crops = [padded[:, :, r:r + h, c:c + w] for r in range(2 * p + 1) for c in range(2 * p + 1)]
    return torch.stack(crops + [crop.flip(-1) for crop in crops], 1)


def test_augmentation_is_a_random_crop_and_flip_of_each_image(synthetic: data.DataSplits) -> None:
    info, split = synthetic.info, synthetic.train
    augmented = DeviceLoader(split, info, 64, device="cpu", train=True, seed=1)
    plain = DeviceLoader(split, replace(info, augment=False), 64, device="cpu", train=True, seed=1)
    (x_aug, y_aug), (x, y) = next(iter(augmented)), next(iter(plain))  # one seed: one order
    assert torch.equal(y_aug, y) and x_aug.shape == x.shape and x_aug.dtype == torch.float32
    assert x_aug.min() >= 0 and x_aug.max() <= 1
    as_bytes = (x * 255).round().to(torch.uint8), (x_aug * 255).round().to(torch.uint8)  # exact: x is k / 255
    matches = (all_crops(as_bytes[0]) == as_bytes[1][:, None]).flatten(2).all(2)  # (B, 162)
    assert matches.any(1).all()  # each image is one crop (+ flip) of its padded original
    chosen = matches.float().argmax(1)
    unchanged = 4 * 9 + 4  # the centred crop, not flipped
    assert (chosen != unchanged).float().mean() > 0.9
    flipped = (chosen >= 81).float().mean()
    assert 0.3 < flipped < 0.7
    assert len(set(chosen.tolist())) > 40  # offsets vary over the batch


def test_evaluation_never_augments(synthetic: data.DataSplits) -> None:
    loader = DeviceLoader(synthetic.test, synthetic.info, 100, device="cpu", train=False, seed=1)
    x, _ = next(iter(loader))
    assert torch.equal(x, synthetic.test.images[:100].float() / 255)


def test_channels_last_changes_layout_not_values(synthetic: data.DataSplits) -> None:
    kwargs = {"device": "cpu", "train": True, "seed": 2}
    x, _ = next(iter(DeviceLoader(synthetic.train, synthetic.info, 64, **kwargs)))
    x_cl, _ = next(iter(DeviceLoader(synthetic.train, synthetic.info, 64, channels_last=True, **kwargs)))
    assert x_cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, x_cl)


def test_rank_shards_are_disjoint_and_cover_each_epoch() -> None:
    split = id_split(1000)
    ranks = [DeviceLoader(split, ID_INFO, 30, device="cpu", train=True, seed=5, drop_last=False, rank=r,
                          world_size=3) for r in range(3)]
    assert {len(loader) for loader in ranks} == {12}  # 11 global batches of 90, one of 10
    for epoch in (0, 1):
        shards = [torch.cat(epoch_ids(loader, epoch)) for loader in ranks]
        assert sum(len(s) for s in shards) == 1000
        assert sorted(torch.cat(shards).tolist()) == list(range(1000))


def test_ranks_together_yield_the_single_process_global_batch(synthetic: data.DataSplits) -> None:
    kwargs = {"device": "cpu", "train": True, "seed": 9}
    single = DeviceLoader(synthetic.train, synthetic.info, 64, **kwargs)
    ranks = [DeviceLoader(synthetic.train, synthetic.info, 32, rank=r, world_size=2, **kwargs) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 31
    for loader in (single, *ranks):
        loader.set_epoch(3)
    (x, y), (x0, y0), (x1, y1) = (next(iter(loader)) for loader in (single, *ranks))
    assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)  # augmentation included
    assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)


def test_split_checks_dtypes() -> None:
    with pytest.raises(TrainersError, match="uint8"):
        Split(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TrainersError, match="int64"):
        Split(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches_without_host_sync(synthetic: data.DataSplits) -> None:
    cpu = DeviceLoader(synthetic.train, synthetic.info, 128, device="cpu", train=True, seed=4)
    cuda = DeviceLoader(synthetic.train, synthetic.info, 128, device="cuda", train=True, seed=4)
    batches = iter(cuda)
    torch.cuda.set_sync_debug_mode("error")
    try:
        on_device = list(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for (x, y), (x_gpu, y_gpu) in zip(cpu, on_device):
        assert torch.equal(x, x_gpu.cpu()) and torch.equal(y, y_gpu.cpu())
