"""The per-job stream: both directions of one job, behind its ``GrpcLink``.

Per job and direction the sender numbers messages 1, 2, 3... and keeps every message
until the receiver acknowledges it (cumulative acks; ``send`` blocks while more than
``send_window_bytes`` are unacknowledged). A pump thread holds the job's client stream:
when it breaks, the pump reconnects, says hello, the receiver answers with the last
sequence number it delivered, and the pump resends from the next one; the receiver
drops anything at or below that number, so a cut stream loses and duplicates nothing. A
partially received message is discarded.

The receive side is fed by the servicer (:meth:`Job.read_stream`, one thread per
incoming stream): envelope checks, sequence order and signature, chunks, digest, then
the inbox, which ``recv`` drains. Before taking a message's chunks the reader waits
until the job's inbox plus the announced length fit ``limits.max_job_buffer_bytes`` (or
the inbox is empty), so a job never holds more than that, checked or not. Liveness: idle
streams carry heartbeats; every frame counts as contact, and so does the time the reader
spends finishing a message; a job whose peer has been silent or unreachable for
``peer_deadline`` seconds fails with :class:`PeerGone` (:class:`PeerUnreachable` from
the pump).

A job knows its channel only through :class:`Owner`, so this module does not import the
peer module that creates jobs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import grpc

import federation.channel.fedjoint_pb2 as pb
from federation.channel.frames import (
    BadFrame,
    Incoming,
    envelope_pb,
    message_frames,
    parse_envelope,
    take_chunk,
    verify_signature,
)
from federation.channel.settings import (
    PROTOCOL_VERSION,
    ChannelSettings,
    PeerUnreachable,
    log,
    log_event,
)
from federation.keys import LocalIdentity, PeerIdentity
from federation.link import (
    Envelope,
    MessageRecorder,
    Payload,
    PeerGone,
    ProtocolError,
    check_kind,
    decode_payload,
    encode_payload,
)
from federation.link.codec import clip


class Owner(Protocol):
    """What a job uses of the channel that owns it (a ``PeerChannel``)."""

    local: LocalIdentity
    peer: PeerIdentity
    peer_addr: str | None
    settings: ChannelSettings
    _stopping: bool

    def _messages_call(self) -> Callable: ...

    def _forget(self, job_id: str) -> None: ...


@dataclass
class OutMsg:
    seq: int
    env: pb.Envelope
    data: bytes


class Job:
    """Both directions of one job: receive state (fed by the server) and send state
    (a pump thread holding the client stream)."""

    def __init__(self, chan: Owner, job_id: str, recorder: MessageRecorder | None):
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
        self.in_busy = False  # the reader is finishing a message whose data all arrived
        self.in_cur: Incoming | None = None  # the message being received
        self.peer_closed = False
        # send side
        self.next_seq = 1
        self.unacked: dict[int, OutMsg] = {}
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
        # peer-supplied parts of reasons are clipped where they are read; this bounds
        # the line whatever a protocol put in its exception
        cap = 4 * self.chan.settings.limits.max_logged_chars
        log_event(level, "job.failed", job=self.job_id, peer=self.chan.peer.party,
                  error=type(exc).__name__,
                  reason=repr(clip(str(exc), cap, "limits.max_logged_chars")))

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
            raise ValueError(f"{kind} payload of {len(data)} bytes exceeds "
                             f"limits.max_message_bytes = {settings.max_message_bytes} "
                             f"(node.toml [limits]; the peer applies its own)")
        digest = hashlib.sha256(data).digest()
        with self.lock:
            if self.failed is not None:
                self._raise_failed()
            if self.closed or self.close_requested:
                raise ProtocolError(f"job link {self.job_id} is closed")
            seq = self.next_seq
            self.next_seq += 1
        env = Envelope(self.job_id, seq, self.chan.local.party, kind, ptype, len(data), digest)
        env = dataclasses.replace(env, signature=self.chan.local.signing_key.sign(
            env.signing_bytes()))
        if self.recorder is not None:
            self.recorder.record("sent", env, data)
        msg = OutMsg(seq, envelope_pb(env), data)
        with self.out_cv:
            while (self.failed is None and self.unacked_bytes
                   and self.unacked_bytes + len(data) > settings.send_window_bytes):
                self.out_cv.wait(settings.heartbeat_interval)
            if self.failed is not None:
                self._raise_failed()
            self.unacked[seq] = msg
            self.unacked_bytes += len(data)
            self.out_cv.notify_all()

    def flush(self, timeout: float | None) -> bool:
        """Wait until the peer acknowledged everything sent; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self.out_cv:
            while self.acked < self.next_seq - 1:
                if self.failed is not None:
                    self._raise_failed()
                now = time.monotonic()
                if end is not None and now >= end:
                    return False
                self.out_cv.wait(0.2 if end is None else min(0.2, end - now))
        return True

    def close(self, timeout: float) -> None:
        """Flush, tell the peer this side is done, and have the channel forget the job."""
        try:
            if self.failed is None:
                self.flush(timeout)
        finally:
            with self.lock:
                self.close_requested = True
                self.out_cv.notify_all()
            self.pump.join(timeout=min(timeout, 2.0))
            with self.lock:
                self.closed = True
                self.out_gen += 1
                self.in_cv.notify_all()
                self.out_cv.notify_all()
            self.chan._forget(self.job_id)

    def _release(self, ack: int) -> None:
        """Caller holds the lock: drop messages the peer acknowledged."""
        if ack >= self.next_seq:
            raise BadFrame(f"peer acknowledged seq {ack}, but only {self.next_seq - 1} were "
                           f"sent")
        while self.acked < ack:
            self.acked += 1
            m = self.unacked.pop(self.acked, None)
            if m is not None:
                self.unacked_bytes -= len(m.data)
        self.out_cv.notify_all()

    def _frames(self, gen: int) -> Iterator[pb.Frame | bytes]:
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
            msg: OutMsg | None = None
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
                for part in message_frames(msg.env, msg.data, chunk):
                    yield part
                    if self.out_gen != gen:
                        return
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
                                                f" {chan.settings.clip(reply.error)}"),
                                  notify_peer=False)
                        continue
                    with self.lock:
                        if reply.hello:
                            self._release(reply.ack)
                            self.cursor = reply.ack + 1
                            self.hello_ok = True
                        elif reply.ack:
                            self._release(reply.ack)
                finished = True
            except BadFrame as exc:
                self.fail(ProtocolError(str(exc)))
                continue
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                last_error = chan.settings.clip(
                    f"{code.name if code else 'error'}: {exc.details() if code else exc}")
                if code in (grpc.StatusCode.PERMISSION_DENIED,
                            grpc.StatusCode.INVALID_ARGUMENT,
                            grpc.StatusCode.FAILED_PRECONDITION,
                            grpc.StatusCode.UNIMPLEMENTED):
                    self.fail(ProtocolError(f"{chan.peer.party} refused job {self.job_id}: "
                                            f"{chan.settings.clip(exc.details())}"),
                              notify_peer=False)
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
                log_event(logging.INFO, "stream.retry", job=self.job_id, peer=chan.peer_addr,
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
                silent = 0.0 if self.in_busy else now - self.in_last_seen
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
            return decode_payload(env.ptype, data, chan.settings.limits.json)
        except ProtocolError as e:
            self.fail(ProtocolError(f"{kind} (seq {env.seq}) from {chan.peer.party}: {e}"))
            raise ProtocolError(str(self.failed)) from None

    def _start_message(self, e: pb.Envelope) -> Incoming:
        chan = self.chan
        env = parse_envelope(e, self.job_id, chan.peer.party, chan.settings.max_message_bytes)
        expected = self.delivered + 1
        if e.seq < expected:
            return Incoming(env, skip=True)  # a resent duplicate: consume and drop
        if e.seq != expected:
            raise BadFrame(f"out-of-order sequence number: expected seq {expected}, got "
                           f"{e.seq} ({e.kind})")
        verify_signature(env, chan.peer)
        self._reserve(env.length)
        self.in_cur = cur = Incoming(env, skip=False)
        return cur

    def buffered_bytes(self) -> int:
        """Received bytes this job holds: its inbox and the message being received."""
        cur = self.in_cur
        return self.inbox_bytes + (cur.received if cur is not None and cur.parts else 0)

    def _reserve(self, length: int) -> None:
        """Wait until a message of ``length`` bytes fits the job's buffer
        (``limits.max_job_buffer_bytes``; one message always fits an empty inbox). The
        peer's frames meanwhile wait in gRPC (TCP back-pressure); like reassembly, the
        wait is not peer silence."""
        limit = self.chan.settings.limits.max_job_buffer_bytes
        with self.in_cv:
            if not self.inbox_bytes or self.inbox_bytes + length <= limit:
                return
            self.in_busy = True
            try:
                while (self.failed is None and self.inbox_bytes
                       and self.inbox_bytes + length > limit and not self.chan._stopping):
                    self.in_cv.wait(0.5)
            finally:
                self.in_last_seen = time.monotonic()
                self.in_busy = False

    def _finish_message(self, cur: Incoming, gen: int) -> None:
        """Reassemble, record and deliver a message whose data all arrived. Meanwhile the
        reader takes no frames, so the peer's heartbeats wait in gRPC: the peer is not
        counted as silent until this returns (seconds, for a GiB-sized message)."""
        self.in_busy = True
        try:
            self._deliver(cur.env, cur.payload(), gen)
        finally:
            self.in_last_seen = time.monotonic()
            self.in_busy = False

    def _deliver(self, env: Envelope, data: bytes, gen: int) -> None:
        with self.in_cv:
            if self.in_gen != gen or self.failed is not None:
                return
            if self.recorder is not None:
                self.recorder.record("received", env, data)
            self.inbox.append((env, data))
            self.inbox_bytes += len(data)
            self.delivered = env.seq
            self.in_cv.notify_all()

    def read_stream(self, frames: Iterator, gen: int, out: queue.SimpleQueue,
                    who: str) -> None:
        """Server side: consume the peer's frames of one stream (runs in its own thread)."""
        cur: Incoming | None = None
        ack_tokens = 0
        last_token = 0
        settings = self.chan.settings
        min_chunk = settings.limits.min_chunk_bytes
        try:
            for f in frames:
                self.in_last_seen = time.monotonic()
                if self.in_gen != gen:
                    break
                if type(f) is memoryview:  # data-only frame (fast path)
                    take_chunk(cur, f, min_chunk)
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
                                            f"{settings.clip(f.abort)}"), notify_peer=False)
                    break
                if f.close:
                    with self.lock:
                        self.peer_closed = True
                        self.in_cv.notify_all()
                    continue
                has_env = f.HasField("envelope")
                if has_env:
                    if cur is not None:
                        raise BadFrame(f"seq {cur.env.seq} ({cur.env.kind}): payload ended "
                                       f"after {cur.received} of the {cur.env.length} bytes "
                                       f"the envelope announced")
                    cur = self._start_message(f.envelope)
                data = f.data
                if data:
                    take_chunk(cur, data, min_chunk)
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
        except BadFrame as exc:
            reason = str(exc)
            self.fail(ProtocolError(f"rejected message from {self.chan.peer.party}: {reason}"),
                      notify_peer=False)
            log_event(logging.WARNING, "frame.rejected", job=self.job_id, peer=who,
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
