"""trainers.models: Figure 1 counts, torchvision as the reference for the residual stages, gradients, grouping."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tv
from torch import nn

from gradscope.grouping import Groups, auto_groups
from trainers.errors import TrainersError
from trainers.models import MODELS, Normalize, build_model, count_parameters, model_options

MNIST = {"in_shape": (1, 28, 28), "num_classes": 10, "mean": (0.1307,), "std": (0.3081,)}
CIFAR = {"in_shape": (3, 32, 32), "num_classes": 10, "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
RESNETS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]),
           "resnet50": ("bottleneck", [3, 4, 6, 3])}


def _on_meta(name: str, **kwargs) -> nn.Module:
    """Full-size model without allocating or initialising weights: counting needs shapes only."""
    with torch.device("meta"):
        return build_model(name, **kwargs)


def _cifar_resnet_count(kind: str, depths: list[int], in_channels: int, classes: int, width: int = 64) -> int:
    """Parameter count of a CIFAR ResNet written out by hand (BN: 2 per channel), independent of the code."""
    def conv_bn(c_in: int, c_out: int, k: int) -> int:
        return c_in * c_out * k * k + 2 * c_out

    total, c_in = conv_bn(in_channels, width, 3), width
    for i, depth in enumerate(depths):
        planes = width * 2**i
        for b in range(depth):
            stride = 2 if i > 0 and b == 0 else 1
            c_out = planes * (4 if kind == "bottleneck" else 1)
            if kind == "basic":
                total += conv_bn(c_in, planes, 3) + conv_bn(planes, planes, 3)
            else:
                total += conv_bn(c_in, planes, 1) + conv_bn(planes, planes, 3) + conv_bn(planes, c_out, 1)
            if stride != 1 or c_in != c_out:
                total += conv_bn(c_in, c_out, 1)
            c_in = c_out
    return total + c_in * classes + classes


# -- parameter counts ------------------------------------------------------------------------------
def test_mlp_parameter_counts_match_figure_1():
    teacher, student = build_model("mlp-teacher", **MNIST), build_model("mlp-student", **MNIST)
    assert count_parameters(teacher, biases=False) == 784 * 1200 + 1200 * 1200 + 1200 * 10 == 2_392_800
    assert count_parameters(student, biases=False) == 784 * 400 + 400 * 10 == 317_600
    assert count_parameters(teacher) == 2_395_210
    assert count_parameters(student) == 318_010


def test_mlp_layers_are_the_posters():
    teacher = build_model("mlp-teacher", **MNIST)
    linears = [(n, m.in_features, m.out_features) for n, m in teacher.named_children() if isinstance(m, nn.Linear)]
    assert linears == [("fc1", 784, 1200), ("fc2", 1200, 1200), ("fc3", 1200, 10)]
    student = build_model("mlp-student", **{**CIFAR, "num_classes": 100})
    assert (student.fc1.in_features, student.fc2.out_features) == (3 * 32 * 32, 100)
    assert [n for n, _ in teacher.named_children()][:2] == ["normalize", "flatten"]


def test_resnet18_has_the_usual_cifar_parameter_count():
    assert count_parameters(_on_meta("resnet18", **CIFAR)) == 11_173_962


@pytest.mark.parametrize("name", list(RESNETS))
@pytest.mark.parametrize("shape", [CIFAR, MNIST])
def test_resnet_counts_match_a_hand_written_formula(name, shape):
    kind, depths = RESNETS[name]
    model = _on_meta(name, **shape)
    assert count_parameters(model) == _cifar_resnet_count(kind, depths, shape["in_shape"][0], 10)
    small = _on_meta(name, **shape, width=8)
    assert count_parameters(small) == _cifar_resnet_count(kind, depths, shape["in_shape"][0], 10, width=8)


def test_weights_only_leaves_out_every_bias_and_keeps_batchnorm_scales():
    model = _on_meta("resnet18", **CIFAR)
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias"))
    bn_scales = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert count_parameters(model) - count_parameters(model, biases=False) == biases == bn_scales + 10


# -- torchvision as the reference for the residual stages ------------------------------------------
@pytest.mark.parametrize("name", list(RESNETS))
def test_stages_compute_what_torchvisions_stages_compute(name):
    """Same stage tensors (shortcut = torchvision's downsample) and, with the same weights, the same outputs."""
    torch.manual_seed(0)
    ours, reference = build_model(name, **CIFAR), getattr(tv, name)()
    for m in ours.modules():  # non-trivial BN statistics, so eval-mode BN is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    stages = {k.replace("shortcut", "downsample"): v for k, v in ours.state_dict().items() if k.startswith("layer")}
    assert stages.keys() == {k for k in reference.state_dict() if k.startswith("layer")}
    reference.load_state_dict(stages, strict=False)
    ours.eval(), reference.eval()
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        for i in range(1, 5):
            got, want = getattr(ours, f"layer{i}")(x), getattr(reference, f"layer{i}")(x)
            torch.testing.assert_close(got, want)
            x = want


def test_resnet_stem_and_head_are_the_cifar_ones():
    model = build_model("resnet50", **CIFAR, width=8)
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.bias) == ((3, 3), (1, 1), None)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model.linear.in_features == 8 * 8 * 4
    assert [n for n, _ in model.named_children()] == ["normalize", "conv1", "bn1", "layer1", "layer2", "layer3",
                                                      "layer4", "linear"]


# -- every model runs and learns -------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("shape", [MNIST, CIFAR], ids=["mnist", "cifar"])
def test_every_model_runs_and_every_parameter_gets_a_finite_gradient(name, shape):
    torch.manual_seed(0)
    model = build_model(name, **shape, width=8)
    out = model(torch.rand(2, *shape["in_shape"]))
    assert out.shape == (2, 10)
    nn.functional.cross_entropy(out, torch.tensor([1, 7])).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_resnet50_output_shape_at_width_8():
    model = build_model("resnet50", **CIFAR, width=8).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        assert model(torch.rand(3, 3, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("name", list(MODELS))
def test_models_trace_without_python_control_flow_and_run_channels_last(name):
    """symbolic_trace fails on data-dependent branches, which also break torch.compile into graphs."""
    torch.manual_seed(0)
    model = build_model(name, **CIFAR, width=8).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), want)
        fast = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(fast(x.to(memory_format=torch.channels_last)), want, rtol=1e-4, atol=1e-5)


# -- normalisation inside the model ----------------------------------------------------------------
def test_normalize_is_per_channel_and_has_only_persistent_buffers():
    norm = Normalize(CIFAR["mean"], CIFAR["std"])
    x = torch.rand(2, 3, 4, 4)
    for c in range(3):
        torch.testing.assert_close(norm(x)[:, c], (x[:, c] - CIFAR["mean"][c]) / CIFAR["std"][c])
    assert not list(norm.parameters())
    assert set(norm.state_dict()) == {"mean", "std"}


@pytest.mark.parametrize("name", list(MODELS))
def test_a_checkpoint_carries_the_normalisation(name):
    model = build_model(name, **MNIST, width=8)
    assert model.normalize is next(iter(model.children()))
    assert not list(model.normalize.parameters())
    state = model.state_dict()
    assert state["normalize.mean"].flatten().tolist() == pytest.approx(MNIST["mean"])
    other = build_model(name, **{**MNIST, "mean": (0.0,), "std": (1.0,)}, width=8)
    other.load_state_dict(state)
    assert other.normalize.std.flatten().tolist() == pytest.approx(MNIST["std"])


# -- gradscope grouping --------------------------------------------------------------------------
def test_resnet18_groups_into_stem_blocks_and_head():
    model = build_model("resnet18", **CIFAR, width=8)
    names = [n for n, _ in model.named_parameters()]
    groups = dict(zip(names, auto_groups(model, names)))
    blocks = {f"layer{s}.{b}" for s in range(1, 5) for b in (0, 1)}
    assert {g.block for g in groups.values()} == {"stem", "head"} | blocks
    assert {g.stage for g in groups.values()} == {"stem", "head", "layer1", "layer2", "layer3", "layer4"}
    assert (groups["conv1.weight"].block, groups["bn1.bias"].stage) == ("stem", "stem")
    assert groups["layer2.0.shortcut.0.weight"] == Groups("layer2.0.shortcut.0", "layer2.0", "layer2")
    assert (groups["linear.weight"].block, groups["linear.bias"].stage) == ("head", "head")


def test_mlp_layers_are_their_own_groups():
    model = build_model("mlp-teacher", **MNIST)
    names = [n for n, _ in model.named_parameters()]
    assert [g.stage for g in auto_groups(model, names)] == ["fc1", "fc1", "fc2", "fc2", "fc3", "fc3"]


# -- errors speak to the user ----------------------------------------------------------------------
def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(TrainersError, match="unknown model 'vgg'.*mlp-teacher.*resnet18.*resnet50"):
        build_model("vgg", **CIFAR)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"depth": 3}, "model 'resnet18' has no option 'depth'; it accepts: width"),
    ({"width": 0}, "width must be a positive integer"),
    ({"mean": (0.5,)}, "one value for each of 3 channels"),
    ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
    ({"in_shape": (3, 32)}, "three positive integers"),
    ({"num_classes": 0}, "num_classes must be a positive integer"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    with pytest.raises(TrainersError, match=message) as caught:
        build_model("resnet18", **{**CIFAR, **kwargs})
    assert "\n" not in str(caught.value)


def test_every_model_lists_its_options():
    assert {name: model_options(name) for name in MODELS} == dict.fromkeys(MODELS, ["width"])
