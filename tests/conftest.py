"""Shared fixtures for the recorder tests: tiny real models and a seeded batch.

The model classes live at module level so that `tests/test_distributed.py` can rebuild them in
spawned worker processes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """CIFAR-style residual block with a 1x1 conv + BN shortcut (always present, to have its parameters)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class TinyResNet(nn.Module):
    """conv1/bn1 stem, layer1 (2 blocks, width 4), layer2 (2 blocks, width 8, stride 2), linear head.

    Input ``(N, 3, 8, 8)``; 10 classes; 41 parameter tensors.
    """

    def __init__(self, width: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 2 * width))
        self.linear = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class TinyMLP(nn.Module):
    """fc1 -> relu -> fc2 -> relu -> out, on flat 12-feature inputs."""

    def __init__(self, features: int = 12, hidden: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


def make_resnet(seed: int = 0) -> TinyResNet:
    torch.manual_seed(seed)
    return TinyResNet()


def make_batch(n: int = 8, seed: int = 1, shape: tuple[int, ...] = (3, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen), torch.randint(0, 10, (n,), generator=gen)


@pytest.fixture
def resnet() -> TinyResNet:
    return make_resnet()


@pytest.fixture
def mlp() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """8 images 3x8x8 and their labels, the same every time."""
    return make_batch()


@pytest.fixture
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Six different seeded batches of 8 images, for multi-step runs."""
    return [make_batch(seed=s) for s in range(10, 16)]


# -- the independent reference ------------------------------------------------------------------------
# Expected grouping of TinyResNet written out by hand, and the four statistics computed directly from
# the concatenated gradients of each group, in float64: nothing here goes through gradscope's code.

LEVEL_NAMES = ("param", "layer", "block", "stage")
STAT_NAMES = ("l2", "mean_abs", "max_abs", "nonfinite")


def resnet_group(name: str, level: str) -> str:
    """Where TinyResNet's parameter ``name`` belongs at ``level`` (stem / layerX.Y / head)."""
    parts = name.split(".")
    if level == "param":
        return name
    if level == "layer":
        return ".".join(parts[:-1])
    if parts[0] in ("layer1", "layer2"):
        return ".".join(parts[:2]) if level == "block" else parts[0]
    return "stem" if parts[0] in ("conv1", "bn1") else "head"


def snapshot(model: nn.Module) -> dict[str, torch.Tensor | None]:
    """Copies of every parameter's current ``.grad`` (None where it has none)."""
    return {n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}


def direct_stats(grads: list[torch.Tensor]) -> list[float]:
    """l2, mean |g|, max |g|, any non-finite of the gradients as one flat float64 tensor; NaN x4 if none."""
    if not grads:
        return [float("nan")] * 4
    flat = torch.cat([g.detach().double().flatten() for g in grads])
    return [
        flat.norm().item(), flat.abs().mean().item(), flat.abs().max().item(),
        float((~torch.isfinite(flat)).any().item()),
    ]


def direct_matrices(snaps: list[dict[str, torch.Tensor | None]], names: list[str], group_of) -> dict:
    """``{stat: (n_steps, len(names)) array}`` of every statistic per group, from gradient snapshots."""
    import numpy as np

    out = {stat: np.empty((len(snaps), len(names))) for stat in STAT_NAMES}
    for i, snap in enumerate(snaps):
        members: dict[str, list[torch.Tensor]] = {group: [] for group in names}
        for n, g in snap.items():
            if g is not None:
                members[group_of(n)].append(g)
        for j, group in enumerate(names):
            for stat, value in zip(STAT_NAMES, direct_stats(members[group])):
                out[stat][i, j] = value
    return out


def assert_matches_direct(record, snaps, group=resnet_group, params=None, rtol: float = 1e-5) -> None:
    """Every statistic at every level of ``record`` equals the direct computation from ``snaps``.

    ``group(name, level)`` is the expected grouping (checked against the record's too); ``params``
    restricts the snapshots to the recorded parameter names.
    """
    import numpy as np

    assert len(record.steps) == len(snaps)
    if params is not None:
        snaps = [{n: g for n, g in s.items() if n in params} for s in snaps]
    names_in_order = list(snaps[0])
    assert record.param_names == names_in_order
    for level in LEVEL_NAMES:
        expected_names = list(dict.fromkeys(group(n, level) for n in names_in_order))
        assert record.names(level) == expected_names, level
        expected_members: dict[str, list[str]] = {}
        for n in names_in_order:
            expected_members.setdefault(group(n, level), []).append(n)
        assert record.members(level) == expected_members, level
        expected = direct_matrices(snaps, expected_names, lambda n, lv=level: group(n, lv))
        for stat in STAT_NAMES:
            steps, names, values = record.matrix(level, stat)
            assert names == expected_names
            assert values.shape == (len(snaps), len(names))
            np.testing.assert_allclose(values, expected[stat], rtol=rtol, atol=1e-12, equal_nan=True,
                                       err_msg=f"{stat} at level {level}")


# -- browser tests (dash[testing]'s dash_duo with Debian's chromium) ---------------------------------
import os  # noqa: E402
import shutil  # noqa: E402

if "DASH_TEST_CHROMEPATH" not in os.environ:
    for _name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(_name):
            os.environ["DASH_TEST_CHROMEPATH"] = shutil.which(_name)
            break


def pytest_setup_options():
    """Chrome options for dash_duo: quiet, offline-friendly."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for flag in ("--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    return options


@pytest.fixture(scope="session")
def mixed_runs(tmp_path_factory):
    """``(folder, {run id: file to blame})``: ``folder/runs`` holds two tiny real trainings and one run per
    broken file of issue 9 (`tests/broken_runs.py`); ``folder/outside`` is where its symlinks lead."""
    from broken_runs import make_runs

    folder = tmp_path_factory.mktemp("mixed")
    return folder, make_runs(folder / "runs", folder / "outside")
