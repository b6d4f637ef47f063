"""Training throughput of a CIFAR ResNet18 step: ``python benchmarks/training_throughput.py``.

Side by side in one process, for ``baseline`` (cross-entropy) and ``at`` (PGD-7 adversarial
training), it times:

* ``trainers``: this package's loop: the data set on the device (`DeviceLoader`, augmentation on the
  device), optional bfloat16 autocast, channels_last and torch.compile;
* ``reference``: the loop of the poster's code and most repositories: torchvision ``DataLoader`` with
  per-image CPU transforms (PIL crop and flip, ToTensor, Normalize), float32.

Both run the same model, optimizer and method loss, so the ratio is the loop's doing. It prints
images per second, the ratio, and the projected wall time of the poster's schedules (200 epochs of
50,000 images for the baseline, 50 epochs of 49,000 for AT; evaluation not included).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from trainers.data import DatasetInfo, DeviceLoader, Split
from trainers.methods import METHODS, Hyper
from trainers.models import build_model

CIFAR = DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True)
SCHEDULE_IMAGES = {"baseline": 200 * 50_000, "at": 50 * 49_000}


def random_cifar(n: int, seed: int = 0) -> Split:
    """CIFAR-shaped uint8 images; the speed of a step does not depend on the pixels."""
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                 torch.randint(0, 10, (n,), generator=g))


def reference_batches(split: Split, batch_size: int, workers: int, device: torch.device) -> Iterator[Any]:
    """A torchvision DataLoader with per-image PIL transforms, as in the reference code."""
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor()])
    images = split.images.permute(0, 2, 3, 1).numpy()
    labels = split.labels.numpy()

    class PILDataset(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return transform(Image.fromarray(images[i])), int(labels[i])

    loader = torch.utils.data.DataLoader(PILDataset(), batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def device_batches(split: Split, batch_size: int, device: torch.device, channels_last: bool) -> Iterator[Any]:
    """This package's loader, epoch after epoch."""
    loader = DeviceLoader(split, CIFAR, batch_size, device=device, train=True, seed=0, channels_last=channels_last)
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def time_steps(model: nn.Module, method: str, batches: Iterator[Any], steps: int, warmup: int,
               device: torch.device, bf16: bool) -> float:
    """Images per second over ``steps`` training steps after ``warmup`` ones."""
    entry = METHODS.get(method)
    hyper = Hyper(**entry.resolve_defaults(10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    model.train()
    seen, started = 0, 0.0
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started, seen = time.perf_counter(), 0
        x, y = next(batches)
        with autocast:
            loss = entry.loss(model, None, x, y, hyper).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every (method, loop) pair; returns the figures."""
    device = torch.device(args.device)
    split = random_cifar(args.images)
    rows = []
    for method in args.methods:
        row: dict[str, Any] = {"method": method}
        for loop in ("trainers", "reference"):
            torch.manual_seed(0)
            model = build_model("resnet18", in_shape=CIFAR.shape, num_classes=10, mean=CIFAR.mean, std=CIFAR.std,
                                width=args.width).to(device)
            fast = loop == "trainers"
            if fast and args.channels_last:
                model = model.to(memory_format=torch.channels_last)
            if fast and args.compile:
                model = torch.compile(model)
            batches = (device_batches(split, args.batch_size, device, args.channels_last) if fast
                       else reference_batches(split, args.batch_size, args.workers, device))
            steps = args.steps if method == "baseline" else max(1, args.steps // 4)
            row[loop] = time_steps(model, method, batches, steps, args.warmup, device, fast and args.bf16)
        row["ratio"] = row["trainers"] / row["reference"]
        row["projected_min"] = SCHEDULE_IMAGES.get(method, 0) / row["trainers"] / 60
        rows.append(row)
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "options": vars(args), "rows": rows}


def report(figures: dict[str, Any]) -> str:
    """The table the command prints."""
    o = figures["options"]
    lines = [f"ResNet18 (width {o['width']}) training throughput on {figures['device']}, torch {figures['torch']}, "
             f"batch {o['batch_size']}; trainers loop: bf16={o['bf16']} channels_last={o['channels_last']} "
             f"compile={o['compile']}; reference: DataLoader, {o['workers']} workers, float32",
             f"{'method':10s} {'trainers img/s':>15s} {'reference img/s':>16s} {'ratio':>7s} {'schedule':>10s}"]
    for r in figures["rows"]:
        lines.append(f"{r['method']:10s} {r['trainers']:15.1f} {r['reference']:16.1f} {r['ratio']:6.2f}x "
                     f"{r['projected_min']:8.1f} min")
    lines.append("schedule: projected time of the poster's schedule with the trainers loop "
                 "(baseline 200 x 50,000 images, at 50 x 49,000; evaluation not included)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python benchmarks/training_throughput.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", nargs="+", default=["baseline", "at"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (AT: a quarter)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--images", type=int, default=None, help="size of the generated data set")
    parser.add_argument("--workers", type=int, default=None, help="reference DataLoader workers")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bfloat16 autocast in the trainers loop (default: on a GPU only)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    defaults = {"steps": 100 if gpu else 4, "warmup": 10 if gpu else 1, "images": 50_000 if gpu else 2_000,
                "workers": 8 if gpu else 2, "bf16": gpu}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    figures = run(args)
    print(report(figures))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
