"""A typed name -> object registry: methods, models and data sets are entries, never if/elif chains."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import TrainersError

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects registered under their CLI names; a miss lists the valid names.

    Example:
        >>> MODELS = Registry[Callable[..., nn.Module]]("model")
        >>> @MODELS.register("resnet18")
        ... def resnet18(**kwargs): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; a name can be taken only once."""

        def add(obj: T) -> T:
            self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        """Add ``obj`` under ``name``."""
        if name in self._entries:
            raise TrainersError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """The entry called ``name``, or a `TrainersError` listing the valid names."""
        try:
            return self._entries[name]
        except KeyError:
            raise TrainersError(f"unknown {self.kind} {name!r}; expected one of: {', '.join(self)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs in registration order."""
        return list(self._entries.items())
