"""JSON key files shared by the Paillier and OU keys (one format, one set of checks).

A key file is one JSON object ``{"kind": ..., "version": 1, ...}`` and a newline. Public
files are written plainly; private files are created (or tightened) with mode 0600 and
refused on load when group or others can read them. Fields holding integers are hex
strings of at most 4096 digits.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from gmpy2 import mpz


def load_json(text: str, kind: str) -> dict:
    """The object of a key file of ``kind`` (version 1), or a ValueError saying why not."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"key file is not valid JSON: {exc.msg}") from None
    if not isinstance(d, dict) or d.get("kind") != kind:
        raise ValueError(f"key file: expected kind {kind!r}")
    if d.get("version") != 1:
        raise ValueError(f"key file: unsupported version {d.get('version')!r}")
    return d


def hex_field(d: dict, field: str) -> mpz:
    """Field ``field`` of a key file's object as an integer (a non-empty hex string)."""
    v = d.get(field)
    if not isinstance(v, str) or not v or len(v) > 4096:
        raise ValueError(f"key file: field {field!r} must be a hex string")
    try:
        return mpz(v, 16)
    except ValueError:
        raise ValueError(f"key file: field {field!r} is not hex") from None


def write_public(path: str | os.PathLike, text: str) -> None:
    Path(path).write_text(text + "\n")


def write_private(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` with mode 0600 (also tightening an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def read_public(path: str | os.PathLike) -> str:
    return Path(path).read_text()


def read_private(path: str | os.PathLike, check_permissions: bool = True) -> str:
    """The text of a private key file, refused when group or others can read it."""
    if check_permissions:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise PermissionError(
                f"private key file {path} has mode {mode:o}; it must not be readable "
                f"by group or others (chmod 600)")
    return Path(path).read_text()
