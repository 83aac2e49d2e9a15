"""The gRPC servicer: the server side of the peer's job streams and of control requests.

Every call is first checked against the pinned peer certificate (its SHA-256 over the
DER certificate the TLS layer verified), so a certificate that merely passes TLS is
refused with ``PERMISSION_DENIED``. ``Messages`` admits at most ``limits.max_streams``
streams at once (more are refused with ``RESOURCE_EXHAUSTED`` straight away, so they
hold no worker), drops a stream that has not said hello within
``limits.hello_timeout_s`` (``DEADLINE_EXCEEDED``), checks the hello (job id, sender,
protocol version), asks the channel for the job (which may refuse it), answers with the
last sequence number delivered, hands the incoming frames to the job's reader thread
(:meth:`Job.read_stream`) and sends acks, heartbeats and errors back. ``Control`` checks
the body against ``limits.max_control_bytes`` and the JSON limits, runs the handler the
channel registered for the request's kind and returns its answer.

The servicer knows its channel only through :class:`Host`, so this module does not
import the peer module that starts the server.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

import grpc

import federation.channel.fedjoint_pb2 as pb
import federation.channel.fedjoint_pb2_grpc as pbg
from federation.channel.frames import parse_frame
from federation.channel.settings import (
    JOB_ID_RE,
    PROTOCOL_VERSION,
    ChannelSettings,
    ControlError,
    log,
    log_event,
)
from federation.channel.stream import Job
from federation.keys import LocalIdentity, PeerIdentity, cert_fingerprint
from federation.link import ProtocolError, check_kind, decode_payload, encode_payload
from federation.link.codec import clip


class Host(Protocol):
    """What the servicer uses of the channel that serves it (a ``PeerChannel``)."""

    local: LocalIdentity
    peer: PeerIdentity
    settings: ChannelSettings
    _handlers: dict[str, Callable[[dict], dict]]

    def _job_for_peer(self, job_id: str) -> tuple[Job | None, str]: ...


_NO_HELLO = object()


class Servicer(pbg.PeerLinkServicer):
    def __init__(self, chan: Host):
        self.chan = chan
        self._fp_cache: dict[bytes, str] = {}
        self._lock = threading.Lock()
        self.streams = 0           # Messages calls in progress (admitted)
        self._refused = 0          # refused since the last stream.refused log line
        self._refused_logged = 0.0

    # ------------------------------------------------------------ stream admission

    def _admit(self, context: grpc.ServicerContext) -> bool:
        """Count one more stream, unless ``limits.max_streams`` are open; the count
        drops when the RPC ends, however it ends."""
        cap = self.chan.settings.limits.max_streams
        with self._lock:
            if self.streams >= cap:
                self._refused += 1
                return False
            self.streams += 1
        if not context.add_callback(self._release):
            self._release()
        return True

    def _release(self) -> None:
        with self._lock:
            self.streams -= 1

    def _log_refused(self, who: str) -> None:
        """At most one ``stream.refused`` line a second, with the count, so a flood of
        streams cannot flood the log."""
        now = time.monotonic()
        with self._lock:
            if now - self._refused_logged < 1.0:
                return
            n, self._refused, self._refused_logged = self._refused, 0, now
        log_event(logging.WARNING, "stream.refused", address=who, refused=n,
                  reason=repr(f"more than limits.max_streams = "
                              f"{self.chan.settings.limits.max_streams} streams"))

    @staticmethod
    def _first_frame(request_iterator, timeout: float):
        """The stream's first frame, None if the stream ended, or _NO_HELLO after
        ``timeout`` seconds (read by a helper thread: gRPC's iterator has no timeout)."""
        q: queue.SimpleQueue = queue.SimpleQueue()

        def read() -> None:
            try:
                q.put(next(request_iterator))
            except Exception:  # noqa: BLE001 - StopIteration, RpcError: the stream ended
                q.put(None)

        threading.Thread(target=read, name="fedjoint-hello", daemon=True).start()
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            return _NO_HELLO

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
            log_event(logging.WARNING, "peer.refused", rpc=rpc, address=context.peer(),
                      fingerprint=fp or "none", pinned=chan.peer.cert_fingerprint,
                      reason="certificate is not the pinned peer certificate")
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          "client certificate is not the pinned peer certificate")

    def Messages(self, request_iterator, context):  # noqa: N802 - gRPC name
        chan = self.chan
        self._authorize(context, "Messages")
        who = context.peer()
        limits = chan.settings.limits
        if not self._admit(context):
            self._log_refused(who)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{chan.local.party} already serves {limits.max_streams} message "
                          f"streams from {chan.peer.party} (limits.max_streams = "
                          f"{limits.max_streams})")
        first = self._first_frame(request_iterator, limits.hello_timeout_s)
        if first is None:
            return
        if first is _NO_HELLO:
            log_event(logging.WARNING, "stream.refused", address=who,
                      reason=repr(f"no hello within limits.hello_timeout_s = "
                                  f"{limits.hello_timeout_s}s"))
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"no hello within {limits.hello_timeout_s}s "
                          f"(limits.hello_timeout_s = {limits.hello_timeout_s})")
        if isinstance(first, memoryview) or not first.HasField("hello") \
                or not JOB_ID_RE.match(first.hello.job_id):
            log_event(logging.WARNING, "stream.refused", address=who, reason="bad hello")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "first frame must be a hello with a valid job id")
        h = first.hello
        if h.sender != chan.peer.party:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"hello sender {clip(repr(h.sender), 80)} is not the peer "
                          f"{chan.peer.party!r}")
        if h.protocol_version != PROTOCOL_VERSION:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"channel protocol version {h.protocol_version} unsupported "
                          f"(this node speaks {PROTOCOL_VERSION})")
        job, why = chan._job_for_peer(h.job_id)
        if job is None:
            log_event(logging.WARNING, "job.refused", job=h.job_id, address=who,
                      reason=repr(why))
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
            return pb.ControlReply(ok=False, error=f"sender {clip(repr(request.sender), 80)} "
                                                   f"is not the peer {chan.peer.party!r}")
        limits = chan.settings.limits
        try:
            kind = check_kind(request.kind)
            if len(request.body) > limits.max_control_bytes:
                raise ProtocolError(f"control body of {len(request.body)} bytes exceeds "
                                    f"limits.max_control_bytes = {limits.max_control_bytes}")
            body = decode_payload("json", request.body, limits.json)
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


def add_to_server(server: grpc.Server, chan: Host) -> Servicer:
    """Serve ``PeerLink`` for ``chan`` on ``server`` (data frames parsed zero-copy)."""
    servicer = Servicer(chan)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "fedjoint.channel.v1.PeerLink", {
            "Messages": grpc.stream_stream_rpc_method_handler(
                servicer.Messages, request_deserializer=parse_frame,
                response_serializer=pb.Reply.SerializeToString),
            "Control": grpc.unary_unary_rpc_method_handler(
                servicer.Control, request_deserializer=pb.ControlRequest.FromString,
                response_serializer=pb.ControlReply.SerializeToString),
        }),))
    return servicer
