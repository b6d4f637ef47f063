"""The layout of each page (tab); the callbacks that fill them are in `app.callbacks`."""

from __future__ import annotations

from dash import dash_table, dcc, html

from .components import control, figure_card

PAGES = {
    "runs": "Runs", "gradients": "Gradients", "teacher": "Virtual teacher", "robustness": "Robustness",
    "training": "Training", "attribution": "Attribution", "tables": "Tables",
}
STAT_OPTIONS = [{"label": "mean |g|", "value": "mean_abs"}, {"label": "L2", "value": "l2"},
                {"label": "max |g|", "value": "max_abs"}]
TRAINING_METRICS = ["train_loss", "train_acc", "test_acc", "val_acc", "val_pgd_acc", "lr"]


def runs_page() -> html.Div:
    """Sortable, filterable run table; ticking rows selects runs for every other page."""
    columns = ["id", "method", "model", "dataset", "seed", "epochs_done", "epochs_planned", "status", "clean",
               "pgd20", "autoattack", "best_epoch", "problem"]
    return html.Div([
        html.Div(id="runs-notes"),
        dash_table.DataTable(
            id="runs-table", columns=[{"name": c, "id": c} for c in columns], data=[], row_selectable="multi",
            selected_rows=[], sort_action="native", filter_action="native", page_size=50,
            style_cell={"fontFamily": "inherit", "fontSize": "13px", "padding": "4px 8px", "textAlign": "left"},
            style_data_conditional=[
                {"if": {"filter_query": '{status} = "corrupt"'}, "backgroundColor": "#fde2e1"},
                {"if": {"filter_query": '{status} = "live"'}, "backgroundColor": "#e4f4e4"},
                {"if": {"filter_query": '{status} = "failed"'}, "backgroundColor": "#fff4d6"},
            ],
        ),
    ])


def gradients_page() -> html.Div:
    """Figure 6 heatmaps side by side and per-group time series."""
    return html.Div([
        html.Div(className="controls", children=[
            control("statistic", dcc.RadioItems(STAT_OPTIONS, "mean_abs", id="grad-stat", inline=True)),
            control("columns", dcc.RadioItems(["stage", "block"], "stage", id="grad-columns", inline=True)),
            control("colour", dcc.Checklist([{"label": "log", "value": "log"}, {"label": "robust", "value": "robust"}],
                                            ["log"], id="grad-scale", inline=True)),
            control("difference against", dcc.Dropdown(id="grad-baseline", placeholder="none", clearable=True,
                                                       style={"minWidth": "180px"})),
        ]),
        control("step window (fraction of training)", dcc.RangeSlider(0, 1, 0.05, value=[0, 1], id="grad-window",
                                                                      marks={0: "start", 0.5: "middle", 1: "end"})),
        figure_card("heatmap", "Average gradient per layer and ResBlock (Figure 6)", height=480),
        html.Div(className="controls", children=[
            control("level", dcc.RadioItems(["layer", "block", "stage"], "stage", id="series-level", inline=True)),
            control("smoothing", dcc.Slider(0, 0.99, 0.01, value=0.6, id="series-smoothing",
                                            marks={0: "0", 0.6: "0.6", 0.99: "0.99"})),
            control("y axis", dcc.Checklist([{"label": "log", "value": "log"}], ["log"], id="series-log", inline=True)),
        ]),
        figure_card("series", "Gradient statistic over training steps", height=460),
    ])


def teacher_page() -> html.Div:
    """Figure 5: the virtual teacher's probabilities against temperature."""
    return html.Div([
        html.Div(className="controls", children=[
            control("a (correct-class probability)", dcc.Slider(0.5, 1.0, 0.01, value=0.9, id="vt-a",
                                                                marks={0.5: "0.5", 0.9: "0.9", 1: "1"})),
            control("classes K", dcc.Slider(2, 100, 1, value=10, id="vt-k", marks={2: "2", 10: "10", 100: "100"})),
            control("x axis", dcc.Checklist([{"label": "log", "value": "log"}], ["log"], id="vt-log", inline=True)),
        ]),
        figure_card("teacher", "Virtual teacher probabilities against temperature (Figure 5)"),
    ])


def robustness_page() -> html.Div:
    """Figure 7 and the checks behind it."""
    return html.Div([
        html.Div(id="robust-flags"),
        figure_card("robust", "Clean against robust accuracy per method (Figure 7)"),
        figure_card("eps", "Accuracy against ε (PGD-20)"),
        figure_card("breakdown", "AutoAttack: accuracy after each attack"),
    ])


def training_page() -> html.Div:
    """Per-epoch curves."""
    return html.Div([
        html.Div(className="controls", children=[
            control("metric", dcc.Dropdown(TRAINING_METRICS, "train_loss", id="train-metric", clearable=False,
                                           style={"minWidth": "200px"})),
        ]),
        figure_card("training", "Training curves"),
    ])


def attribution_page() -> html.Div:
    """Captum maps of the same images for the selected checkpoints."""
    return html.Div([
        html.Div(className="controls", children=[
            control("image", dcc.Slider(0, 15, 1, value=0, id="attr-image")),
        ]),
        html.Div(id="attr-notes"),
        figure_card("attribution", "Attributions of the same test image", height=520),
    ])


def tables_page() -> html.Div:
    """Figures 1, 2, 4 and 7 as mean ± std over seeds beside the poster."""
    return html.Div(id="tables")


BUILDERS = {"runs": runs_page, "gradients": gradients_page, "teacher": teacher_page, "robustness": robustness_page,
            "training": training_page, "attribution": attribution_page, "tables": tables_page}
