"""One party's end of the channel: :class:`PeerChannel`, the client side and its server.

``PeerChannel`` owns the gRPC server (mutual TLS: a client certificate is required and
only the pinned peer certificate is trusted as root; :mod:`.servicer` then compares the
presented certificate with the pin) and the client connection to the peer's server
(trusting only the pinned peer certificate, target name ``fedjoint.peer``). It opens
jobs (:meth:`PeerChannel.link` returns a :class:`GrpcLink`; the peer may open one that
``job_filter`` accepts), sends control requests and answers them with registered
handlers, and runs the watchdog that cancels client streams whose server went silent.
A peer that cannot be reached is reported with :class:`PeerUnreachable`, naming the
address, the gRPC error and, if the server there presents another certificate, its
fingerprint (:func:`probe_certificate`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc

import federation.channel.fedjoint_pb2 as pb
import federation.channel.fedjoint_pb2_grpc as pbg
from federation.channel.frames import serialize_frame
from federation.channel.servicer import add_to_server
from federation.channel.settings import (
    JOB_ID_RE,
    MAX_FRAME,
    PING_KIND,
    PROTOCOL_VERSION,
    ChannelSettings,
    ControlError,
    PeerUnreachable,
    log,
    log_event,
)
from federation.channel.stream import Job
from federation.keys import LocalIdentity, PeerIdentity, cert_fingerprint
from federation.link import (
    Link,
    MessageRecorder,
    Payload,
    PeerGone,
    ProtocolError,
    check_kind,
    decode_payload,
    encode_payload,
)

# PROTOCOL_VERSION, ChannelSettings and PeerUnreachable are imported from here elsewhere.
__all__ = ["PROTOCOL_VERSION", "ChannelSettings", "ControlError", "GrpcLink", "PeerChannel",
           "PeerUnreachable", "probe_certificate"]

_MESSAGES_METHOD = "/fedjoint.channel.v1.PeerLink/Messages"


class GrpcLink(Link):
    """The protocol-facing handle of one job over the gRPC channel (state in :class:`Job`)."""

    def __init__(self, job: Job):
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
        return self._job.flush(timeout)

    def abort(self, reason: str) -> None:
        """Fail the job locally and tell the peer why."""
        self._job.fail(ProtocolError(f"aborted by {self.party}: {reason}"))

    def close(self, timeout: float = 10.0) -> None:
        """Flush, tell the peer this side is done, and forget the job."""
        self._job.close(timeout)

    def interrupt(self, reason: str) -> None:
        """Fail the job locally without telling the peer (the node stops it to resume it
        from a checkpoint; the peer is told by the resume exchange)."""
        self._job.fail(PeerGone(f"interrupted on {self.party}: {reason}"), notify_peer=False)

    @property
    def failed(self) -> ProtocolError | None:
        return self._job.failed

    def stats(self) -> dict:
        j = self._job
        return {"sent": j.next_seq - 1, "acked": j.acked, "received": j.delivered,
                "unacked_bytes": j.unacked_bytes, "inbox_bytes": j.inbox_bytes,
                "buffered_bytes": j.buffered_bytes()}


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
        self._jobs: dict[str, Job] = {}
        self._closed_jobs: set[str] = set()
        self._resume_at: dict[str, tuple[int, int]] = {}   # job id -> (sent, received)
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._client: grpc.Channel | None = None
        self._stub_obj: pbg.PeerLinkStub | None = None
        self._stopping = False
        self._watchdog: threading.Thread | None = None
        self._servicer = None
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
        # one worker per stream the peer may hold (limits.max_streams) plus some that only
        # control calls can use; RPCs beyond a bounded queue are refused by gRPC itself
        workers = self.settings.server_workers
        server = grpc.server(futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="fedjoint-srv"),
            options=opts, maximum_concurrent_rpcs=4 * workers)
        self._servicer = add_to_server(server, self)
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
        log_event(logging.INFO, "channel.listening", party=self.local.party,
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
                        _MESSAGES_METHOD, request_serializer=serialize_frame,
                        response_deserializer=pb.Reply.FromString)
        return self._stub_obj

    def _messages_call(self):
        self._stub()
        return self._messages

    def _unreachable(self, exc: grpc.RpcError, what: str) -> PeerUnreachable:
        detail = self.settings.clip(exc.details() if hasattr(exc, "details") else str(exc))
        hint = ""
        try:
            presented = probe_certificate(self.peer_addr or "", self.local, timeout=2.0)
            if presented != self.peer.cert_fingerprint:
                hint = (f"; the server there presents certificate {presented}, but the pinned "
                        f"fingerprint is {self.peer.cert_fingerprint}")
                log_event(logging.WARNING, "peer.wrong_certificate", address=self.peer_addr,
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
                               f"{exc.code().name}: {self.settings.clip(exc.details())}"
                               ) from None
        if not rep.ok:
            raise ControlError(self.settings.clip(rep.error))
        try:
            return decode_payload("json", rep.body,  # type: ignore[return-value]
                                  self.settings.limits.json)
        except ProtocolError as exc:
            raise ControlError(f"control request {kind}: {self.peer.party} answered with "
                               f"{exc}") from None

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

    def _job_for_peer(self, job_id: str) -> tuple[Job | None, str]:
        return self._get_job(job_id, from_peer=True)

    def _get_job(self, job_id: str, from_peer: bool) -> tuple[Job | None, str]:
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
            job = Job(self, job_id, recorder)
            sent, received = self._resume_at.pop(job_id, (0, 0))
            job.next_seq, job.acked, job.cursor, job.delivered = \
                sent + 1, sent, sent + 1, received
            self._jobs[job_id] = job
            job.pump.start()
        log_event(logging.INFO, "job.opened", job=job_id, by="peer" if from_peer else "local")
        if from_peer:
            for cb in self._new_job_callbacks:
                try:
                    cb(job_id)
                except Exception:  # noqa: BLE001
                    log.exception("job.new_callback_error job=%s", job_id)
        return job, ""

    def expect_resume(self, job_id: str, sent: int, received: int) -> None:
        """Reopen a closed job resumed from a checkpoint: its stream numbers messages
        from ``sent + 1`` and expects the peer's from ``received + 1`` (the checkpoint's
        counts, federation.transcript.restarts), whichever side opens it first."""
        with self._lock:
            if job_id in self._jobs:
                raise ValueError(f"job {job_id} is still open on this channel")
            self._closed_jobs.discard(job_id)
            self._resume_at[job_id] = (int(sent), int(received))

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
            self._closed_jobs.add(job_id)

    def jobs(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    @property
    def open_streams(self) -> int:
        """Message streams the peer holds open to this node now (at most
        ``limits.max_streams``)."""
        return self._servicer.streams if self._servicer is not None else 0

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
                    log_event(logging.WARNING, "stream.silent", job=job.job_id,
                              peer=self.peer_addr, seconds=round(now - job.out_last_reply, 1))
                    call.cancel()
                if job.failed is None and now - job.in_last_seen > self.settings.peer_deadline:
                    with job.lock:
                        job.in_cv.notify_all()
