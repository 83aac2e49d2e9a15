"""The protocol-facing side of the channel: what PSI and training code talk to.

Protocol code (psi/, parties/) never sees gRPC. It receives a :class:`Link` and says
``link.send(kind, payload)`` / ``link.recv(kind)``. The gRPC implementation lives in
``federation.channel``; :func:`local_link_pair` gives an in-memory pair with the same
encoding rules, used to unit-test protocol arithmetic in one process (tests that the
issues ask to run "over gRPC" use the real channel instead).

Payload types (the only ones that may cross, DESIGN.md rule 4):

* ``bytes``   -> ptype ``"bin"``: fixed-width ciphertext blobs, EC points, digests.
* ``ndarray`` -> ptype ``"npy"``: ``numpy.save`` with ``allow_pickle=False``; numeric or
  bool dtypes only (object arrays are refused on both ends).
* ``dict``    -> ptype ``"json"``: small control messages, canonical JSON (sorted keys,
  UTF-8); values are JSON scalars, lists and dicts only.

Message kinds are short dotted names (``psi.blinded_batch``, ``lr.enc_residual``...).
A receiver states the kind it expects; any other kind is a :class:`ProtocolError`.

Envelopes: every message carries an :class:`Envelope`; its canonical signing bytes are
defined here once (:meth:`Envelope.signing_bytes`) so the channel, the transcript and
the auditor agree on exactly what the sender's Ed25519 signature covers.
"""

from __future__ import annotations

import hashlib
import io
import json
import queue
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Payload = bytes | np.ndarray | dict

KIND_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
MAX_KIND_LEN = 64
PTYPES = ("bin", "npy", "json")


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow (wrong kind, shape, range)."""


class PeerGone(ProtocolError):
    """The peer disconnected or missed its deadline."""


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


class MessageRecorder(Protocol):
    """Hook the channel calls for every message sent or received (the transcript)."""

    def record(self, direction: str, envelope: Envelope, payload: bytes) -> None:
        """``direction`` is ``"sent"`` or ``"received"``; ``payload`` the encoded bytes."""


class Link(ABC):
    """An ordered, authenticated, per-job message pipe to the peer party."""

    job_id: str
    party: str
    peer: str

    @abstractmethod
    def send(self, kind: str, payload: Payload) -> None:
        """Queue ``payload`` for the peer; returns once it is accepted for delivery."""

    @abstractmethod
    def recv(self, kind: str, timeout: float | None = None) -> Payload:
        """Next message from the peer; raises ProtocolError if its kind is not ``kind``."""

    def recv_array(self, kind: str, *, dtype_kind: str | None = None,
                   shape: tuple[int | None, ...] | None = None,
                   timeout: float | None = None) -> np.ndarray:
        """Receive an ndarray and check its dtype kind (e.g. ``"i"``) and shape."""
        arr = self.recv(kind, timeout)
        if not isinstance(arr, np.ndarray):
            raise ProtocolError(f"{kind}: expected an array, got {type(arr).__name__}")
        if dtype_kind is not None and arr.dtype.kind not in dtype_kind:
            raise ProtocolError(f"{kind}: expected dtype kind {dtype_kind!r}, got {arr.dtype}")
        if shape is not None:
            if arr.ndim != len(shape) or any(
                s is not None and s != a for s, a in zip(shape, arr.shape, strict=True)
            ):
                raise ProtocolError(f"{kind}: expected shape {shape}, got {arr.shape}")
        return arr

    def recv_json(self, kind: str, timeout: float | None = None) -> dict:
        obj = self.recv(kind, timeout)
        if not isinstance(obj, dict):
            raise ProtocolError(f"{kind}: expected a json object, got {type(obj).__name__}")
        return obj

    def recv_bytes(self, kind: str, timeout: float | None = None) -> bytes:
        obj = self.recv(kind, timeout)
        if not isinstance(obj, bytes):
            raise ProtocolError(f"{kind}: expected bytes, got {type(obj).__name__}")
        return obj


@dataclass
class ProtocolContext:
    """Everything a protocol role needs besides its data and parameters."""

    link: Link
    job_id: str
    rng: Any  # secure_agg.rng.Drbg: all of this party's protocol randomness (replayable)
    workers: int = 1
    log: Callable[[str, dict], None] = field(default=lambda event, fields: None)
    progress: Callable[[str, float], None] | None = None


class _LocalLink(Link):
    """One end of an in-memory link; payloads are encoded/decoded exactly as on the wire."""

    def __init__(self, job_id: str, party: str, peer: str, inbox: queue.Queue,
                 outbox: queue.Queue, log: list):
        self.job_id, self.party, self.peer = job_id, party, peer
        self._inbox, self._outbox, self._log = inbox, outbox, log
        self._seq = 0

    def send(self, kind: str, payload: Payload) -> None:
        ptype, data = encode_payload(payload)
        self._seq += 1
        self._log.append((self.party, check_kind(kind), ptype, data))
        self._outbox.put((kind, ptype, data))

    def recv(self, kind: str, timeout: float | None = 60.0) -> Payload:
        try:
            got, ptype, data = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise PeerGone(f"no message {kind!r} from {self.peer} within {timeout}s") from None
        if got != kind:
            raise ProtocolError(f"expected message {kind!r} from {self.peer}, got {got!r}")
        return decode_payload(ptype, data)


def local_link_pair(job_id: str = "local", a: str = "bank",
                    b: str = "platform") -> tuple[Link, Link, list]:
    """Two connected in-memory links and the shared list of everything that crossed
    (``(sender, kind, ptype, bytes)``) so tests can assert on what a party received."""
    q_ab: queue.Queue = queue.Queue()
    q_ba: queue.Queue = queue.Queue()
    crossed: list = []
    return (_LocalLink(job_id, a, b, q_ba, q_ab, crossed),
            _LocalLink(job_id, b, a, q_ab, q_ba, crossed), crossed)


def run_two_parties(fn_a: Callable[[], Any], fn_b: Callable[[], Any],
                    timeout: float = 600.0) -> tuple[Any, Any]:
    """Run both roles in threads; re-raise the first failure; return both results."""
    results: list[Any] = [None, None]
    errors: list[BaseException | None] = [None, None]

    def wrap(i: int, fn: Callable[[], Any]) -> None:
        try:
            results[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors[i] = exc

    threads = [threading.Thread(target=wrap, args=(i, f), daemon=True)
               for i, f in enumerate((fn_a, fn_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    for e in errors:
        if e is not None:
            raise e
    if any(t.is_alive() for t in threads):
        raise TimeoutError("protocol did not finish in time")
    return results[0], results[1]
