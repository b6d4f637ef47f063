"""Attribution page: Captum maps of the same test images for the selected checkpoints."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from dash import Output, dcc, html
from plotly.subplots import make_subplots

from trainers.data import class_name
from trainers.run_folder import RunFileError, RunFolder

from ..components import control, figure_card, graph_id, note
from ..errors import AppError
from ..shared import TEMPLATE, Rows, RunLike, annotate_empty
from ..validate import integer
from .base import Control, FigureSpec, Page, View

ATTRIBUTION_ARRAYS = ("images", "labels", "predictions", "indices")  # the npz keys that are not maps
ROW_HEIGHT, FRAME_HEIGHT = 170, 170  # px per run and for title, column titles and margins: every row fits


def figure_height(n_runs: int) -> int:
    """The grid's height for ``n_runs`` rows; the graph grows with it instead of cutting rows off."""
    return ROW_HEIGHT * max(1, n_runs) + FRAME_HEIGHT


# ---------------------------------------------------------------------------------------------------
# Data


def attribution_panels(run: RunLike) -> dict[str, Any] | None:
    """A run's attribution maps ready to show, or None when ``python -m trainers attribute`` has not run.

    Reads ``attribution/attributions.npz`` (layout in `trainers.attribution`). Each map becomes a
    display map per image with `trainers.attribution.display_map` — magnitude summed over channels,
    divided by the image's own 99th percentile, clipped to [0, 1] — the scaling of the run's
    ``grid.png``, so colours compare within a tile, not across tiles (the npz keeps raw values).
    Methods with one map per layer (Grad-CAM: one per residual stage, named in ``meta.json``) become
    one entry per layer, ``"gradcam layer1.1"``: summing maps of different depths would mix scales.

    Returns:
        ``images`` (K, H, W, C) in [0, 1] (channels last, for drawing), ``labels``, ``predictions``
        and ``indices`` (K,) int, ``maps`` ``{name: (K, H, W)}``, and ``skipped`` ``{method: why}``.
    """
    from trainers.attribution import display_map

    files = run_files(run)
    try:
        path = files.within(files.attribution_arrays)
        meta = (files.read_attribution() or {}) if path.is_file() else {}
    except RunFileError as exc:
        raise AppError(f"{run.label}: {exc}") from None
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise AppError(f"{path} cannot be read ({exc}); run `python -m trainers attribute {run.path}` again") from exc
    missing = [key for key in ATTRIBUTION_ARRAYS if key not in arrays]
    if missing:
        raise AppError(f"{path} lacks {', '.join(missing)}; run `python -m trainers attribute {run.path}` again")
    images = arrays["images"]
    order = [m for m in meta.get("methods", []) if m in arrays]
    order += [k for k in arrays if k not in ATTRIBUTION_ARRAYS and k not in order]
    maps: dict[str, np.ndarray] = {}
    for method in order:
        raw = arrays[method]
        if raw.ndim != 4 or raw.shape[0] != images.shape[0] or raw.shape[-2:] != images.shape[-2:]:
            raise AppError(f"{path}: {method} has shape {raw.shape}; expected (K, P, H, W) with K, H, W of the "
                           f"images {images.shape}")
        layers = meta.get(f"{method}_layers") or []
        if layers and len(layers) == raw.shape[1]:
            for p, layer in enumerate(layers):
                maps[f"{method} {layer}"] = np.stack([display_map(m[p:p + 1]) for m in raw])
        else:
            maps[method] = np.stack([display_map(m) for m in raw])
    return {"images": np.clip(images.transpose(0, 2, 3, 1), 0.0, 1.0), "labels": arrays["labels"].astype(np.int64),
            "predictions": arrays["predictions"].astype(np.int64), "indices": arrays["indices"].astype(np.int64),
            "maps": maps, "skipped": dict(meta.get("skipped") or {}), "dataset": (run.config or {}).get("dataset")}


def attribution_csv_rows(panels_by_run: Mapping[str, Mapping[str, Any] | None]) -> Rows:
    """Which images each run was explained on, with label and prediction (the maps stay in the npz)."""
    rows = []
    for run, panels in panels_by_run.items():
        if panels is None:
            continue
        for i, (index, label, prediction) in enumerate(zip(panels["indices"], panels["labels"],
                                                           panels["predictions"])):
            rows.append({"run": run, "image": i, "test_index": int(index), "label": int(label),
                         "label_name": class_name(panels.get("dataset"), int(label)), "prediction": int(prediction),
                         "prediction_name": class_name(panels.get("dataset"), int(prediction)),
                         "correct": bool(label == prediction),
                         "maps": ", ".join(panels["maps"])})
    return rows


# ---------------------------------------------------------------------------------------------------
# Figures


def attribution_figure(panels_by_run: Mapping[str, Mapping[str, Any] | None], image_index: int = 0) -> go.Figure:
    """A grid of one test image: a row per run, columns the input then each method's map.

    ``panels_by_run`` maps a run label to `attribution_panels` (None: not attributed, left
    out). Maps share one colour bar in [0, 1], each scaled by its own 99th percentile; a cell is
    blank where a run lacks a method (Grad-CAM of an MLP).
    """
    panels = {run: p for run, p in panels_by_run.items() if p is not None}
    if not panels:
        return annotate_empty(go.Figure(layout={"title": {"text": "Attribution maps"}, "template": TEMPLATE,
                                       "xaxis": {"title": {"text": "method"}}, "yaxis": {"title": {"text": "run"}}}),
                     "No attributions yet: python -m trainers attribute RUN")
    for run, p in panels.items():
        if not isinstance(image_index, int) or not 0 <= image_index < len(p["images"]):
            raise AppError(f"image {image_index!r} does not exist for {run}: it was explained on "
                           f"{len(p['images'])} images (0 to {len(p['images']) - 1})")
    columns = ["input", *dict.fromkeys(name for p in panels.values() for name in p["maps"])]
    fig = make_subplots(rows=len(panels), cols=len(columns), horizontal_spacing=0.01, vertical_spacing=0.04,
                        subplot_titles=columns)
    for r, (run, p) in enumerate(panels.items(), start=1):
        image = p["images"][image_index]
        rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
        fig.add_trace(go.Image(z=np.round(rgb * 255).astype(np.uint8), name=f"{run} input",
                               hovertemplate=f"{run}<br>x %{{x}}, y %{{y}}<extra></extra>"), row=r, col=1)
        for c, name in enumerate(columns[1:], start=2):
            if name in p["maps"]:
                fig.add_trace(go.Heatmap(
                    z=p["maps"][name][image_index], coloraxis="coloraxis", name=f"{run} {name}",
                    hovertemplate=f"{run} · {name}<br>x %{{x}}, y %{{y}}<br>%{{z:.2f}}<extra></extra>",
                ), row=r, col=c)
        label, prediction = int(p["labels"][image_index]), int(p["predictions"][image_index])
        names = class_name(p.get("dataset"), label), class_name(p.get("dataset"), prediction)
        fig.update_yaxes(title_text=f"{run}<br>{names[0]} → {names[1]}", row=r, col=1)
        for c in range(1, len(columns) + 1):
            n = (r - 1) * len(columns) + c
            fig.update_yaxes(autorange="reversed", scaleanchor=f"x{'' if n == 1 else n}", row=r, col=c)
    for c, name in enumerate(columns, start=1):
        fig.update_xaxes(title_text=name, row=len(panels), col=c)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain", title_font={"size": 11})
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_annotations(font={"size": 11})
    index = int(next(iter(panels.values()))["indices"][image_index])
    fig.update_layout(
        title={"text": f"Attribution maps of test image #{index}",
               "subtitle": {"text": "each map scaled by its own 99th percentile: compare shapes, not colours"}},
        coloraxis={"colorscale": "Inferno", "cmin": 0.0, "cmax": 1.0,
                   "colorbar": {"title": {"text": "relative<br>magnitude", "side": "top"}, "thickness": 14,
                                "len": 0.9, "y": 0.5, "yanchor": "middle"}},
        template=TEMPLATE, height=figure_height(len(panels)), autosize=True,
        margin={"l": 130, "r": 90, "t": 100, "b": 40},
    )
    return fig


# ---------------------------------------------------------------------------------------------------
# The page


_PANELS: OrderedDict[tuple[Any, ...], dict[str, Any] | None] = OrderedDict()
PANELS_KEPT = 64  # runs whose display maps stay in memory (a few hundred kB each)


def run_files(run: RunLike) -> RunFolder:
    """The run's folder layout, confined to the runs folder when the index made it."""
    return getattr(run, "files", None) or RunFolder(Path(run.path))


def cached_panels(run: RunLike) -> dict[str, Any] | None:
    """`attribution_panels`, computed again only when the run's attribution files change."""
    files = run_files(run)
    key = (str(files.attribution), *(_signature(p) for p in (files.attribution_arrays, files.attribution_meta)))
    if key not in _PANELS:
        _PANELS[key] = attribution_panels(run)
        if len(_PANELS) > PANELS_KEPT:
            _PANELS.popitem(last=False)
    return _PANELS[key]


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns, info.st_ino


def panels_of(view: View) -> dict[str, dict[str, Any] | None]:
    """Each selected run's panels by label (None: not attributed yet)."""
    return {r.label: cached_panels(r) for r in view.runs}


def build_attribution(view: View) -> tuple[go.Figure, Rows]:
    """The grid of the chosen image."""
    panels = panels_of(view)
    return attribution_figure(panels, view.controls["image"]), attribution_csv_rows(panels)


def image_count(panels: Mapping[str, Mapping[str, Any] | None]) -> int:
    """How many images every attributed run was explained on (0 with none): the image slider's length."""
    counts = [len(p["images"]) for p in panels.values() if p is not None]
    return min(counts) if counts else 0


def extras(view: View) -> list[Any]:
    """A note naming the runs not attributed yet; the graph's height and the image slider's range."""
    missing = [r.label for r in view.runs if not run_files(r).attribution_arrays.is_file()]
    try:
        panels = panels_of(view)
    except AppError:  # the figure says what is wrong with the files
        panels = {}
    last = max(0, image_count(panels) - 1)
    rows = sum(p is not None for p in panels.values())
    return [[note(f"not attributed yet: {', '.join(missing)} — run python -m trainers attribute RUN", "warning")]
            if missing else [], {"height": f"{figure_height(rows)}px"}, last,
            {i: str(i) for i in range(last + 1)}]


def layout() -> html.Div:
    """The image picker, notes and the grid."""
    return html.Div([
        html.Div(className="controls", children=[
            control("image", html.Div(className="slider-wide", children=dcc.Slider(0, 15, 1, value=0,
                                                                                     id="attr-image"))),
        ]),
        html.Div(id="attr-notes"),
        figure_card(PAGE_NAME, "attribution", "Attributions of the same test image", height=520),
    ])


PAGE_NAME = "attribution"
PAGE = Page(
    name=PAGE_NAME, title="Attribution", layout=layout, live=False,
    figures=(FigureSpec("attribution", "Attributions of the same test image", build_attribution, 520),),
    controls={"image": Control("attr-image", "image", integer, (0, 100_000), {"default": 0})},
    extra_outputs=(Output("attr-notes", "children"), Output(graph_id(PAGE_NAME), "style"),
                   Output("attr-image", "max"), Output("attr-image", "marks")), extras=extras,
)
