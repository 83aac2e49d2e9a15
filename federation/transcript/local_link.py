"""A signed, recorded in-memory link pair: both parties in one process.

It signs and checks envelopes and hands every message to a recorder exactly as the
gRPC channel does, so transcripts written over it are real transcripts.
"""

from __future__ import annotations

import queue
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.link import (
    Envelope,
    Link,
    Payload,
    PeerGone,
    ProtocolError,
    check_kind,
    decode_payload,
    encode_payload,
)


class RecordedLocalLink(Link):
    """One end of an in-memory link that behaves like the channel towards the
    transcript: it signs each envelope with the sender's Ed25519 key, checks the
    signature on receipt and hands every message to ``recorder``. For tests and for
    running both parties in one process; production traffic uses federation.channel."""

    def __init__(self, job_id: str, party: str, peer: str, signing_key: Ed25519PrivateKey,
                 peer_key: Ed25519PublicKey, inbox, outbox):
        self.job_id, self.party, self.peer = job_id, party, peer
        self._key, self._peer_key = signing_key, peer_key
        self._inbox, self._outbox = inbox, outbox
        self._seq = 0
        self.recorder: Any = None
        self.bytes_sent = 0

    def send(self, kind: str, payload: Payload) -> None:
        ptype, data = encode_payload(payload)
        self._seq += 1
        env = Envelope(self.job_id, self._seq, self.party, check_kind(kind), ptype,
                       len(data), Envelope.digest(data))
        env = Envelope(**{**env.__dict__, "signature": self._key.sign(env.signing_bytes())})
        if self.recorder is not None:
            self.recorder.record("sent", env, data)
        self.bytes_sent += len(data) + len(env.signing_bytes()) + len(env.signature)
        self._outbox.put((env, data))

    def recv(self, kind: str, timeout: float | None = 60.0) -> Payload:
        try:
            env, data = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise PeerGone(f"no message {kind!r} from {self.peer} within {timeout}s") from None
        try:
            self._peer_key.verify(env.signature, env.signing_bytes())
        except InvalidSignature:
            raise ProtocolError(f"bad signature on {env.kind} seq {env.seq}") from None
        if self.recorder is not None:
            self.recorder.record("received", env, data)
        if env.kind != kind:
            raise ProtocolError(f"expected message {kind!r} from {self.peer}, got {env.kind!r}")
        return decode_payload(env.ptype, data)


def recorded_local_link_pair(job_id: str, a: str, key_a: Ed25519PrivateKey, b: str,
                             key_b: Ed25519PrivateKey
                             ) -> tuple[RecordedLocalLink, RecordedLocalLink]:
    """Two connected :class:`RecordedLocalLink` ends; set ``.recorder`` on each."""
    q_ab: queue.Queue = queue.Queue()
    q_ba: queue.Queue = queue.Queue()
    return (RecordedLocalLink(job_id, a, b, key_a, key_b.public_key(), q_ba, q_ab),
            RecordedLocalLink(job_id, b, a, key_b, key_a.public_key(), q_ab, q_ba))
