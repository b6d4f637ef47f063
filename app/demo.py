"""Demo runs for a first look, trained in a background process while the dashboard already answers.

`start_demo` launches ``python -m app.demo`` under ``nice``: real short trainings on offline data,
then their evaluation (clean, PGD-20), AutoAttack (adversarial runs), ε sweep and attribution.
Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` when present (MNIST-sized, so the
ResNets run at 28x28); otherwise the generated ``synthetic`` set is used. Runs appear on the Runs
page as soon as their training starts, and the pages fill as their files arrive.

The process keeps its state in ``RUNS/.demo/state.json`` (a dot folder, so never taken for a run)
and its log in ``RUNS/.demo/demo.log``; every progress bar of the trainers reaches the state
through `trainers.progress.WATCHERS`, so no stage is silent. `demo_status` turns the state into the
one line the Runs page shows, and says so when the process died. A stage whose files exist is
skipped, so a demo stopped half way continues where it was at the next ``--demo`` launch.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEMO_FOLDER = ".demo"
RUNS = {"fig4": ("baseline", "tfkd-reg", "tfkd-self"), "fig7": ("at", "at-tfkd-reg")}
WRITE_EVERY_S = 0.5  # the state file is rewritten at most this often while a bar moves
NICENESS = 10


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: which runs, their training overrides, how many images are evaluated."""

    runs: dict[str, tuple[str, ...]]  # recipe -> run names
    settings: dict[str, Any]  # `TrainConfig` overrides for every run
    adversarial: dict[str, Any]  # and for the adversarially trained ones
    eval_images: int
    eval_batch: int  # small, so that each PGD batch reports within seconds
    autoattack_batch: int  # smaller still: APGD-CE takes 100 steps per batch, unseen by the bars
    attribution_images: int


SIZES = {
    # Five Figure-4 and Figure-7 style runs of a narrow ResNet18 on 2,000 images: minutes on two cores.
    "full": DemoSize(
        runs=RUNS, settings={"epochs": 2, "train_subset": 2000, "test_subset": 500, "batch_size": 64, "width": 8,
                             "lr": 0.05, "eval_batch_size": 100},
        adversarial={"val_size": 200, "attack_steps": 2, "patience": None},
        eval_images=100, eval_batch=50, autoattack_batch=10, attribution_images=6),
    # Seconds per run; for tests of the launch (``--demo-size tiny``).
    "tiny": DemoSize(
        runs={"fig4": ("baseline",), "fig7": ("at",)},
        settings={"epochs": 1, "train_subset": 256, "test_subset": 64, "batch_size": 64, "width": 4, "lr": 0.05,
                  "eval_batch_size": 64},
        adversarial={"val_size": 64, "attack_steps": 2, "patience": None},
        eval_images=32, eval_batch=32, autoattack_batch=16, attribution_images=2),
}


@dataclass(frozen=True)
class DemoFiles:
    """Where the demo keeps its state, log and lock inside a runs folder."""

    runs: Path

    @property
    def folder(self) -> Path:
        """The demo's own folder; a dot folder, so the run index never lists it."""
        return self.runs / DEMO_FOLDER

    @property
    def state(self) -> Path:
        """JSON: pid, status, current run and stage, the moving bar."""
        return self.folder / "state.json"

    @property
    def log(self) -> Path:
        """Everything the demo process prints."""
        return self.folder / "demo.log"

    @property
    def lock(self) -> Path:
        """Held by the demo process while it runs, so one folder never gets two demos."""
        return self.folder / "lock"

    def read_state(self) -> dict[str, Any] | None:
        """The state, or None when there is none or it cannot be read (being replaced, or not ours)."""
        try:
            state = json.loads(self.state.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None


def demo_dataset() -> str:
    """Fashion-MNIST when Debian's package is installed, else the generated set."""
    from trainers.data import DEBIAN_FASHION_MNIST

    return "fashion-mnist" if DEBIAN_FASHION_MNIST.exists() else "synthetic"


def demo_configs(out: Path, size: str = "full") -> list[Any]:
    """The demo's `TrainConfig`s, teachers first, in the recipes' folder layout."""
    from trainers.methods import METHODS
    from trainers.recipes import plan

    chosen = SIZES[size]
    overrides = {"dataset": demo_dataset(), "progress": False, **chosen.settings}
    configs = []
    for figure, names in chosen.runs.items():
        for config in plan(figure, seeds=1, out=out, overrides=overrides):
            if config.extras["run"] in names:
                if METHODS.get(config.method).adversarial:
                    for name, value in chosen.adversarial.items():
                        setattr(config, name, value)
                configs.append(config)
    return configs


# ---------------------------------------------------------------- stages, in order, for each run


@dataclass(frozen=True)
class Stage:
    """One step of the demo for one run: whether it applies, whether its files are there, how to run it."""

    name: str
    run: Callable[[Any, DemoSize], None]
    done: Callable[[Path], bool]
    applies: Callable[[Any], bool] = lambda config: True


def _evaluation_keys(folder: Path) -> tuple[list[str], dict[str, Any]]:
    """Keys of the stored results and sweeps (none when the file is missing or unreadable: evaluate again)."""
    from trainers.errors import TrainersError
    from trainers.run_folder import RunFolder

    try:
        stored = RunFolder(folder).read_evaluation()
    except TrainersError:
        return [], {}
    return list(stored["results"]), dict(stored["sweeps"])


def _train(config: Any, size: DemoSize) -> None:
    from trainers.loop import train
    from trainers.run_folder import RunFolder

    resume = RunFolder(Path(config.out)).last.exists()  # an interrupted training continues
    train(config, resume=resume, overwrite=not resume)


def _evaluate(attacks: list[str], sweep: bool) -> Callable[[Any, DemoSize], None]:
    def run(config: Any, size: DemoSize) -> None:
        from trainers.robustness import evaluate_run

        batch = size.autoattack_batch if "autoattack" in attacks else size.eval_batch
        evaluate_run(config.out, attacks=attacks, eps=8 / 255, n=size.eval_images, batch_size=batch, sweep=sweep,
                     attacks_to_run=["apgd-ce"], show_progress=False)
    return run


def _attribute(config: Any, size: DemoSize) -> None:
    from trainers.attribution import attribute_run

    attribute_run(config.out, images=size.attribution_images)


def _adversarial(config: Any) -> bool:
    from trainers.methods import METHODS

    return METHODS.get(config.method).adversarial


def _folder(path: Path) -> Any:
    from trainers.run_folder import RunFolder

    return RunFolder(path)


STAGES = (
    Stage("training", _train, lambda f: _folder(f).results.exists()),
    Stage("evaluation", _evaluate(["clean", "pgd"], sweep=False),
          lambda f: {"clean", "pgd"} <= {key.split("/")[1] for key in _evaluation_keys(f)[0]}),
    Stage("AutoAttack", _evaluate(["autoattack"], sweep=False),
          lambda f: any("/autoattack/" in key for key in _evaluation_keys(f)[0]), _adversarial),
    Stage("ε sweep", _evaluate([], sweep=True), lambda f: bool(_evaluation_keys(f)[1])),
    Stage("attribution", _attribute, lambda f: _folder(f).attribution_meta.exists()),
)


# ---------------------------------------------------------------- the background process


class _StateWriter:
    """Keeps ``state.json`` current: stage changes at once, bars from a thread every `WRITE_EVERY_S`.

    The bars change in the training's hot loops (every batch, every PGD step); there they only mark
    the state as changed, and the thread writes it, so a bar that opens and then works for a long
    time without an update still shows within half a second.
    """

    def __init__(self, files: DemoFiles) -> None:
        self.files = files
        self.state: dict[str, Any] = {}
        self.changed = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._flush, name="demo-state", daemon=True).start()

    def set(self, **values: Any) -> None:
        with self.lock:
            self.state.update(values, updated=time.time())
            self._write()

    def bar(self, desc: str, done: int, total: int | None) -> None:
        """A watcher of `trainers.progress`: the open bars, outermost first; a bar at its total is closed."""
        with self.lock:
            bars: list[dict[str, Any]] = self.state.setdefault("bars", [])
            known = next((b for b in bars if b["desc"] == desc), None)
            if total is not None and done >= total:
                if known is not None:
                    bars.remove(known)
            elif known is None:
                bars.append({"desc": desc, "done": done, "total": total})
            else:
                known.update(done=done, total=total)
            self.state["updated"] = time.time()
        self.changed.set()

    def _flush(self) -> None:
        while True:
            self.changed.wait()
            self.changed.clear()
            with self.lock:
                self._write()
            time.sleep(WRITE_EVERY_S)

    def _write(self) -> None:
        tmp = self.files.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.files.state)


def run_demo(runs: Path, size: str = "full") -> int:
    """Train, evaluate and attribute the demo runs under ``runs``, keeping the state file current.

    Returns 0 when every stage finished (or another process holds the demo's lock), 1 when one failed.
    """
    from trainers.progress import WATCHERS

    files = DemoFiles(runs)
    files.folder.mkdir(parents=True, exist_ok=True)
    with open(files.lock, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("demo: another process is training the demo runs here; nothing to do")
            return 0
        writer = _StateWriter(files)
        writer.set(pid=os.getpid(), status="running", started=time.time(), size=size, stage="start-up")
        WATCHERS.append(writer.bar)
        stage, name = "start-up", ""
        try:
            configs = demo_configs(runs, size)  # imports torch: seconds
            writer.set(runs=len(configs))
            for number, config in enumerate(configs, 1):
                folder, name = Path(config.out), config.extras["run"]
                for step in STAGES:
                    if not step.applies(config) or step.done(folder):
                        continue
                    stage = step.name
                    writer.set(run=number, name=name, id=folder.relative_to(runs).as_posix(), stage=stage, bars=[],
                               stage_started=time.time())
                    print(f"{time.strftime('%H:%M:%S')} demo: run {number}/{len(configs)} {name}: {stage}", flush=True)
                    step.run(config, SIZES[size])
            writer.set(status="finished", finished=time.time(), stage="", bars=[])
            print(f"{time.strftime('%H:%M:%S')} demo: finished in {time.time() - writer.state['started']:.0f} s",
                  flush=True)
            return 0
        except (KeyboardInterrupt, SystemExit):
            writer.set(status="stopped", error=f"stopped during {stage} of {name}")
            return 1
        except Exception as exc:  # shown in the app, with the traceback in the log
            traceback.print_exc()
            writer.set(status="failed", error=f"{type(exc).__name__}: {exc}")
            return 1
        finally:
            WATCHERS.remove(writer.bar)


# ---------------------------------------------------------------- the dashboard's side

_CHILDREN: dict[Path, subprocess.Popen[bytes]] = {}  # demos this process started, by runs folder


def _child_setup() -> None:  # pragma: no cover - runs in the child before exec
    """Lower the child's priority, and have it end when its parent ends (no orphan after a kill -9)."""
    os.nice(NICENESS)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()  # Ctrl-C in the terminal reaches the dashboard, which then stops the demo itself


def needs_demo(runs: Path) -> bool:
    """Whether ``--demo`` should start the demo: the folder holds no run, or a demo that did not finish."""
    from .runs import RunIndex

    state = DemoFiles(runs).read_state()
    if state is None or state.get("status") == "finished":
        return not RunIndex(runs).ids()
    return not _alive(state)


def start_demo(runs: Path, size: str = "full") -> subprocess.Popen[bytes]:
    """Start the demo in a background process (niced, stopped when this process exits); returns it."""
    files = DemoFiles(runs)
    files.folder.mkdir(parents=True, exist_ok=True)
    with open(files.log, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "app.demo", "--runs", str(runs), "--size", size],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_child_setup,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    _CHILDREN[runs.resolve()] = child
    atexit.register(stop_demo, runs)
    return child


def stop_demo(runs: Path, timeout: float = 10.0) -> None:
    """Stop the demo this process started for ``runs`` (SIGTERM, then SIGKILL), and reap it."""
    child = _CHILDREN.pop(runs.resolve(), None)
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _alive(state: dict[str, Any]) -> bool:
    """Whether the process named in ``state`` still runs the demo (not exited, not a zombie, not a reused pid)."""
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    for child in _CHILDREN.values():
        if child.pid == pid:
            return child.poll() is None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        with contextlib.suppress(OSError):
            if ") Z" in (proc / "stat").read_text() or b"app.demo" not in (proc / "cmdline").read_bytes():
                return False
    return True


@dataclass(frozen=True)
class DemoStatus:
    """The demo as the Runs page tells it: ``state`` is running, finished, failed, stopped or died."""

    state: str
    message: str
    log: Path


def demo_status(runs: str | Path) -> DemoStatus | None:
    """One line about the demo under ``runs`` (None when there is none); says so when its process died."""
    files = DemoFiles(Path(runs))
    state = files.read_state()
    if state is None:
        return None
    try:
        return _status(state, files.log)
    except (TypeError, ValueError, KeyError, AttributeError):  # a state file not written by us
        return DemoStatus("unreadable", f"demo: its state file {files.state} holds something else; "
                          "remove the .demo folder to start the demo again", files.log)


def _status(state: dict[str, Any], log: Path) -> DemoStatus:
    status = state.get("status")
    if status == "finished":
        took = _duration(float(state.get("finished", 0)) - float(state.get("started", 0)))
        return DemoStatus("finished", f"demo: {state.get('runs')} runs trained, evaluated and attributed in {took}",
                          log)
    where = f"run {state['run']}/{state.get('runs', '?')} {state.get('name', '')}" if "run" in state else "the demo"
    if status == "running" and _alive(state):
        since = time.time() - float(state.get("stage_started") or state.get("started") or time.time())
        message = f"demo: {where} — {state.get('stage', 'starting')} ({since:.0f} s){_bars_text(state.get('bars'))}"
        return DemoStatus("running", message + f" (log: {log})", log)
    if status == "running":
        return DemoStatus("died", f"demo: the demo process (pid {state.get('pid')}) died during "
                          f"{state.get('stage', 'start-up')} of {where}{_last_line(log)}; restart the "
                          "dashboard with --demo to continue it", log)
    error = f": {state.get('error')}" if status == "failed" else ""
    return DemoStatus(str(status), f"demo: {status} during {state.get('stage')} of {where}{error} (log: {log}); "
                      "restart the dashboard with --demo to continue it", log)


def _bars_text(bars: Any) -> str:
    """``: epoch 1 12/32 · PGD step 3/7`` from the open bars."""
    if not isinstance(bars, list):
        return ""
    parts = [f"{b['desc']} {b.get('done', 0)}/{b['total']}" if b.get("total")
             else f"{b['desc']}: {b.get('done', 0)} done" for b in bars if isinstance(b, dict) and b.get("desc")]
    return ": " + " · ".join(parts) if parts else ""


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _last_line(log: Path) -> str:
    """The log's last non-empty line, which usually says why ("Killed", an exception)."""
    with contextlib.suppress(OSError):
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
        if lines:
            return f" (log {log}: {lines[-1][:200]})"
    return f" (log: {log})"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m app.demo --runs DIR [--size tiny]``: the background process (`start_demo` starts it)."""
    parser = argparse.ArgumentParser(prog="python -m app.demo", description=main.__doc__)
    parser.add_argument("--runs", required=True, type=Path)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--status", action="store_true", help="print the demo's state and exit")
    args = parser.parse_args(argv)
    if args.status:
        status = demo_status(args.runs)
        print(status.message if status else f"no demo in {args.runs}")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the state says "stopped"
    return run_demo(args.runs, args.size)


if __name__ == "__main__":
    sys.exit(main())
