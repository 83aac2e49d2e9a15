"""The protocol-facing side of the channel: what PSI and training code talk to.

Protocol code (psi/, parties/) never sees gRPC. It receives a :class:`Link` and says
``link.send(kind, payload)`` / ``link.recv(kind)``. The gRPC implementation lives in
``federation.channel``; :func:`local_link_pair` gives an in-memory pair with the same
encoding rules, used to unit-test protocol arithmetic in one process (tests that the
issues ask to run "over gRPC" use the real channel instead).

Payloads are encoded by :mod:`federation.link.codec`; a receiver states the kind it
expects and any other kind is a :class:`ProtocolError`.
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from federation.link.codec import Envelope, Payload, check_kind, decode_payload, encode_payload
from federation.link.declare import ProtocolTable
from federation.link.errors import PeerAborted, PeerGone, ProtocolError


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
    #: ``checkpoint(step, state)``: a role calls it at the end of each boosting round /
    #: epoch, at a point where every message of that round has been sent and received
    #: by both roles. ``state`` (json values and arrays: the role's own model state so
    #: far) is digested into the job's checkpoint; the node resumes an interrupted job
    #: from the last checkpoint both parties hold (docs/resume.md). No-op by default.
    checkpoint: Callable[[int, dict], None] = field(default=lambda step, state: None)


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
        if got is _CLOSED:
            self._inbox.put((_CLOSED, "", b""))   # every later recv fails the same way
            raise PeerGone(f"{self.peer} closed the link while {kind!r} was expected")
        if got != kind:
            raise ProtocolError(f"expected message {kind!r} from {self.peer}, got {got!r}")
        return decode_payload(ptype, data)

    def close(self) -> None:
        """Tell the peer's end that nothing more will come (it fails at its next recv)."""
        self._outbox.put((_CLOSED, "", b""))


_CLOSED = object()


def local_link_pair(job_id: str = "local", a: str = "bank",
                    b: str = "platform") -> tuple[Link, Link, list]:
    """Two connected in-memory links and the shared list of everything that crossed
    (``(sender, kind, ptype, bytes)``) so tests can assert on what a party received."""
    q_ab: queue.Queue = queue.Queue()
    q_ba: queue.Queue = queue.Queue()
    crossed: list = []
    return (_LocalLink(job_id, a, b, q_ba, q_ab, crossed),
            _LocalLink(job_id, b, a, q_ab, q_ba, crossed), crossed)


class DeclaredLink(Link):
    """A link that sends only message kinds its job's protocols declare, from the party
    each kind names as its sender. The runner wraps every job's link in one, so an
    undeclared kind fails before anything crosses, with the kind and the protocols."""

    def __init__(self, link: Link, tables: list[ProtocolTable], role: str):
        self._link, self.role = link, role
        self.job_id, self.party, self.peer = link.job_id, link.party, link.peer
        self._senders = {m.kind: m.sender for t in tables for m in t.messages}
        self._names = ", ".join(t.name for t in tables)

    def _check(self, kind: str, sending: bool) -> None:
        sender = self._senders.get(kind)
        if sender is None:
            raise ProtocolError(f"message kind {kind!r} is not declared by this job's "
                                f"protocols ({self._names})")
        if sender != "either" and (sender == self.role) != sending:
            raise ProtocolError(f"message kind {kind!r} is declared as sent by the {sender}; "
                                f"this party is the {self.role} and "
                                f"{'sends' if sending else 'receives'} it")

    def send(self, kind: str, payload: Payload) -> None:
        self._check(kind, sending=True)
        self._link.send(kind, payload)

    def recv(self, kind: str, timeout: float | None = None) -> Payload:
        self._check(kind, sending=False)
        return self._link.recv(kind, timeout) if timeout is not None else \
            self._link.recv(kind)

    def __getattr__(self, name: str):  # close(), stats... of the wrapped link
        return getattr(self._link, name)


def root_cause(errors: list[BaseException | None]) -> BaseException | None:
    """The error to report when both parties failed: a party's own failure rather than
    the other's "peer aborted" or "peer gone" that it caused."""
    real = [e for e in errors if e is not None and not isinstance(e, (PeerAborted, PeerGone))]
    return (real or [e for e in errors if e is not None] or [None])[0]


def run_two_parties(fn_a: Callable[[], Any], fn_b: Callable[[], Any],
                    timeout: float = 600.0) -> tuple[Any, Any]:
    """Run both roles in threads and return both results; on failure raise the root
    cause (:func:`root_cause`), not the other party's "peer aborted"."""
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
    cause = root_cause(errors)
    if cause is not None:
        raise cause
    if any(t.is_alive() for t in threads):
        raise TimeoutError("protocol did not finish in time")
    return results[0], results[1]
