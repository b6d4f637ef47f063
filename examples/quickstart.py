"""Record two short trainings with gradscope and export their Figure-6 heatmap.

A small CIFAR-style ResNet learns Fashion-MNIST (Debian's dataset-fashion-mnist; random data if it is
absent) once with plain cross-entropy and once with label smoothing, the regulariser that
teacher-free KD resembles. The heatmap shows each layer's mean |g| per stage, side by side.

    python examples/quickstart.py --out demo
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import gradscope

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def fashion_mnist(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` training images in [0, 1], or random stand-ins when the files are absent."""
    images, labels = FASHION_MNIST / "train-images-idx3-ubyte.gz", FASHION_MNIST / "train-labels-idx1-ubyte.gz"
    if not images.exists():
        print(f"{FASHION_MNIST} not found (apt-get install dataset-fashion-mnist); using random data")
        g = torch.Generator().manual_seed(0)
        return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    with gzip.open(images) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return torch.from_numpy(x.astype(np.float32) / 255), torch.from_numpy(y.astype(np.int64))


class Block(nn.Module):
    """A basic residual block."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """Three stages of two blocks: the shape of a CIFAR ResNet at a size a laptop trains in a minute."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        widths = [width, 2 * width, 4 * width]
        self.layer1 = nn.Sequential(Block(width, widths[0], 1), Block(widths[0], widths[0], 1))
        self.layer2 = nn.Sequential(Block(widths[0], widths[1], 2), Block(widths[1], widths[1], 1))
        self.layer3 = nn.Sequential(Block(widths[1], widths[2], 2), Block(widths[2], widths[2], 1))
        self.fc = nn.Linear(widths[2], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def train(name: str, loss_fn: nn.Module, data: tuple[torch.Tensor, torch.Tensor], out: Path, epochs: int) -> None:
    """One short training run, recorded into ``out / name``."""
    torch.manual_seed(0)
    model = SmallResNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = data
    with gradscope.record(model, out / name, optimizer=optimizer, tags={"title": name}, append=False) as rec:
        bar = tqdm(total=epochs * (len(x) // 64), desc=name, unit="step")
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).split(64)[:-1]:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                optimizer.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")  # the demo's own progress, not the recorder's
        bar.close()
    print(f"{name}: {rec!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo"))
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = fashion_mnist(args.images)
    runs = {"baseline": nn.CrossEntropyLoss(), "label-smoothing": nn.CrossEntropyLoss(label_smoothing=0.1)}
    for name, loss_fn in runs.items():
        if (args.out / name).exists():
            import shutil

            shutil.rmtree(args.out / name)
        train(name, loss_fn, data, args.out, args.epochs)
    records = {name: gradscope.load(args.out / name) for name in runs}
    figures = [
        (gradscope.heatmap(records, columns="stage", window=(0.0, 0.2)), args.out / "heatmap-early.png"),
        (gradscope.heatmap(records, columns="block"), args.out / "heatmap.png"),
        (gradscope.heatmap(records, columns="block"), args.out / "heatmap.html"),
    ]
    from gradscope.exporting import write_figures

    for path in write_figures(figures):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
