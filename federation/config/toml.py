"""TOML loading and validation helpers shared by node.toml and job.toml.

Every error is a :class:`ConfigError` whose message names the file, the dotted key and
what was expected, with the closest valid key when a key looks like a typo.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PARTIES = ("bank", "platform")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")   # \Z: no trailing newline


class ConfigError(ValueError):
    """A configuration file is missing, malformed or has an invalid value."""


# --------------------------------------------------------------------------- helpers


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Table:
    """A TOML table being validated: tracks the file, the dotted path and used keys."""

    def __init__(self, file: str, path: str, data: Any):
        self.file, self.path = file, path
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: [{path}] must be a table, got {_tname(data)}")
        self.data = data

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.where(key)} {msg}")

    def check_keys(self, valid) -> None:
        for key in self.data:
            if key not in valid:
                raise ConfigError(f"{self.file}: [{self.path}] unknown key {key!r}"
                                  f"{_suggest(key, valid)}")

    def get(self, key: str, kind, default=dataclasses.MISSING):
        if key not in self.data:
            if default is dataclasses.MISSING:
                raise ConfigError(f"{self.file}: missing required key {self.where(key)} "
                                  f"(expected {_kind_name(kind)})")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is int and isinstance(value, bool):
            raise self.err(key, f"= {value!r}: expected an integer")
        if kind == "str_list":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self.err(key, f"= {value!r}: expected a list of strings")
            return list(value)
        if not isinstance(value, kind):
            raise self.err(key, f"= {value!r}: expected {_kind_name(kind)}")
        return value

    def choice(self, key: str, choices, default=dataclasses.MISSING) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            opts = ", ".join(repr(c) for c in choices)
            raise self.err(key, f"= {value!r}: expected one of {opts}"
                           f"{_suggest(str(value), choices)}")
        return value

    def sub(self, key: str, default: dict | None = None) -> _Table:
        if key not in self.data:
            if default is None:
                raise ConfigError(f"{self.file}: missing table [{self.where(key)}]")
            return _Table(self.file, self.where(key), default)
        value = self.data[key]
        if not isinstance(value, dict):
            raise self.err(key, f": expected a table [{self.where(key)}], got {_tname(value)}")
        return _Table(self.file, self.where(key), value)


def _tname(v) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def _kind_name(kind) -> str:
    if kind == "str_list":
        return "a list of strings"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            dict: "a table", list: "a list"}.get(kind, str(kind))


def _load_toml(path: str | Path, what: str) -> tuple[dict, str]:
    p = Path(path)
    label = str(path)
    if not p.exists():
        raise ConfigError(f"{label}: {what} file not found")
    if p.is_dir():
        raise ConfigError(f"{label}: is a directory, expected a {what} file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read {what} file ({exc})") from None
    try:
        return tomllib.loads(text), label
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML ({exc})") from None


def parse_address(value: str, file: str, key: str, *, loopback: bool = False
                  ) -> tuple[str, int]:
    """``host:port`` -> (host, port); errors name file and key."""
    m = re.match(r"^\[?([^\[\]]+?)\]?:(\d+)$", value or "")
    if not m:
        raise ConfigError(f"{file}: {key} = {value!r}: expected host:port "
                          f"(e.g. '127.0.0.1:7443')")
    host, port = m.group(1), int(m.group(2))
    if not 0 <= port <= 65535:
        raise ConfigError(f"{file}: {key} = {value!r}: port must be 0-65535")
    if loopback:
        try:
            ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"{file}: {key} = {value!r}: the admin endpoint must listen on "
                              f"a loopback address (127.0.0.1 or ::1)")
    return host, port


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)
