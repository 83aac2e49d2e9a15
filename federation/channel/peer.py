"""The party-to-party gRPC channel: mutual TLS with pinning, signed chunked messages.

Topology (symmetric): every node runs one gRPC server and holds one client connection
to its peer's server. For each job there are two bidirectional streams
(``PeerLink.Messages``), one per direction: a party sends its messages for job J on its
own client stream to the peer's server, and the server answers on that stream with
cumulative acknowledgements, heartbeats and, if it rejects a message, an error. Control
requests (job proposals, status, cancel, ping) are unary ``PeerLink.Control`` calls.

Per job and direction the sender numbers messages 1, 2, 3... and keeps every message
until the receiver acknowledges it. When a stream breaks, the sender reconnects, says
hello, the receiver answers with the last sequence number it delivered, and the sender
resends from the next one; the receiver drops anything at or below that number, so a
cut stream loses and duplicates nothing. A partially received message is discarded.

Before a message reaches the protocol the receiver checks, in this order: the stream's
peer certificate fingerprint (once per stream), the envelope (job id, sender, kind
syntax, payload type, length limit, digest and signature sizes, sequence order), the
sender's Ed25519 signature over :meth:`Envelope.signing_bytes`, each chunk's size
(<= 4 MiB) and the running total against the announced length, and finally the payload's
SHA-256. Any failure fails that job only (its ``recv`` raises :class:`ProtocolError`
with the reason, the sender is told the reason); the server and other jobs carry on.

Liveness: both ends send heartbeats on every job stream while idle; a job whose peer
has been silent (or unreachable) for ``peer_deadline`` seconds fails with
:class:`PeerGone`.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
from cryptography.exceptions import InvalidSignature

from federation.channel import fedjoint_pb2 as pb
from federation.channel import fedjoint_pb2_grpc as pbg
from federation.keys import LocalIdentity, PeerIdentity, cert_fingerprint
from federation.link import (
    PTYPES,
    Envelope,
    Link,
    MessageRecorder,
    Payload,
    PeerGone,
    ProtocolError,
    check_kind,
    decode_payload,
    encode_payload,
)

log = logging.getLogger("fedjoint.channel")

MAX_CHUNK = 4 * 1024 * 1024
#: gRPC message limit: one chunk plus room for the envelope; larger frames are refused
#: by gRPC itself (RESOURCE_EXHAUSTED), smaller oversized chunks by the receiver.
MAX_FRAME = MAX_CHUNK + 64 * 1024
MAX_CONTROL_BODY = 1024 * 1024
PROTOCOL_VERSION = 1
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
PING_KIND = "channel.ping"
_MESSAGES_METHOD = "/fedjoint.channel.v1.PeerLink/Messages"
_DATA_TAG = b"\x1a"  # Frame.data: field 3, wire type 2


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


def _serialize_frame(frame) -> bytes:
    return frame if isinstance(frame, bytes) else frame.SerializeToString()


def _parse_frame(raw: bytes):
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


def _kv(**fields) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _event(level: int, event: str, **fields) -> None:
    log.log(level, "%s %s", event, _kv(**fields))


class ControlError(Exception):
    """The peer answered a control request with an error, or refused it."""


class PeerUnreachable(PeerGone):
    """The peer's address could not be reached (the message says where and how)."""


@dataclass
class ChannelSettings:
    heartbeat_interval: float = 1.0     # idle streams send a heartbeat this often
    peer_deadline: float = 10.0         # silent/unreachable this long -> PeerGone
    chunk_size: int = MAX_CHUNK         # payload bytes per frame (<= 4 MiB)
    max_message_bytes: int = 4 << 30    # largest payload accepted (announced length)
    send_window_bytes: int = 128 << 20  # unacknowledged bytes before send() blocks
    inbox_limit_bytes: int = 512 << 20  # received, unconsumed bytes before reading pauses
    ack_every: int = 16                 # acknowledge at least every N small messages
    ack_delay: float = 0.02             # ... or after this many seconds
    control_timeout: float = 10.0       # default deadline of request()
    server_workers: int = 64            # thread pool of the gRPC server

    def __post_init__(self) -> None:
        if not 0 < self.chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK}, got {self.chunk_size}")
        if self.heartbeat_interval <= 0 or self.peer_deadline <= self.heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval < peer_deadline")


class _Bad(Exception):
    """A frame the receiver rejects; the message is the reason the job fails."""


def _take_chunk(cur, data) -> None:
    """Check one payload chunk against its envelope (size limit, announced length) and
    take it into the message being received (digest and parts, unless it is a resent
    duplicate being skipped)."""
    n = len(data)
    if n > MAX_CHUNK:
        raise _Bad(f"chunk of {n} bytes exceeds the {MAX_CHUNK}-byte limit")
    if cur is None:
        raise _Bad("payload chunk without an envelope")
    if cur.received + n > cur.env.length:
        raise _Bad(f"seq {cur.env.seq} ({cur.env.kind}): payload is longer than "
                   f"the {cur.env.length} bytes the envelope announced")
    cur.received += n
    if not cur.skip:
        cur.hasher.update(data)
        cur.parts.append(data)


@dataclass
class _OutMsg:
    seq: int
    env: pb.Envelope
    data: bytes


class _Incoming:
    __slots__ = ("env", "parts", "received", "hasher", "skip")

    def __init__(self, env: Envelope, skip: bool):
        self.env, self.skip = env, skip
        self.parts: list[bytes] = []
        self.received = 0
        self.hasher = hashlib.sha256()


class _Job:
    """Both directions of one job: receive state (fed by the server) and send state
    (a pump thread holding the client stream)."""

    def __init__(self, chan: PeerChannel, job_id: str, recorder: MessageRecorder | None):
        self.chan, self.job_id, self.recorder = chan, job_id, recorder
        self.lock = threading.Lock()
        self.in_cv = threading.Condition(self.lock)
        self.out_cv = threading.Condition(self.lock)
        self.failed: ProtocolError | None = None
        self.closed = False
        now = time.monotonic()
        # receive side
        self.inbox: list[tuple[Envelope, bytes]] = []
        self.inbox_head = 0
        self.inbox_bytes = 0
        self.delivered = 0
        self.in_gen = 0
        self.in_last_seen = now
        self.peer_closed = False
        # send side
        self.next_seq = 1
        self.unacked: dict[int, _OutMsg] = {}
        self.unacked_bytes = 0
        self.acked = 0
        self.cursor = 1
        self.out_gen = 0
        self.hello_ok = False
        self.out_last_reply = now
        self.call: grpc.Call | None = None
        self.abort_reason: str | None = None
        self.close_requested = False
        self.pump = threading.Thread(target=self._pump, name=f"fedjoint-send-{job_id}",
                                     daemon=True)

    # ------------------------------------------------------------ failure / close

    def fail(self, exc: ProtocolError, notify_peer: bool = True, level: int = logging.WARNING
             ) -> None:
        with self.lock:
            if self.failed is not None:
                return
            self.failed = exc
            if notify_peer and self.abort_reason is None:
                self.abort_reason = str(exc)[:1000]
            self.in_cv.notify_all()
            self.out_cv.notify_all()
        _event(level, "job.failed", job=self.job_id, peer=self.chan.peer.party,
               error=type(exc).__name__, reason=repr(str(exc)))

    def _raise_failed(self) -> None:
        f = self.failed
        assert f is not None
        raise type(f)(str(f))

    # ------------------------------------------------------------ sending

    def send(self, kind: str, payload: Payload) -> None:
        check_kind(kind)
        ptype, data = encode_payload(payload)
        settings = self.chan.settings
        if len(data) > settings.max_message_bytes:
            raise ValueError(f"payload of {len(data)} bytes exceeds max_message_bytes "
                             f"{settings.max_message_bytes}")
        digest = hashlib.sha256(data).digest()
        with self.lock:
            if self.failed is not None:
                self._raise_failed()
            if self.closed or self.close_requested:
                raise ProtocolError(f"job link {self.job_id} is closed")
            seq = self.next_seq
            self.next_seq += 1
        env = Envelope(self.job_id, seq, self.chan.local.party, kind, ptype, len(data), digest)
        sig = self.chan.local.signing_key.sign(env.signing_bytes())
        if self.recorder is not None:
            self.recorder.record("sent", Envelope(env.job_id, seq, env.sender, kind, ptype,
                                                  env.length, digest, sig), data)
        msg = _OutMsg(seq, pb.Envelope(job_id=self.job_id, seq=seq, sender=env.sender,
                                       kind=kind, ptype=ptype, length=len(data),
                                       sha256=digest, signature=sig), data)
        with self.out_cv:
            while (self.failed is None and self.unacked_bytes
                   and self.unacked_bytes + len(data) > settings.send_window_bytes):
                self.out_cv.wait(settings.heartbeat_interval)
            if self.failed is not None:
                self._raise_failed()
            self.unacked[seq] = msg
            self.unacked_bytes += len(data)
            self.out_cv.notify_all()

    def _release(self, ack: int) -> None:
        """Caller holds the lock: drop messages the peer acknowledged."""
        if ack >= self.next_seq:
            raise _Bad(f"peer acknowledged seq {ack}, but only {self.next_seq - 1} were sent")
        while self.acked < ack:
            self.acked += 1
            m = self.unacked.pop(self.acked, None)
            if m is not None:
                self.unacked_bytes -= len(m.data)
        self.out_cv.notify_all()

    def _frames(self, gen: int) -> Iterator[pb.Frame]:
        """Request iterator of one client stream (consumed by a gRPC thread)."""
        chan = self.chan
        yield pb.Frame(hello=pb.Hello(job_id=self.job_id, sender=chan.local.party,
                                      protocol_version=PROTOCOL_VERSION))
        hb = chan.settings.heartbeat_interval
        chunk = chan.settings.chunk_size
        with self.lock:
            while self.out_gen == gen and not self.hello_ok:
                self.out_cv.wait(hb)
        hb_due = time.monotonic() + hb
        while True:
            frame: pb.Frame | None = None
            msg: _OutMsg | None = None
            with self.lock:
                while True:
                    if self.out_gen != gen or chan._stopping:
                        return
                    if self.abort_reason is not None:
                        frame = pb.Frame(abort=self.abort_reason)
                        break
                    if self.failed is not None:
                        return
                    if self.cursor <= self.acked:
                        self.cursor = self.acked + 1
                    msg = self.unacked.get(self.cursor)
                    if msg is not None:
                        self.cursor += 1
                        break
                    if self.close_requested and self.acked == self.next_seq - 1:
                        frame = pb.Frame(close=True)
                        break
                    now = time.monotonic()
                    if now >= hb_due:
                        frame = pb.Frame(heartbeat=True)
                        break
                    self.out_cv.wait(hb_due - now)
            if msg is not None:
                data = msg.data
                n = len(data)
                if n <= chunk:
                    yield pb.Frame(envelope=msg.env, data=data)
                else:
                    view = memoryview(data)
                    head = pb.Frame(envelope=msg.env).SerializeToString()
                    yield b"".join((head, _DATA_TAG, _varint(chunk), view[:chunk]))
                    for off in range(chunk, n, chunk):
                        if self.out_gen != gen:
                            return
                        yield _data_frame(view[off:off + chunk])
            else:
                assert frame is not None
                yield frame
                if frame.abort or frame.close:
                    return
            hb_due = time.monotonic() + hb

    def _pump(self) -> None:
        chan = self.chan
        backoff = 0.05
        last_contact = time.monotonic()
        last_error = "no attempt yet"
        while True:
            with self.lock:
                if chan._stopping or self.closed:
                    return
                if self.failed is not None and self.abort_reason is None:
                    return
                self.out_gen += 1
                gen = self.out_gen
                self.hello_ok = False
                self.out_cv.notify_all()
            finished = False
            try:
                call = chan._messages_call()(self._frames(gen))
                self.call = call
                for reply in call:
                    now = time.monotonic()
                    self.out_last_reply = last_contact = now
                    backoff = 0.05
                    if reply.error:
                        self.fail(ProtocolError(f"{chan.peer.party} rejected job {self.job_id}:"
                                                f" {reply.error}"), notify_peer=False)
                        continue
                    with self.lock:
                        if reply.hello:
                            self._release(reply.ack)
                            self.cursor = reply.ack + 1
                            self.hello_ok = True
                        elif reply.ack:
                            self._release(reply.ack)
                finished = True
            except _Bad as exc:
                self.fail(ProtocolError(str(exc)))
                continue
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                last_error = f"{code.name if code else 'error'}: {exc.details() if code else exc}"
                if code in (grpc.StatusCode.PERMISSION_DENIED,
                            grpc.StatusCode.INVALID_ARGUMENT,
                            grpc.StatusCode.FAILED_PRECONDITION,
                            grpc.StatusCode.UNIMPLEMENTED):
                    self.fail(ProtocolError(f"{chan.peer.party} refused job {self.job_id}: "
                                            f"{exc.details()}"), notify_peer=False)
                    return
            finally:
                self.call = None
                with self.lock:
                    self.out_gen += 1  # retire the request iterator of this stream
                    self.out_cv.notify_all()
            with self.lock:
                if chan._stopping or self.closed or self.failed is not None:
                    return
                if finished and self.close_requested and self.acked == self.next_seq - 1:
                    return
            silent = time.monotonic() - last_contact
            if silent > chan.settings.peer_deadline:
                self.fail(PeerUnreachable(
                    f"peer {chan.peer.party} at {chan.peer_addr} unreachable for {silent:.1f}s "
                    f"on job {self.job_id} (deadline {chan.settings.peer_deadline}s; last "
                    f"error {last_error})"), notify_peer=False)
                return
            if not finished:
                _event(logging.INFO, "stream.retry", job=self.job_id, peer=chan.peer_addr,
                       error=repr(last_error))
            time.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    # ------------------------------------------------------------ receiving

    def recv(self, kind: str, timeout: float | None) -> Payload:
        chan = self.chan
        end = None if timeout is None else time.monotonic() + timeout
        hb = chan.settings.heartbeat_interval
        gone: ProtocolError | None = None
        item: tuple[Envelope, bytes] | None = None
        with self.in_cv:
            while True:
                if self.failed is not None:
                    self._raise_failed()
                if self.inbox_head < len(self.inbox):
                    item = self.inbox[self.inbox_head]
                    self.inbox[self.inbox_head] = None  # type: ignore[call-overload]
                    self.inbox_head += 1
                    if self.inbox_head > 1024 and self.inbox_head * 2 > len(self.inbox):
                        del self.inbox[:self.inbox_head]
                        self.inbox_head = 0
                    self.inbox_bytes -= len(item[1])
                    self.in_cv.notify_all()
                    break
                now = time.monotonic()
                if self.peer_closed:
                    gone = PeerGone(f"peer {chan.peer.party} closed job {self.job_id} while "
                                    f"{kind!r} was expected")
                    break
                silent = now - self.in_last_seen
                if silent > chan.settings.peer_deadline:
                    gone = PeerGone(f"peer {chan.peer.party} at {chan.peer_addr} silent for "
                                    f"{silent:.1f}s on job {self.job_id} (deadline "
                                    f"{chan.settings.peer_deadline}s) while {kind!r} was "
                                    f"expected")
                    break
                if end is not None and now >= end:
                    raise PeerGone(f"no message {kind!r} from {chan.peer.party} on job "
                                   f"{self.job_id} within {timeout}s")
                self.in_cv.wait(hb if end is None else min(hb, end - now))
        if item is None:
            assert gone is not None
            self.fail(gone, notify_peer=False)
            self._raise_failed()
        env, data = item  # type: ignore[misc]
        if env.kind != kind:
            self.fail(ProtocolError(f"expected message {kind!r} from {chan.peer.party} on job "
                                    f"{self.job_id}, got {env.kind!r} (seq {env.seq})"))
            self._raise_failed()
        try:
            return decode_payload(env.ptype, data)
        except ProtocolError as e:
            self.fail(ProtocolError(f"{kind} (seq {env.seq}) from {chan.peer.party}: {e}"))
            raise ProtocolError(str(self.failed)) from None

    def _start_message(self, e: pb.Envelope) -> _Incoming:
        chan = self.chan
        if e.job_id != self.job_id:
            raise _Bad(f"envelope names job {e.job_id!r} on the stream of job {self.job_id!r}")
        if e.sender != chan.peer.party:
            raise _Bad(f"envelope sender {e.sender!r} is not the peer {chan.peer.party!r}")
        try:
            check_kind(e.kind)
        except ProtocolError as exc:
            raise _Bad(f"seq {e.seq}: {exc}") from None
        if e.ptype not in PTYPES:
            raise _Bad(f"seq {e.seq} ({e.kind}): unknown payload type {e.ptype!r}; expected one "
                       f"of {', '.join(PTYPES)}")
        if e.length > chan.settings.max_message_bytes:
            raise _Bad(f"seq {e.seq} ({e.kind}): announced length {e.length} exceeds the limit "
                       f"{chan.settings.max_message_bytes}")
        if len(e.sha256) != 32 or len(e.signature) != 64:
            raise _Bad(f"seq {e.seq} ({e.kind}): malformed digest or signature field")
        env = Envelope(e.job_id, e.seq, e.sender, e.kind, e.ptype, e.length, e.sha256,
                       e.signature)
        expected = self.delivered + 1
        if e.seq < expected:
            return _Incoming(env, skip=True)  # a resent duplicate: consume and drop
        if e.seq != expected:
            raise _Bad(f"out-of-order sequence number: expected seq {expected}, got {e.seq} "
                       f"({e.kind})")
        try:
            chan.peer.signing_public_key.verify(e.signature, env.signing_bytes())
        except InvalidSignature:
            raise _Bad(f"bad signature on seq {e.seq} ({e.kind}): not signed by "
                       f"{chan.peer.party}'s pinned signing key") from None
        return _Incoming(env, skip=False)

    def _finish_message(self, cur: _Incoming, gen: int) -> None:
        env = cur.env
        if cur.hasher.digest() != env.sha256:
            raise _Bad(f"payload SHA-256 mismatch on seq {env.seq} ({env.kind})")
        parts = cur.parts
        data = parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)
        cur.parts = []
        limit = self.chan.settings.inbox_limit_bytes
        with self.in_cv:
            while (self.in_gen == gen and self.failed is None and self.inbox_bytes
                   and self.inbox_bytes + len(data) > limit and not self.chan._stopping):
                self.in_cv.wait(0.5)
            if self.in_gen != gen or self.failed is not None:
                return
            if self.recorder is not None:
                self.recorder.record("received", env, data)
            self.inbox.append((env, data))
            self.inbox_bytes += len(data)
            self.delivered = env.seq
            self.in_cv.notify_all()

    def read_stream(self, frames: Iterator[pb.Frame], gen: int, out: queue.SimpleQueue,
                    who: str) -> None:
        """Server side: consume the peer's frames of one stream (runs in its own thread)."""
        cur: _Incoming | None = None
        ack_tokens = 0
        last_token = 0
        settings = self.chan.settings
        try:
            for f in frames:
                self.in_last_seen = time.monotonic()
                if self.in_gen != gen:
                    break
                if type(f) is memoryview:  # data-only frame (fast path)
                    _take_chunk(cur, f)
                    if cur.received < cur.env.length:
                        continue
                    done, cur = cur, None
                    if not done.skip:
                        self._finish_message(done, gen)
                        last_token = self.delivered
                        out.put(1)
                    continue
                if f.abort:
                    self.fail(ProtocolError(f"{self.chan.peer.party} aborted job {self.job_id}: "
                                            f"{f.abort}"), notify_peer=False)
                    break
                if f.close:
                    with self.lock:
                        self.peer_closed = True
                        self.in_cv.notify_all()
                    continue
                has_env = f.HasField("envelope")
                if has_env:
                    if cur is not None:
                        raise _Bad(f"seq {cur.env.seq} ({cur.env.kind}): payload ended after "
                                   f"{cur.received} of the {cur.env.length} bytes the envelope "
                                   f"announced")
                    cur = self._start_message(f.envelope)
                data = f.data
                if data:
                    _take_chunk(cur, data)
                if cur is not None and cur.received == cur.env.length:
                    done, cur = cur, None
                    if not done.skip:
                        self._finish_message(done, gen)
                        # acknowledge promptly after big messages or every few small ones
                        if (done.env.length >= (1 << 20)
                                or self.delivered - last_token >= settings.ack_every):
                            last_token = self.delivered
                            out.put(1)
                        ack_tokens += 1
        except _Bad as exc:
            reason = str(exc)
            self.fail(ProtocolError(f"rejected message from {self.chan.peer.party}: {reason}"),
                      notify_peer=False)
            _event(logging.WARNING, "frame.rejected", job=self.job_id, peer=who,
                   reason=repr(reason))
            out.put(reason)
            return
        except grpc.RpcError:
            pass  # stream cut: a partial message is discarded, the sender resends it
        except Exception as exc:  # noqa: BLE001 - never let a peer crash the server
            log.exception("stream.reader_error job=%s", self.job_id)
            self.fail(ProtocolError(f"internal error reading job {self.job_id}: "
                                    f"{type(exc).__name__}"), notify_peer=True)
        out.put(None)


class GrpcLink(Link):
    """The protocol-facing handle of one job over the gRPC channel."""

    def __init__(self, job: _Job):
        self._job = job
        self.job_id = job.job_id
        self.party = job.chan.local.party
        self.peer = job.chan.peer.party

    def send(self, kind: str, payload: Payload) -> None:
        self._job.send(kind, payload)

    def recv(self, kind: str, timeout: float | None = None) -> Payload:
        """Next message; ``timeout=None`` waits as long as the peer is alive."""
        return self._job.recv(kind, timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the peer acknowledged everything sent; False on timeout."""
        job = self._job
        end = None if timeout is None else time.monotonic() + timeout
        with job.out_cv:
            while job.acked < job.next_seq - 1:
                if job.failed is not None:
                    job._raise_failed()
                now = time.monotonic()
                if end is not None and now >= end:
                    return False
                job.out_cv.wait(0.2 if end is None else min(0.2, end - now))
        return True

    def abort(self, reason: str) -> None:
        """Fail the job locally and tell the peer why."""
        self._job.fail(ProtocolError(f"aborted by {self.party}: {reason}"))

    def close(self, timeout: float = 10.0) -> None:
        """Flush, tell the peer this side is done, and forget the job."""
        job = self._job
        try:
            if job.failed is None:
                self.flush(timeout)
        finally:
            with job.lock:
                job.close_requested = True
                job.out_cv.notify_all()
            job.pump.join(timeout=min(timeout, 2.0))
            with job.lock:
                job.closed = True
                job.out_gen += 1
                job.in_cv.notify_all()
                job.out_cv.notify_all()
            job.chan._forget(job.job_id)

    @property
    def failed(self) -> ProtocolError | None:
        return self._job.failed

    def stats(self) -> dict:
        j = self._job
        return {"sent": j.next_seq - 1, "acked": j.acked, "received": j.delivered,
                "unacked_bytes": j.unacked_bytes, "inbox_bytes": j.inbox_bytes}


class _Servicer(pbg.PeerLinkServicer):
    def __init__(self, chan: PeerChannel):
        self.chan = chan
        self._fp_cache: dict[bytes, str] = {}

    def _authorize(self, context: grpc.ServicerContext, rpc: str) -> None:
        chan = self.chan
        pems = context.auth_context().get("x509_pem_cert") or []
        fp = None
        if pems:
            pem = pems[0]
            fp = self._fp_cache.get(pem)
            if fp is None:
                fp = cert_fingerprint(pem)
                if len(self._fp_cache) < 64:
                    self._fp_cache[pem] = fp
        if fp != chan.peer.cert_fingerprint:
            _event(logging.WARNING, "peer.refused", rpc=rpc, address=context.peer(),
                   fingerprint=fp or "none", pinned=chan.peer.cert_fingerprint,
                   reason="certificate is not the pinned peer certificate")
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          "client certificate is not the pinned peer certificate")

    def Messages(self, request_iterator, context):  # noqa: N802 - gRPC name
        chan = self.chan
        self._authorize(context, "Messages")
        who = context.peer()
        try:
            first = next(request_iterator)
        except (StopIteration, grpc.RpcError):
            return
        h = first.hello
        if not first.HasField("hello") or not JOB_ID_RE.match(h.job_id):
            _event(logging.WARNING, "stream.refused", address=who, reason="bad hello")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "first frame must be a hello with a valid job id")
        if h.sender != chan.peer.party:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"hello sender {h.sender!r} is not the peer {chan.peer.party!r}")
        if h.protocol_version != PROTOCOL_VERSION:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"channel protocol version {h.protocol_version} unsupported "
                          f"(this node speaks {PROTOCOL_VERSION})")
        job, why = chan._job_for_peer(h.job_id)
        if job is None:
            _event(logging.WARNING, "job.refused", job=h.job_id, address=who, reason=repr(why))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        out: queue.SimpleQueue = queue.SimpleQueue()
        with job.lock:
            job.in_gen += 1
            gen = job.in_gen
            ack = job.delivered
            failed = job.failed
            job.in_last_seen = time.monotonic()
        if failed is not None:
            yield pb.Reply(hello=True, ack=ack, error=str(failed))
            return
        context.add_callback(lambda: out.put(None))
        threading.Thread(target=job.read_stream, args=(request_iterator, gen, out, who),
                         name=f"fedjoint-recv-{h.job_id}", daemon=True).start()
        yield pb.Reply(hello=True, ack=ack)
        sent_ack = ack
        hb = chan.settings.heartbeat_interval
        ack_delay = chan.settings.ack_delay
        hb_due = time.monotonic() + hb
        while True:
            pending = job.delivered > sent_ack
            now = time.monotonic()
            wait = min(ack_delay, hb_due - now) if pending else hb_due - now
            try:
                item = out.get(timeout=max(wait, 0.0))
            except queue.Empty:
                item = 0
            if item is None or job.in_gen != gen:
                return
            if isinstance(item, str):
                yield pb.Reply(ack=job.delivered, error=item)
                return
            d = job.delivered
            if d > sent_ack:
                sent_ack = d
                yield pb.Reply(ack=d)
                hb_due = time.monotonic() + hb
            elif time.monotonic() >= hb_due:
                yield pb.Reply(heartbeat=True)
                hb_due = time.monotonic() + hb

    def Control(self, request, context):  # noqa: N802 - gRPC name
        chan = self.chan
        self._authorize(context, "Control")
        if request.sender != chan.peer.party:
            return pb.ControlReply(ok=False, error=f"sender {request.sender!r} is not the "
                                                   f"peer {chan.peer.party!r}")
        try:
            kind = check_kind(request.kind)
            if len(request.body) > MAX_CONTROL_BODY:
                raise ProtocolError(f"control body of {len(request.body)} bytes is too large")
            body = decode_payload("json", request.body)
        except ProtocolError as exc:
            return pb.ControlReply(ok=False, error=str(exc))
        handler = chan._handlers.get(kind)
        if handler is None:
            return pb.ControlReply(ok=False, error=f"{chan.local.party} has no handler for "
                                                   f"control request {kind!r}")
        try:
            result = handler(body)
            if not isinstance(result, dict):
                raise TypeError(f"handler for {kind} returned {type(result).__name__}")
            _, data = encode_payload(result)
        except ControlError as exc:
            return pb.ControlReply(ok=False, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - the peer gets a reason, the node lives
            log.exception("control.handler_error kind=%s", kind)
            return pb.ControlReply(ok=False, error=f"{chan.local.party} failed to handle "
                                                   f"{kind}: {type(exc).__name__}")
        return pb.ControlReply(ok=True, body=data)


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def probe_certificate(addr: str, local: LocalIdentity | None = None,
                      timeout: float = 5.0) -> str:
    """Fingerprint of the certificate the server at ``addr`` presents (no verification)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    if local is not None and local.tls_cert_path and local.tls_key_path:
        ctx.load_cert_chain(local.tls_cert_path, local.tls_key_path)
    host, port = _split_addr(addr)
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname="fedjoint.peer") as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ConnectionError(f"{addr} presented no certificate")
    return cert_fingerprint(der)


class PeerChannel:
    """One party's end of the channel: a gRPC server plus a client to the peer.

    >>> chan = PeerChannel(local, peer, "0.0.0.0:7443", "platform.example:7443").start()
    >>> link = chan.link("job-42")          # both parties open the same job id
    >>> link.send("psi.blinded_batch", arr); reply = link.recv("psi.reblinded")
    >>> chan.request("job.propose", {...})  # control, answered by the peer's handler
    """

    def __init__(self, local: LocalIdentity, peer: PeerIdentity, listen_addr: str,
                 peer_addr: str | None = None, *,
                 settings: ChannelSettings | None = None,
                 recorder_factory: Callable[[str], MessageRecorder | None] | None = None,
                 job_filter: Callable[[str], bool | str | None] | None = None):
        self.local, self.peer = local, peer
        self.listen_addr = listen_addr
        self.peer_addr = peer_addr
        self.settings = settings or ChannelSettings()
        self.recorder_factory = recorder_factory
        self.job_filter = job_filter
        self._handlers: dict[str, Callable[[dict], dict]] = {PING_KIND: self._on_ping}
        self._new_job_callbacks: list[Callable[[str], None]] = []
        self._jobs: dict[str, _Job] = {}
        self._closed_jobs: set[str] = set()
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._client: grpc.Channel | None = None
        self._stub_obj: pbg.PeerLinkStub | None = None
        self._stopping = False
        self._watchdog: threading.Thread | None = None
        self.port: int | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> PeerChannel:
        opts = [("grpc.max_send_message_length", MAX_FRAME),
                ("grpc.max_receive_message_length", MAX_FRAME),
                ("grpc.keepalive_time_ms", 20000),
                ("grpc.keepalive_timeout_ms", 10000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.so_reuseport", 0)]
        server = grpc.server(futures.ThreadPoolExecutor(
            max_workers=self.settings.server_workers, thread_name_prefix="fedjoint-srv"),
            options=opts)
        servicer = _Servicer(self)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "fedjoint.channel.v1.PeerLink", {
                "Messages": grpc.stream_stream_rpc_method_handler(
                    servicer.Messages, request_deserializer=_parse_frame,
                    response_serializer=pb.Reply.SerializeToString),
                "Control": grpc.unary_unary_rpc_method_handler(
                    servicer.Control, request_deserializer=pb.ControlRequest.FromString,
                    response_serializer=pb.ControlReply.SerializeToString),
            }),))
        creds = grpc.ssl_server_credentials(
            [(self.local.tls_key_pem, self.local.tls_cert_pem)],
            root_certificates=self.peer.tls_cert_pem, require_client_auth=True)
        try:
            port = server.add_secure_port(self.listen_addr, creds)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.listen_addr}: {exc}") from None
        if not port:
            raise OSError(f"cannot listen on {self.listen_addr} (address in use?)")
        self.port = port
        server.start()
        self._server = server
        self._watchdog = threading.Thread(target=self._watch, name="fedjoint-watchdog",
                                          daemon=True)
        self._watchdog.start()
        _event(logging.INFO, "channel.listening", party=self.local.party,
               address=self.listen_addr, port=port, cert=self.local.cert_fingerprint,
               peer=self.peer.party, peer_cert_pinned=self.peer.cert_fingerprint)
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._stopping = True
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.fail(PeerGone(f"channel of {self.local.party} stopped"), notify_peer=False,
                     level=logging.INFO)
            with job.lock:
                job.out_gen += 1
                job.out_cv.notify_all()
                job.in_cv.notify_all()
            call = job.call
            if call is not None:
                call.cancel()
        if self._server is not None:
            self._server.stop(grace).wait(grace + 1)
        for job in jobs:
            if job.pump.is_alive():
                job.pump.join(timeout=2)
        if self._client is not None:
            self._client.close()
        if self._watchdog is not None:
            self._watchdog.join(timeout=2)

    def __enter__(self) -> PeerChannel:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ client side

    def _stub(self) -> pbg.PeerLinkStub:
        if self._stub_obj is None:
            with self._lock:
                if self._stub_obj is None:
                    if not self.peer_addr:
                        raise PeerUnreachable(f"no address configured for peer "
                                              f"{self.peer.party}")
                    creds = grpc.ssl_channel_credentials(
                        root_certificates=self.peer.tls_cert_pem,
                        private_key=self.local.tls_key_pem,
                        certificate_chain=self.local.tls_cert_pem)
                    self._client = grpc.secure_channel(self.peer_addr, creds, options=[
                        ("grpc.ssl_target_name_override", self.peer.tls_name),
                        ("grpc.max_send_message_length", MAX_FRAME),
                        ("grpc.max_receive_message_length", MAX_FRAME),
                        ("grpc.keepalive_time_ms", 20000),
                        ("grpc.keepalive_timeout_ms", 10000),
                        ("grpc.keepalive_permit_without_calls", 1),
                        ("grpc.http2.max_pings_without_data", 0),
                        ("grpc.initial_reconnect_backoff_ms", 100),
                        ("grpc.min_reconnect_backoff_ms", 100),
                        ("grpc.max_reconnect_backoff_ms", 1000),
                        ("grpc.enable_retries", 0),
                    ])
                    self._stub_obj = pbg.PeerLinkStub(self._client)
                    self._messages = self._client.stream_stream(
                        _MESSAGES_METHOD, request_serializer=_serialize_frame,
                        response_deserializer=pb.Reply.FromString)
        return self._stub_obj

    def _messages_call(self):
        self._stub()
        return self._messages

    def _unreachable(self, exc: grpc.RpcError, what: str) -> PeerUnreachable:
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        hint = ""
        try:
            presented = probe_certificate(self.peer_addr or "", self.local, timeout=2.0)
            if presented != self.peer.cert_fingerprint:
                hint = (f"; the server there presents certificate {presented}, but the pinned "
                        f"fingerprint is {self.peer.cert_fingerprint}")
                _event(logging.WARNING, "peer.wrong_certificate", address=self.peer_addr,
                       fingerprint=presented, pinned=self.peer.cert_fingerprint)
        except (OSError, ValueError) as perr:
            hint = f"; TCP/TLS probe of {self.peer_addr}: {perr}"
        return PeerUnreachable(f"{what}: peer {self.peer.party} at {self.peer_addr} "
                               f"unreachable ({exc.code().name}: {detail}){hint}")

    def request(self, kind: str, body: dict, timeout: float | None = None) -> dict:
        """Send a control request; return the peer handler's answer.

        Raises :class:`ControlError` if the peer refused or failed, :class:`PeerUnreachable`
        if it cannot be reached.
        """
        check_kind(kind)
        _, data = encode_payload(body)
        req = pb.ControlRequest(kind=kind, sender=self.local.party, body=data)
        try:
            rep = self._stub().Control(req, timeout=timeout or self.settings.control_timeout)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise self._unreachable(exc, f"control request {kind}") from None
            raise ControlError(f"control request {kind} to {self.peer.party}: "
                               f"{exc.code().name}: {exc.details()}") from None
        if not rep.ok:
            raise ControlError(rep.error)
        return decode_payload("json", rep.body)  # type: ignore[return-value]

    def on_request(self, kind: str, handler: Callable[[dict], dict]) -> None:
        """Register the handler for control requests of ``kind`` from the peer.

        The handler runs in a server thread, returns a JSON-able dict, and may raise
        :class:`ControlError` to refuse with a reason (the requester gets that reason).
        """
        self._handlers[check_kind(kind)] = handler

    def _on_ping(self, body: dict) -> dict:
        return {"party": self.local.party, "cert_fingerprint": self.local.cert_fingerprint,
                "signing_fingerprint": self.local.signing_fingerprint,
                "echo": body.get("echo")}

    def ping(self, count: int = 5, timeout: float | None = None) -> dict:
        """Round-trip a control ping ``count`` times; latency and the peer's identity."""
        rtts = []
        rep: dict = {}
        for i in range(max(1, count)):
            t0 = time.perf_counter()
            rep = self.request(PING_KIND, {"echo": i}, timeout)
            rtts.append(time.perf_counter() - t0)
        return {"latency_ms": statistics.median(rtts) * 1000, "min_ms": min(rtts) * 1000,
                "peer": rep.get("party"), "peer_cert_fingerprint": rep.get("cert_fingerprint"),
                "peer_signing_fingerprint": rep.get("signing_fingerprint")}

    def check(self, count: int = 5, timeout: float | None = None) -> dict:
        """``node check``: reach the peer, measure latency, show both sides' fingerprints."""
        result = {"peer_address": self.peer_addr, "local_party": self.local.party,
                  "local_cert_fingerprint": self.local.cert_fingerprint,
                  "local_signing_fingerprint": self.local.signing_fingerprint,
                  "peer_party": self.peer.party,
                  "pinned_peer_cert_fingerprint": self.peer.cert_fingerprint,
                  "pinned_peer_signing_fingerprint": self.peer.signing_fingerprint}
        result.update(self.ping(count, timeout))
        result["ok"] = (result["peer_cert_fingerprint"] == self.peer.cert_fingerprint
                        and result["peer_signing_fingerprint"] == self.peer.signing_fingerprint
                        and result["peer"] == self.peer.party)
        return result

    # ------------------------------------------------------------ jobs

    def link(self, job_id: str) -> GrpcLink:
        """The link of ``job_id`` (created on first call; same object state afterwards).

        Both parties call this with the same job id; messages the peer sent before this
        side opened the job are already waiting in the inbox.
        """
        if not JOB_ID_RE.match(job_id or ""):
            raise ValueError(f"invalid job id {job_id!r}")
        if self._server is None:
            raise RuntimeError("PeerChannel.start() has not been called")
        job, _ = self._get_job(job_id, from_peer=False)
        assert job is not None
        return GrpcLink(job)

    def on_new_job(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(job_id)`` when the peer opens a job this side has not opened."""
        self._new_job_callbacks.append(callback)

    def _job_for_peer(self, job_id: str) -> tuple[_Job | None, str]:
        return self._get_job(job_id, from_peer=True)

    def _get_job(self, job_id: str, from_peer: bool) -> tuple[_Job | None, str]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                return job, ""
            if job_id in self._closed_jobs:
                if from_peer:
                    return None, f"job {job_id} is closed on {self.local.party}"
                raise ValueError(f"job {job_id} was closed on this channel")
            if self._stopping:
                if from_peer:
                    return None, f"{self.local.party} is shutting down"
                raise PeerGone("channel stopped")
            if from_peer and self.job_filter is not None:
                verdict = self.job_filter(job_id)
                if verdict is False or isinstance(verdict, str):
                    return None, (verdict if isinstance(verdict, str)
                                  else f"job {job_id} is not known to {self.local.party}")
            recorder = self.recorder_factory(job_id) if self.recorder_factory else None
            job = _Job(self, job_id, recorder)
            self._jobs[job_id] = job
            job.pump.start()
        _event(logging.INFO, "job.opened", job=job_id, by="peer" if from_peer else "local")
        if from_peer:
            for cb in self._new_job_callbacks:
                try:
                    cb(job_id)
                except Exception:  # noqa: BLE001
                    log.exception("job.new_callback_error job=%s", job_id)
        return job, ""

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
            self._closed_jobs.add(job_id)

    def jobs(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    def _watch(self) -> None:
        """Cancel client streams whose server has been silent past the deadline."""
        tick = min(0.25, self.settings.heartbeat_interval / 2)
        while not self._stopping:
            time.sleep(tick)
            now = time.monotonic()
            with self._lock:
                jobs = list(self._jobs.values())
            for job in jobs:
                call = job.call
                if call is not None and now - job.out_last_reply > self.settings.peer_deadline:
                    _event(logging.WARNING, "stream.silent", job=job.job_id,
                           peer=self.peer_addr, seconds=round(now - job.out_last_reply, 1))
                    call.cancel()
                if job.failed is None and now - job.in_last_seen > self.settings.peer_deadline:
                    with job.lock:
                        job.in_cv.notify_all()
