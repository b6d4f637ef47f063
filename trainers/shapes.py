"""Shapes of JSON values: small composable checks that name the first mismatch in one line.

The run folder's readers (`trainers.run_folder`) check every file against one; a mismatch reads
``'best.test_acc' must be a number or null, got 'high'``.
"""

from __future__ import annotations

import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Shape(ABC):
    """What a JSON value must be; `problem` names the first mismatch, `describe` the expectation."""

    @abstractmethod
    def describe(self) -> str:
        """The expectation in words (``an integer``)."""

    @abstractmethod
    def problem(self, value: Any, where: str) -> str | None:
        """The first mismatch of ``value`` at the dotted path ``where`` ("": the whole file), or None."""


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _mismatch(where: str, expected: str, value: Any) -> str:
    """``'a.b' must be an integer, got 'x'``; ``where`` is a dotted path, empty for the whole file."""
    subject = f"'{where}' must be" if where else "must hold"
    return f"{subject} {expected}, got {_got(value)}"


def _child(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


@dataclass(frozen=True)
class Scalar(Shape):
    """A JSON scalar of one kind: ``integer``, ``number`` (integers accepted), ``string``, ``boolean``."""

    kind: str

    def describe(self) -> str:
        """The expectation in words (``an integer``)."""
        return {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
                "scalar": "a number, string, boolean or null"}[self.kind]

    def problem(self, value: Any, where: str) -> str | None:
        """The first mismatch of ``value`` at the dotted path ``where`` ("": the whole file), or None."""
        ok = {
            "integer": type(value) is int,
            "number": type(value) in (int, float),
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
            "scalar": value is None or isinstance(value, (int, float, str, bool)),
        }[self.kind]
        return None if ok else _mismatch(where, self.describe(), value)


@dataclass(frozen=True)
class Maybe(Shape):
    """``null`` or ``inner``."""

    inner: Shape

    def describe(self) -> str:
        """The expectation in words (``an integer``)."""
        return f"{self.inner.describe()} or null"

    def problem(self, value: Any, where: str) -> str | None:
        """The first mismatch of ``value`` at the dotted path ``where`` ("": the whole file), or None."""
        if value is None or self.inner.problem(value, where) is None:
            return None
        return _mismatch(where, self.describe(), value)


@dataclass(frozen=True)
class ListOf(Shape):
    """A JSON array whose every item is ``item``."""

    item: Shape

    def describe(self) -> str:
        """The expectation in words (``an integer``)."""
        return "a list"

    def problem(self, value: Any, where: str) -> str | None:
        """The first mismatch of ``value`` at the dotted path ``where`` ("": the whole file), or None."""
        if not isinstance(value, list):
            return _mismatch(where, self.describe(), value)
        return next((p for i, item in enumerate(value) if (p := self.item.problem(item, _child(where, i)))), None)


@dataclass(frozen=True)
class MapOf(Shape):
    """A JSON object with any keys and every value ``value``."""

    value: Shape

    def describe(self) -> str:
        """The expectation in words (``an integer``)."""
        return "an object"

    def problem(self, value: Any, where: str) -> str | None:
        """The first mismatch of ``value`` at the dotted path ``where`` ("": the whole file), or None."""
        if not isinstance(value, dict):
            return _mismatch(where, self.describe(), value)
        return next((p for k, item in value.items() if (p := self.value.problem(item, _child(where, k)))), None)


@dataclass(frozen=True)
class Obj(Shape):
    """A JSON object with typed ``fields``; ``required`` ones must be there.

    Keys not in ``fields`` are allowed when ``rest`` says what they hold, refused when it is None.
    """

    fields: Mapping[str, Shape]
    required: tuple[str, ...] = ()
    rest: Shape | None = Scalar("scalar")

    def describe(self) -> str:
        """The expectation in words (``an integer``)."""
        return "an object"

    def problem(self, value: Any, where: str) -> str | None:
        """The first mismatch of ``value`` at the dotted path ``where`` ("": the whole file), or None."""
        if not isinstance(value, dict):
            return _mismatch(where, self.describe(), value)
        for key in self.required:
            if key not in value:
                return f"'{_child(where, key)}' is missing"
        for key, item in value.items():
            shape = self.fields.get(key, self.rest)
            if shape is None:
                return f"unknown key '{_child(where, key)}'"
            found = shape.problem(item, _child(where, key))
            if found:
                return found
        return None


INTEGER, NUMBER, STRING, BOOLEAN = Scalar("integer"), Scalar("number"), Scalar("string"), Scalar("boolean")
ANY = Scalar("scalar")


class _AnyJSON(Shape):
    """Anything JSON holds (for keys another module owns)."""

    def describe(self) -> str:
        """The expectation in words (``an integer``)."""
        return "any JSON value"

    def problem(self, value: Any, where: str) -> str | None:
        """The first mismatch of ``value`` at the dotted path ``where`` ("": the whole file), or None."""
        return None


ANY_JSON = _AnyJSON()


def shape_of_hint(hint: Any) -> Shape:
    """The JSON shape of a dataclass field's type (``int``, ``float | None``, ``list[int] | None``, ...)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return Maybe(shape_of_hint(rest[0]) if len(rest) == 1 else ANY_JSON)
    if origin is list:
        return ListOf(shape_of_hint(args[0]) if args else ANY_JSON)
    if origin is dict:
        return MapOf(ANY_JSON)
    return {int: INTEGER, float: NUMBER, str: STRING, bool: BOOLEAN}.get(hint, ANY_JSON)
