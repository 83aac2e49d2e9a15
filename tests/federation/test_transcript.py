"""The transcript writer: format, hash chain, signatures, sidecar, ledger, misuse."""

import json
import stat

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support.transcripts import BANK, PLATFORM, make_parties, run_job

from federation import audit
from federation.link import Envelope, declare_disclosures, encode_payload
from federation.transcript import (
    FORMAT,
    VERSION,
    TranscriptError,
    TranscriptWriter,
    canonical,
    load,
    sha256_hex,
    sidecar_path,
)


def test_format_chain_and_payload_free(tmp_path):
    bank, platform = make_parties()
    tb, tp = run_job(tmp_path, "job-fmt", bank, platform)
    for path, me, other in ((tb, bank, platform), (tp, platform, bank)):
        raw = path.read_bytes()
        assert raw.endswith(b"\n")
        lines = raw.split(b"\n")[:-1]
        recs = [json.loads(x) for x in lines]
        assert [canonical(r) for r in recs] == lines            # canonical JSON lines
        assert recs[0]["type"] == "job" and recs[0]["format"] == FORMAT
        assert recs[0]["v"] == VERSION and recs[0]["prev"] == "0" * 64
        assert recs[0]["party"] == me.name and recs[0]["peer"] == other.name
        for a, b, r in zip(lines, lines[1:], recs[1:], strict=False):
            assert r["prev"] == sha256_hex(a)                    # the hash chain
            del b
        assert recs[-1]["type"] == "outcome"
        assert set(recs[-1]["statements"]) == {BANK, PLATFORM}
        # digests only: no payload bytes or data values in the transcript itself
        assert all("data" not in r and "payload" not in r for r in recs)
        sent = [r for r in recs if r.get("type") == "msg" and r["dir"] == "sent"]
        assert all("at" not in r for r in sent)                 # nothing kept of sent
        # files are private to the party
        for p in (path, sidecar_path(path)):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600
        # the sidecar holds exactly the received payloads, in order
        side = sidecar_path(path).read_bytes()
        recv = [r for r in recs if r.get("type") == "msg" and r["dir"] == "received"]
        assert len(side) == sum(r["len"] for r in recv)
        for r in recv:
            assert sha256_hex(side[r["at"]:r["at"] + r["len"]]) == r["sha256"]


def test_ledger_counts_declared_kinds(tmp_path):
    bank, platform = make_parties(n=150)
    tb, tp = run_job(tmp_path, "job-ledger", bank, platform, rounds=4)
    rep = audit.verify(tb, tp)
    assert rep.ok, rep.errors
    led = {(e["to"], e["category"]): e for e in rep.summary["ledger"]}
    part = led[(BANK, "sample partition")]
    assert part["messages"] == 4 and part["values"] == 4 * 150
    assert led[(BANK, "intersection size")]["values"] == 1
    # the platform's transcript counts the same disclosures, to the same receiver
    led_p = {(e["to"], e["category"]): e for e in rep.peer_summary["ledger"]}
    assert led_p[(BANK, "sample partition")]["values"] == 600
    with pytest.raises(ValueError):
        declare_disclosures({"x.y": ("", None)})


def _writer(tmp_path, name="w.jsonl"):
    me, peer = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    w = TranscriptWriter.create(tmp_path / name, job_id="j1", party="a", peer="b",
                                signing_key=me, peer_public_key=peer.public_key())
    return w, me, peer


def _env(key, sender, kind, payload, seq=1, job_id="j1"):
    ptype, data = encode_payload(payload)
    env = Envelope(job_id, seq, sender, kind, ptype, len(data), Envelope.digest(data))
    return Envelope(**{**env.__dict__, "signature": key.sign(env.signing_bytes())}), data


def test_writer_refuses_misuse(tmp_path):
    w, me, peer = _writer(tmp_path)
    with pytest.raises(TranscriptError, match="already exists"):
        TranscriptWriter.create(tmp_path / "w.jsonl", job_id="j1", party="a", peer="b",
                                signing_key=me, peer_public_key=peer.public_key())
    env, data = _env(peer, "b", "x.m", np.arange(3))
    with pytest.raises(TranscriptError, match="does not match"):
        w.record("received", env, data + b"!")
    with pytest.raises(TranscriptError, match="expected 'a'"):
        w.record("sent", env, data)
    env2, data2 = _env(peer, "b", "x.m", b"z", job_id="other")
    with pytest.raises(TranscriptError, match="job 'other'"):
        w.record("received", env2, data2)
    w.record("received", env, data)
    w.abort("cancelled by operator")
    w.abort("again")                                   # idempotent
    w.record("received", *_env(peer, "b", "x.m", b"late", seq=2))   # ignored, counted
    assert w.late_messages == 1
    t = load(w.path)
    assert [r["type"] for r in t.records] == ["job", "msg", "abort"]
    rep = audit.verify(w.path, pinned_keys={"a": me.public_key(), "b": peer.public_key()})
    assert rep.ok and rep.summary["status"] == "aborted"
    assert rep.summary["reason"] == "cancelled by operator"


def test_bad_peer_statement_is_refused_and_recorded(tmp_path):
    w, me, peer = _writer(tmp_path)
    own = w.outcome_statement("ab" * 32)
    w.record("sent", *_env(me, "a", "job.outcome", own))
    forged = dict(own, party="b")                       # signed by a, claims to be b
    w.record("received", *_env(peer, "b", "job.outcome", forged))
    with pytest.raises(TranscriptError, match="signature"):
        w.close_outcome(own, forged, wait=1)
    t = load(w.path)
    assert t.records[-1]["type"] == "abort"
    assert "outcome rejected" in t.records[-1]["reason"]


def test_aborted_job_verifies_as_aborted(tmp_path):
    bank, platform = make_parties()
    tb, _ = run_job(tmp_path, "job-fail", bank, platform, fail=True)
    rep = audit.verify(tb, pinned_keys={BANK: bank.key.public_key()})
    assert rep.ok and rep.summary["status"] == "aborted"
    assert "simulated failure" in rep.summary["reason"]


def test_interrupted_transcript_is_closed_with_a_signed_abort(tmp_path):
    """What a restarted node does for a job killed mid-run: the transcript (even one
    whose last line the crash cut) gets a signed abort record and verifies as failed."""
    from federation.transcript import close_interrupted
    bank, platform = make_parties()
    tb, _ = run_job(tmp_path, "job-k", bank, platform)
    lines = tb.read_bytes().split(b"\n")[:-1]
    cut = b"\n".join(lines[:-3]) + b"\n" + lines[-3][:40]    # killed while writing
    tb.write_bytes(cut)
    pins = {BANK: bank.key.public_key(), PLATFORM: platform.key.public_key()}
    before = audit.verify(tb, pinned_keys=pins)
    assert not before.ok
    assert close_interrupted(tb, bank.key, "interrupted: the node restarted")
    rep = audit.verify(tb, pinned_keys=pins)
    assert rep.ok, rep.errors
    assert rep.summary["status"] == "aborted"
    assert "incomplete last record of 40 bytes was dropped" in rep.summary["reason"]
    assert not close_interrupted(tb, bank.key, "again")          # already closed
    assert not close_interrupted(tmp_path / "none.jsonl", bank.key, "x")
