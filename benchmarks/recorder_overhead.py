"""Step-time overhead of gradient recording on a CIFAR ResNet18: ``python benchmarks/recorder_overhead.py``.

Four variants of the same training step (forward, cross-entropy, backward, SGD step) run side by
side in one process, on identical fresh models and the same seeded batch:

* ``none``: no recording, the baseline;
* ``gradscope``: ``gradscope.record``, recording every step to disk, at the step of an optimizer
  that does nothing else (called between backward and the real step), so that its step alone is
  the recorder's cost through public API only;
* ``naive``: ``[p.grad.norm().item() for p in model.parameters()]`` after each backward;
* ``histogram``: a gradient hook per parameter that takes min, max and a 64-bin histogram to the
  host, as ``wandb.watch(model, log="gradients", log_freq=1)`` would.

The variants are interleaved round by round, so that drift of the machine (clock, other load) hits
all of them alike, and medians are reported. Each variant's added work is also timed alone, on the
gradients of one step, which gives its cost without the noise of the step around it. The alone
costs answer "one recorded step at most 1.5x the naive loop" on CPU (`ALONE_VS_NAIVE_MAX`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import gradscope
from gradscope import native

RATIO_TARGET = {"cpu": 1.03, "cuda": 1.02}  # gradscope step time / unrecorded step time, at most
LESS_TARGET = 10.0  # naive loop's added time / gradscope's added time, at least (GPU: 62 syncs avoided)
ALONE_VS_NAIVE_MAX = {"cpu": 1.5}  # gradscope's cost alone / the naive loop's, at most
RESNET18_TENSORS = 62
HISTOGRAM_BINS = 64
DESCRIPTION = "Training-step overhead of gradscope vs no recording, a naive norm loop and histogram hooks."
ALONE_BLOCKS = 5  # the added work alone is timed in this many blocks; their median is reported
# Per-device defaults: a 2-core CPU takes ~1.3 s per step at batch 64 (default run ~4 min).
DEFAULTS = {
    "cpu": {"batch_size": 64, "rounds": 20, "steps_per_round": 2, "warmup": 2, "alone_calls": 10},
    "cuda": {"batch_size": 128, "rounds": 30, "steps_per_round": 20, "warmup": 20, "alone_calls": 200},
}


# -- model -----------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut (a 1x1 conv-BN where the shape changes)."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv-BN-ReLU, conv-BN, plus the shortcut, ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet18(nn.Module):
    """ResNet18 for 32x32 inputs: 3x3 stem, no max-pool, four stages of two BasicBlocks.

    Defined here so that the benchmark needs torch only (no torchvision).
    """

    def __init__(self, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._stage(width, width, 1)
        self.layer2 = self._stage(width, 2 * width, 2)
        self.layer3 = self._stage(2 * width, 4 * width, 2)
        self.layer4 = self._stage(4 * width, 8 * width, 2)
        self.linear = nn.Linear(8 * width, num_classes)

    @staticmethod
    def _stage(in_channels: int, channels: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_channels, channels, stride), BasicBlock(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of 32x32 RGB images."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18(width: int = 64, num_classes: int = 10) -> CifarResNet18:
    """The benchmark model; checks it has the 62 parameter tensors of the standard ResNet18."""
    model = CifarResNet18(width, num_classes)
    n = len(list(model.parameters()))
    assert n == RESNET18_TENSORS, f"CIFAR ResNet18 should have {RESNET18_TENSORS} parameter tensors, has {n}"
    return model


# -- variants --------------------------------------------------------------------------------------
class Variant:
    """One way of watching gradients, by what it adds to a training step. This base adds nothing."""

    name: ClassVar[str] = "none"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
        self.model, self.optimizer = model, optimizer

    def after_backward(self) -> None:
        """Runs between backward and the optimizer step."""

    def added_work(self) -> None:
        """The work this variant adds to one step, run on the current gradients outside any step."""

    def close(self) -> None:
        """Remove hooks and finish files."""


class StepTrigger(torch.optim.Optimizer):
    """An optimizer whose step changes nothing: stepping it fires the recorder's hook, and only that."""

    def __init__(self, params: Any) -> None:
        super().__init__(params, {})

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        """Nothing: the step pre-hooks (gradscope's) are the work."""


class Gradscope(Variant):
    """``gradscope.record`` at every step, writing its record under ``folder``.

    It records at the step of a `StepTrigger` called just before the real optimizer's step (where
    ``record(model, optimizer=opt)`` would record), so that `added_work` is public API.
    """

    name = "gradscope"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
        super().__init__(model, optimizer, folder)
        self.trigger = StepTrigger(model.parameters())
        self.recorder = gradscope.record(model, folder / "record", optimizer=self.trigger)

    def after_backward(self) -> None:
        """One recorded step, on the gradients the real step is about to use."""
        self.trigger.step()

    def added_work(self) -> None:
        """The same: one recorded step."""
        self.trigger.step()

    def close(self) -> None:
        """Flush and close the record."""
        self.recorder.close()


class NaiveLoop(Variant):
    """One norm per parameter, each read back to the host: a device sync per tensor."""

    name = "naive"

    def after_backward(self) -> None:
        """The per-parameter norm loop."""
        self.norms = [p.grad.norm().item() for p in self.model.parameters() if p.grad is not None]

    def added_work(self) -> None:
        """The same loop."""
        self.after_backward()


def host_histogram(grad: torch.Tensor, bins: int = HISTOGRAM_BINS) -> tuple[list[float], float, float]:
    """What wandb.watch logs per gradient: its finite values' histogram, min and max, on the host."""
    flat = grad.detach().reshape(-1).float()
    finite = torch.isfinite(flat)
    if not bool(finite.all()):
        flat = flat[finite]
    if flat.numel() == 0:
        return [], math.nan, math.nan
    low, high = flat.min().item(), flat.max().item()
    return torch.histc(flat, bins=bins, min=low, max=high).cpu().tolist(), low, high


class HistogramHooks(Variant):
    """A ``register_hook`` per parameter taking its gradient's histogram to the host every step."""

    name = "histogram"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
        super().__init__(model, optimizer, folder)
        self.logged: dict[str, tuple[list[float], float, float]] = {}
        self.handles = [p.register_hook(self._hook(name)) for name, p in model.named_parameters()]

    def _hook(self, name: str) -> Callable[[torch.Tensor], None]:
        def log(grad: torch.Tensor) -> None:
            self.logged[name] = host_histogram(grad)

        return log

    def added_work(self) -> None:
        """Every hook's work, on the gradients the last backward left."""
        for name, p in self.model.named_parameters():
            if p.grad is not None:
                self.logged[name] = host_histogram(p.grad)

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()


VARIANTS: tuple[type[Variant], ...] = (Variant, Gradscope, NaiveLoop, HistogramHooks)


# -- timing ----------------------------------------------------------------------------------------
@dataclass
class Config:
    """One benchmark run's settings (stored in the JSON output)."""

    device: str
    batch_size: int
    rounds: int
    steps_per_round: int
    warmup: int
    alone_calls: int
    threads: int
    width: int = 64
    channels_last: bool = False
    bf16: bool = False
    seed: int = 0


@dataclass
class Runner:
    """A variant (its model and optimizer included) stepping on the shared batch."""

    variant: Variant
    inputs: torch.Tensor
    targets: torch.Tensor
    bf16: bool

    def step(self) -> None:
        """One training step; the variant's hooks fire inside it."""
        model, optimizer = self.variant.model, self.variant.optimizer
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.inputs.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(model(self.inputs), self.targets)
        loss.backward()
        self.variant.after_backward()
        optimizer.step()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that the clock reads finished work; used only at region edges."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], calls: int, device: torch.device) -> float:
    """Mean seconds per call of ``fn`` over ``calls`` back-to-back calls."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / max(calls, 1)


def make_runners(config: Config, folder: Path) -> list[Runner]:
    """One runner per variant: deep copies of one seeded model, one seeded batch."""
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    base = resnet18(config.width).to(device)
    inputs = torch.randn(config.batch_size, 3, 32, 32, device=device)
    targets = torch.randint(0, 10, (config.batch_size,), device=device)
    if config.channels_last:
        base = base.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    runners = []
    for kind in VARIANTS:
        model = copy.deepcopy(base)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        runners.append(Runner(kind(model, optimizer, folder), inputs, targets, config.bf16))
    return runners


def interleaved_step_times(runners: Sequence[Runner], config: Config) -> dict[str, list[float]]:
    """Per-round mean step time of every variant; each round visits all of them, the order rotating."""
    device = torch.device(config.device)
    for runner in runners:
        timed(runner.step, config.warmup, device)
    times: dict[str, list[float]] = {r.variant.name: [] for r in runners}
    for round_ in range(config.rounds):
        shift = round_ % len(runners)
        for runner in [*runners[shift:], *runners[:shift]]:
            times[runner.variant.name].append(timed(runner.step, config.steps_per_round, device))
    return times


def alone_times(runners: Sequence[Runner], config: Config) -> dict[str, float]:
    """Median seconds of each variant's added work alone, on the gradients its last step left.

    The variants take turns block by block, so that a burst of other load hits them alike.
    """
    device = torch.device(config.device)
    calls = max(1, config.alone_calls // ALONE_BLOCKS)
    for runner in runners:
        runner.variant.added_work()  # warm-up
    blocks: dict[str, list[float]] = {r.variant.name: [] for r in runners}
    for _ in range(ALONE_BLOCKS):
        for runner in runners:
            blocks[runner.variant.name].append(timed(runner.variant.added_work, calls, device))
    return {name: float(np.median(times)) for name, times in blocks.items()}


# -- results ---------------------------------------------------------------------------------------
@dataclass
class VariantResult:
    """One variant's figures (times in milliseconds)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    ratio: float  # median step / unrecorded median step
    ratio_low: float  # 90% bootstrap interval of that ratio
    ratio_high: float
    added_ms: float  # median step - unrecorded median step
    alone_ms: float
    samples_ms: list[float] = field(repr=False)


@dataclass
class Results:
    """Every variant's figures, and how gradscope's compare with the targets."""

    variants: dict[str, VariantResult]
    ratio_target: float
    model_numel: int

    @property
    def ratio_outcome(self) -> str:
        """The step-ratio target judged on the interval: a median inside the noise decides nothing."""
        ours = self.variants["gradscope"]
        if ours.ratio_high <= self.ratio_target:
            return "met"
        return "NOT met" if ours.ratio_low > self.ratio_target else "undecided (the interval straddles it)"

    @property
    def ratio_from_alone(self) -> float:
        """The step ratio implied by gradscope's added work timed alone: precise, but ignores contention."""
        return 1 + self.variants["gradscope"].alone_ms / self.variants["none"].median_ms

    @property
    def less_in_step(self) -> float:
        """Naive loop's added time / gradscope's, from the step medians (as noisy as they are)."""
        return times_less(self.variants["naive"].added_ms, self.variants["gradscope"].added_ms)

    @property
    def alone_vs_naive(self) -> float:
        """gradscope's cost alone / the naive loop's: a recorded step against one norm per tensor."""
        naive = self.variants["naive"].alone_ms
        return self.variants["gradscope"].alone_ms / naive if naive > 0 else math.nan

    @property
    def less_alone(self) -> float:
        """The same from the added work timed alone."""
        return times_less(self.variants["naive"].alone_ms, self.variants["gradscope"].alone_ms)


def times_less(theirs: float, ours: float) -> float:
    """How many times less ``ours`` adds than ``theirs``; inf when ours is below measurement (<= 0)."""
    if ours <= 0:
        return math.inf if theirs > 0 else math.nan
    return max(theirs, 0.0) / ours


def ratio_interval(samples: Sequence[float], base: Sequence[float], draws: int = 2000) -> tuple[float, float]:
    """90% bootstrap interval of median(samples) / median(base), resampling whole rounds of both."""
    rng = np.random.default_rng(0)
    ours, theirs = np.asarray(samples), np.asarray(base)
    picks = rng.integers(0, len(ours), size=(draws, len(ours)))
    ratios = np.median(ours[picks], axis=1) / np.median(theirs[picks], axis=1)
    return float(np.percentile(ratios, 5)), float(np.percentile(ratios, 95))


def summarize(steps: dict[str, list[float]], alone: dict[str, float], config: Config, numel: int) -> Results:
    """Medians, spread and ratios to the unrecorded step, per variant."""
    base = float(np.median(steps["none"]))
    variants = {}
    for name, samples in steps.items():
        median = float(np.median(samples))
        low, high = ratio_interval(samples, steps["none"])
        variants[name] = VariantResult(
            median_ms=1e3 * median, ratio=median / base, ratio_low=low, ratio_high=high,
            p10_ms=1e3 * float(np.percentile(samples, 10)), p90_ms=1e3 * float(np.percentile(samples, 90)),
            added_ms=1e3 * (median - base), alone_ms=1e3 * alone[name], samples_ms=[1e3 * s for s in samples],
        )
    return Results(variants, RATIO_TARGET[config.device], numel)


def verdict(met: bool) -> str:
    """A target's outcome in words."""
    return "met" if met else "NOT met"


def report(config: Config, results: Results) -> str:
    """The printed table and the targets' outcomes."""
    extras = (", channels_last" if config.channels_last else "") + (", bf16 autocast" if config.bf16 else "")
    lines = [
        f"gradscope overhead: CIFAR ResNet18 (width {config.width}, {RESNET18_TENSORS} tensors, "
        f"{results.model_numel / 1e6:.2f}M parameters), batch {config.batch_size}, "
        f"{config.device} ({config.threads} threads){extras}, torch {torch.__version__}",
        f"{config.rounds} rounds x {config.steps_per_round} steps per variant, interleaved, after "
        f"{config.warmup} warm-up steps; 'alone': the added work on its own, "
        f"median of {ALONE_BLOCKS} x {max(1, config.alone_calls // ALONE_BLOCKS)} calls",
        f"gradscope's CPU partials: {native.describe()}" if config.device == "cpu" else "gradscope's GPU partials: "
        "torch._foreach_norm kernels",
        "",
        "variant     median ms    p10 ms    p90 ms   vs none   90% interval   added ms   alone ms",
    ]
    for name, v in results.variants.items():
        lines.append(
            f"{name:<10} {v.median_ms:>10.2f} {v.p10_ms:>9.2f} {v.p90_ms:>9.2f} {v.ratio:>8.3f}x "
            f"{v.ratio_low:>7.3f}-{v.ratio_high:.3f} {v.added_ms:>10.2f} {v.alone_ms:>10.3f}"
        )
    ours, naive, target = results.variants["gradscope"], results.variants["naive"], results.ratio_target
    less = f"(target >= {LESS_TARGET:g}x)"
    lines += [
        "",
        f"gradscope step: {ours.ratio:.3f}x the unrecorded step, 90% interval {ours.ratio_low:.3f}-"
        f"{ours.ratio_high:.3f} (target <= {target}x on {config.device}): {results.ratio_outcome}",
        f"  implied by its cost alone: 1 + {ours.alone_ms:.2f} / {results.variants['none'].median_ms:.2f} = "
        f"{results.ratio_from_alone:.3f}x: {verdict(results.ratio_from_alone <= target)}",
        f"in the step: gradscope adds {ours.added_ms:.2f} ms, naive adds {naive.added_ms:.2f} ms: "
        f"{results.less_in_step:.2f}x less {less}: {verdict(results.less_in_step >= LESS_TARGET)}",
        f"alone:       gradscope adds {ours.alone_ms:.3f} ms, naive adds {naive.alone_ms:.3f} ms: "
        f"{results.less_alone:.2f}x less {less}: {verdict(results.less_alone >= LESS_TARGET)}",
    ]
    alone_max = ALONE_VS_NAIVE_MAX.get(config.device)
    if alone_max is not None:
        lines.append(
            f"one recorded step alone: {results.alone_vs_naive:.2f}x the naive loop's cost "
            f"(target <= {alone_max}x on {config.device}): {verdict(results.alone_vs_naive <= alone_max)}"
        )
    return "\n".join(lines)


def finite_or_none(x: float) -> float | None:
    """``x``, or None where strict JSON has no number for it (inf, NaN)."""
    return x if math.isfinite(x) else None


def to_json(config: Config, results: Results) -> dict[str, Any]:
    """Results with enough context to compare runs later."""
    return {
        "config": asdict(config),
        "torch": torch.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device_name": torch.cuda.get_device_name() if config.device == "cuda" else "cpu",
        "cpu_partials": native.describe() if config.device == "cpu" else None,
        "variants": {name: asdict(v) for name, v in results.variants.items()},
        "targets": {
            "ratio_max": results.ratio_target, "ratio": results.ratio_outcome,
            "ratio_from_alone": results.ratio_from_alone, "less_min": LESS_TARGET,
            "less_in_step": finite_or_none(results.less_in_step),
            "less_alone": finite_or_none(results.less_alone),
            "alone_vs_naive": finite_or_none(results.alone_vs_naive),
            "alone_vs_naive_max": ALONE_VS_NAIVE_MAX.get(config.device),
        },
    }


# -- entry point -----------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> tuple[Config, Path | None]:
    """The settings, with per-device defaults for those left out, and the JSON path if any."""
    parser = argparse.ArgumentParser(prog="python benchmarks/recorder_overhead.py", description=DESCRIPTION)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device)
    parser.add_argument("--batch-size", type=int, help="default 64 on cpu, 128 on cuda")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 20 on cpu, 30 on cuda)")
    parser.add_argument("--steps-per-round", type=int, help="timed steps per variant per round (2; 20)")
    parser.add_argument("--warmup", type=int, help="untimed steps per variant first (2 on cpu, 20 on cuda)")
    parser.add_argument("--alone-calls", type=int, help="calls timing each variant's added work alone")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--width", type=int, default=64, help="stem channels (64: ResNet18)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for forward and loss")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = {key: default if getattr(args, key) is None else getattr(args, key)
              for key, default in DEFAULTS[args.device].items()}
    config = Config(device=args.device, threads=torch.get_num_threads(), width=args.width,
                    channels_last=args.channels_last, bf16=args.bf16, **chosen)
    for key in ("batch_size", "rounds", "steps_per_round", "alone_calls", "width"):
        if getattr(config, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    if config.warmup < 0:
        parser.error("--warmup must be at least 0")
    return config, args.json


def run(config: Config) -> Results:
    """Build the four runners, time them side by side, then their added work alone."""
    with tempfile.TemporaryDirectory(prefix="gradscope-bench-") as folder:
        runners = make_runners(config, Path(folder))
        try:
            steps = interleaved_step_times(runners, config)
            alone = alone_times(runners, config)
        finally:
            for runner in runners:
                runner.variant.close()
    numel = sum(p.numel() for p in runners[0].variant.model.parameters())
    return summarize(steps, alone, config, numel)


def main(argv: Sequence[str] | None = None) -> Results:
    """Run the benchmark, print the table and, with --json, write the results; returns them."""
    config, json_path = parse_args(argv)
    results = run(config)
    print(report(config, results), flush=True)
    if json_path is not None:
        json_path.write_text(json.dumps(to_json(config, results), indent=1))
    return results


if __name__ == "__main__":
    main()
