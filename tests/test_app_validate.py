"""The callback input validators: what each accepts, and the one-line refusal of everything else."""

import math

import pytest
from dash import no_update

from app.errors import AppError
from app.validate import answer_error, choice, flags, integer, number, run_ids, window

LONG = "r" * 5000
JUNK = [True, "abc", LONG, [1, 2], {"a": 1}, math.nan, math.inf, -1e308]


def test_choice_takes_an_accepted_value_of_the_same_type_only():
    assert choice("level", "stage", ["layer", "stage"]) == "stage"
    assert choice("level", None, ["layer", "stage"], default="layer") == "layer"
    assert choice("k", 1, [1, 2]) == 1
    for bad in [*JUNK, 1.0, "Stage", None]:
        with pytest.raises(AppError, match=r"level|expected"):
            choice("level", bad, ["layer", "stage"])
    with pytest.raises(AppError) as refused:
        choice("level", LONG, ["layer", "stage"])
    assert len(str(refused.value)) < 200 and "5002 characters" in str(refused.value)


def test_numbers_must_be_finite_and_in_range():
    assert number("smoothing", 0.6, 0, 0.99) == 0.6 and number("smoothing", 0, 0, 0.99) == 0.0
    assert number("smoothing", None, 0, 0.99, default=0.5) == 0.5
    for bad in [*JUNK, "0.5", 1, -0.01, 10**30, None]:
        with pytest.raises(AppError, match="smoothing"):
            number("smoothing", bad, 0, 0.99)
    assert integer("image", 3.0, 0, 5) == 3 and integer("image", None, 0, 5, default=0) == 0
    for bad in [*JUNK, 2.5, "3", 6, -1, 10**30]:
        with pytest.raises(AppError, match="image"):
            integer("image", bad, 0, 5)


def test_window_is_an_ordered_pair_inside_the_bounds():
    assert window("step window", [0, 0.5]) == (0.0, 0.5)
    assert window("step window", None, default=(0.0, 1.0)) == (0.0, 1.0)
    for bad in [*JUNK, [0.5, 0.5], [0.6, 0.2], [0, 1, 1], [-0.1, 0.5], ["0", "1"], [None, 1], None]:
        with pytest.raises(AppError, match="step window"):
            window("step window", bad)


def test_flags_and_run_ids_check_every_item():
    assert flags("colour", ["log"], ["log", "robust"]) == {"log"} and flags("colour", None, ["log"]) == set()
    for bad in ["log", ["log", "nope"], [["log"]], {"log": 1}, [None]]:
        with pytest.raises(AppError, match="colour"):
            flags("colour", bad, ["log", "robust"])
    assert run_ids(["a/b", "c", "a/b"]) == ["a/b", "c"] and run_ids(None) == [] and run_ids("a") == ["a"]
    for bad in [[LONG], [1], [None], [""], {"a": 1}, 7, ["x"] * 1000]:
        with pytest.raises(AppError, match="run"):
            run_ids(bad)


def test_the_error_answer_outside_a_request_is_no_update():
    assert answer_error(AppError("bad value")) is no_update
    assert answer_error(TypeError("a bug")) is no_update
