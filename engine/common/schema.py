"""Checking that what a cache file gave back has the types its dataclasses declare.

A cache written by this app holds exactly these types; a field of another type means the file was
damaged or edited, and it is better found when the file is read (and the entry rebuilt) than as a
TypeError deep inside a plot or a report.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any


def check_fields(obj: Any, where: str = "") -> None:
    """TypeError (one line naming the field) unless every field of the dataclass ``obj``, and of
    every dataclass inside it, holds a value of its declared type: int, float (an int is one too),
    str, bool, None, a tuple of one of these, or another dataclass. A float may be NaN (a
    measurement that could not be made), but it must be a number."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        _check(getattr(obj, f.name), hints[f.name], f"{where}{f.name}")


@cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _check(value: Any, hint: Any, name: str) -> None:
    if not _fits(value, hint, name):
        raise TypeError(f"{name}: a {type(value).__name__} where {_show(hint)} was expected")


def _fits(value: Any, hint: Any, name: str) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h, name) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        item = args[0] if args else Any
        for i, v in enumerate(value):
            _check(v, item, f"{name}[{i}]")
        return True
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, hint):
            return False
        check_fields(value, f"{name}.")
        return True
    return isinstance(value, hint) if isinstance(hint, type) else True


def _show(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
