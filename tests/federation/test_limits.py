"""node.toml [limits]: every limit, hit over real gRPC + TLS on 127.0.0.1 (or the real
admin endpoint), fails only the offending job or connection with a reason naming its
key, and the node still answers a ping and runs another job afterwards.

The peer is played by a raw gRPC client holding the platform's (legitimately pinned)
certificate and signing key: these are attacks by an authenticated peer, or by anyone
who stole its keys. docs/threat-model.md maps each test to the attack it stands for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re
import socket
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from federation.admin import AdminClient, AdminServer
from federation.channel import ChannelSettings, ControlError, PeerChannel
from federation.channel import fedjoint_pb2 as pb
from federation.channel import fedjoint_pb2_grpc as pbg
from federation.channel.settings import CONTROL_WORKERS
from federation.channel.testing import identities, make_keys
from federation.config import ConfigError, load_node_config, node_config_from_dict
from federation.config.limits import KEYS, Limits
from federation.config.toml import tomllib
from federation.keys import load_signing_key
from federation.link import Envelope, ProtocolError, decode_payload
from federation.link.codec import JSON_LIMITS, JsonLimits

ROOT = Path(__file__).resolve().parents[2]
HB = 0.2


# ------------------------------------------------------------------ harness


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits-keys")
    return make_keys(d, "bank"), make_keys(d, "platform")


def _alone(keys, limits: Limits) -> PeerChannel:
    """A bank channel whose only client is the test's raw one; its own client side points
    at a closed port so nothing else streams into its jobs."""
    ka, kb = keys
    local, peer = identities(ka, kb)
    return PeerChannel(local, peer, "127.0.0.1:0", "127.0.0.1:1", settings=ChannelSettings(
        heartbeat_interval=HB, peer_deadline=60, limits=limits)).start()


@pytest.fixture(scope="module")
def bank(keys):
    """Default limits."""
    a = _alone(keys, Limits())
    yield a
    a.stop(0)


@pytest.fixture(scope="module")
def tight(keys):
    """Few streams and a short hello timeout, so the tests are quick."""
    a = _alone(keys, Limits(max_streams=4, hello_timeout_s=1.0))
    yield a
    a.stop(0)


class Peer:
    """The platform, played by hand: raw frames and control calls to ``chan``."""

    def __init__(self, keys, chan: PeerChannel):
        ka, kb = keys
        self.chan = chan
        self.sk = load_signing_key(kb["signing_key"])
        self.channel = grpc.secure_channel(
            f"127.0.0.1:{chan.port}",
            grpc.ssl_channel_credentials(Path(ka["tls_cert"]).read_bytes(),
                                         Path(kb["tls_key"]).read_bytes(),
                                         Path(kb["tls_cert"]).read_bytes()),
            options=[("grpc.ssl_target_name_override", "fedjoint.peer"),
                     ("grpc.max_send_message_length", 8 << 20)])
        self.stub = pbg.PeerLinkStub(self.channel)

    def close(self):
        self.channel.close()

    def env(self, job, seq, kind, ptype, data, length=None):
        e = Envelope(job, seq, "platform", kind, ptype, len(data) if length is None else length,
                     hashlib.sha256(data).digest())
        return pb.Envelope(job_id=job, seq=seq, sender="platform", kind=kind, ptype=ptype,
                           length=e.length, sha256=e.sha256,
                           signature=self.sk.sign(e.signing_bytes()))

    @staticmethod
    def hello(job):
        return pb.Frame(hello=pb.Hello(job_id=job, sender="platform", protocol_version=1))

    def stream(self, frames) -> list[str]:
        """Send ``frames`` on one stream; the errors the node replied with."""
        return [r.error for r in self.stub.Messages(iter(frames), timeout=20) if r.error]

    def message(self, job, kind, ptype, data) -> list[str]:
        return self.stream([self.hello(job),
                            pb.Frame(envelope=self.env(job, 1, kind, ptype, data), data=data)])

    def ping(self, echo=7) -> None:
        rep = self.stub.Control(pb.ControlRequest(
            kind="channel.ping", sender="platform", body=json.dumps({"echo": echo}).encode()),
            timeout=5)
        assert rep.ok and json.loads(rep.body)["echo"] == echo, rep

    def serves(self, tag: str) -> None:
        """The node still answers a ping and runs another job."""
        self.ping()
        job = f"after-{tag}"
        link = self.chan.link(job)
        assert self.message(job, "t.ok", "json", b'{"ok":1}') == []
        assert link.recv_json("t.ok", timeout=5) == {"ok": 1}


@pytest.fixture
def peer(keys, bank):
    p = Peer(keys, bank)
    yield p
    p.close()


@pytest.fixture
def tight_peer(keys, tight):
    p = Peer(keys, tight)
    yield p
    p.close()


def _failed_with(link, *words) -> str:
    with pytest.raises(ProtocolError) as ei:
        link.recv("t.x", timeout=5)
    msg = str(ei.value)
    for w in words:
        assert w in msg, (w, msg)
    return msg


# ------------------------------------------------------------------ the one place


def test_defaults_are_safe_and_shared():
    lim = Limits()
    assert lim.max_message_bytes == 256 << 20 and lim.max_job_buffer_bytes >= 256 << 20
    assert lim.json == JSON_LIMITS  # the decoder's defaults are the node's defaults
    s = ChannelSettings()
    assert s.limits == lim and s.max_message_bytes == lim.max_message_bytes
    assert s.server_workers == lim.max_streams + CONTROL_WORKERS
    with pytest.raises(ValueError, match=r"limits\.max_job_buffer_bytes .*max_message_bytes"):
        Limits(max_message_bytes=1 << 30)
    with pytest.raises(ValueError, match=r"chunk_size .*limits\.min_chunk_bytes"):
        ChannelSettings(chunk_size=1024)


NODE = {
    "node": {"party": "bank", "name": "bank-a", "listen": "127.0.0.1:7443",
             "data_dir": "state"},
    "keys": {"tls_key": "k", "tls_cert": "c", "signing_key": "s"},
    "peer": {"name": "platform-b", "address": "127.0.0.1:7444",
             "cert_fingerprint": "ab" * 32, "cert": "p.crt", "signing_public_key": "cd" * 32},
}


def _node(limits: dict | None):
    raw = dict(NODE, limits=limits) if limits is not None else dict(NODE)
    return node_config_from_dict(raw, "node.toml", base=Path("."))


def test_limits_table_parsed_and_errors_name_the_key():
    assert _node(None).limits == Limits()
    cfg = _node({"max_streams": 5, "hello_timeout_s": 2, "max_json_depth": 8})
    assert cfg.limits == Limits(max_streams=5, hello_timeout_s=2.0, max_json_depth=8)
    bad = [({"max_stream": 5}, r"\[limits\] unknown key 'max_stream'; did you mean "
                               r"'max_streams'\?"),
           ({"max_streams": 0}, r"node\.toml: limits\.max_streams = 0: expected an integer "
                                r"in 1\.\.1024"),
           ({"max_message_bytes": "1GiB"}, r"limits\.max_message_bytes = '1GiB': expected an "
                                           r"integer"),
           ({"hello_timeout_s": -1}, r"limits\.hello_timeout_s = -1.0: expected a number of "
                                     r"seconds"),
           ({"max_message_bytes": 1 << 30}, r"limits\.max_job_buffer_bytes = 536870912: must "
                                            r"be at least limits\.max_message_bytes"),
           ({"max_json_int_digits": 10_000}, r"limits\.max_json_int_digits = 10000"),
           ({"max_logged_chars": True}, r"limits\.max_logged_chars = True: expected an "
                                        r"integer")]
    for table, match in bad:
        with pytest.raises(ConfigError, match=match):
            _node(table)


def test_examples_and_docs_document_every_key_with_its_default():
    defaults = dataclasses.asdict(Limits())
    for party in ("bank", "platform"):
        path = ROOT / "examples" / "credit_risk" / party / "node.toml"
        table = tomllib.loads(path.read_text())["limits"]
        assert table == defaults, path
    text = (ROOT / "docs" / "channel.md").read_text()
    threat = (ROOT / "docs" / "threat-model.md").read_text()
    for key in KEYS:
        assert f"`{key}`" in text, key
        assert f"limits.{key}" in threat, key
    tests = "".join(p.read_text() for p in sorted((ROOT / "tests").rglob("test_*.py")))
    named = re.findall(r"`(test_\w+)`", threat)
    assert len(named) >= 15 and all(f"def {t}(" in tests for t in named), named


def test_node_toml_limits_reach_the_channel_and_the_admin_endpoint(tmp_path):
    from support.nodes import write_node_tomls

    from federation.node import Node
    bank_toml, _ = write_node_tomls(tmp_path)
    with open(bank_toml, "a") as fh:
        fh.write("\n[limits]\nmax_streams = 3\nadmin_max_request_bytes = 2048\n"
                 "max_message_bytes = 1048576\nmax_job_buffer_bytes = 2097152\n")
    cfg = load_node_config(bank_toml)
    node = Node(cfg, quiet=True).start()
    try:
        assert node.channel.settings.limits == cfg.limits
        assert node.channel.settings.server_workers == 3 + CONTROL_WORKERS
        # a 4 KiB admin request: fine by default, refused by this node.toml
        code, body = _admin_raw(node.admin, b"x" * 4096)
        assert code == 413 and "limits.admin_max_request_bytes = 2048" in body["error"]
    finally:
        node.stop()


# ------------------------------------------------------------------ message size


def test_oversized_announce_fails_only_that_job(bank, peer):
    link = bank.link("huge-announce")
    chunk = b"\x00" * (64 << 10)
    errors = peer.stream([peer.hello("huge-announce"), pb.Frame(
        envelope=peer.env("huge-announce", 1, "t.x", "bin", chunk, length=2 << 30),
        data=chunk)])
    assert errors and "announced length 2147483648 exceeds limits.max_message_bytes = " \
                      "268435456" in errors[0]
    _failed_with(link, "limits.max_message_bytes")
    peer.serves("huge-announce")


def _pair(tmp_path, sa: ChannelSettings, sb: ChannelSettings):
    ka, kb = make_keys(tmp_path, "bank"), make_keys(tmp_path, "platform")
    a = PeerChannel(*identities(ka, kb), "127.0.0.1:0", settings=sa).start()
    b = PeerChannel(*identities(kb, ka), "127.0.0.1:0", f"127.0.0.1:{a.port}",
                    settings=sb).start()
    a.peer_addr = f"127.0.0.1:{b.port}"
    return a, b


def test_sender_and_receiver_each_apply_their_own_message_limit(tmp_path):
    small = Limits(max_message_bytes=1 << 20, max_job_buffer_bytes=1 << 20)
    big = Limits(max_message_bytes=4 << 20, max_job_buffer_bytes=4 << 20)
    a, b = _pair(tmp_path, ChannelSettings(heartbeat_interval=HB, peer_deadline=5, limits=big),
                 ChannelSettings(heartbeat_interval=HB, peer_deadline=5, limits=small))
    try:
        with pytest.raises(ValueError, match=r"limits\.max_message_bytes = 1048576"):
            b.link("own").send("t.big", b"x" * ((1 << 20) + 1))
        la, lb = a.link("theirs"), b.link("theirs")
        la.send("t.x", b"y" * (2 << 20))  # within the bank's limit, above the platform's
        _failed_with(lb, "announced length 2097152 exceeds limits.max_message_bytes = 1048576")
        with pytest.raises(ProtocolError, match="platform rejected job theirs: .*limits"
                                                r"\.max_message_bytes"):
            la.flush(10)
        la2, lb2 = a.link("fits"), b.link("fits")
        la2.send("t.ok", b"z" * (1 << 20))
        assert lb2.recv_bytes("t.ok", timeout=10) == b"z" * (1 << 20)
        assert a.ping(1)["peer"] == "platform"
    finally:
        a.stop(0)
        b.stop(0)


def test_job_buffer_bounds_what_a_job_holds(tmp_path):
    lim = Limits(max_message_bytes=1 << 20, max_job_buffer_bytes=2 << 20)
    s = ChannelSettings(heartbeat_interval=HB, peer_deadline=5, limits=lim)
    a, b = _pair(tmp_path, s, s)
    try:
        la, lb = a.link("buffer"), b.link("buffer")
        blobs = [bytes([i]) * (1 << 20) for i in range(8)]
        for blob in blobs:
            la.send("t.blob", blob)
        time.sleep(1.5)  # let the receiver take all it will take without a recv
        held = lb.stats()["buffered_bytes"]
        assert held <= lim.max_job_buffer_bytes, held
        assert lb.stats()["received"] < len(blobs)
        assert [lb.recv_bytes("t.blob", timeout=10) for _ in blobs] == blobs
        assert la.flush(10)
    finally:
        a.stop(0)
        b.stop(0)


# ------------------------------------------------------------------ chunk floods


def test_tiny_chunk_flood_fails_the_job(bank, peer):
    job = "tiny-first"
    link = bank.link(job)
    errors = peer.stream([peer.hello(job), pb.Frame(
        envelope=peer.env(job, 1, "t.x", "bin", b"", length=1 << 20), data=b"x")])
    assert errors and "chunk of 1 bytes before the end of the message" in errors[0]
    _failed_with(link, "limits.min_chunk_bytes = 65536")
    # the same after a proper first chunk, in data-only frames (the receiver's fast path)
    job = "tiny-later"
    link = bank.link(job)
    first = b"a" * (64 << 10)
    errors = peer.stream([peer.hello(job), pb.Frame(
        envelope=peer.env(job, 1, "t.x", "bin", first, length=1 << 20), data=first),
        *[pb.Frame(data=b"b") for _ in range(1000)]])
    assert errors and "chunk of 1 bytes before the end" in errors[0]
    _failed_with(link, "limits.min_chunk_bytes")
    # a short last chunk is what every message ends with: accepted
    job = "short-last"
    link = bank.link(job)
    data = first + b"z"
    assert peer.stream([peer.hello(job), pb.Frame(
        envelope=peer.env(job, 1, "t.ok", "bin", data), data=first),
        pb.Frame(data=b"z")]) == []
    assert link.recv_bytes("t.ok", timeout=5) == data
    peer.serves("tiny-chunks")


# ------------------------------------------------------------------ streams


def _idle_streams(stub, n: int, first=None):
    """``n`` streams that send ``first(i)`` (or nothing) and then nothing until released;
    returns (calls, outcomes {i: (code, details)}, release)."""
    release = threading.Event()
    outcomes: dict = {}
    lock = threading.Lock()

    def frames(i):
        if first is not None:
            yield first(i)
        release.wait(60)

    def done(i):
        def cb(call):
            with lock:
                outcomes[i] = (call.code(), call.details())
        return cb

    calls = []
    for i in range(n):
        c = stub.Messages(frames(i), timeout=60)
        c.add_done_callback(done(i))
        calls.append(c)
    return calls, outcomes, release


def _wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _drop(calls, release):
    release.set()
    for c in calls:
        c.cancel()


def test_idle_streams_before_hello_do_not_pin_the_server(bank, peer):
    """The reported attack: ~70 authenticated streams that never say hello pinned every
    gRPC worker, and pings timed out. Default limits."""
    cap = bank.settings.limits.max_streams
    calls, outcomes, release = _idle_streams(peer.stub, 70)
    try:
        assert _wait_for(lambda: len(outcomes) >= 70 - cap, 15), len(outcomes)
        refused = list(outcomes.values())
        assert all(code == grpc.StatusCode.RESOURCE_EXHAUSTED for code, _ in refused), refused
        assert any(f"limits.max_streams = {cap}" in d for _, d in refused), refused
        peer.ping()  # answered while the admitted streams still wait for their hello
        assert bank.open_streams == cap
    finally:
        _drop(calls, release)
    assert _wait_for(lambda: bank.open_streams == 0, 10)
    peer.serves("idle-flood")


def test_stream_without_hello_is_dropped_after_the_timeout(tight, tight_peer):
    calls, outcomes, release = _idle_streams(tight_peer.stub, 2)
    try:
        assert _wait_for(lambda: len(outcomes) == 2, 10), outcomes
        for code, details in outcomes.values():
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "no hello within 1.0s (limits.hello_timeout_s = 1.0)" in details
    finally:
        _drop(calls, release)
    # a slow one: its hello comes after the timeout
    def slow():
        time.sleep(2.5)
        yield Peer.hello("slow-hello")
    with pytest.raises(grpc.RpcError) as ei:
        list(tight_peer.stub.Messages(slow(), timeout=10))
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "slow-hello" not in tight.jobs()
    tight_peer.serves("no-hello")


def test_stream_flood_after_hello_is_capped(tight, tight_peer):
    """Streams that did say hello (one per job, as a real sender opens them) and then
    idle, heartbeats answered: no more than limits.max_streams at once."""
    cap = tight.settings.limits.max_streams
    calls, outcomes, release = _idle_streams(tight_peer.stub, cap + 6,
                                             lambda i: Peer.hello(f"flood-{i}"))
    try:
        assert _wait_for(lambda: len(outcomes) >= 6, 10), outcomes
        time.sleep(1.5)  # past limits.hello_timeout_s: the admitted ones are still open
        assert len(outcomes) == 6 and tight.open_streams == cap, outcomes
        assert all(c == grpc.StatusCode.RESOURCE_EXHAUSTED and "limits.max_streams" in d
                   for c, d in outcomes.values()), outcomes
        tight_peer.ping()
    finally:
        _drop(calls, release)
    assert _wait_for(lambda: tight.open_streams == 0, 10)
    tight_peer.serves("stream-flood")


# ------------------------------------------------------------------ JSON


BOMBS = {
    "deep-nesting": (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                     "nested deeper than limits.max_json_depth = 32"),
    "just-too-deep": (b'{"a":' + b"[" * 32 + b"]" * 32 + b"}",
                      "nested deeper than limits.max_json_depth = 32"),
    "huge-integer": (b'{"a":' + b"7" * 5000 + b"}",
                     "integer of 5000 digits; limits.max_json_int_digits = 64"),
    "integer-above-limit": (b'{"a":-' + b"7" * 65 + b"}", "limits.max_json_int_digits = 64"),
    "infinite-float": (b'{"a":1e999}', "out of range"),
    "nan": (b'{"a":NaN}', "contains NaN"),
    "not-an-object": (b"[1]", "must be an object"),
    "too-big": (b'{"a":"' + b"x" * (16 << 20) + b'"}', "exceeds limits.max_json_bytes = "
                                                        "16777216"),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_json_bombs_are_protocol_errors(case):
    data, reason = BOMBS[case]
    with pytest.raises(ProtocolError, match=reason.replace(".", r"\.")):
        decode_payload("json", data)


def test_json_within_limits_decodes():
    ok = (b'{"a":' + b"[" * 31 + b"]" * 31 + b', "n":-' + b"9" * 64 + b', "f":1.5e-300, '
          b'"s":"' + b"9" * 5000 + b'"}')
    obj = decode_payload("json", ok)
    assert obj["n"] == -int("9" * 64) and obj["s"] == "9" * 5000
    tight = JsonLimits(max_bytes=64, max_depth=2, max_int_digits=3)
    with pytest.raises(ProtocolError, match="max_json_depth = 2"):
        decode_payload("json", b'{"a":[[1]]}', tight)
    with pytest.raises(ProtocolError, match="max_json_int_digits = 3"):
        decode_payload("json", b'{"a":1234}', tight)


def test_npy_header_must_match_its_data():
    buf = io.BytesIO()
    np.save(buf, np.arange(10))
    good = buf.getvalue()
    assert decode_payload("npy", good).tolist() == list(range(10))
    huge = good.replace(b"(10,)", b"(10000000000000,)")  # 80 TB announced, 80 B sent
    for bad, reason in ((huge, "80000000000000 bytes"), (good[:-1], "but 79 bytes follow"),
                        (good + b"x", "but 81 bytes follow"),
                        (b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 70000, "malformed npy")):
        with pytest.raises(ProtocolError, match=reason):
            decode_payload("npy", bad)


@pytest.mark.parametrize("case", ["deep-nesting", "huge-integer", "infinite-float"])
def test_json_bomb_message_fails_only_that_job(bank, peer, case):
    data, reason = BOMBS[case]
    job = f"bomb-{case}"
    link = bank.link(job)
    assert peer.message(job, "t.x", "json", data) == []  # well-formed frames: delivered
    msg = _failed_with(link, reason, "t.x (seq 1) from platform")
    assert "internal error" not in msg
    peer.serves(f"bomb-{case}")


def test_json_bomb_control_request_is_refused(bank, peer):
    for body, reason in ((BOMBS["deep-nesting"][0], "limits.max_json_depth"),
                         (BOMBS["huge-integer"][0], "limits.max_json_int_digits"),
                         (b'{"a":"' + b"x" * (1 << 20) + b'"}',
                          "exceeds limits.max_control_bytes = 1048576")):
        rep = peer.stub.Control(pb.ControlRequest(kind="channel.ping", sender="platform",
                                                  body=body), timeout=5)
        assert not rep.ok and reason in rep.error, rep.error[:300]
    peer.serves("control-bomb")


# ------------------------------------------------------------------ logged text


def test_long_abort_reason_is_clipped_in_logs_and_errors(bank, peer, caplog):
    job = "long-abort"
    link = bank.link(job)
    reason = "A" * (1 << 20)
    with caplog.at_level(logging.INFO, logger="fedjoint.channel"):
        peer.stream([peer.hello(job), pb.Frame(abort=reason)])
        msg = _failed_with(link, "platform aborted job long-abort: AAAA",
                           "more characters cut, limits.max_logged_chars")
    cap = bank.settings.limits.max_logged_chars
    assert len(msg) < cap + 200, len(msg)
    lines = [r.getMessage() for r in caplog.records]
    assert any("job.failed job=long-abort" in m for m in lines), lines
    assert max(len(m) for m in lines) < cap + 400
    # a hello with a megabyte of sender name: refused, the name clipped
    with pytest.raises(grpc.RpcError) as ei:
        list(peer.stub.Messages(iter([pb.Frame(hello=pb.Hello(
            job_id="long-sender", sender="S" * (1 << 20), protocol_version=1))]), timeout=5))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(ei.value.details()) < 300
    peer.serves("long-abort")


class _Liar(pbg.PeerLinkServicer):
    """A peer server answering with megabyte-long errors."""

    def Messages(self, request_iterator, context):  # noqa: N802
        next(request_iterator)
        yield pb.Reply(hello=True, ack=0)
        yield pb.Reply(error="E" * (1 << 20))

    def Control(self, request, context):  # noqa: N802
        return pb.ControlReply(ok=False, error="C" * (1 << 20))


def test_long_errors_from_the_peer_server_are_clipped(keys):
    ka, kb = keys
    server = grpc.server(futures.ThreadPoolExecutor(4),
                         options=[("grpc.max_send_message_length", 8 << 20)])
    pbg.add_PeerLinkServicer_to_server(_Liar(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(Path(kb["tls_key"]).read_bytes(), Path(kb["tls_cert"]).read_bytes())],
        root_certificates=Path(ka["tls_cert"]).read_bytes(), require_client_auth=True))
    server.start()
    local, peer_id = identities(ka, kb)
    chan = PeerChannel(local, peer_id, "127.0.0.1:0", f"127.0.0.1:{port}",
                       settings=ChannelSettings(heartbeat_interval=HB, peer_deadline=5)).start()
    try:
        cap = chan.settings.limits.max_logged_chars
        with pytest.raises(ControlError) as ei:
            chan.request("t.question", {})
        assert len(str(ei.value)) < cap + 100 and "limits.max_logged_chars" in str(ei.value)
        link = chan.link("liar")
        link.send("t.x", b"1")
        with pytest.raises(ProtocolError) as ei:
            link.flush(10)
        assert "platform rejected job liar: EEEE" in str(ei.value)
        assert len(str(ei.value)) < cap + 200
    finally:
        chan.stop(0)
        server.stop(0)


# ------------------------------------------------------------------ admin endpoint


@pytest.fixture
def admin(tmp_path):
    events: list = []
    srv = AdminServer("127.0.0.1", 0, tmp_path, {"ping": lambda a: {"pong": a.get("n")}},
                      log=lambda e, f: events.append((e, f)),
                      limits=Limits(admin_timeout_s=1.0, admin_max_request_bytes=4096))
    srv.start()
    srv.events = events
    yield srv
    srv.stop()


def _connect(srv: AdminServer) -> socket.socket:
    host, port = srv.address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _headers(srv: AdminServer, length: int) -> bytes:
    return (f"POST /v1/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def _read_reply(s: socket.socket) -> tuple[int, dict]:
    f = s.makefile("rb")
    status = f.readline()
    length = 0
    while (line := f.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        if k.lower() == "content-length":
            length = int(v)
    return int(status.split()[1]), json.loads(f.read(length))


def _admin_raw(srv: AdminServer, body: bytes) -> tuple[int, dict]:
    with _connect(srv) as s:
        s.sendall(_headers(srv, len(body)))
        return _read_reply(s)


def _closed_by_server(s: socket.socket, within: float, trickle: bytes = b"") -> bool:
    """True if the server closes ``s`` within ``within`` seconds while we send it
    ``trickle`` one byte every 0.1 s (or nothing)."""
    end = time.monotonic() + within
    s.settimeout(0.1)
    i = 0
    while time.monotonic() < end:
        try:
            if s.recv(1 << 16) == b"":
                return True
        except TimeoutError:
            pass
        except OSError:
            return True
        if i < len(trickle):
            try:
                s.send(trickle[i:i + 1])
            except OSError:
                return True
            i += 1
    return False


def test_admin_oversized_request_is_refused(admin):
    code, body = _admin_raw(admin, b"")  # headers only: the body is never read
    assert code == 200
    with _connect(admin) as s:
        s.sendall(_headers(admin, 10 << 20))
        code, body = _read_reply(s)
    assert code == 413
    assert body["error"] == ("request of 10485760 bytes exceeds "
                             "limits.admin_max_request_bytes = 4096")
    assert AdminClient(admin.data_dir).call("ping", n=1) == {"pong": 1}


def test_admin_json_bomb_is_a_clear_400(admin):
    with _connect(admin) as s:
        body = b"[" * 2000 + b"]" * 2000
        s.sendall(_headers(admin, len(body)) + body)
        code, reply = _read_reply(s)
    assert code == 400 and "limits.max_json_depth" in reply["error"]
    assert AdminClient(admin.data_dir).call("ping", n=2) == {"pong": 2}


def test_admin_slow_connections_are_closed(admin):
    client = AdminClient(admin.data_dir)
    with _connect(admin) as idle:
        assert client.call("ping", n=3) == {"pong": 3}  # served meanwhile
        assert _closed_by_server(idle, 5)
    # bytes trickling in faster than any per-read timeout: closed at the deadline
    with _connect(admin) as trickle:
        assert _closed_by_server(trickle, 5, _headers(admin, 2) + b"{}")
    # a body that stops half way: 408 naming the limit
    with _connect(admin) as body:
        body.sendall(_headers(admin, 100) + b'{"n":')
        code, reply = _read_reply(body)
        assert code == 408 and "limits.admin_timeout_s = 1.0" in reply["error"]
    assert any(e == "admin.refused" and "limits.admin_timeout_s" in f["reason"]
               for e, f in admin.events), admin.events
    assert client.call("ping", n=4) == {"pong": 4}


def test_max_classes_is_a_configured_limit(tmp_path):
    """limits.max_classes: node.toml -> the loader's bound and the roles' policy."""
    import pandas as pd
    from support.nodes import write_node_tomls

    from federation.config import DatasetConfig, load_node_config
    from federation.data import DataError, load_dataset
    from federation.policy import role_policy
    assert Limits().max_classes == 64
    with pytest.raises(ValueError, match="limits.max_classes"):
        Limits(max_classes=1)
    _, platform_toml = write_node_tomls(tmp_path)
    with open(platform_toml, "a") as fh:
        fh.write("\n[limits]\nmax_classes = 4\n")
    node = load_node_config(platform_toml)
    assert node.limits.max_classes == 4 and role_policy(node).max_classes == 4
    path = tmp_path / "m.csv"
    pd.DataFrame({"id": [f"e{i}" for i in range(10)], "y": list(range(5)) * 2,
                  "x": np.arange(10.0)}).to_csv(path, index=False)
    ds = DatasetConfig(name="m", path=str(path), id_column="id", label_column="y")
    with pytest.raises(DataError, match=r"5 distinct classes, more than "
                                         r"limits.max_classes = 4"):
        load_dataset(ds, label_kind="multiclass", max_classes=node.limits.max_classes)
    assert len(load_dataset(ds, label_kind="multiclass", max_classes=5).classes) == 5
