"""Channel faults over real gRPC + TLS: bad frames, cut streams, killed peers, 1 GiB."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.channel import MAX_CHUNK, ChannelSettings, ListRecorder, PeerChannel, frames
from federation.channel import fedjoint_pb2 as pb
from federation.channel import fedjoint_pb2_grpc as pbg
from federation.channel.testing import channel_pair, identities, make_keys
from federation.config.limits import Limits
from federation.keys import load_signing_key
from federation.link import Envelope, PeerGone, ProtocolError

FAST = ChannelSettings(heartbeat_interval=0.2, peer_deadline=3.0)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    a, b, ka, kb = channel_pair(tmp_path_factory.mktemp("keys"), settings=FAST)
    yield a, b, ka, kb
    a.stop(0)
    b.stop(0)


# ------------------------------------------------------------------ bad input


def _env(sk, job, seq, kind, ptype, data, length=None, sha=None, sender="platform"):
    e = Envelope(job, seq, sender, kind, ptype, len(data) if length is None else length,
                 sha or hashlib.sha256(data).digest())
    return pb.Envelope(job_id=job, seq=seq, sender=sender, kind=kind, ptype=ptype,
                       length=e.length, sha256=e.sha256, signature=sk.sign(e.signing_bytes()))


def _hello(job):
    return pb.Frame(hello=pb.Hello(job_id=job, sender="platform", protocol_version=1))


def _bad_cases(sk):
    big = b"\x01" * (MAX_CHUNK + 1)
    good = b'{"a":1}'
    min_chunk = b"\x02" * Limits().min_chunk_bytes
    other = Ed25519PrivateKey.generate()
    return {
        "oversized-chunk": ([pb.Frame(envelope=_env(sk, "J", 1, "t.x", "bin", big), data=big)],
                            "exceeds the 4194304-byte limit"),
        "too-long": ([pb.Frame(envelope=_env(sk, "J", 1, "t.x", "bin", b"12345", length=4),
                               data=b"12345")], "longer than the 4 bytes"),
        # (a first chunk of limits.min_chunk_bytes, so only the early end is wrong)
        "too-short": ([pb.Frame(envelope=_env(sk, "J", 1, "t.x", "bin", min_chunk,
                                              length=len(min_chunk) + 10), data=min_chunk),
                       pb.Frame(envelope=_env(sk, "J", 2, "t.x", "bin", b"1"), data=b"1")],
                      f"payload ended after {len(min_chunk)} of the {len(min_chunk) + 10} "
                      f"bytes"),
        "bad-signature": ([pb.Frame(envelope=_env(other, "J", 1, "t.x", "json", good),
                                    data=good)], "bad signature on seq 1"),
        "digest": ([pb.Frame(envelope=_env(sk, "J", 1, "t.x", "json", good, sha=b"\x00" * 32),
                             data=good)], "SHA-256 mismatch"),
        "unknown-ptype": ([pb.Frame(envelope=_env(sk, "J", 1, "t.x", "pickle", good),
                                    data=good)], "unknown payload type 'pickle'"),
        "bad-kind": ([pb.Frame(envelope=_env(sk, "J", 1, "Bad Kind!", "json", good),
                               data=good)], "invalid message kind"),
        "out-of-order": ([pb.Frame(envelope=_env(sk, "J", 1, "t.x", "json", good), data=good),
                          pb.Frame(envelope=_env(sk, "J", 3, "t.x", "json", good), data=good)],
                         "expected seq 2, got 3"),
        "wrong-sender": ([pb.Frame(envelope=_env(sk, "J", 1, "t.x", "json", good,
                                                 sender="bank"), data=good)],
                         "is not the peer"),
    }


CASES = list(_bad_cases(Ed25519PrivateKey.generate()))


@pytest.fixture(scope="module")
def bank_alone(tmp_path_factory):
    """A bank channel whose peer is played by a raw gRPC client holding the platform's
    (legitimately pinned) certificate and signing key; its own client side points at a
    closed port so nothing else ever streams into its jobs."""
    d = tmp_path_factory.mktemp("raw")
    ka, kb = make_keys(d, "bank"), make_keys(d, "platform")
    local, peer = identities(ka, kb)
    a = PeerChannel(local, peer, "127.0.0.1:0", "127.0.0.1:1",
                    settings=ChannelSettings(heartbeat_interval=0.2, peer_deadline=60)).start()
    yield a, ka, kb
    a.stop(0)


def _raw_stream(ka, kb, port, frames):
    ch = grpc.secure_channel(
        f"127.0.0.1:{port}",
        grpc.ssl_channel_credentials(open(ka["tls_cert"], "rb").read(),
                                     open(kb["tls_key"], "rb").read(),
                                     open(kb["tls_cert"], "rb").read()),
        options=[("grpc.ssl_target_name_override", "fedjoint.peer"),
                 ("grpc.max_send_message_length", 8 << 20)])
    try:
        return list(pbg.PeerLinkStub(ch).Messages(iter(frames), timeout=10))
    finally:
        ch.close()


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_only_that_job(bank_alone, case):
    a, ka, kb = bank_alone
    sk = load_signing_key(kb["signing_key"])
    frames, reason = _bad_cases(sk)[case]
    job = f"bad-{case}"
    for f in frames:  # put this case's job id into the (signed) envelopes
        if f.HasField("envelope"):
            e = f.envelope
            signer = sk if case != "bad-signature" else Ed25519PrivateKey.generate()
            f.envelope.CopyFrom(_env(signer, job, e.seq, e.kind, e.ptype, b"", length=e.length,
                                     sha=e.sha256, sender=e.sender))
    link = a.link(job)
    replies = _raw_stream(ka, kb, a.port, [_hello(job), *frames])
    errors = [r.error for r in replies if r.error]
    assert errors and reason in errors[0], (errors, reason)
    with pytest.raises(ProtocolError) as ei:
        link.recv("t.x", timeout=5)
    assert reason in str(ei.value)
    # the server survived and another job on the same channel works
    good = f"ok-after-{case}"
    ok = a.link(good)
    data = b'{"case":"%s"}' % case.encode()
    replies = _raw_stream(ka, kb, a.port, [
        _hello(good), pb.Frame(envelope=_env(sk, good, 1, "t.ok", "json", data), data=data)])
    assert not any(r.error for r in replies)
    assert ok.recv_json("t.ok", timeout=5) == {"case": case}


def test_bad_input_does_not_disturb_a_running_pair(pair):
    a, b, *_ = pair
    la, lb = a.link("steady"), b.link("steady")
    lb.send("t.ok", {"n": 1})
    assert la.recv_json("t.ok", timeout=10) == {"n": 1}


# ------------------------------------------------------------------ cut stream


class CuttableProxy:
    """TCP forwarder that can cut every live connection (it keeps listening)."""

    def __init__(self, target_port: int, cut_after: int | None = None):
        self.target = ("127.0.0.1", target_port)
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.forwarded = 0
        self.cut_after = cut_after
        self.cuts = 0
        self.lock = threading.Lock()
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            s = socket.create_connection(self.target)
            with self.lock:
                self.conns += [c, s]
            threading.Thread(target=self._pipe, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, False), daemon=True).start()

    def _pipe(self, src, dst, upstream):
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                dst.sendall(data)
                if upstream:
                    with self.lock:
                        self.forwarded += len(data)
                        trigger = self.cut_after is not None and self.forwarded > self.cut_after
                    if trigger:
                        self.cut_after = None
                        self.cut()
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        with self.lock:
            conns, self.conns = self.conns, []
            self.cuts += 1
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self):
        self.running = False
        self.srv.close()
        self.cut()


def test_cut_stream_resumes_without_loss_or_duplication(tmp_path):
    recs: dict = {}
    a, b, ka, kb = channel_pair(tmp_path, settings=FAST,
                                recorder_factory=lambda j: recs.setdefault(
                                    (len(recs), j), ListRecorder()))
    proxy = CuttableProxy(b.port, cut_after=24 << 20)
    a.peer_addr = f"127.0.0.1:{proxy.port}"  # bank -> platform goes through the proxy
    try:
        la, lb = a.link("cut-1"), b.link("cut-1")
        big = np.random.default_rng(1).bytes(64 << 20)
        for i in range(10):
            la.send("t.small", {"i": i})
        la.send("t.big", big)
        for i in range(10, 20):
            la.send("t.small", {"i": i})
        got = [lb.recv_json("t.small", timeout=20)["i"] for _ in range(10)]
        assert hashlib.sha256(lb.recv_bytes("t.big", timeout=30)).digest() == \
            hashlib.sha256(big).digest()
        got += [lb.recv_json("t.small", timeout=20)["i"] for _ in range(10)]
        assert got == list(range(20))
        assert la.flush(10)
        assert proxy.cuts >= 1
        assert lb.stats()["received"] == 21
        received = [e.seq for r in recs.values() for d, e, _ in r.items
                    if d == "received" and e.sender == "bank"]
        assert sorted(received) == list(range(1, 22))  # each delivered exactly once
    finally:
        proxy.close()
        a.stop(0)
        b.stop(0)


# ------------------------------------------------------------------ killed peer

CHILD = """
import json, os, sys, time
from federation.channel import ChannelSettings, PeerChannel
from federation.channel.testing import identities
ka, kb, port = json.loads(sys.argv[1])
local, peer = identities(kb, ka)
chan = PeerChannel(local, peer, "127.0.0.1:0", f"127.0.0.1:{port}",
                   settings=ChannelSettings(heartbeat_interval=0.2, peer_deadline=1.5)).start()
print(chan.port, flush=True)
chan.link("job-kill").send("t.ready", {"pid": os.getpid()})
time.sleep(120)
"""


def test_killed_peer_reported_within_deadline(tmp_path):
    ka, kb = make_keys(tmp_path, "bank"), make_keys(tmp_path, "platform")
    local, peer = identities(ka, kb)
    settings = ChannelSettings(heartbeat_interval=0.2, peer_deadline=1.5)
    a = PeerChannel(local, peer, "127.0.0.1:0", settings=settings).start()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps([ka, kb, a.port])],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        a.peer_addr = f"127.0.0.1:{int(proc.stdout.readline())}"
        link = a.link("job-kill")
        assert link.recv_json("t.ready", timeout=30)["pid"] == proc.pid
        link.send("t.work", b"x" * 1000)
        assert link.flush(10)
        proc.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(PeerGone, match="platform"):
            link.recv("t.result")
        elapsed = time.monotonic() - t0
        assert elapsed < settings.peer_deadline + 1.0, elapsed
        with pytest.raises(PeerGone):
            link.send("t.more", b"y")
    finally:
        proc.kill()
        proc.wait()
        a.stop(0)


# ------------------------------------------------------------------ 1 GiB


def test_one_gib_payload_intact(tmp_path):
    # above the default limits.max_message_bytes (256 MiB): this pair raises it
    big = ChannelSettings(heartbeat_interval=0.2, peer_deadline=3.0,
                          limits=Limits(max_message_bytes=1 << 30, max_job_buffer_bytes=1 << 30))
    a, b, *_ = channel_pair(tmp_path, settings=big)
    try:
        la, lb = a.link("big-1g"), b.link("big-1g")
        payload = np.random.default_rng(7).bytes(1 << 30)
        want = hashlib.sha256(payload).digest()
        la.send("t.huge", payload)
        got = lb.recv_bytes("t.huge", timeout=120)
        assert len(got) == 1 << 30 and hashlib.sha256(got).digest() == want
        del got
        assert la.flush(30)
        la.close()
        lb.close()
    finally:
        a.stop(0)
        b.stop(0)



def test_slow_reassembly_is_not_peer_silence(tmp_path, monkeypatch):
    """While the receiver reassembles a message whose data all arrived (seconds for a
    GiB on a slow machine; here stretched past the peer deadline) it reads no frames, so
    the peer's heartbeats wait in gRPC: that is not the peer going silent."""
    settings = ChannelSettings(heartbeat_interval=0.1, peer_deadline=1.0)
    reassemble = frames.Incoming.payload

    def slow_payload(self):
        time.sleep(1.5 * settings.peer_deadline)
        return reassemble(self)

    monkeypatch.setattr(frames.Incoming, "payload", slow_payload)
    a, b, *_ = channel_pair(tmp_path, settings=settings)
    try:
        la, lb = a.link("slow"), b.link("slow")
        la.send("t.slow", b"x" * 1000)
        assert lb.recv_bytes("t.slow", timeout=30) == b"x" * 1000
        assert la.flush(10)
        la.close()
        lb.close()
    finally:
        a.stop(0)
        b.stop(0)
