"""Progress bars with ETA (tqdm), or a silent stand-in on other ranks and with ``progress=False``.

Whoever needs progress without a console (the dashboard's background demo) adds a function to `WATCHERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
Watcher = Callable[[str, int, "int | None"], None]
WATCHERS: list[Watcher] = []  # watcher(desc, done, total) on every update of every bar; done == total: closed


def _tell(desc: str, done: int, total: int | None) -> None:
    for watcher in WATCHERS:
        watcher(desc, done, total)


class _Watched:
    """A bar that also tells `WATCHERS` (the dashboard's background demo shows them on the Runs page)."""

    def __init__(self, bar: Any, desc: str, total: int | None, initial: int) -> None:
        self.bar, self.desc, self.total, self.done = bar, desc, total, initial

    def __enter__(self) -> _Watched:
        self.bar.__enter__()
        _tell(self.desc, self.done, self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)
        _tell(self.desc, self.total or self.done, self.total or self.done)  # closed, even when cut short

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.done += n
        _tell(self.desc, self.done, self.total)

    def set_postfix(self, values: dict[str, Any]) -> None:
        self.bar.set_postfix(values)


class _Silent:
    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, values: dict[str, Any]) -> None:
        return None


def progress(*, enabled: bool = True, **options: Any) -> Any:
    """A tqdm bar (``options`` go to tqdm) when ``enabled``, else an object with the same methods."""
    if not enabled:
        bar: Any = _Silent()
    else:
        from tqdm.auto import tqdm

        bar = tqdm(dynamic_ncols=True, **options)
    if WATCHERS:
        return _Watched(bar, options.get("desc", ""), options.get("total"), options.get("initial", 0))
    return bar


@contextmanager
def forward_calls(module: Any, desc: str) -> Iterator[None]:
    """Within the block, tell `WATCHERS` of each forward call of ``module``: progress inside libraries (AutoAttack)."""
    if not WATCHERS:
        yield
        return
    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1
        _tell(desc, calls[0], None)

    handle = module.register_forward_hook(count)
    try:
        yield
    finally:
        handle.remove()
        _tell(desc, calls[0], calls[0])  # closed


def tracked(items: Iterable[T], desc: str) -> Iterator[T]:
    """``items``, telling `WATCHERS` after each one (no console bar): progress of loops too short for a bar."""
    if not WATCHERS:
        yield from items
        return
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    _tell(desc, 0, total)
    done = 0
    for done, item in enumerate(items, 1):
        yield item
        _tell(desc, done, total)
    _tell(desc, done, done)  # finished
