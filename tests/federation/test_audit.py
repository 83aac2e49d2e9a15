"""Audit: a clean job verifies and replays on both sides; every kind of tampering is
detected and the bad record named. Synthetic SecureBoost-shaped protocol (see
support/transcripts.py); real pipelines are covered in test_audit_jobs.py."""

import json
import os
import random
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support.transcripts import BANK, PLATFORM, make_parties, run_job, runner_for

from federation import audit
from federation.transcript import (
    canonical,
    fingerprint,
    record_signing_bytes,
    sha256_hex,
    sidecar_path,
)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    bank, platform = make_parties()
    tb, tp = run_job(tmp, "job-a", bank, platform)
    other_b, other_p = run_job(tmp / "other", "job-b", bank, platform)   # same keys
    pins = {BANK: bank.key.public_key(), PLATFORM: platform.key.public_key()}
    return dict(tmp=tmp, bank=bank, platform=platform, tb=tb, tp=tp, pins=pins,
                ob=other_b, op=other_p)


def _write(tmp, name, lines):
    p = tmp / name
    p.write_bytes(b"".join(x + b"\n" for x in lines))
    return p


def _lines(p):
    return p.read_bytes().split(b"\n")[:-1]


def _rechain(lines, start):
    """What a forger without the keys can do: rewrite indices and the hash chain."""
    out = list(lines[:start])
    for i, line in enumerate(lines[start:], start):
        rec = json.loads(line)
        rec["i"] = i
        rec["prev"] = sha256_hex(out[-1]) if out else "0" * 64
        out.append(canonical(rec))
    return out


def _named(rep, where=None):
    assert not rep.ok
    e = rep.first_bad
    assert e is not None and e.record is not None, rep.errors
    if where is not None:
        assert e.where == where, rep.errors
    return e


def test_clean_job_verifies_both_sides_and_together(job):
    for path in (job["tb"], job["tp"]):
        rep = audit.verify(path, pinned_keys=job["pins"])
        assert rep.ok and rep.exit_code == 0 and not rep.warnings, rep.errors
        assert rep.summary["status"] == "done"
    rep = audit.verify(job["tb"], job["tp"], pinned_keys=job["pins"])
    assert rep.ok, rep.errors
    s, ps = rep.summary, rep.peer_summary
    assert s["messages"]["sent"] == ps["messages"]["received"]
    assert s["bytes"] == {"sent": ps["bytes"]["received"], "received": ps["bytes"]["sent"]}
    assert s["model_digests"] == ps["model_digests"]
    # without pins: still verified, with a warning that the keys were not pinned
    rep = audit.verify(job["tb"])
    assert rep.ok and any("no pinned key" in w for w in rep.warnings)
    # pins may be fingerprints (as printed by `fedjoint keys init`)
    fps = {n: "sha256:" + fingerprint(k) for n, k in job["pins"].items()}
    assert audit.verify(job["tb"], job["tp"], pinned_keys=fps).ok


def test_clean_job_replays_on_both_sides(job):
    for path, party in ((job["tb"], job["bank"]), (job["tp"], job["platform"])):
        rep = audit.replay(path, side=party.side(), runner=runner_for(party.role),
                           pinned_keys=job["pins"])
        assert rep.ok and rep.exit_code == 0, rep.errors
        assert rep.model_digest == rep.signed_digest
        assert rep.timeline and all(r["replay"] == "ok" for r in rep.timeline)


def test_flipping_any_byte_is_detected_and_named(job, tmp_path):
    rnd = random.Random(1234)
    for path in (job["tb"], job["tp"]):
        raw = path.read_bytes()
        starts = [0] + [i + 1 for i, c in enumerate(raw[:-1]) if c == 0x0A]
        positions = set(starts) | {s - 1 for s in starts[1:]} | {len(raw) - 1, len(raw) - 2}
        positions |= set(rnd.sample(range(len(raw)), 120))
        for pos in sorted(positions):
            bad = bytearray(raw)
            bad[pos] ^= 0x01
            p = tmp_path / "flip.jsonl"
            p.write_bytes(bytes(bad))
            rep = audit.verify(p, pinned_keys=job["pins"])
            assert not rep.ok, f"flip at byte {pos} of {path.name} not detected"
            line_no = raw[:pos].count(b"\n")
            msg = str(rep.first_bad)
            assert f"record {line_no}" in msg or f"record {line_no + 1}" in msg or \
                rep.first_bad.record is not None, msg
    # and when the flipped file is given as the peer transcript, the peer's file is named
    bad = bytearray(job["tp"].read_bytes())
    bad[len(bad) // 2] ^= 0x01
    p = tmp_path / "peer.jsonl"
    p.write_bytes(bytes(bad))
    _named(audit.verify(job["tb"], p, pinned_keys=job["pins"]), where="peer.jsonl")


def test_deleting_or_reordering_records_is_detected(job, tmp_path):
    lines = _lines(job["tb"])
    n = len(lines)
    # delete a message record
    e = _named(audit.verify(_write(tmp_path, "del.jsonl", lines[:5] + lines[6:]),
                            pinned_keys=job["pins"]))
    assert e.record == 5
    # delete it and re-chain: the sequence gap and the signed closing record catch it
    forged = _rechain(lines[:5] + lines[6:], 5)
    e = _named(audit.verify(_write(tmp_path, "del2.jsonl", forged), pinned_keys=job["pins"]))
    assert e.record == 5 and "signature" in e.message
    # delete the closing record (looks like an unfinished job)
    e = _named(audit.verify(_write(tmp_path, "cut.jsonl", lines[:-1]), pinned_keys=job["pins"]))
    assert e.record == n - 2 and "closing" in e.message
    # reorder two records, raw and re-chained
    swapped = lines[:3] + [lines[4], lines[3]] + lines[5:]
    assert _named(audit.verify(_write(tmp_path, "sw.jsonl", swapped),
                               pinned_keys=job["pins"])).record == 3
    e = _named(audit.verify(_write(tmp_path, "sw2.jsonl", _rechain(swapped, 3)),
                            pinned_keys=job["pins"]))
    assert e.record == 3


def test_writer_cannot_rewrite_its_own_transcript(job, tmp_path):
    """Even the writer, holding its own key, cannot drop or reorder what it received:
    the peer's envelope signatures fix the sequence numbers and the peer's signed
    outcome statement fixes how many messages it sent and which."""
    lines = _lines(job["tb"])
    key = job["bank"].key
    recv = [i for i, x in enumerate(lines) if b'"dir":"received"' in x
            and b"job.outcome" not in x]

    def resign(ls, start):
        out = _rechain(ls, start)
        for i in range(start, len(out)):
            rec = json.loads(out[i])
            rec["prev"] = sha256_hex(out[i - 1])
            rec["rsig"] = key.sign(record_signing_bytes(rec)).hex()
            out[i] = canonical(rec)
        return out

    k = recv[-1]                       # the last data message the platform sent
    e = _named(audit.verify(_write(tmp_path, "rw.jsonl", resign(lines[:k] + lines[k + 1:], k)),
                            pinned_keys=job["pins"]))
    assert "seq 8 follows seq 6" in e.message    # the peer's next envelope fixes the seq
    # drop the received outcome too: then the platform's signed statement (in the
    # outcome record) no longer matches what the transcript says it received
    j = [i for i, x in enumerate(lines) if b'"dir":"received"' in x and b"job.outcome" in x][0]
    cut = [x for i, x in enumerate(lines) if i not in (k, j)]
    rep = audit.verify(_write(tmp_path, "rw1.jsonl", resign(cut, min(k, j))),
                       pinned_keys=job["pins"])
    assert _named(rep).record == len(cut) - 1                  # the outcome record
    assert any(f"{PLATFORM}'s signed statement says it sent 7" in e.message
               for e in rep.errors), rep.errors
    k = recv[1]                        # a message in the middle: the seq gap names it
    e = _named(audit.verify(_write(tmp_path, "rw2.jsonl", resign(lines[:k] + lines[k + 1:], k)),
                            pinned_keys=job["pins"]))
    assert e.record == k + 1 and "received seq 3 follows seq 1" in e.message


def test_record_from_another_job_is_detected(job, tmp_path):
    lines, other = _lines(job["tb"]), _lines(job["ob"])
    k = 3
    assert json.loads(lines[k])["kind"] == json.loads(other[k])["kind"]
    mixed = lines[:k] + [other[k]] + lines[k + 1:]
    assert _named(audit.verify(_write(tmp_path, "mix.jsonl", mixed),
                               pinned_keys=job["pins"])).record == k
    # even with the chain rewritten, the envelope signature binds the job id
    e = _named(audit.verify(_write(tmp_path, "mix2.jsonl", _rechain(mixed, k)),
                            pinned_keys=job["pins"]))
    assert e.record == k and "signature" in e.message
    # and the other job's transcript is refused as the peer transcript
    e = _named(audit.verify(job["tb"], job["op"], pinned_keys=job["pins"]))
    assert e.record == 0 and "job" in e.message


def test_peer_transcripts_must_agree(job, tmp_path):
    # the peer transcript re-chained after dropping one of its received messages: each
    # file alone fails (seq gap); a differently ordered but self-consistent platform
    # file cannot be produced without the platform's key, so compare the honest files
    lines = _lines(job["tp"])
    recv = [i for i, x in enumerate(lines) if b'"dir":"received"' in x]
    forged = _rechain(lines[:recv[1]] + lines[recv[1] + 1:], recv[1])
    rep = audit.verify(job["tb"], _write(tmp_path, "p.jsonl", forged), pinned_keys=job["pins"])
    _named(rep, where="p.jsonl")


def test_wrong_pinned_key_names_record_0(job):
    pins = dict(job["pins"], **{PLATFORM: Ed25519PrivateKey.generate().public_key()})
    e = _named(audit.verify(job["tb"], pinned_keys=pins))
    assert e.record == 0 and "pinned" in e.message


def test_replay_detects_other_data_seed_key_and_sidecar(job, tmp_path):
    bank, platform = job["bank"], job["platform"]
    run_b, run_p = runner_for("bank"), runner_for("platform")
    # a different dataset: the first message computed from the data differs
    other = replace(bank, data=bank.data + 1e-3)
    rep = audit.replay(job["tb"], side=other.side(), runner=run_b)
    e = _named(rep)
    assert "syn.enc_grad" in e.message and json.loads(_lines(job["tb"])[e.record])["dir"] == "sent"
    rep = audit.replay(job["tp"], side=replace(platform, data=platform.data[::-1]).side(),
                       runner=run_p)
    assert "syn.hist" in _named(rep).message
    # a different per-job seed
    rep = audit.replay(job["tb"], side=replace(bank, seed=os.urandom(32)).side(), runner=run_b)
    assert "syn.enc_grad" in _named(rep).message
    # a different signing key: not this party's transcript
    rep = audit.replay(job["tb"], side=replace(bank, key=Ed25519PrivateKey.generate()).side(),
                       runner=run_b)
    e = _named(rep)
    assert e.record == 0 and "signing key" in e.message
    # the other party's runner against this transcript
    assert _named(audit.replay(job["tb"], side=bank.side(), runner=run_p)).record is not None
    # a received payload changed in the sidecar
    import shutil

    d = tmp_path / "sc"
    d.mkdir()
    t2 = d / job["tb"].name
    shutil.copy(job["tb"], t2)
    side = bytearray(sidecar_path(job["tb"]).read_bytes())
    side[len(side) // 2] ^= 0x01
    sidecar_path(t2).write_bytes(bytes(side))
    e = _named(audit.replay(t2, side=bank.side(), runner=run_b))
    assert "sidecar" in e.message
    # a model part that does not match the signed digest
    def wrong_model(s, link):
        run_b(s, link)
        return "00" * 32
    e = _named(audit.replay(job["tb"], side=bank.side(), runner=wrong_model))
    assert "signed digest" in e.message


def test_bad_input_exit_2(job, tmp_path):
    lines = _lines(job["tb"])
    cases = {
        "missing": tmp_path / "nope.jsonl",
        "empty": _write(tmp_path, "empty.jsonl", []),
        "truncated": tmp_path / "trunc.jsonl",
        "version": _write(tmp_path, "v9.jsonl",
                          [canonical(dict(json.loads(lines[0]), v=9))] + lines[1:]),
        "notours": _write(tmp_path, "x.jsonl", [b'{"hello":1}']),
    }
    cases["truncated"].write_bytes(job["tb"].read_bytes()[:-40])
    for name, p in cases.items():
        rep = audit.verify(p, pinned_keys=job["pins"])
        assert rep.exit_code == 2, (name, rep.errors)
    assert "truncated" in str(audit.verify(cases["truncated"]).first_bad)
    assert "version 9" in str(audit.verify(cases["version"]).first_bad)
    # replay without the party's directory / with one lacking node.toml
    assert audit.replay(job["tb"]).exit_code == 2
    assert audit.replay(job["tb"], tmp_path).exit_code == 2
    with pytest.raises(audit.CannotRun):
        audit.normalise_pins({"x": "not-a-key"})


def test_cli(job, tmp_path):
    from federation.cli.audit import audit_group as cli

    r = CliRunner()
    fp_b = fingerprint(job["pins"][BANK])
    fp_p = fingerprint(job["pins"][PLATFORM])
    pins = ["--pin", f"{BANK}=sha256:{fp_b}", "--pin", f"{PLATFORM}={fp_p}"]
    res = r.invoke(cli, ["verify", str(job["tb"]), "--peer", str(job["tp"]), *pins])
    assert res.exit_code == 0, res.output
    assert "VERIFIED" in res.output and "disclosure ledger" in res.output
    res = r.invoke(cli, ["verify", str(job["tb"]), "--json", *pins])
    assert res.exit_code == 0 and json.loads(res.output)["ok"]
    bad = bytearray(job["tb"].read_bytes())
    bad[300] ^= 0x01
    p = tmp_path / "bad.jsonl"
    p.write_bytes(bytes(bad))
    res = r.invoke(cli, ["verify", str(p), *pins])
    assert res.exit_code == 1 and "record" in res.output
    res = r.invoke(cli, ["verify", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2
    res = r.invoke(cli, ["verify", str(job["tb"]), "--pin", "nonsense"])
    assert res.exit_code == 2
    res = r.invoke(cli, ["show", str(job["tb"]), "--json"])
    assert res.exit_code == 0
    data = json.loads(res.output)
    assert data["verified"] and data["records"][0]["type"] == "job"
    assert np.sum([x["type"] == "msg" for x in data["records"]]) == 18 - 2
    res = r.invoke(cli, ["show", str(job["tb"])])
    assert res.exit_code == 0 and "syn.enc_grad" in res.output
    res = r.invoke(cli, ["replay", str(job["tb"]), "--party-dir", str(tmp_path)])
    assert res.exit_code == 2 and "node.toml" in res.output


def test_fingerprints_are_printed_verbatim(capsys):
    """rich would turn ':CD:' inside a hex fingerprint into an emoji."""
    from federation.cli.audit import _console

    _console().print("signing key: F2:CD:42:52")
    assert "F2:CD:42:52" in capsys.readouterr().out


def test_ledger_is_peer_attested(job, tmp_path):
    """A writer that lowers the disclosures it sent and re-signs its whole chain with
    its own key is caught alone (the peer signed what it received) and with --peer."""
    lines = _lines(job["tp"])            # the platform sends syn.partition / syn.count
    key = job["platform"].key
    sent_disc = [i for i, x in enumerate(lines) if b'"dir":"sent"' in x and b'"disc"' in x
                 and b"job.outcome" not in x]
    assert sent_disc, "the synthetic job sends a disclosing kind"
    out = list(lines)
    for i in range(sent_disc[0], len(out)):
        rec = json.loads(out[i])
        if i in sent_disc:
            rec["disc"] = [rec["disc"][0], 0]
        rec["prev"] = sha256_hex(out[i - 1])
        rec["rsig"] = key.sign(record_signing_bytes(rec)).hex()
        out[i] = canonical(rec)
    forged = _write(tmp_path, "ledger.jsonl", out)
    rep = audit.verify(forged, pinned_keys=job["pins"])
    assert any(f"{BANK} signed that it received disclosures" in e.message
               for e in rep.errors), rep.errors
    rep = audit.verify(forged, job["tb"], pinned_keys=job["pins"])
    assert not rep.ok
    clean = audit.verify(job["tb"], job["tp"], pinned_keys=job["pins"])
    assert clean.ok and clean.summary["ledger"], clean.errors
