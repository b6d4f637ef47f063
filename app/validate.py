"""Checks for the values a browser sends to callbacks, and the answer a callback gives when one fails.

Anyone who reaches the port can post any JSON as a control's value, so a callback treats its inputs
as untrusted: it never answers HTTP 500, whatever it is sent. Two pieces make that hold:

* **Validators** (`choice`, `number`, `integer`, `window`, `flags`, `run_ids`) turn a raw value into
  the type the callback works with, or raise `AppError` naming the bad value and what is accepted.
  ``None`` (a cleared control) gives the ``default`` when one is passed.
* **The error answer** (`answer_error`): when a callback raises, each of its outputs gets a message
  instead of a traceback: a ``figure`` an empty figure saying what went wrong, a ``children`` a note,
  anything else no update. `AppError` (bad input) is logged as one line; any other exception is a bug
  and is logged with its traceback, while the browser sees only its type.

How a page module uses them: each control is declared with its validator (`app.pages.base.Control`),
and the page's display and download callbacks run every value through it before drawing::

    controls={"stat": Control("grad-stat", "statistic", choice, (STATS,), {"default": "mean_abs"}),
              "window": Control("grad-window", "step window", window),
              "smoothing": Control("series-smoothing", "smoothing", number, (0.0, 0.99), {"default": 0.6})}

A callback written by hand validates at its top the same way (``stat = choice("statistic", stat,
STATS)``; run ids go through `run_ids`, then `app.runs.RunIndex.resolve`). ``create_app`` passes
``on_error=answer_error`` to ``dash.Dash``, so whatever a callback still raises is answered with a
message, never a 500; `safe_callback(app, ...)` (same arguments as ``app.callback``) does the same for
one callback of an app built some other way. Validating is still the rule: the user then reads which
value was refused, not "could not draw this", and the hostile-client test
(``tests/test_app_hostile.py``) fails on any exception but `AppError` that reaches `answer_error`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

import dash
from dash import no_update
from dash.exceptions import PreventUpdate

from .errors import AppError
from .runs import MAX_RUN_ID

log = logging.getLogger("app.callbacks")

T = TypeVar("T")
_REQUIRED: Any = object()  # marks "no default": None is refused too
MAX_RUNS = 200  # run ids in one selection
MAX_SHOWN = 60  # characters of a refused value repeated in a message


def shown(value: object) -> str:
    """``repr(value)``, shortened: a refused 5,000-character string is not echoed back in full."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}... ({len(text)} characters)"


def _default(kind: str, default: Any, expected: str) -> Any:
    if default is _REQUIRED:
        raise AppError(f"{kind} is missing; expected {expected}")
    return default


def choice(kind: str, value: object, accepted: Iterable[T], default: Any = _REQUIRED) -> T:
    """``value`` if it is one of ``accepted`` (compared by equality, same type), else `AppError`."""
    options = list(accepted)
    listed = ", ".join(map(str, options))
    if value is None:
        return _default(kind, default, f"one of: {listed}")
    for option in options:
        if type(option) is type(value) and option == value:
            return option
    raise AppError(f"unknown {kind} {shown(value)}; expected one of: {listed}")


def number(kind: str, value: object, low: float, high: float, default: Any = _REQUIRED) -> float:
    """A finite number ``low <= value <= high`` (bools and numeric strings are refused)."""
    expected = f"a number from {low} to {high}"
    if value is None:
        return _default(kind, default, expected)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AppError(f"{kind} {shown(value)} is not {expected}")
    if not low <= value <= high:
        raise AppError(f"{kind} {shown(value)} is out of range; expected {expected}")
    return float(value)


def integer(kind: str, value: object, low: int, high: int, default: Any = _REQUIRED) -> int:
    """A whole number ``low <= value <= high`` (``2.0`` is accepted, ``2.5`` and ``"2"`` are not)."""
    expected = f"a whole number from {low} to {high}"
    if value is None:
        return _default(kind, default, expected)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AppError(f"{kind} {shown(value)} is not {expected}")
    if not low <= value <= high:
        raise AppError(f"{kind} {shown(value)} is out of range; expected {expected}")
    return value


def window(kind: str, value: object, low: float = 0.0, high: float = 1.0,
           default: Any = _REQUIRED) -> tuple[float, float]:
    """A pair ``[start, stop]`` with ``low <= start < stop <= high`` (a range slider's value)."""
    expected = f"two numbers {low} <= start < stop <= {high}"
    if value is None:
        return _default(kind, default, expected)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise AppError(f"{kind} {shown(value)} is not {expected}")
    start, stop = (number(kind, v, low, high) for v in value)
    if not start < stop:
        raise AppError(f"{kind} {shown(value)} is empty; expected {expected}")
    return start, stop


def flags(kind: str, value: object, accepted: Sequence[Hashable]) -> set[Hashable]:
    """The ticked values of a checklist: a list whose items are all among ``accepted`` (None: none ticked)."""
    if value is None:
        return set()
    if not isinstance(value, list):
        raise AppError(f"{kind} {shown(value)} is not a list of: {', '.join(map(str, accepted))}")
    return {choice(kind, item, accepted) for item in value}


def run_ids(value: object, limit: int = MAX_RUNS) -> list[str]:
    """A selection of run ids: a list of short strings, duplicates dropped (None: nothing selected).

    Only the shape is checked here; whether each id names a run inside the runs folder is
    `app.runs.RunIndex.resolve`'s job.
    """
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > limit:
        raise AppError(f"run selection {shown(value)} is not a list of at most {limit} run ids")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > MAX_RUN_ID:
            raise AppError(f"run id {shown(item)} is not a run folder path of 1 to {MAX_RUN_ID} characters")
    return list(dict.fromkeys(value))


# -- the answer when a callback fails -------------------------------------------------------------


def _message_for(prop: str, message: str) -> Any:
    """What an output of property ``prop`` (``figure@hash`` for a duplicate output) shows instead of a result."""
    prop = str(prop).split("@")[0]
    if prop == "figure":
        from .shared import message_figure

        return message_figure(message)
    if prop == "children":
        from .components import note

        return note(message, "error")
    return no_update


def _outputs_of_failing_callback() -> tuple[list[Any], bool]:
    """The failing callback's outputs (id + property dicts, lists for wildcards) and whether it has several."""
    try:
        outputs = dash.ctx.outputs_list
    except Exception:  # outside a request (a unit test calling the function): nothing to fill
        return [], True
    if isinstance(outputs, dict):
        return [outputs], False
    return list(outputs or []), True


def answer_error(error: Exception) -> Any:
    """Dash's ``on_error`` handler: log ``error`` and give every output a message or no update.

    Returns the value Dash sends back in place of the callback's own (never raises, so never a 500).
    """
    if isinstance(error, PreventUpdate):
        raise error
    if isinstance(error, AppError):
        message = str(error)
        log.warning("refused callback input: %s", message)
    else:
        message = f"could not draw this ({type(error).__name__}); the details are in the server's log"
        log.error("callback failed", exc_info=error)
    outputs, multi = _outputs_of_failing_callback()
    answers = []
    for spec in outputs:
        if isinstance(spec, list):  # an ALL wildcard: one value per matching component
            answers.append([_message_for(s.get("property", ""), message) for s in spec])
        else:
            answers.append(_message_for(spec.get("property", ""), message))
    if not answers:
        return no_update
    return answers if multi else answers[0]


def safe_callback(app: dash.Dash, *dependencies: Any, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``app.callback(*dependencies, **options)`` whose failures are answered by `answer_error`."""
    options.setdefault("on_error", answer_error)
    return app.callback(*dependencies, **options)
