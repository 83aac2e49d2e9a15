"""PeerChannel over real gRPC + mutual TLS on 127.0.0.1: messages, control, pinning."""

import logging

import grpc
import numpy as np
import pytest

from federation.channel import ChannelSettings, ControlError, ListRecorder, PeerChannel
from federation.channel import fedjoint_pb2 as pb
from federation.channel import fedjoint_pb2_grpc as pbg
from federation.channel.peer import PeerUnreachable
from federation.channel.testing import channel_pair, identities, make_keys
from federation.keys import make_self_signed_cert
from federation.link import Envelope, ProtocolError

FAST = ChannelSettings(heartbeat_interval=0.2, peer_deadline=3.0)


@pytest.fixture
def pair(tmp_path):
    recorders: dict = {}

    def factory(job_id):
        rec = ListRecorder()
        recorders.setdefault(job_id, []).append(rec)
        return rec

    a, b, ka, kb = channel_pair(tmp_path / "keys", settings=FAST, recorder_factory=factory)
    try:
        yield a, b, ka, kb, recorders
    finally:
        a.stop(0)
        b.stop(0)


def _raw_stub(keys_client: dict, keys_server: dict, port: int, cert_pem: bytes | None = None,
              key_pem: bytes | None = None):
    cert = cert_pem or open(keys_client["tls_cert"], "rb").read()
    key = key_pem or open(keys_client["tls_key"], "rb").read()
    root = open(keys_server["tls_cert"], "rb").read()
    ch = grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root, key, cert),
                             options=[("grpc.ssl_target_name_override", "fedjoint.peer")])
    return ch, pbg.PeerLinkStub(ch)


def test_payload_types_order_and_recorder(pair):
    a, b, ka, kb, recorders = pair
    la, lb = a.link("job-1"), b.link("job-1")
    la.send("t.json", {"n": 1, "s": "x"})
    la.send("t.arr", np.arange(12, dtype=np.int64).reshape(3, 4))
    la.send("t.bin", b"\x00" * 10)
    la.send("t.empty", b"")
    assert lb.recv_json("t.json") == {"n": 1, "s": "x"}
    np.testing.assert_array_equal(lb.recv_array("t.arr", dtype_kind="i", shape=(3, None)),
                                  np.arange(12).reshape(3, 4))
    assert lb.recv_bytes("t.bin") == b"\x00" * 10
    assert lb.recv_bytes("t.empty") == b""
    lb.send("t.reply", {"ok": True})
    assert la.recv_json("t.reply") == {"ok": True}
    assert la.flush(5)
    # every message was handed to both sides' recorders, signatures valid
    sent = [(d, e) for r in recorders["job-1"] for d, e, _ in r.items]
    assert sorted(e.seq for d, e in sent if d == "sent" and e.sender == "bank") == [1, 2, 3, 4]
    assert sorted(e.seq for d, e in sent if d == "received" and e.sender == "bank") == [1, 2, 3, 4]
    bank_pub = b.peer.signing_public_key
    for _d, e in sent:
        if e.sender == "bank":
            bank_pub.verify(e.signature, e.signing_bytes())
    la.close()
    lb.close()


def test_wrong_kind_fails_the_job_not_the_channel(pair):
    a, b, *_ = pair
    la, lb = a.link("job-k"), b.link("job-k")
    la.send("t.one", {"a": 1})
    with pytest.raises(ProtocolError, match="expected message 't.two'.*got 't.one'"):
        lb.recv("t.two")
    with pytest.raises(ProtocolError):
        lb.recv("t.two")
    # the peer learns the job was aborted
    with pytest.raises(ProtocolError, match="aborted"):
        la.recv("t.anything", timeout=5)
    l2a, l2b = a.link("job-k2"), b.link("job-k2")
    l2a.send("t.ok", b"fine")
    assert l2b.recv_bytes("t.ok", timeout=5) == b"fine"


def test_control_requests_and_check(pair):
    a, b, ka, kb, _ = pair

    def propose(body):
        if body["algorithm"] not in ("lr", "secureboost"):
            raise ControlError(f"algorithm {body['algorithm']!r} not allowed by policy")
        return {"accepted": True, "job_id": body["job_id"]}

    b.on_request("job.propose", propose)
    assert a.request("job.propose", {"algorithm": "lr", "job_id": "j"}) == {
        "accepted": True, "job_id": "j"}
    with pytest.raises(ControlError, match="not allowed by policy"):
        a.request("job.propose", {"algorithm": "nn", "job_id": "j"})
    with pytest.raises(ControlError, match="no handler"):
        a.request("job.unknown", {})
    res = a.check(count=3)
    assert res["ok"] and res["peer"] == "platform"
    assert res["peer_cert_fingerprint"] == kb["cert_fingerprint"]
    assert res["local_cert_fingerprint"] == ka["cert_fingerprint"]
    assert res["latency_ms"] > 0


def test_new_job_notification_and_filter(pair):
    a, b, *_ = pair
    seen = []
    b.on_new_job(seen.append)
    b.job_filter = lambda job_id: job_id.startswith("ok-") or "job not approved"
    la = a.link("ok-1")
    la.send("t.x", b"1")
    assert la.flush(5)
    assert seen == ["ok-1"]
    assert b.link("ok-1").recv_bytes("t.x") == b"1"
    bad = a.link("nope-1")
    with pytest.raises(ProtocolError, match="job not approved"):
        bad.recv("t.x", timeout=5)


def test_wrong_certificate_refused(pair, tmp_path, caplog):
    a, b, ka, kb, _ = pair
    mallory = make_keys(tmp_path / "m", "mallory")
    # 1. a stranger's self-signed certificate fails the TLS handshake
    ch, stub = _raw_stub(mallory, ka, a.port)
    with pytest.raises(grpc.RpcError) as ei:
        stub.Control(pb.ControlRequest(kind="channel.ping", sender="platform", body=b"{}"),
                     timeout=3)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    ch.close()
    # 2. a certificate that chains to the pinned one but is not it: refused by pinning
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    issuer_cert = x509.load_pem_x509_certificate(open(kb["tls_cert"], "rb").read())
    issuer_key = serialization.load_pem_private_key(open(kb["tls_key"], "rb").read(), None)
    child_key = ec.generate_private_key(ec.SECP256R1())
    child = make_self_signed_cert("platform-child", child_key, issuer_key=issuer_key,
                                  issuer_cert=issuer_cert)
    child_pem = child.public_bytes(serialization.Encoding.PEM)
    child_key_pem = child_key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    ch, stub = _raw_stub(kb, ka, a.port, child_pem, child_key_pem)
    with caplog.at_level(logging.WARNING, logger="fedjoint.channel"):
        with pytest.raises(grpc.RpcError) as ei:
            stub.Control(pb.ControlRequest(kind="channel.ping", sender="platform", body=b"{}"),
                         timeout=3)
    assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ch.close()
    line = next(r.getMessage() for r in caplog.records if "peer.refused" in r.getMessage())
    from federation.keys import cert_fingerprint
    assert cert_fingerprint(child_pem) in line and "address=ipv4:127.0.0.1" in line
    # 3. a node pinned to the wrong certificate cannot talk, and says what it saw
    la, _ = identities(ka, kb)
    _, pm = identities(ka, mallory)
    wrong = PeerChannel(la, pm, "127.0.0.1:0", f"127.0.0.1:{b.port}", settings=FAST).start()
    try:
        with caplog.at_level(logging.WARNING, logger="fedjoint.channel"):
            with pytest.raises(PeerUnreachable, match="presents certificate"):
                wrong.request("channel.ping", {}, timeout=3)
    finally:
        wrong.stop(0)
    # the real pair still works
    assert a.ping(1)["peer"] == "platform"


def test_plaintext_client_refused(pair):
    a, *_ = pair
    ch = grpc.insecure_channel(f"127.0.0.1:{a.port}")
    with pytest.raises(grpc.RpcError) as ei:
        pbg.PeerLinkStub(ch).Control(
            pb.ControlRequest(kind="channel.ping", sender="platform", body=b"{}"), timeout=3)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    ch.close()
    assert a.ping(1)["peer"] == "platform"


def test_envelope_signing_bytes_roundtrip():
    e = Envelope("j", 1, "bank", "k.x", "bin", 3, b"\x00" * 32, b"s" * 64)
    assert e.signing_bytes().startswith(b"fedjoint-envelope-v1\n")
