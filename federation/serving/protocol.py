"""The serving protocol's messages and their encodings.

Served lookups are control requests over the existing mutual-TLS channel (one round
trip each: ``PeerChannel.request``), declared here like a job protocol's messages so
docs/wire.md lists them and their disclosures (``python -m federation.job_protocol``).
Each request kind's reply is the next row of the table. Bodies are canonical JSON;
arrays travel as ``{"dtype", "shape", "b64"}`` (little-endian, a fixed dtype per
field) and are checked against the shape the receiver expects before use.

Pseudonyms: ``HMAC-SHA256(key, "fedjoint-serve-v1|" + normalised ID)`` cut to 128 bits
(32 hex digits), with a 256-bit key the bank draws per serving session and sends in
``serve.open``. The platform builds its feature store keyed by the pseudonyms of its
own IDs; see docs/serving.md for what that hides and what it does not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import numpy as np

from federation.link import Message, declare_protocol

PROTOCOL_VERSION = "fedjoint-serve-v1"
K_OPEN, K_SESSION = "serve.open", "serve.session"
K_LOOKUP, K_ANSWER = "serve.lookup", "serve.answer"
K_CLOSE = "serve.close"
K_REVEAL, K_REVEALED = "serve.reveal", "serve.revealed"

TABLE = declare_protocol("serving", PROTOCOL_VERSION, [
    Message(K_OPEN, "bank", "json", "control request: model id, digests of both parts, "
            "fresh 256-bit pseudonym key, the algorithm's setup (SecureBoost: the split "
            "keys the bank asks about)"),
    Message(K_SESSION, "platform", "json", "reply: session id, answer dtype and width, or "
            "a refusal (policy, unknown model, digest mismatch)"),
    Message(K_LOOKUP, "bank", "json", "control request: session id, pseudonyms of the "
            "applicant IDs of one micro-batch", disclosure="pseudonymous applicant IDs "
            "scored (and when)", count=lambda p: len(p.get("ids", []))),
    Message(K_ANSWER, "platform", "json", "reply: per row whether the platform holds the "
            "ID, and its answer (split decisions or partial score), what is left of the "
            "day's budget, or a refusal (rate, budget, unknown session)", disclosure="per scored ID: held or not, platform "
            "split decisions (SecureBoost) or partial score (LR)",
            count=lambda p: int((p.get("answers") or {}).get("shape", [0])[0])),
    Message(K_CLOSE, "bank", "json", "control request: session id (the platform drops "
            "the session's store)"),
    Message(K_REVEAL, "bank", "json", "control request (model export): model id, digests "
            "of both parts"),
    Message(K_REVEALED, "platform", "json", "reply, only if the platform's [serving] "
            "reveal_models lists the model: its feature names and its half (SecureBoost: "
            "split table and categorical level lists; LR: weights and standardiser), a statement signed by its Ed25519 "
            "key", disclosure="the platform's half of the model (feature names, thresholds "
            "and default directions, or weights)",
            count=lambda p: len(p.get("splits") or p.get("weights") or [])),
])

class Refused(Exception):
    """A serving request the platform refuses: ``code`` (policy | model | session |
    rate | budget | request) and a reason for the bank (``{"ok": false, ...}``)."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code


PSEUDONYM_HEX = 32
PSEUDONYM_RE = re.compile(r"[0-9a-f]{32}\Z")
SESSION_RE = re.compile(r"[0-9a-f]{32}\Z")
KEY_RE = re.compile(r"[0-9a-f]{64}\Z")
_DTYPES = {"u1": np.dtype("u1"), "f8": np.dtype("<f8")}


def pseudonym(key: bytes, normalised_id: str) -> str:
    """The 128-bit keyed pseudonym of one normalised ID (32 hex digits)."""
    mac = hmac.new(key, b"fedjoint-serve-v1|" + normalised_id.encode("utf-8"),
                   hashlib.sha256)
    return mac.hexdigest()[:PSEUDONYM_HEX]


def encode_array(a: np.ndarray) -> dict:
    dtype = {"u": "u1", "f": "f8"}[a.dtype.kind]
    a = np.ascontiguousarray(a, dtype=_DTYPES[dtype])
    return {"dtype": dtype, "shape": list(a.shape),
            "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(obj, dtype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """The array ``obj`` encodes, which must have ``dtype`` and exactly ``shape``;
    ValueError naming ``what`` otherwise."""
    if not isinstance(obj, dict) or obj.get("dtype") != dtype:
        raise ValueError(f"{what}: expected a {dtype} array")
    if obj.get("shape") != list(shape):
        raise ValueError(f"{what}: expected shape {list(shape)}, got {obj.get('shape')!r}")
    raw = obj.get("b64")
    if not isinstance(raw, str):
        raise ValueError(f"{what}: missing data")
    try:
        data = base64.b64decode(raw, validate=True)
    except ValueError:
        raise ValueError(f"{what}: data is not base64") from None
    dt = _DTYPES[dtype]
    if len(data) != int(np.prod(shape)) * dt.itemsize:
        raise ValueError(f"{what}: {len(data)} bytes for shape {list(shape)}")
    return np.frombuffer(data, dtype=dt).reshape(shape).copy()
