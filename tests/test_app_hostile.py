"""The real app under attack: every callback, every input, hostile values, over a folder of broken runs.

The app is served on 127.0.0.1 (werkzeug, in a thread, working directory a temporary folder) over
``mixed_runs`` (`broken_runs.make_runs`): two tiny real trainings and one copy per broken file of
issue 9. The test reads ``/_dash-dependencies`` and ``/_dash-layout``, so it knows nothing of the
pages and holds for any page structure: for every server callback it finds a baseline that makes the
callback do its work (a tab that shows it, a click, every run selected), tries every option of every
choice control and clicks every CSV and HTML download button once, then posts, for every input and
state, each kind of hostile value (None, wrong types, 5,000 characters, ``../`` paths, ``file://``
URLs, negative and huge numbers, a figure asking for a local image) against that baseline, one slot
at a time (not their product), and forged pattern-matching ids (``{"fmt": "html/../../x"}``) clicked
with every state a figure. PNG, SVG and PDF buttons are left out: each render starts Chromium
(seconds), and `tests/test_app_downloads.py` renders them; their path up to the renderer is the one
CSV and HTML take. About 1,400 posts to one server: half a minute on two busy cores.
It checks:

* every answer is 200 or 204 (never 500, and no 400 hiding an exception); no callback fails on an
  input it did not check (`app.validate.answer_error` logs those with their traceback); no answer,
  downloads decoded, holds text of a file outside the runs folder; every broken run is badged with
  its file (searched in the decoded answers: Dash's JSON writes ``/`` as ``\\u002f``);
* no file appears outside the temporary folders: the runs folder's parent is listed before and after
  (less the record caches readers keep, see `listing`), and the marker every hostile path carries is
  looked for in /, /tmp, the repository and the working directory (a full listing of /tmp or the
  repository would see the other processes sharing the machine);
* the server still answers afterwards.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from broken_runs import LEAK
from werkzeug.serving import make_server

from app.server import create_app

pytestmark = [pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
MARK = f"gs-hostile-{uuid.uuid4().hex[:10]}"
LONG = "r" * 5000
HOSTILE: dict[str, Any] = {
    "none": None,
    "bool": True,
    "int": 7,
    "negative": -1,
    "huge": 10**30,
    "float": 1e308,
    "string": "bogus",
    "long string": LONG,
    "dotdot path": f"../../../../{MARK}/x.html",
    "file url": f"file:///tmp/{MARK}.png",
    "query": f"?page=gradients&runs={LONG},../../{MARK},file:///etc/passwd",
    "list": [1, "../x", None, {"a": 1}],
    "list of long": [LONG, f"../../{MARK}"],
    "list of paths": ["../outside", f"../../{MARK}", f"file:///tmp/{MARK}.png", "/etc", "broken/../../outside"],
    "dict": {"type": "export", "name": f"../{MARK}", "fmt": f"html/../../../../{MARK}/x.html"},
}
FIGURE = {"data": [{"type": "scatter", "x": [1], "y": [1]}],  # a figure asking for a server file as its image
          "layout": {"images": [{"source": f"file:///tmp/{MARK}.png", "x": 0, "y": 0, "sizex": 1, "sizey": 1}]}}
HOSTILE["figure with a file image"] = FIGURE
HOSTILE_ID_VALUES = (f"../../../{MARK}/x", LONG, f"html/../../../../{MARK}/x.html", f"file:///tmp/{MARK}")
SLOW_FORMATS = ("png", "svg", "pdf")  # download formats rendered through Chromium (kaleido): seconds a click


# -- the served app ---------------------------------------------------------------------------------


class Served:
    """The app's address, its session, and what its callbacks logged."""

    def __init__(self, url: str, base: Path, cwd: Path, logged: list[logging.LogRecord]) -> None:
        self.url, self.base, self.cwd, self.logged = url, base, cwd, logged
        self.http = requests.Session()

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.url + path, timeout=60)

    def post(self, body: dict[str, Any]) -> requests.Response:
        return self.http.post(self.url + "/_dash-update-component", json=body, timeout=60)


class _Keep(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


def listing(folder: Path) -> set[str]:
    """Every path under ``folder`` (symlinks not followed), less the caches records keep beside them.

    Reading a record may write ``gradscope/cache/`` inside its run folder (`gradscope.cache`); that is
    the reader's own cache, not something a request wrote.
    """
    paths = {Path(d, name).relative_to(folder) for d, dirs, files in os.walk(folder) for name in dirs + files}
    return {str(p) for p in paths if not any(a == "gradscope" and b == "cache" for a, b in zip(p.parts, p.parts[1:]))}


def marked(folder: Path, depth: int) -> list[str]:
    """Paths under ``folder`` (to ``depth`` levels) whose name carries the hostile marker."""
    found: list[str] = []
    if depth < 0 or not folder.is_dir():
        return found
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        if MARK in entry.name:
            found.append(entry.path)
        if entry.is_dir(follow_symlinks=False) and entry.name not in (".git", ".venv", "node_modules"):
            found += marked(Path(entry.path), depth - 1)
    return found


@pytest.fixture(scope="module")
def served(mixed_runs, tmp_path_factory) -> Iterator[Served]:
    base = mixed_runs[0]
    cwd = tmp_path_factory.mktemp("cwd")
    logged: list[logging.LogRecord] = []
    handler = _Keep(logged)
    logging.getLogger().addHandler(handler)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        app = create_app(base / "runs", refresh_seconds=3600)
        server = make_server("127.0.0.1", 0, app.server, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Served(f"http://127.0.0.1:{server.server_port}", base, cwd, logged)
        finally:
            server.shutdown()
            thread.join(10)
            logging.getLogger().removeHandler(handler)


# -- reading the app's callbacks and layout -----------------------------------------------------------


def parse_id(raw: Any) -> Any:
    """A component id from a dependency: a string, or a dict (sent as JSON) for pattern matching."""
    if isinstance(raw, str) and raw.startswith("{"):
        return json.loads(raw)
    return raw


def split_outputs(output: str) -> tuple[list[tuple[Any, str]], bool]:
    """``..a.b...c.d..`` -> [(a, b), (c, d)], multi; ``a.b`` -> [(a, b)], single."""
    multi = output.startswith("..") and output.endswith("..")
    parts = output[2:-2].split("...") if multi else [output]
    specs = []
    for part in parts:
        ident, prop = part.rsplit(".", 1)
        specs.append((parse_id(ident), prop))
    return specs, multi


def components(node: Any) -> Iterator[dict[str, Any]]:
    """Every component (``{"type", "namespace", "props"}``) in a layout tree."""
    if isinstance(node, dict):
        if "props" in node and "type" in node:
            yield node
        for value in node.values():
            yield from components(value)
    elif isinstance(node, list):
        for value in node:
            yield from components(value)


def texts(node: Any) -> Iterator[str]:
    """Every string of a decoded answer, a download's base64 content decoded: what the user receives."""
    if isinstance(node, dict):
        if node.get("base64") is True and isinstance(node.get("content"), str):
            yield base64.b64decode(node["content"]).decode("utf-8", "replace")
        for value in node.values():
            yield from texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from texts(value)
    elif isinstance(node, str):
        yield node


def answer_texts(response: requests.Response) -> list[str]:
    """The strings of a callback's answer (none for 204 or an error)."""
    if response.status_code != 200 or not response.content:
        return []
    return list(texts(response.json()))


def fast(ident: Any) -> bool:
    """Whether a component is kept in the test's layout: download buttons of `SLOW_FORMATS` are not."""
    return not (isinstance(ident, dict) and ident.get("fmt") in SLOW_FORMATS)


def key(ident: Any) -> str:
    return json.dumps(ident, sort_keys=True) if isinstance(ident, dict) else str(ident)


def matches(pattern: Any, ident: Any, fixed: dict[str, Any]) -> bool:
    """Whether a concrete id fits a dependency id (wildcards, with MATCH keys held at ``fixed``)."""
    if not isinstance(pattern, dict):
        return pattern == ident
    if not isinstance(ident, dict) or set(pattern) != set(ident):
        return False
    for k, want in pattern.items():
        if isinstance(want, list):  # a wildcard
            if want == ["MATCH"] and k in fixed and fixed[k] != ident[k]:
                return False
        elif want != ident[k]:
            return False
    return True


def is_all(pattern: Any) -> bool:
    return isinstance(pattern, dict) and any(v in (["ALL"], ["ALLSMALLER"]) for v in pattern.values())


def option_values(component: dict[str, Any]) -> list[Any]:
    """The values a choice control offers: tabs' values, options' values."""
    props = component["props"]
    if component["type"] == "Tabs":
        return [c["props"].get("value") for c in components(props.get("children")) if c["type"] == "Tab"]
    options = props.get("options")
    if isinstance(options, dict):
        return list(options)
    if isinstance(options, list):
        return [o.get("value") if isinstance(o, dict) else o for o in options]
    return []


class Callback:
    """One server callback, resolved against the layout's concrete component ids."""

    def __init__(self, dep: dict[str, Any], layout: dict[str, dict[str, Any]]) -> None:
        self.output = dep["output"]
        self.outputs, self.multi = split_outputs(self.output)
        self.layout = layout
        self.slots = [("inputs", parse_id(i["id"]), i["property"]) for i in dep["inputs"]]
        self.slots += [("state", parse_id(s["id"]), s["property"]) for s in dep.get("state", [])]
        self.fixed = self._match_values()
        self.buttons = [b for _, pattern, prop in self.slots if prop == "n_clicks" and is_all(pattern)
                        for b in self.concrete(pattern, self.fixed)]  # pressed once each with the baseline
        self.clicks: list[Any] = []  # buttons (of an ALL pattern) whose click the hostile posts cycle through

    def _match_values(self) -> dict[str, Any]:
        """Values for MATCH keys: those of a layout component fitting the first MATCH pattern."""
        for pattern in [o for o, _ in self.outputs] + [s[1] for s in self.slots]:
            if isinstance(pattern, dict) and ["MATCH"] in pattern.values():
                for comp in self.layout.values():
                    ident = comp["props"]["id"]
                    if matches(pattern, ident, {}):
                        return {k: ident[k] for k, v in pattern.items() if v == ["MATCH"]}
        return {}

    def concrete(self, pattern: Any, fixed: dict[str, Any], alter: tuple[str, str] | None = None) -> list[Any]:
        """The layout's ids fitting ``pattern``; with ``alter`` = (field, value), that wildcard field replaced."""
        if not isinstance(pattern, dict):
            return [pattern]
        found = [c["props"]["id"] for c in self.layout.values() if matches(pattern, c["props"]["id"], fixed)]
        if not found:  # nothing on the page yet: make one id from the pattern
            found = [{k: (fixed.get(k, "x") if isinstance(v, list) else v) for k, v in pattern.items()}]
        if alter is not None and isinstance(pattern.get(alter[0]), list):
            found = [{**ident, alter[0]: alter[1]} for ident in found]
        return found if is_all(pattern) else found[:1]

    def value_of(self, ident: Any, prop: str, every: bool) -> Any:
        """The layout's value for a slot; a multiple choice gets every option (every run selected), or
        with ``every`` false its first, middle and last option (the hostile posts: fewer runs to draw)."""
        comp = self.layout.get(key(ident))
        if comp is None:
            return None
        props = comp["props"]
        multiple = props.get("multi") or comp["type"] == "Checklist"
        options = option_values(comp)
        if prop == "value" and multiple and options:
            return options if every else list(dict.fromkeys([options[0], options[len(options) // 2], options[-1]]))
        return props.get(prop)

    def choices(self) -> list[tuple[int, list[Any]]]:
        """Slots holding a single-choice control's value, with the values it offers."""
        out = []
        for i, (_, ident, prop) in enumerate(self.slots):
            comp = self.layout.get(key(ident))
            if comp is not None and prop == "value" and not comp["props"].get("multi") \
                    and comp["type"] != "Checklist" and option_values(comp):
                out.append((i, option_values(comp)))
        return out

    def baseline(self, every: bool = True) -> list[Any]:
        return [self.value_of(ident, prop, every) for _, ident, prop in self.slots]

    def fewer(self, values: list[Any]) -> list[Any]:
        """``values`` with each multiple choice cut to a few options (see `value_of`)."""
        few = self.baseline(every=False)
        return [few[i] if isinstance(v, list) and v == every else v
                for i, (v, every) in enumerate(zip(values, self.baseline()))]

    def body(self, values: list[Any], trigger: int = 0, alter: tuple[str, str] | None = None,
             clicked: Any = None) -> dict[str, Any]:
        """The JSON the browser would post with ``values`` in the slots (``trigger`` changed), with
        ``alter`` = (field, value) that field of every pattern-matching id replaced, and with
        ``clicked`` only that button of a wildcard ``n_clicks`` input given the value (the others 0)."""
        fixed = self.fixed if alter is None else {**self.fixed, alter[0]: alter[1]}
        outputs = []
        for pattern, prop in self.outputs:
            ids = self.concrete(pattern, fixed, alter)
            specs = [{"id": i, "property": prop.split("@")[0]} for i in ids]
            outputs.append(specs if is_all(pattern) else specs[0])
        body: dict[str, Any] = {"output": self.output, "outputs": outputs if self.multi else outputs[0],
                                "inputs": [], "state": [], "changedPropIds": []}
        for i, ((where, pattern, prop), value) in enumerate(zip(self.slots, values)):
            ids = self.concrete(pattern, fixed, alter)
            one = clicked is not None and prop == "n_clicks" and clicked in ids
            items = [{"id": ident, "property": prop, "value": value if not one or ident == clicked else 0}
                     for ident in ids]
            body[where].append(items if is_all(pattern) else items[0])
            if i == trigger and where == "inputs":
                body["changedPropIds"] += [f"{key(ident)}.{prop}" for ident in ids if not one or ident == clicked]
        return body


@pytest.fixture(scope="module")
def callbacks(served: Served) -> list[Callback]:
    layout_response = served.get("/_dash-layout")
    assert layout_response.status_code == 200, layout_response.text[:500]
    layout = {key(c["props"]["id"]): c for c in components(layout_response.json())
              if "id" in c["props"] and fast(c["props"]["id"])}
    deps = served.get("/_dash-dependencies").json()
    return [Callback(d, layout) for d in deps if not d.get("clientside_function")]


# -- the attack ---------------------------------------------------------------------------------------


def updates(response: requests.Response) -> bool:
    """Whether a callback's answer changes anything (a hidden page's callback answers with no update)."""
    return response.status_code == 200 and bool(response.json().get("response"))


class Baseline:
    """Values that make a callback do its work, and the strings of its answer to them."""

    def __init__(self, values: list[Any], response: requests.Response | None) -> None:
        self.values = values
        self.texts = answer_texts(response) if response is not None else []


def working_baseline(served: Served, cb: Callback) -> Baseline:
    """Layout values, with a choice changed where needed so the callback does its work (e.g. its tab)."""
    values = cb.baseline()
    response = served.post(cb.body(values))
    if updates(response):
        return Baseline(values, response)
    for slot, (where, pattern, prop) in enumerate(cb.slots):
        if where != "inputs" or prop != "n_clicks":
            continue
        # a click on one button; CSV ones first: their answer is the smallest
        buttons = sorted(cb.concrete(pattern, cb.fixed), key=lambda i: "csv" not in str(i))
        for button in buttons[:3]:
            tried = list(values)
            tried[slot] = 1
            response = served.post(cb.body(tried, trigger=slot, clicked=button))
            if updates(response):
                cb.clicks = [b for b in buttons if "csv" in str(b)] or [button]
                return Baseline(tried, response)
    for slot, options in cb.choices():
        for option in options:
            tried = list(values)
            tried[slot] = option
            response = served.post(cb.body(tried, trigger=slot))
            if updates(response):
                return Baseline(tried, response)
    return Baseline(values, None)


@pytest.fixture(scope="module")
def baselines(served: Served, callbacks: list[Callback]) -> list[Baseline]:
    """Each callback's working baseline (found once: both tests start from it)."""
    return [working_baseline(served, cb) for cb in callbacks]


def attacks(cb: Callback, base: list[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(what was sent, request body): every option, every download button, then one slot at a time
    each hostile value against the baseline, and hostile ids.

    The options and buttons are tried with every run selected; the hostile values, many more posts,
    with a few.
    """
    for slot, options in cb.choices():
        for option in options:
            values = list(base)
            values[slot] = option
            yield f"{key(cb.slots[slot][1])}.value = {option!r}", cb.body(values, trigger=slot)
    for slot, (where, ident, prop) in enumerate(cb.slots):
        if where == "inputs" and prop == "n_clicks" and is_all(ident):
            for button in cb.buttons:
                values = list(base)
                values[slot] = 1
                yield f"click {key(button)}", cb.body(values, trigger=slot, clicked=button)
    base = cb.fewer(base)
    clicks = itertools.cycle(cb.clicks or [None])
    for slot, (where, ident, prop) in enumerate(cb.slots):
        for kind, value in HOSTILE.items():
            values = list(base)
            values[slot] = value
            yield f"{key(ident)}.{prop} = {kind}", cb.body(values, trigger=slot if where == "inputs" else 0,
                                                           clicked=next(clicks))
    wild = sorted({k for pattern in [o for o, _ in cb.outputs] + [s[1] for s in cb.slots]
                   if isinstance(pattern, dict) for k, v in pattern.items() if isinstance(v, list)})
    forged = [FIGURE if where == "state" else 1 if prop == "n_clicks" else v  # a click on a forged button
              for (where, _, prop), v in zip(cb.slots, base)]
    for field, value in itertools.product(wild, HOSTILE_ID_VALUES):
        yield f"id field {field} = {value[:40]!r}", cb.body(base, alter=(field, value))
        yield f"id field {field} = {value[:40]!r}, clicked, states figures", cb.body(forged, alter=(field, value))


def test_every_broken_run_is_badged_with_its_file(callbacks, baselines, mixed_runs):
    shown = [text for baseline in baselines for text in baseline.texts]  # decoded: "/" is "/" again
    missing = [f"{run_id}: {file}" for run_id, file in mixed_runs[1].items()
               if not any(f"{run_id}: {file}" in text for text in shown)]
    assert not missing, "no badge for: " + ", ".join(missing)


@pytest.mark.timeout(300)  # about 30 s on two busy cores; far more means a slow path crept in (e.g. PNG)
def test_every_callback_survives_hostile_values_and_nothing_is_written(served, callbacks, baselines):
    repo_before = set(marked(REPO, 3))
    base_before = listing(served.base)
    tmp_before = set(os.listdir("/tmp"))
    failures, leaks, posted = [], [], 0
    for cb, baseline in zip(callbacks, baselines):
        for sent, body in attacks(cb, baseline.values):
            response = served.post(body)
            posted += 1
            if response.status_code not in (200, 204):  # the posts are well formed: 400 hides an error too
                failures.append(f"{cb.output[:70]}: {sent} -> {response.status_code}")
            if LEAK in response.text or any(LEAK in text for text in answer_texts(response)):
                leaks.append(f"{cb.output[:70]}: {sent}")
    for path in ("/", f"/?page=gradients&runs={LONG},../{MARK}", "/_dash-layout", "/_dash-dependencies"):
        response = served.get(path)
        assert response.status_code == 200, path
        assert LEAK not in response.text, f"{path} shows a file from outside the runs folder"
    assert served.post(callbacks[0].body(callbacks[0].baseline())).status_code in (200, 204)
    unexpected = sorted({f"{r.getMessage()[:80]}: {r.exc_info[1] if r.exc_info else ''}"[:200]
                         for r in served.logged if r.exc_info or r.getMessage().startswith(("malformed", "request"))})
    assert not failures, f"{len(failures)} of {posted} hostile posts answered an error:\n" + "\n".join(failures)
    assert not unexpected, "callbacks failed on an input they did not check (answered by the app's error " \
        "handler, see app.validate):\n" + "\n".join(unexpected)
    assert not leaks, "answers with text from outside the runs folder:\n" + "\n".join(leaks)
    assert listing(served.base) == base_before, "files appeared or vanished next to the runs folder"
    assert not [n for n in set(os.listdir("/tmp")) - tmp_before if MARK in n]
    assert set(marked(REPO, 3)) == repo_before and not marked(Path("/tmp"), 2) and not marked(Path("/"), 0)
    assert not marked(served.base.parent, 2)
    assert not os.listdir(served.cwd), "the app wrote into its working directory"
    print(f"{posted} hostile posts over {len(callbacks)} callbacks")
