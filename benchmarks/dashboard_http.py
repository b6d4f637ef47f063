"""The dashboard at scale, end to end: a real server, HTTP, headless Chromium drawing the figures.

    python benchmarks/dashboard_http.py [--out /tmp/gradscope-scale-runs] [--runs 12] [--steps 80000]

Writes 12 runs x 80,000 steps x 62 ResNet18 tensors (`dashboard_scale.write_runs`, real format) and
100 small runs, starts ``python -m app`` on each folder as its own process, opens it in headless
Chromium (Debian's chromium + chromedriver, through selenium as dash[testing] does) and times, in
the browser's clock, each control change to the moment both Gradients figures are drawn: a change
is made as a user's would be (`dash_clientside.set_props`, then the callback's HTTP round trip and
Plotly's drawing); it ends at the later ``plotly_afterplot`` of the two graphs after the response.

- first views: every statistic at every heatmap column level and every series level, the first time
  each is asked for (targets: each <= 500 ms);
- warm views: revisits with a new step window each time (p95 <= 300 ms);
- memory: the server process's resident set after all views, and its peak (<= 1.5 GB);
- 100 runs: the Runs page opened with 100 runs, from the tab switch to 100 rows in its table (<= 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from dashboard_scale import write_runs

TARGETS = {"first_ms": 500.0, "warm_p95_ms": 300.0, "rss_mb": 1536.0, "list_100_ms": 1000.0}

# Installed once per page load: counts callback requests in flight and records each graph's last draw.
INSTRUMENT = """
if (!window.__bench) {
  window.__bench = {pending: 0, answered: 0, drawn: {}};
  const send = window.fetch;
  window.fetch = function (...args) {
    const url = String((args[0] && args[0].url) || args[0]);
    if (!url.includes('_dash-update-component')) return send.apply(this, args);
    window.__bench.pending++;
    return send.apply(this, args).finally(() => {
      window.__bench.pending--; window.__bench.answered = performance.now(); });
  };
}
for (const id of arguments[0]) {
  const gd = document.querySelector('#' + id + ' .js-plotly-plot');
  if (gd && !gd.__benched) { gd.__benched = true;
    gd.on('plotly_afterplot', () => { window.__bench.drawn[id] = performance.now(); }); }
}
return true;
"""
CHANGE = """
const [id, prop, value] = arguments;
window.__bench.t0 = performance.now();
window.__bench.answered = 0; window.__bench.drawn = {};
window.dash_clientside.set_props(id, {[prop]: value});
"""
STATE = "return [window.__bench.t0, window.__bench.pending, window.__bench.answered, window.__bench.drawn];"
GRAPHS = ("graph-heatmap", "graph-series")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) of a process in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Server:
    """``python -m app`` on a folder and port, as its own process; stopped on exit."""

    def __init__(self, runs: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "app", "--runs", str(runs), "--port", str(self.port),
                                         "--refresh", "3600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url, timeout=2).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the dashboard on {runs} did not answer in 120 s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def browser() -> Any:
    """Headless Chromium driven by chromedriver (selenium 4.2, as dash[testing] pins)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("DASH_TEST_CHROMEPATH", "/usr/bin/chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options)


def wait_for(driver: Any, script: str, timeout: float = 120.0) -> Any:
    """Poll ``script`` in the page until it returns something true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out: {script[:80]}")


def change(driver: Any, component: str, prop: str, value: Any, graphs: tuple[str, ...] = GRAPHS,
           timeout: float = 120.0, answers: list[float] | None = None) -> float:
    """Milliseconds from setting ``component.prop`` to every graph in ``graphs`` drawn after the answer.

    ``answers`` receives the part until the HTTP answer arrived (the rest is Plotly drawing).
    """
    driver.execute_script(CHANGE, component, prop, value)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t0, pending, answered, drawn = driver.execute_script(STATE)
        # every request answered, every graph redrawn since the change, the last draw after the last answer
        if answered and not pending and all(drawn.get(g, 0) > t0 for g in graphs) and max(
                drawn[g] for g in graphs) >= answered:
            if answers is not None:
                answers.append(answered - t0)
            return max(drawn[g] for g in graphs) - t0
        time.sleep(0.01)
    raise TimeoutError(f"{component}.{prop} = {value!r}: figures not drawn in {timeout:.0f} s")


def open_page(driver: Any, url: str, graphs: tuple[str, ...] = GRAPHS) -> float:
    """Load ``url`` and wait for its graphs; returns ms from navigation start to the last first draw."""
    driver.get(url)
    wait_for(driver, "return window.dash_clientside && window.dash_clientside.set_props && "
                     + " && ".join(f"(document.querySelector('#{g} .js-plotly-plot') || {{}}).data" for g in graphs))
    drawn = " && ".join(f"document.querySelector('#{g} .js-plotly-plot').data.length > 0" for g in graphs)
    wait_for(driver, f"return {drawn} && !document.querySelector('[data-dash-is-loading=\"true\"]')")
    opened = float(driver.execute_script("return performance.now()"))
    driver.execute_script(INSTRUMENT, list(graphs))
    return opened


def redrawn_by() -> dict[str, tuple[str, ...]]:
    """Control id -> the Gradients graphs its change redraws (each figure has its own callback)."""
    from app.components import graph_id
    from app.pages.gradients import PAGE

    graphs: dict[str, tuple[str, ...]] = {}
    for spec in PAGE.figures:
        for key, control in PAGE.controls.items():
            if not getattr(spec, "uses", ()) or key in spec.uses:
                graphs[control.id] = (*graphs.get(control.id, ()), graph_id(spec.name))
    return graphs


def gradients_views(server: Server, run_ids: list[str], repeats: int) -> dict[str, Any]:
    """First and warm view times on the Gradients page, with the server's memory."""
    from app.pages.gradients import COLUMNS, LEVELS, STAT_OPTIONS

    stats = [o["value"] for o in STAT_OPTIONS]
    graphs = redrawn_by()
    started_mb = _memory_mb(server.process.pid)[0]
    answers: list[float] = []
    driver = browser()
    try:
        opened = open_page(driver, f"{server.url}/?page=gradients&runs={','.join(run_ids)}")
        shown = {"grad-stat": stats[0], "grad-columns": "stage", "series-level": "stage"}  # the page's defaults
        first: dict[str, float] = {}
        revisits: dict[str, float] = {}
        seen = {("graph-heatmap", stats[0], "stage"), ("graph-series", stats[0], "stage")}  # drawn on opening

        def show(control: str, value: str) -> None:  # first views of each figure at each statistic and level
            if shown[control] == value:  # setting the value shown fires no callback
                return
            shown[control] = value
            views = {(g, shown["grad-stat"], shown["grad-columns" if g == "graph-heatmap" else "series-level"])
                     for g in graphs[control]}
            name = (f"{shown['grad-stat']}: heatmap by {shown['grad-columns']}, series by "
                    f"{shown['series-level']} (changed {control})")
            times = answers if views - seen else []
            (first if views - seen else revisits)[name] = change(driver, control, "value", value, graphs[control],
                                                                 answers=times)
            seen.update(views)

        for stat in stats:
            show("grad-stat", stat)
            for columns in sorted(COLUMNS, key=lambda c: c == shown["grad-columns"]):  # the other first
                show("grad-columns", columns)
            for level in sorted(LEVELS, key=lambda v: v == shown["series-level"]):
                show("series-level", level)
        warm: list[float] = []
        warm_answers: list[float] = []
        by_control: dict[str, list[float]] = {}
        for k in range(repeats):  # revisits: each value differs from the one shown, the window is new each time
            warm.append(change(driver, "grad-window", "value", [round(0.05 * (k % 10), 2), 0.95 + 0.005 * k],
                               graphs["grad-window"], answers=warm_answers))
            by_control.setdefault("grad-window", []).append(round(warm[-1]))
            for control, values in (("grad-stat", stats), ("series-level", LEVELS)):
                shown[control] = values[(values.index(shown[control]) + 1) % len(values)]
                warm.append(change(driver, control, "value", shown[control], graphs[control], answers=warm_answers))
                by_control.setdefault(f"{control}={shown[control]}", []).append(round(warm[-1]))
    finally:
        driver.quit()
    rss, peak = _memory_mb(server.process.pid)
    warm.sort()
    return {"page_open_ms": opened, "first_ms": first, "first_answer_ms": dict(zip(first, answers)),
            "revisit_ms": revisits, "warm_ms_by_change": by_control,
            "first_answer_max_ms": max(answers),
            "server_rss_at_start_mb": started_mb, "warm_p50_ms": statistics.median(warm),
            "warm_p95_ms": warm[round(0.95 * (len(warm) - 1))], "warm_max_ms": warm[-1], "warm_n": len(warm),
            "warm_answer_p50_ms": statistics.median(warm_answers),
            "warm_answer_p95_ms": sorted(warm_answers)[round(0.95 * (len(warm_answers) - 1))],
            "rss_mb": rss, "peak_rss_mb": peak}


def write_small_runs(root: Path, n: int) -> None:
    """``n`` finished runs with config, metrics and results but no gradient record."""
    for i in range(n):
        folder = root / f"sweep/run{i:03d}"
        if (folder / "results.json").exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"method": "baseline", "model": "resnet18",
                                                        "dataset": "cifar10", "seed": i, "epochs": 10}))
        (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "step": 100 * e, "train_loss": 1 / e})
                                                      + "\n" for e in range(1, 11)))
        (folder / "results.json").write_text(json.dumps({"epochs": 10, "best": {"test_acc": 90.0 + i / 100},
                                                         "last": {"test_acc": 90.0}}))


def list_runs(server: Server, n: int) -> dict[str, float]:
    """Ms from opening the dashboard to ``n`` runs in the Runs table, and from a tab switch back to it."""
    rows = "return document.querySelectorAll('#runs-table tr td').length"
    count = f"return window.__runs_listed >= {n}"
    driver = browser()
    try:
        driver.get(server.url)
        wait_for(driver, rows)
        opened = driver.execute_script("return performance.now()")
        driver.execute_script(
            "window.__runs_listed = 0; const send = window.fetch; window.fetch = function (...a) {"
            " const p = send.apply(this, a); const u = String((a[0] && a[0].url) || a[0]);"
            " if (u.includes('_dash-update-component')) p.then(r => r.clone().json()).then(j => {"
            "  const t = j && j.response && j.response['runs-table'];"
            "  if (t && t.data) { window.__runs_listed = t.data.length; window.__listed_at = performance.now(); }"
            " }).catch(() => {}); return p; };")
        switches = []
        for _ in range(5):
            driver.execute_script("window.dash_clientside.set_props('tabs', {value: 'gradients'})")
            time.sleep(0.3)
            driver.execute_script("window.__runs_listed = 0; window.__t0 = performance.now();"
                                  "window.dash_clientside.set_props('tabs', {value: 'runs'})")
            wait_for(driver, count, 30)
            wait_for(driver, rows, 30)
            switches.append(driver.execute_script("return performance.now() - window.__t0"))
    finally:
        driver.quit()
    return {"page_open_to_table_ms": opened, "tab_switch_to_listed_ms": statistics.median(switches),
            "tab_switch_max_ms": max(switches)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/gradscope-scale-runs")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=80_000)
    parser.add_argument("--list-runs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7, help="rounds of 3 warm views")
    args = parser.parse_args()
    big, small = Path(args.out), Path(f"{args.out}-list{args.list_runs}")
    write_runs(big, args.runs, args.steps)
    write_small_runs(small, args.list_runs)
    from app.runs import RunIndex

    report: dict[str, Any] = {"runs": args.runs, "steps": args.steps, "load_average_before": os.getloadavg()}
    with Server(big) as server:
        report["gradients"] = gradients_views(server, RunIndex(big).ids(), args.repeats)
    with Server(small) as server:
        report["list"] = list_runs(server, args.list_runs)
    report["load_average_after"] = os.getloadavg()
    g, listing = report["gradients"], report["list"]
    print(json.dumps(report, indent=1))
    worst = max(g["first_ms"].values())
    print(f"\n{args.runs} runs x {args.steps} steps: first views max {worst:.0f} ms {_verdict(worst, 'first_ms')}; "
          f"warm p50 {g['warm_p50_ms']:.0f} ms, p95 {g['warm_p95_ms']:.0f} ms "
          f"{_verdict(g['warm_p95_ms'], 'warm_p95_ms')}; "
          f"server RSS {g['rss_mb']:.0f} MB, peak {g['peak_rss_mb']:.0f} MB {_verdict(g['peak_rss_mb'], 'rss_mb')}")
    print(f"{args.list_runs} runs listed {listing['tab_switch_to_listed_ms']:.0f} ms after the tab switch (max "
          f"{listing['tab_switch_max_ms']:.0f} ms {_verdict(listing['tab_switch_max_ms'], 'list_100_ms')}); "
          f"page open to table {listing['page_open_to_table_ms']:.0f} ms")


def _verdict(value: float, target: str) -> str:
    return f"({'met' if value <= TARGETS[target] else 'NOT met'}: target <= {TARGETS[target]:.0f})"

if __name__ == "__main__":
    main()
