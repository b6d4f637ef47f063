"""First launch: the dashboard answers at once while the demo trains in a background process.

The CLI runs as a real subprocess on a free port over an empty runs folder with the tiny demo
(``--demo-size tiny``); the Runs page is asked through Dash's HTTP callback endpoint, as the browser
does. Every process started here is checked to be gone at the end: no orphan demo.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from app.cli import main
from app.demo import DemoFiles, demo_status, needs_demo
from app.runs import RunIndex
from trainers import progress as bars

FIRST_ANSWER_S = 15.0
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (a zombie counts as gone: it only waits to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return ") Z" in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True


def _wait(condition: Any, timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


def _runs_page(base: str) -> dict[str, Any]:
    """The Runs page's table and notes, asked the way the browser asks: POST /_dash-update-component."""
    with urllib.request.urlopen(f"{base}/_dash-dependencies", timeout=10) as response:
        dependencies = json.load(response)
    callback = next(c for c in dependencies if "runs-table.data" in c["output"])
    inputs = [{"id": i["id"], "property": i["property"], "value": "runs" if i["property"] == "value" else 1}
              for i in callback["inputs"]]
    body = {"output": callback["output"], "outputs": [{"id": o.split(".")[0], "property": o.split(".")[1]}
                                                      for o in callback["output"].strip(".").split("...")],
            "inputs": inputs, "changedPropIds": [], "state": []}
    request = urllib.request.Request(f"{base}/_dash-update-component", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["response"]


def _demo_pid(runs: Path) -> int | None:
    state = DemoFiles(runs).read_state() or {}
    return state.get("pid") if state.get("status") == "running" else None


@pytest.mark.slow
def test_first_launch_answers_at_once_shows_the_live_demo_and_stops_it(tmp_path: Path) -> None:
    runs, port = tmp_path / "runs", _free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with open(tmp_path / "cli.log", "wb") as log:  # a file, not a pipe nobody reads: the server never blocks
        cli = subprocess.Popen([sys.executable, "-m", "app", "--runs", str(runs), "--port", str(port), "--demo",
                                "--demo-size", "tiny", "--refresh", "1"], cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT)
    demo_pid = None
    try:
        _wait(lambda: _get(base + "/") == 200 or cli.poll() is not None, FIRST_ANSWER_S + 5, "the first answer")
        answered = time.monotonic() - started
        assert cli.poll() is None, (tmp_path / "cli.log").read_text()
        assert answered <= FIRST_ANSWER_S, f"first answer after {answered:.1f} s"

        demo_pid = _wait(lambda: _demo_pid(runs), 60, "the demo process's state")
        live = _wait(lambda: [r for r in RunIndex(runs).scan() if r.status == "live"], 240, "a live demo run")
        page = _wait(lambda: _runs_page(base), 30, "the Runs page")
        rows = page["runs-table"]["data"]
        assert any(row["id"] == live[0].id and row["status"] in {"live", "finished"} for row in rows), rows
        status = demo_status(runs)
        assert status is not None and status.state in {"running", "finished"}, status
        assert "demo: run " in json.dumps(page["runs-notes"]) or status.state == "finished", page["runs-notes"]
    finally:
        cli.send_signal(signal.SIGTERM)
        try:
            cli.wait(60)
        finally:
            cli.kill()
            if demo_pid and not _gone(demo_pid):
                os.kill(demo_pid, signal.SIGKILL)
    assert cli.returncode == 0
    assert demo_pid is not None
    _wait(lambda: _gone(demo_pid), 30, "the demo process to end with the dashboard")
    final = demo_status(runs)
    assert final is not None and final.state in {"stopped", "finished"}, final
    assert "restart the dashboard with --demo" in final.message or final.state == "finished"


@pytest.mark.slow
def test_a_dead_demo_is_reported_and_a_killed_dashboard_leaves_no_orphan(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    starter = ("import sys, time; from pathlib import Path; from app.demo import start_demo; "
               "start_demo(Path(sys.argv[1]), 'tiny'); time.sleep(600)")
    parents = []
    try:
        # A dashboard killed with SIGKILL runs no clean-up code: its demo must end all the same.
        parents.append(subprocess.Popen([sys.executable, "-c", starter, str(runs)], cwd=tmp_path))
        pid = _wait(lambda: _demo_pid(runs), 60, "the demo process's state")
        parents[-1].kill()
        _wait(lambda: _gone(pid), 30, "the demo process to end with its killed parent")

        # A demo process that dies on its own is named as dead on the Runs page.
        parents.append(subprocess.Popen([sys.executable, "-c", starter, str(runs)], cwd=tmp_path))
        pid = _wait(lambda: _demo_pid(runs) not in {None, pid} and _demo_pid(runs), 60, "the second demo process")
        os.kill(pid, signal.SIGKILL)
        status = _wait(lambda: (s := demo_status(runs)) is not None and s.state == "died" and s, 30, "a dead demo")
        assert f"pid {pid}" in status.message and "restart the dashboard with --demo" in status.message
        assert "\n" not in status.message
    finally:
        for parent in parents:
            parent.kill()
            parent.wait()


@pytest.mark.parametrize("argv, named", [
    (["--refresh", "-1"], "'-1'"), (["--refresh", "nan"], "'nan'"), (["--refresh", "soon"], "'soon'"),
    (["--port", "0"], "'0'"), (["--port", "70000"], "'70000'"), (["--port", "http"], "'http'"),
    (["--host", "a b"], "'a b'"), (["--host", "no-such-host.invalid"], "no-such-host.invalid"),
    (["--demo-size", "huge"], "'huge'"), (["--runs", str(ROOT / "pyproject.toml")], "pyproject.toml"),
])
def test_bad_options_are_one_line_errors(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and err.startswith("gradscope-dashboard: error:"), err


def test_a_port_in_use_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(SystemExit):
            main(["--port", str(busy.getsockname()[1]), "--runs", "/nonexistent-runs"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another --port" in err, err


def test_host_defaults_to_this_machine_only() -> None:
    from app.cli import build_parser

    assert build_parser().parse_args([]).host == "127.0.0.1"


def _write_state(folder: Path, **state: Any) -> None:
    DemoFiles(folder).folder.mkdir(parents=True, exist_ok=True)
    DemoFiles(folder).state.write_text(json.dumps(state))


def test_demo_status_lines(tmp_path: Path) -> None:
    assert demo_status(tmp_path) is None and needs_demo(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _write_state(tmp_path, status="running", pid=int(dead.stdout), run=2, runs=5, name="tfkd-reg", stage="training")
    status = demo_status(tmp_path)
    assert status is not None and status.state == "died" and "run 2/5 tfkd-reg" in status.message
    assert needs_demo(tmp_path)  # a dead demo is continued at the next --demo launch
    _write_state(tmp_path, status="failed", run=1, runs=5, name="baseline", stage="evaluation", error="OSError: disk")
    status = demo_status(tmp_path)
    assert status is not None and status.state == "failed" and "OSError: disk" in status.message
    _write_state(tmp_path, status="finished", started=0, finished=90, runs=5)
    status = demo_status(tmp_path)
    assert status is not None and status.message == "demo: 5 runs trained, evaluated and attributed in 90 s"
    assert needs_demo(tmp_path)  # finished, but its runs were deleted
    DemoFiles(tmp_path).state.write_text('{"status": "running", "pid": "x", "started": "soon", "run": []}')
    status = demo_status(tmp_path)
    assert status is not None and "\n" not in status.message


def test_every_evaluation_loop_reports_progress() -> None:
    """Clean accuracy, PGD batches, each PGD step and AutoAttack's model calls reach the watchers, bars too."""
    import torch

    from trainers.evaluate import accuracy, autoattack_breakdown, pgd_accuracy

    heard: list[tuple[str, int, int | None]] = []
    bars.WATCHERS.append(lambda *told: heard.append(told))
    try:
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        batches = [(torch.rand(4, 1, 3, 4), torch.tensor([0, 1, 2, 0]))] * 3
        accuracy(model, batches)
        pgd_accuracy(model, iter(batches), steps=2)
        with bars.progress(total=2, desc="epoch 1", enabled=False) as bar:
            bar.update()
        x, y = batches[0]
        model[1].weight.data.copy_(torch.eye(3, 12) * 5)  # some images right, so AutoAttack has work to do
        autoattack_breakdown(model, x, y, attacks_to_run=["apgd-ce"], batch_size=4)
    finally:
        bars.WATCHERS.pop()
    descs = {desc for desc, _, _ in heard}
    assert {"clean accuracy", "PGD step", "epoch 1"} <= descs and any(d.startswith("PGD-2 at") for d in descs)
    assert ("clean accuracy", 3, 3) in heard and ("PGD step", 2, 2) in heard and ("epoch 1", 1, 2) in heard
    assert ("epoch 1", 2, 2) in heard  # a bar left before its total is closed
    calls = [done for desc, done, total in heard if desc == "apgd-ce model calls" and total == done]
    assert calls and calls[-1] > 10  # inside AutoAttack: every model call is reported
