"""The poster's models: Hinton-style MLPs and CIFAR-style ResNets, with normalisation inside.

Every model takes inputs in [0, 1] and normalises them in its first module, so an adversary's ε is
in pixel units. Parameter names follow the layout gradscope groups automatically: ``conv1``/``bn1``
stem, ``layer1``..``layer4`` stages of residual blocks, ``linear`` head; ``fc1``.. for the MLPs.

The poster's "ResNet50" in Re-KD was built as ``ResNet(BasicBlock, [3, 4, 6, 3])``, which is a
ResNet34; ``resnet50`` here is the Bottleneck network of He et al., and ``resnet34`` reruns the
poster's pairing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .errors import TrainersError
from .registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS = Registry[ModelFactory]("model")


class Normalize(nn.Module):
    """(x - mean) / std per channel; buffers, not parameters, so checkpoints carry them."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised inputs."""
        return (x - self.mean) / self.std


class MLP(nn.Module):
    """Fully connected ReLU network ``fc1 .. fcN`` on flattened, normalised inputs."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, normalize: Normalize) -> None:
        super().__init__()
        self.normalize = normalize
        sizes = [in_features, *hidden, num_classes]
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            self.add_module(f"fc{i}", nn.Linear(n_in, n_out))
        self.depth = len(sizes) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        h = self.normalize(x).flatten(1)
        for i in range(1, self.depth + 1):
            h = getattr(self, f"fc{i}")(h)
            if i < self.depth:
                h = torch.relu(h)
        return h


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output."""
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block output."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """CIFAR-style ResNet (He et al., 2016): 3x3 stride-1 stem, no max-pool, four stages."""

    def __init__(self, block: type[BasicBlock | Bottleneck], depths: Sequence[int], num_classes: int,
                 in_channels: int, normalize: Normalize, width: int = 64) -> None:
        super().__init__()
        self.normalize = normalize
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes = width
        for i, (depth, stride) in enumerate(zip(depths, (1, 2, 2, 2)), start=1):
            planes = width * 2 ** (i - 1)
            blocks = []
            for s in [stride] + [1] * (depth - 1):
                blocks.append(block(in_planes, planes, s))
                in_planes = planes * block.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        out = torch.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def _mlp(hidden: Sequence[int]) -> ModelFactory:
    def build(*, in_shape: Sequence[int], num_classes: int, mean: Sequence[float], std: Sequence[float],
              width: int = 64) -> nn.Module:
        return MLP(math.prod(in_shape), hidden, num_classes, Normalize(mean, std))

    return build


def _resnet(block: type[BasicBlock | Bottleneck], depths: Sequence[int]) -> ModelFactory:
    def build(*, in_shape: Sequence[int], num_classes: int, mean: Sequence[float], std: Sequence[float],
              width: int = 64) -> nn.Module:
        return ResNet(block, depths, num_classes, in_shape[0], Normalize(mean, std), width)

    return build


MODELS.add("mlp-teacher", _mlp([1200, 1200]))  # poster Figure 1: 784-1200-1200-10
MODELS.add("mlp-student", _mlp([400]))  # 784-400-10
MODELS.add("resnet18", _resnet(BasicBlock, [2, 2, 2, 2]))
MODELS.add("resnet34", _resnet(BasicBlock, [3, 4, 6, 3]))
MODELS.add("resnet50", _resnet(Bottleneck, [3, 4, 6, 3]))


def build_model(name: str, *, in_shape: Sequence[int], num_classes: int, mean: Sequence[float],
                std: Sequence[float], width: int = 64) -> nn.Module:
    """Build a registered model for inputs of ``in_shape`` (C, H, W) in [0, 1]."""
    factory = MODELS.get(name)
    if width < 1:
        raise TrainersError(f"--width must be a positive integer, got {width!r}")
    if len(mean) != in_shape[0] or len(std) != in_shape[0]:
        raise TrainersError(f"mean/std have {len(mean)}/{len(std)} values for {in_shape[0]} channels")
    return factory(in_shape=in_shape, num_classes=num_classes, mean=mean, std=std, width=width)


def count_parameters(model: nn.Module, *, biases: bool = True) -> int:
    """Number of parameters; ``biases=False`` leaves out every ``*.bias`` (the poster's Figure 1 counts)."""
    return sum(p.numel() for n, p in model.named_parameters() if biases or not n.endswith("bias"))
