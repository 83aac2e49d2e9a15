"""Frames: one message as protobuf frames on the wire, and the receiver's per-frame checks.

A message is a ``Frame`` with its envelope and the first payload chunk, then data-only
frames of at most ``chunk_size`` bytes. Data-only frames are built here as wire bytes
with one copy of the caller's buffer (:func:`message_frames`) and parsed back as
zero-copy views of gRPC's buffer (:func:`parse_frame`); every other frame goes through
protobuf. The wire format is ``fedjoint.proto``; nothing here changes a byte of it.

The stateless checks a receiver makes before a message reaches the protocol live here
too, in the order they run: the envelope's fields (:func:`parse_envelope`), the sender's
Ed25519 signature (:func:`verify_signature`, after the stream checked the sequence
number), and each chunk's size and running total, digested as it arrives
(:func:`take_chunk`: no chunk above 4 MiB, none below ``limits.min_chunk_bytes`` but a
message's last, never more than announced). A failed check raises :class:`BadFrame`,
whose message is the reason the job fails; peer-supplied names in it are clipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from cryptography.exceptions import InvalidSignature

import federation.channel.fedjoint_pb2 as pb
from federation.channel.settings import MAX_CHUNK
from federation.keys import PeerIdentity
from federation.link import PTYPES, Envelope, ProtocolError, check_kind
from federation.link.codec import clip

_DATA_TAG = b"\x1a"  # Frame.data: field 3, wire type 2


class BadFrame(Exception):
    """A frame the receiver rejects; the message is the reason the job fails."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _data_frame(chunk) -> bytes:
    """Wire bytes of ``Frame(data=chunk)`` built with one copy of the chunk."""
    return b"".join((_DATA_TAG, _varint(len(chunk)), chunk))


def message_frames(env: pb.Envelope, data: bytes, chunk: int) -> Iterator[pb.Frame | bytes]:
    """The frames of one message: its envelope with the first chunk, then data frames."""
    n = len(data)
    if n <= chunk:
        yield pb.Frame(envelope=env, data=data)
        return
    view = memoryview(data)
    head = pb.Frame(envelope=env).SerializeToString()
    yield b"".join((head, _DATA_TAG, _varint(chunk), view[:chunk]))
    for off in range(chunk, n, chunk):
        yield _data_frame(view[off:off + chunk])


def serialize_frame(frame) -> bytes:
    """Request serializer of the client stream: pre-built wire bytes pass through."""
    return frame if isinstance(frame, bytes) else frame.SerializeToString()


def parse_frame(raw: bytes):
    """Frame deserializer: a data-only frame becomes a zero-copy memoryview of its
    payload; everything else is parsed by protobuf."""
    if raw[:1] == _DATA_TAG:
        n = pos = 0
        shift = 0
        i = 1
        while i < len(raw) and i < 11:
            b = raw[i]
            n |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                pos = i
                break
            shift += 7
        if pos and pos + n == len(raw):
            return memoryview(raw)[pos:]
    return pb.Frame.FromString(raw)


def envelope_pb(env: Envelope) -> pb.Envelope:
    """The protobuf form of a signed envelope."""
    return pb.Envelope(job_id=env.job_id, seq=env.seq, sender=env.sender, kind=env.kind,
                       ptype=env.ptype, length=env.length, sha256=env.sha256,
                       signature=env.signature)


def _name(s: str) -> str:
    """A peer-supplied name, quoted and clipped, for an error message."""
    return clip(repr(s), 80)


def parse_envelope(e: pb.Envelope, job_id: str, peer: str, max_bytes: int) -> Envelope:
    """Check an envelope's fields against the stream's job, the peer and the length
    limit ``limits.max_message_bytes`` (not its sequence number or signature) and return
    it as an :class:`Envelope`."""
    if e.job_id != job_id:
        raise BadFrame(f"envelope names job {_name(e.job_id)} on the stream of job "
                       f"{job_id!r}")
    if e.sender != peer:
        raise BadFrame(f"envelope sender {_name(e.sender)} is not the peer {peer!r}")
    try:
        check_kind(e.kind)
    except ProtocolError as exc:
        raise BadFrame(f"seq {e.seq}: {exc}") from None
    if e.ptype not in PTYPES:
        raise BadFrame(f"seq {e.seq} ({e.kind}): unknown payload type {_name(e.ptype)}; "
                       f"expected one of {', '.join(PTYPES)}")
    if e.length > max_bytes:
        raise BadFrame(f"seq {e.seq} ({e.kind}): announced length {e.length} exceeds "
                       f"limits.max_message_bytes = {max_bytes}")
    if len(e.sha256) != 32 or len(e.signature) != 64:
        raise BadFrame(f"seq {e.seq} ({e.kind}): malformed digest or signature field")
    return Envelope(e.job_id, e.seq, e.sender, e.kind, e.ptype, e.length, e.sha256,
                    e.signature)


def verify_signature(env: Envelope, peer: PeerIdentity) -> None:
    """The envelope must be signed with the peer's pinned signing key."""
    try:
        peer.signing_public_key.verify(env.signature, env.signing_bytes())
    except InvalidSignature:
        raise BadFrame(f"bad signature on seq {env.seq} ({env.kind}): not signed by "
                       f"{peer.party}'s pinned signing key") from None


class Incoming:
    """A message being received: its envelope, the chunks so far and their digest."""

    __slots__ = ("env", "parts", "received", "hasher", "skip")

    def __init__(self, env: Envelope, skip: bool):
        self.env, self.skip = env, skip
        self.parts: list[bytes] = []
        self.received = 0
        self.hasher = hashlib.sha256()

    def payload(self) -> bytes:
        """The reassembled payload, once its digest matched the envelope."""
        env = self.env
        if self.hasher.digest() != env.sha256:
            raise BadFrame(f"payload SHA-256 mismatch on seq {env.seq} ({env.kind})")
        parts, self.parts = self.parts, []
        return parts[0] if len(parts) == 1 else b"".join(parts)


def take_chunk(cur: Incoming | None, data, min_chunk: int) -> None:
    """Check one payload chunk against its envelope (size limits, announced length) and
    take it into the message being received (digest and parts, unless it is a resent
    duplicate being skipped). A chunk that does not end its message must be at least
    ``min_chunk`` (``limits.min_chunk_bytes``) bytes."""
    n = len(data)
    if n > MAX_CHUNK:
        raise BadFrame(f"chunk of {n} bytes exceeds the {MAX_CHUNK}-byte limit")
    if cur is None:
        raise BadFrame("payload chunk without an envelope")
    env = cur.env
    if cur.received + n >= env.length:
        if cur.received + n > env.length:
            raise BadFrame(f"seq {env.seq} ({env.kind}): payload is longer than the "
                           f"{env.length} bytes the envelope announced")
    elif n < min_chunk:
        raise BadFrame(f"seq {env.seq} ({env.kind}): chunk of {n} bytes before the end of "
                       f"the message; chunks but a message's last must be at least "
                       f"limits.min_chunk_bytes = {min_chunk}")
    cur.received += n
    if not cur.skip:
        cur.hasher.update(data)
        # A view of gRPC's buffer is copied out here, one chunk at a time, so that
        # payload() joins only bytes objects: bytes.join then copies without holding the
        # GIL (it keeps it for views), and heartbeats, acks and the liveness bookkeeping
        # of every job keep running while a GiB-sized message is reassembled.
        cur.parts.append(data if type(data) is bytes else bytes(data))
