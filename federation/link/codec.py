"""Payload codec and envelope: the only encodings that may cross (DESIGN.md rule 4).

* ``bytes``   -> ptype ``"bin"``: fixed-width ciphertext blobs, EC points, digests.
* ``ndarray`` -> ptype ``"npy"``: ``numpy.save`` with ``allow_pickle=False``; numeric or
  bool dtypes only (object arrays are refused on both ends).
* ``dict``    -> ptype ``"json"``: small control messages, canonical JSON (sorted keys,
  UTF-8); values are JSON scalars, lists and dicts only.

Decoding never trusts the bytes: an npy header must announce a numeric dtype and exactly
as many bytes as follow it (checked before numpy allocates anything); a JSON payload is
held to :class:`JsonLimits` (size, nesting depth, integer digits; NaN and infinities are
refused). Every failure is a :class:`ProtocolError` naming what was wrong and, for a
limit, its node.toml key (``limits.max_json_depth`` ...); nothing else escapes, so a
hostile payload fails its job, never the process. :func:`clip` shortens peer-supplied
text before it reaches a log line or a stored error.

Message kinds are short dotted names (``psi.blinded_batch``, ``lr.enc_residual``...).

Envelopes: every message carries an :class:`Envelope`; its canonical signing bytes are
defined here once (:meth:`Envelope.signing_bytes`) so the channel, the transcript and
the auditor agree on exactly what the sender's Ed25519 signature covers.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import dataclass

import numpy as np

from federation.link.errors import ProtocolError

Payload = bytes | np.ndarray | dict

KIND_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
MAX_KIND_LEN = 64
PTYPES = ("bin", "npy", "json")




@dataclass(frozen=True)
class JsonLimits:
    """What a JSON payload may be. The node sets these from node.toml ``[limits]``
    (``federation.config.limits.Limits``, whose defaults are these); a decoder given no
    limits uses :data:`JSON_LIMITS`."""

    max_bytes: int = 16 << 20   # limits.max_json_bytes
    max_depth: int = 32         # limits.max_json_depth (a scalar is depth 0, {} depth 1)
    max_int_digits: int = 64    # limits.max_json_int_digits


JSON_LIMITS = JsonLimits()


def clip(text: object, limit: int = 200, key: str = "") -> str:
    """``text`` as a string of at most about ``limit`` characters, saying how much was cut
    (peer-supplied reasons, names and details before they are logged or stored); ``key``
    names the setting that chose ``limit``. An exception gives its first line."""
    s = text if isinstance(text, str) else str(text)
    if isinstance(text, BaseException):
        s = s.strip().split("\n", 1)[0]
    if len(s) <= limit:
        return s
    return f"{s[:limit]}... [{len(s) - limit} more characters cut{', ' + key if key else ''}]"


def check_kind(kind: str) -> str:
    if not isinstance(kind, str) or len(kind) > MAX_KIND_LEN or not KIND_RE.match(kind):
        shown = clip(repr(kind), 80) if isinstance(kind, str) else type(kind).__name__
        raise ProtocolError(f"invalid message kind {shown}: expected a dotted lowercase name "
                            f"of at most {MAX_KIND_LEN} characters")
    return kind


def encode_payload(payload: Payload) -> tuple[str, bytes]:
    """Serialise a payload to ``(ptype, bytes)``. Refuses anything outside the 3 types."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return "bin", bytes(payload)
    if isinstance(payload, np.ndarray):
        if payload.dtype.hasobject or payload.dtype.kind not in "biuf":
            raise TypeError(f"npy payload must be numeric or bool, got dtype {payload.dtype}")
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(payload), allow_pickle=False)
        return "npy", buf.getvalue()
    if isinstance(payload, dict):
        return "json", json.dumps(payload, sort_keys=True, separators=(",", ":"),
                                  allow_nan=False).encode()
    raise TypeError(f"payload must be bytes, numpy array or dict, not {type(payload).__name__}")


def decode_payload(ptype: str, data: bytes, limits: JsonLimits | None = None) -> Payload:
    """Inverse of :func:`encode_payload`; never unpickles, rejects malformed data with a
    :class:`ProtocolError` (and nothing else). ``limits`` applies to ``json`` payloads."""
    if ptype == "bin":
        return bytes(data)
    if ptype == "npy":
        return _decode_npy(data)
    if ptype == "json":
        return decode_json(data, limits or JSON_LIMITS)
    raise ProtocolError(f"unknown payload type {clip(repr(ptype), 40)}; expected one of "
                        f"{PTYPES}")


def _decode_npy(data: bytes) -> np.ndarray:
    fmt = np.lib.format
    buf = io.BytesIO(data)
    try:  # the header first: dtype and size are checked before numpy allocates
        version = fmt.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(buf)
        else:
            raise ValueError(f"npy format version {version} is not accepted")
    except Exception as exc:  # noqa: BLE001 - malformed magic or header, of any kind
        raise ProtocolError(f"malformed npy payload: {clip(exc)}") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ProtocolError(f"npy payload must be a numeric or bool array, not dtype "
                            f"{clip(dtype, 60)}")
    if any(d < 0 for d in shape):  # (-1, -1) passed the size check (found by fuzzing)
        raise ProtocolError(f"malformed npy payload: negative dimension in shape "
                            f"{clip(shape, 60)}")
    count = math.prod(shape)
    want, start = count * dtype.itemsize, buf.tell()
    have = len(data) - start
    if want != have:
        raise ProtocolError(f"malformed npy payload: its header announces shape "
                            f"{clip(shape, 60)} of {dtype} ({want} bytes), but {have} bytes "
                            f"follow")
    # what np.load does with a checked header: the data, copied out (a writable array
    # that does not pin the message's buffer)
    try:  # numpy refuses e.g. shape (2**40, 2**40, 0) or more than 64 dimensions
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=start)
        arr = arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)
    except ValueError as exc:
        raise ProtocolError(f"malformed npy payload: shape {clip(shape, 60)}: "
                            f"{clip(exc)}") from None
    return arr.copy(order="K")


def _refuse_constant(name: str):
    raise ProtocolError(f"json payload contains {name}; only finite numbers are allowed")


def _parse_float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise ProtocolError(f"json payload has a number out of range ({clip(s, 40)})")
    return v


_PLAIN = json.JSONDecoder(parse_constant=_refuse_constant)
_CHECKED: dict = {}  # max_int_digits -> (pattern of a longer digit run, checking decoder)


def _checked(digits: int):
    got = _CHECKED.get(digits)
    if got is None:
        def parse_int(s: str) -> int:
            n = len(s) - (s[0] == "-")
            if n > digits:
                raise ProtocolError(f"json payload has an integer of {n} digits; "
                                    f"limits.max_json_int_digits = {digits}")
            return int(s)

        got = _CHECKED[digits] = (
            re.compile(rb"\d{%d}|[eE][+-]?\d{3}" % (digits + 1)),
            json.JSONDecoder(parse_constant=_refuse_constant, parse_int=parse_int,
                             parse_float=_parse_float))
    return got


def decode_json(data: bytes, limits: JsonLimits = JSON_LIMITS) -> dict:
    """A JSON object from ``data`` within ``limits`` (see the module docstring)."""
    n = len(data)
    if n > limits.max_bytes:
        raise ProtocolError(f"json payload of {n} bytes exceeds limits.max_json_bytes = "
                            f"{limits.max_bytes}")
    raw = bytes(data)
    pat, checking = _checked(limits.max_int_digits)
    # a long run of digits somewhere (in a string, or a number): check every number
    decoder = checking if pat.search(raw) else _PLAIN
    try:
        obj = decoder.decode(raw.decode("utf-8"))
    except RecursionError:
        raise ProtocolError(f"json payload nested deeper than limits.max_json_depth = "
                            f"{limits.max_depth}") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, int conversion
        raise ProtocolError(f"malformed json payload: {clip(exc)}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("json payload must be an object")
    if _openings(raw) > limits.max_depth and _depth_exceeds(obj, limits.max_depth):
        raise ProtocolError(f"json payload nested deeper than limits.max_json_depth = "
                            f"{limits.max_depth}")
    return obj


def _openings(raw: bytes) -> int:
    """How many '[' and '{' bytes ``raw`` holds (strings included): a bound on the
    nesting depth, so most payloads need no walk. ('[' | 32 == '{'; numpy counts a
    large payload several times faster than bytes.count.)"""
    if len(raw) < 4096:
        return raw.count(b"[") + raw.count(b"{")
    return int(np.count_nonzero((np.frombuffer(raw, np.uint8) | 32) == 123))


def _depth_exceeds(obj: dict, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return True
        for v in (o.values() if type(o) is dict else o):
            if type(v) is dict or type(v) is list:
                stack.append((v, d + 1))
    return False


@dataclass(frozen=True)
class Envelope:
    """Metadata of one message. ``signature`` is Ed25519 over :meth:`signing_bytes`."""

    job_id: str
    seq: int
    sender: str
    kind: str
    ptype: str
    length: int
    sha256: bytes
    signature: bytes = b""

    def signing_bytes(self) -> bytes:
        """Canonical bytes the sender signs: every field but the signature."""
        return b"fedjoint-envelope-v1\n" + json.dumps(
            [self.job_id, self.seq, self.sender, self.kind, self.ptype, self.length,
             self.sha256.hex()],
            separators=(",", ":"),
        ).encode()

    @staticmethod
    def digest(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()


