"""Attribution maps (Captum) of trained models on fixed test images, to compare what models look at.

Each method is an entry of `ATTRIBUTIONS`, called as ``method(model, x, target)`` on images ``x``
(B, C, H, W) in [0, 1] with the class ``target`` (B,) to explain; `attribute` always explains the
true label, so two models are asked the same question about the same pixels. Shapes:

- ``saliency``: (B, C, H, W), |∂f_y/∂x| (Simonyan et al., 2014), Captum's `Saliency` with ``abs=True``.
- ``ig``: (B, C, H, W), integrated gradients (Sundararajan et al., 2017) from the black image x̄ = 0:
  (x - x̄) · ∫₀¹ ∂f_y(x̄ + α(x - x̄))/∂x dα, with ``n_steps`` Gauss-Legendre points; signed, and its sum
  over pixels approximates f_y(x) - f_y(x̄).
- ``gradcam``: (B, S, H, W), Grad-CAM (Selvaraju et al., 2017) ReLU(Σ_k w_k A^k) with w_k the spatial
  mean of ∂f_y/∂A^k, one map per residual stage: A is the output of the *last* block of ``layer1``
  .. ``layerS`` (see `gradcam_layers`), upsampled bilinearly to (H, W). The last block is what a
  stage hands on, so the S maps show where the class's evidence sits at each depth, from fine
  (``layer1``, full resolution) to coarse (the last stage, H/8 in a CIFAR ResNet). Models without
  such stages (the MLPs) cannot have it: the method raises `AttributionNotApplicable`, which
  `attribute_run` records in ``meta.json`` as a skip, not a crash.

`attribute_run` writes, inside the run folder::

    attribution/
      attributions.npz   raw maps, one array per method (shapes above, float32), plus images (K, C, H, W)
                         float32 in [0, 1], labels and predictions (K,) int64, indices (K,) into the test split
      meta.json          methods, skipped methods and why, image indices, checkpoint, settings, versions, seconds,
                         and ``provenance`` (checkpoint sha256, data set, indices, seed: `trainers.provenance`)
      grid.png           rows = images; columns = input, then each method (gradcam: one column per stage)

Maps are normalised for display only, in the PNG: each tile shows the magnitude (|·| summed over colour
channels) divided by its own 99th percentile, so colours are not comparable across tiles; the npz
keeps the raw values for any comparison. Captum and matplotlib (a dependency of captum) are imported
inside the functions that use them, so ``import trainers`` stays light. Only input and layer gradients are taken
(``torch.autograd.grad``), so the parameters' ``.grad`` are left untouched.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .data import Split, seeded_generator
from .errors import TrainersError
from .progress import tracked
from .provenance import of_checkpoint
from .registry import Registry
from .restore import Restored, data_of, restore
from .run_folder import RunFolder

DEFAULT_METHODS = ("saliency", "ig", "gradcam")
_IMAGE_STREAM = 3  # a random stream of its own, apart from the data loader's (tags 1 and 2)
_DISPLAY_PERCENTILE = 99.0  # a tile's colour scale ends here, so one hot pixel does not blacken the rest


class AttributionNotApplicable(TrainersError):
    """The model lacks what a method needs (Grad-CAM on a network without convolutional stages)."""


@dataclass(frozen=True)
class AttributionSettings:
    """Knobs of the methods that have any; written to ``meta.json`` so a grid can be reproduced.

    Attributes:
        n_steps: integration points of ``ig``; more points, smaller gap between the attributions'
            sum and f(x) - f(x̄).
        internal_batch_size: rows (image × step) per forward pass of ``ig``; bounds its memory,
            which otherwise grows as images × n_steps (never below the number of images).
    """

    n_steps: int = 32
    internal_batch_size: int = 128

    def __post_init__(self) -> None:
        for name in ("n_steps", "internal_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TrainersError(f"attribution setting {name} must be a positive integer, got {value!r}")


DEFAULT_SETTINGS = AttributionSettings()


class AttributionFn(Protocol):
    """``(model, x, target, settings) -> maps``: a pure function of the model and the images."""

    def __call__(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                 settings: AttributionSettings = DEFAULT_SETTINGS) -> torch.Tensor:
        """Maps of ``x`` for class ``target``."""


@dataclass(frozen=True)
class AttributionMethod:
    """A registry entry: how to compute a method's maps and how they split into grid columns.

    To add a method, write ``compute(model, x, target, settings) -> Tensor`` (B, P, H, W) and
    ``ATTRIBUTIONS.add("name", AttributionMethod(compute))``. With ``panels`` None the P channels are
    the input's colour channels and the grid shows one column (their summed magnitude); otherwise
    ``panels(model)`` names each channel, and each becomes a column of its own.
    """

    compute: AttributionFn
    panels: Callable[[nn.Module], list[str]] | None = None

    def __call__(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                 settings: AttributionSettings = DEFAULT_SETTINGS) -> torch.Tensor:
        """The maps of ``x`` for class ``target``."""
        return self.compute(model, x, target, settings)


ATTRIBUTIONS = Registry[AttributionMethod]("attribution method")


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
             settings: AttributionSettings = DEFAULT_SETTINGS) -> torch.Tensor:
    """|∂f_target/∂x|, (B, C, H, W): which pixels would change the logit most, to first order."""
    from captum.attr import Saliency

    # A leaf of our own: captum would otherwise flip requires_grad on the caller's tensor and warn.
    return Saliency(model).attribute(x.detach().clone().requires_grad_(True), target=target, abs=True)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                         settings: AttributionSettings = DEFAULT_SETTINGS) -> torch.Tensor:
    """Integrated gradients from the black image, (B, C, H, W), signed; Σ ≈ f_target(x) - f_target(0)."""
    from captum.attr import IntegratedGradients

    return IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=target, n_steps=settings.n_steps,
        # captum falls back to one image batch per pass below len(x), with a warning; ask for it directly.
        internal_batch_size=max(settings.internal_batch_size, len(x)),
    )


def gradcam_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the last block of each stage ``layer1``, ``layer2``, .. of a ResNet, in order.

    Empty for models without such stages (MLPs): Grad-CAM needs a spatial feature map to weight.
    """
    stages = [(name, child) for name, child in model.named_children()
              if re.fullmatch(r"layer\d+", name) and isinstance(child, nn.Sequential) and len(child)]
    stages.sort(key=lambda pair: int(pair[0][len("layer"):]))
    return [(f"{name}.{len(stage) - 1}", stage[-1]) for name, stage in stages]


def gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
            settings: AttributionSettings = DEFAULT_SETTINGS) -> torch.Tensor:
    """Grad-CAM of each stage's last block, upsampled to the input, stacked: (B, S, H, W), ≥ 0."""
    from captum.attr import LayerAttribution, LayerGradCam

    layers = gradcam_layers(model)
    if not layers:
        raise AttributionNotApplicable(f"gradcam needs residual stages layer1.. with spatial feature maps; "
                                       f"{type(model).__name__} has none (use saliency or ig)")
    maps = []
    for _, layer in layers:
        cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
        maps.append(LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear"))
    return torch.cat(maps, dim=1)


def _gradcam_panels(model: nn.Module) -> list[str]:
    return [f"gradcam {name}" for name, _ in gradcam_layers(model)]


ATTRIBUTIONS.add("saliency", AttributionMethod(saliency))
ATTRIBUTIONS.add("ig", AttributionMethod(integrated_gradients))
ATTRIBUTIONS.add("gradcam", AttributionMethod(gradcam, panels=_gradcam_panels))


# ---------------------------------------------------------------------------------------------------
# Which images


def fixed_indices(split: Split, k: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``k`` test images that are the same for every model trained on a data set.

    The split is shuffled by a generator seeded by ``seed`` only; then the first image of each class
    (classes in order), the second of each class, and so on, are taken. So the rows cover as many
    classes as ``k`` allows, depend on the data set alone (never on the model), and asking for more
    images keeps the earlier ones as a prefix.
    """
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(split):
        raise TrainersError(f"images must be an integer from 1 to {len(split)} (the test split's size), got {k!r}")
    order = torch.randperm(len(split), generator=seeded_generator(_IMAGE_STREAM, seed))
    shuffled = split.labels[order]
    rank = torch.empty_like(shuffled)  # how many of the same class come earlier in the shuffle
    for label in shuffled.unique():
        where = (shuffled == label).nonzero().flatten()
        rank[where] = torch.arange(len(where))
    key = rank * (int(shuffled.max()) + 1) + shuffled  # sort by (rank, class); the pairs are unique
    return order[key.argsort()[:k]]


def fixed_images(split: Split, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 in [0, 1], labels) at `fixed_indices`: what every checkpoint is explained on."""
    return _images_at(split, fixed_indices(split, k, seed))


def _images_at(split: Split, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return split.images[index].float().div(255), split.labels[index]


# ---------------------------------------------------------------------------------------------------
# Computing and saving


def _method_names(methods: Sequence[str] | str) -> list[str]:
    """Distinct names, in order, each checked against the registry (a miss lists the valid ones)."""
    names = list(dict.fromkeys([methods] if isinstance(methods, str) else methods))
    if not names:
        raise TrainersError(f"no attribution methods given; expected some of: {', '.join(ATTRIBUTIONS)}")
    for name in names:
        ATTRIBUTIONS.get(name)
    return names


def attribute(model: nn.Module, x: torch.Tensor, y: torch.Tensor, methods: Sequence[str],
              settings: AttributionSettings = DEFAULT_SETTINGS) -> dict[str, np.ndarray]:
    """Maps of ``x`` (B, C, H, W) in [0, 1] for its true labels ``y``, per method, float32 numpy.

    The model is put in eval mode first: with batch statistics a pixel's attribution would depend on
    the other images of the batch. Every name is checked before any work; a method the model cannot
    have raises `AttributionNotApplicable`, and non-finite maps raise `TrainersError`.
    """
    names = _method_names(methods)
    if x.dim() != 4 or y.shape != x.shape[:1]:
        raise TrainersError(f"attribute needs images (B, C, H, W) and labels (B,), got {tuple(x.shape)} "
                            f"and {tuple(y.shape)}")
    model.eval()
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x, y = x.to(device, torch.float32), y.to(device)
    out = {}
    for name in names:
        maps = ATTRIBUTIONS.get(name)(model, x, y, settings).detach().float().cpu().numpy()
        if not np.isfinite(maps).all():
            raise TrainersError(f"{name} attributions hold {int((~np.isfinite(maps)).sum())} non-finite values; "
                                f"check that the model's logits are finite on these images")
        out[name] = maps
    return out


def attribute_run(path: str | os.PathLike[str], *, images: int = 8, methods: Sequence[str] = DEFAULT_METHODS,
                  device: torch.device | str = "cpu", seed: int = 0,
                  settings: AttributionSettings = DEFAULT_SETTINGS) -> Path:
    """Explain a run's checkpoint on its data set's fixed test images; write ``<run>/attribution/``.

    Args:
        path: a run folder (its best, else last checkpoint) or a checkpoint file.
        images: how many test images (`fixed_indices`), from 1 to the test split's size.
        methods: names in `ATTRIBUTIONS`; those the model cannot have are skipped, with the reason
            in ``meta.json`` (``skipped``), so the default works for MLPs as for ResNets.
        device: where the model runs.
        seed: which images; the same seed gives the same images for every run on a data set.
        settings: the methods' knobs (integration steps of ``ig``).

    Returns:
        The ``attribution`` folder (layout in the module docstring).
    """
    names = _method_names(methods)
    if not isinstance(images, int) or isinstance(images, bool) or images < 1:
        raise TrainersError(f"images must be a positive integer, got {images!r}")
    restored = restore(path, device)
    split = data_of(restored.config).test
    index = fixed_indices(split, images, seed)
    x, y = _images_at(split, index)
    maps: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in tracked(names, "attribution method"):
        start = time.perf_counter()
        try:
            maps.update(attribute(restored.model, x, y, [name], settings))
        except AttributionNotApplicable as exc:
            skipped[name] = str(exc)
        seconds[name] = round(time.perf_counter() - start, 4)
    with torch.no_grad():
        predictions = restored.model(x.to(device)).argmax(1).cpu()

    run = RunFolder(restored.run_dir)
    run.attribution.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"images": x.numpy(), "labels": y.numpy(), "predictions": predictions.numpy(),
                              "indices": index.numpy(), **maps}
    np.savez(run.attribution_arrays, **arrays)
    titles, columns = _columns(restored.model, x, maps)
    rows = [f"#{i} y={label} pred={pred}" for i, label, pred in zip(index.tolist(), y.tolist(), predictions.tolist())]
    _draw_grid(run.attribution_grid, columns, titles, rows)
    meta = _meta(restored, names, maps, skipped, index, y, predictions, seed, settings, seconds, device)
    run.attribution_meta.write_text(json.dumps(meta, indent=2) + "\n")
    return run.attribution


def _meta(restored: Restored, names: list[str], maps: dict[str, np.ndarray], skipped: dict[str, str],
          index: torch.Tensor, y: torch.Tensor, predictions: torch.Tensor, seed: int,
          settings: AttributionSettings, seconds: dict[str, float], device: torch.device | str) -> dict[str, Any]:
    import captum

    layers = [name for name, _ in gradcam_layers(restored.model)] if "gradcam" in maps else []
    provenance = of_checkpoint(restored.run_dir, restored.checkpoint, dataset=restored.config.dataset, n=len(index),
                               eps=None, attacks=list(maps), seed=seed, batch_size=len(index), indices=index.tolist())
    return {
        "methods": list(maps), "requested": names, "skipped": skipped,
        "shapes": {name: list(array.shape) for name, array in maps.items()},
        "gradcam_layers": layers,
        "images": {"split": "test", "seed": seed, "indices": index.tolist(),
                   "selection": "seeded shuffle, then the first of each class in class order, the second, ..."},
        "labels": y.tolist(), "predictions": predictions.tolist(), "target": "true label",
        "checkpoint": str(restored.checkpoint), "model": restored.config.model, "dataset": restored.config.dataset,
        "settings": asdict(settings), "device": str(device),
        "versions": {"captum": captum.__version__, "torch": torch.__version__, "numpy": np.__version__},
        "seconds": {**seconds, "total": round(sum(seconds.values()), 4)},
        "provenance": provenance.to_json(),
        "grid": {"file": "grid.png",
                 "display": f"|map| summed over colour channels, divided by each tile's {_DISPLAY_PERCENTILE:g}th "
                            "percentile; raw values are in attributions.npz"},
    }


# ---------------------------------------------------------------------------------------------------
# The grid (display only)


def display_map(values: np.ndarray) -> np.ndarray:
    """(P, H, W) raw maps -> (H, W) in [0, 1]: magnitude summed over P, scaled by its own 99th percentile."""
    magnitude = np.abs(values).sum(axis=0)
    top = float(np.percentile(magnitude, _DISPLAY_PERCENTILE))
    if not top > 0:
        top = float(magnitude.max()) or 1.0  # sparse maps: fall back to the maximum; all-zero maps stay black
    return np.clip(magnitude / top, 0.0, 1.0)


def _columns(model: nn.Module, x: torch.Tensor, maps: dict[str, np.ndarray]) -> tuple[list[str], list[list[Any]]]:
    """Column titles and, per column, one tile per image: RGB (H, W, 3) for the input, (H, W) maps after it."""
    rgb = x.numpy().transpose(0, 2, 3, 1)
    titles, columns = ["input"], [[np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img for img in rgb]]
    for name, array in maps.items():
        panels = ATTRIBUTIONS.get(name).panels
        if panels is None:
            titles.append(name)
            columns.append([display_map(a) for a in array])
        else:
            for p, title in enumerate(panels(model)):
                titles.append(title)
                columns.append([display_map(a[p:p + 1]) for a in array])
    return titles, columns


def _draw_grid(path: Path, columns: list[list[np.ndarray]], titles: list[str], rows: list[str]) -> None:
    """Write the PNG with matplotlib's object API (no pyplot state); captum depends on matplotlib, so it is there."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.25 * len(columns) + 0.6, 1.25 * len(rows) + 0.3), layout="constrained")
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
    for c, (title, tiles) in enumerate(zip(titles, columns)):
        axes[0, c].set_title(title, fontsize=7)
        for r, tile in enumerate(tiles):
            axes[r, c].imshow(tile, cmap="inferno", vmin=0.0, vmax=1.0, interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    for r, label in enumerate(rows):
        axes[r, 0].set_ylabel(label, fontsize=6)
    figure.savefig(path, dpi=100)
