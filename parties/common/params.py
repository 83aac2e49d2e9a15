"""Typed algorithm parameters from job.toml tables, with errors that name the key."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing


class ParamError(ValueError):
    """A job parameter is unknown, of the wrong type or out of range."""


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def from_dict(cls, values: dict, where: str):
    """Build dataclass ``cls`` from ``values``; unknown keys get a closest-match hint.

    ``where`` names the source, e.g. ``"job.toml [params]"``. Range checks belong in
    the dataclass's ``__post_init__`` (raise ParamError naming the field).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ParamError(f"{where}: unknown key {key!r}{hint}")
        if not _type_ok(value, hints[key]):
            raise ParamError(f"{where}: {key} = {value!r} is not a valid {hints[key]}")
    try:
        return cls(**values)
    except ParamError as exc:
        raise ParamError(f"{where}: {exc}") from None
