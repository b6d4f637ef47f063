"""Models: Figure 1 parameter counts, every parameter gets a gradient, gradscope grouping."""

import pytest
import torch

from gradscope.grouping import auto_groups
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
