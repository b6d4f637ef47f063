"""Progress bars with ETA (tqdm), or a silent stand-in on other ranks and with ``progress=False``."""

from __future__ import annotations

from typing import Any


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
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(dynamic_ncols=True, **options)
