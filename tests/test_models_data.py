"""Models (Figure 1 parameter counts, gradients, grouping) and data (device loader, augmentation)."""

import pytest
import torch

from gradscope.grouping import auto_groups
from trainers.data import DEBIAN_FASHION_MNIST, DeviceLoader, crop_and_flip, load_data
from trainers.errors import TrainersError
from trainers.models import MODELS, build_model, count_parameters

MNIST = {"in_shape": (1, 28, 28), "num_classes": 10, "mean": (0.13,), "std": (0.31,)}
CIFAR = {"in_shape": (3, 32, 32), "num_classes": 10, "mean": (0.5,) * 3, "std": (0.25,) * 3}


def test_mlp_parameter_counts_match_figure_1():
    teacher, student = build_model("mlp-teacher", **MNIST), build_model("mlp-student", **MNIST)
    assert count_parameters(teacher, biases=False) == 2_392_800
    assert count_parameters(student, biases=False) == 317_600
    assert count_parameters(teacher) == 2_395_210 and count_parameters(student) == 318_010


def test_resnet18_has_the_usual_cifar_parameter_count():
    assert count_parameters(build_model("resnet18", **CIFAR)) == 11_173_962


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("shape", [MNIST, CIFAR])
def test_every_model_runs_and_every_parameter_gets_a_finite_gradient(name, shape):
    torch.manual_seed(0)
    model = build_model(name, **shape, width=8)
    out = model(torch.rand(2, *shape["in_shape"]))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert not list(model.normalize.parameters()) and "normalize.mean" in model.state_dict()


def test_resnet_parameters_group_into_stem_blocks_and_head():
    model = build_model("resnet18", **CIFAR, width=8)
    names = [n for n, _ in model.named_parameters()]
    blocks = {g.block for g in auto_groups(model, names)}
    assert blocks == {"stem", "head"} | {f"layer{s}.{b}" for s in range(1, 5) for b in range(2)}


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(TrainersError, match="unknown model 'vgg'.*resnet18"):
        build_model("vgg", **CIFAR)


def test_loader_covers_every_image_once_and_is_reproducible():
    data = load_data("synthetic", root="data", train_subset=300, val_size=50, seed=1)
    assert len(data.train) == 250 and len(data.val) == 50
    loader = DeviceLoader(data.train, data.info, 64, device="cpu", train=True, seed=3, drop_last=False)
    loader.augment = False
    seen = torch.cat([y for _, y in loader])
    assert len(seen) == 250 and sorted(seen.tolist()) == sorted(data.train.labels.tolist())
    x, _ = next(iter(loader))
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    first = [y for _, y in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, [y for _, y in loader]))
    loader.set_epoch(1)
    assert not torch.equal(first[0], next(iter(loader))[1])


def test_ranks_split_each_global_batch():
    data = load_data("synthetic-mnist", root="data", train_subset=256)
    single = DeviceLoader(data.train, data.info, 64, device="cpu", train=True, seed=0)
    ranks = [DeviceLoader(data.train, data.info, 32, device="cpu", train=True, seed=0, rank=r, world_size=2)
             for r in range(2)]
    for whole, *parts in zip(single, *ranks):
        assert sorted(whole[1].tolist()) == sorted(torch.cat([p[1] for p in parts]).tolist())


def test_crop_is_a_shift_of_the_padded_image_and_flip_mirrors():
    x = torch.rand(2, 3, 8, 8)
    shifts, flips = torch.tensor([[0, 8], [4, 4]]), torch.tensor([False, True])
    out = crop_and_flip(x, shifts, flips)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    torch.testing.assert_close(out[0], padded[0, :, 0:8, 8:16])
    torch.testing.assert_close(out[1], x[1].flip(-1))


def test_a_missing_data_set_names_the_command_that_fetches_it(tmp_path):
    with pytest.raises(TrainersError, match=r"python -m trainers download cifar10 --data-dir"):
        load_data("cifar10", root=tmp_path)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.exists(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_loads_from_the_debian_package(tmp_path):
    data = load_data("fashion-mnist", root=tmp_path)
    assert data.train.images.shape == (60000, 1, 28, 28) and len(data.test) == 10000
    assert set(data.test.labels.unique().tolist()) == set(range(10))
