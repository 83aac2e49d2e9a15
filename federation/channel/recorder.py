"""Minimal message recorders (the transcript hook).

The channel calls ``recorder.record(direction, envelope, payload)`` for every message
it sends (when ``send`` accepts it) and every message it receives (after lengths,
digest and signature were checked, before the protocol sees it). Calls come from more
than one thread (the protocol thread for "sent", the channel's receive thread for
"received"), so recorders must be thread-safe; the two here are.
"""

from __future__ import annotations

import json
import os
import threading
import time

from federation.link import Envelope


class ListRecorder:
    """Keeps ``(direction, envelope, sha256(payload))`` tuples in memory (tests)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Envelope, bytes]] = []
        self._lock = threading.Lock()

    def record(self, direction: str, envelope: Envelope, payload: bytes) -> None:
        with self._lock:
            self.items.append((direction, envelope, Envelope.digest(payload)))


class JsonlRecorder:
    """Appends one JSON line per message: envelope fields, signature, payload digest.

    The payload itself is not written (the transcript issue decides how payloads are
    stored); its SHA-256 is in the envelope.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def record(self, direction: str, envelope: Envelope, payload: bytes) -> None:
        line = json.dumps({
            "t": round(time.time(), 6), "dir": direction, "job": envelope.job_id,
            "seq": envelope.seq, "sender": envelope.sender, "kind": envelope.kind,
            "ptype": envelope.ptype, "length": envelope.length,
            "sha256": envelope.sha256.hex(), "sig": envelope.signature.hex(),
        }, separators=(",", ":"))
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()
