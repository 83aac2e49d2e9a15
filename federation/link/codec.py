"""Payload codec and envelope: the only encodings that may cross (DESIGN.md rule 4).

* ``bytes``   -> ptype ``"bin"``: fixed-width ciphertext blobs, EC points, digests.
* ``ndarray`` -> ptype ``"npy"``: ``numpy.save`` with ``allow_pickle=False``; numeric or
  bool dtypes only (object arrays are refused on both ends).
* ``dict``    -> ptype ``"json"``: small control messages, canonical JSON (sorted keys,
  UTF-8); values are JSON scalars, lists and dicts only.

Message kinds are short dotted names (``psi.blinded_batch``, ``lr.enc_residual``...).

Envelopes: every message carries an :class:`Envelope`; its canonical signing bytes are
defined here once (:meth:`Envelope.signing_bytes`) so the channel, the transcript and
the auditor agree on exactly what the sender's Ed25519 signature covers.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass

import numpy as np

from federation.link.errors import ProtocolError

Payload = bytes | np.ndarray | dict

KIND_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
MAX_KIND_LEN = 64
PTYPES = ("bin", "npy", "json")


def check_kind(kind: str) -> str:
    if not isinstance(kind, str) or len(kind) > MAX_KIND_LEN or not KIND_RE.match(kind):
        raise ProtocolError(f"invalid message kind {kind!r}: expected a dotted lowercase name")
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


def decode_payload(ptype: str, data: bytes) -> Payload:
    """Inverse of :func:`encode_payload`; never unpickles, rejects malformed data."""
    if ptype == "bin":
        return bytes(data)
    if ptype == "npy":
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:  # malformed header, pickle attempt, truncated data
            raise ProtocolError(f"malformed npy payload: {exc}") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            raise ProtocolError("npy payload must be a numeric or bool array")
        return arr
    if ptype == "json":
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"malformed json payload: {exc}") from None
        if not isinstance(obj, dict):
            raise ProtocolError("json payload must be an object")
        return obj
    raise ProtocolError(f"unknown payload type {ptype!r}; expected one of {PTYPES}")


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


