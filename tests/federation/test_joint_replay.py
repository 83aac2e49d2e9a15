"""Joint replay (issue 17 part 3): a SecureBoost job between two real nodes (gRPC,
mTLS, run_job_side with real PSI and Paillier), both keeping digests only
(``keep_received = "digests"``: no sidecar on either side). The auditor, holding both
vaults, regenerates every message from the two seeds and datasets and checks it against
both transcripts bit for bit; a tampered dataset row or seed is named (message, party).

Small test sizes: Paillier 1024-bit keys flagged insecure_test_key, 200 rows, 2 trees.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

import fedjoint
from federation.cli import cli
from federation.data import hashed_split
from federation.transcript import sidecar_path


def _cli(*args: str):
    return CliRunner().invoke(cli, ["audit", *args])


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from support.nodes import running_nodes, wait_state, write_job, write_node_tomls

    from federation.admin import AdminClient
    from federation.config import load_job_spec

    root = tmp_path_factory.mktemp("joint")
    bank_toml, plat_toml = write_node_tomls(root, bank_rows=200, platform_rows=200)
    for toml in (bank_toml, plat_toml):
        toml.write_text(toml.read_text() + '\n[transcript]\nkeep_received = "digests"\n')
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        spec = write_job(root, "sb", "secureboost",
                         params={"n_trees": 2, "max_depth": 2, "max_bin": 8},
                         evaluation={"cipher": "paillier", "key_bits": 1024})
        job_id = client.call("submit", spec=load_job_spec(spec).to_dict(),
                             source=str(spec))["job_id"]
        rec = wait_state(client, job_id, timeout=120)
        assert rec["state"] == "done", rec["error"]
        prec = wait_state(AdminClient(plat.data_dir), job_id, timeout=30)
        assert prec["state"] == "done", prec["error"]
    tb, tp = rec["artifacts"]["transcript"], prec["artifacts"]["transcript"]
    return root, job_id, tb, tp, bank.data_dir


def test_joint_replay_of_a_digests_only_job_matches_bit_for_bit(job):
    root, job_id, tb, tp, _ = job
    assert not sidecar_path(tb).exists() and not sidecar_path(tp).exists()
    # one party alone cannot replay: its sidecar is gone
    assert _cli("replay", tb, "--party-dir", str(root)).exit_code == 2
    res = _cli("replay", tb, "--party-dir", str(root), "--peer", tp, "--peer-dir", str(root))
    assert res.exit_code == 0, res.output
    assert "JOINT REPLAY OK" in res.output, res.output
    # the Python API, the platform's transcript first; every effective message counted
    rep = fedjoint.joint_replay(tp, root, tb, root)
    assert rep.ok, rep.errors
    signed = {p: d["signed"] for p, d in rep.model_digests.items()}
    assert {p: d["replayed"] for p, d in rep.model_digests.items()} == signed
    sent = [json.loads(line) for line in open(tb)] + [json.loads(line) for line in open(tp)]
    crossed = [r for r in sent if r["type"] == "msg" and r["dir"] == "sent"
               and r["kind"] != "job.outcome"]
    assert rep.messages == len(crossed) > 20
    # half a joint replay: --peer without --peer-dir is refused, naming both options
    res = _cli("replay", tb, "--party-dir", str(root), "--peer", tp)
    assert res.exit_code == 2 and "--peer-dir" in res.output


def _joint(root, tb, tp) -> dict:
    res = _cli("replay", tb, "--party-dir", str(root), "--peer", tp, "--peer-dir",
               str(root), "--json")
    out = json.loads(res.output)
    assert res.exit_code == out["exit_code"]
    return out


def test_a_tampered_platform_row_is_named(job):
    root, _, tb, tp, _ = job
    csv = root / "platform.csv"
    original = csv.read_text()
    lines = original.splitlines(keepends=True)
    # a row of the training split (the default split: a keyed hash of the id)
    ids = [line.split(",", 1)[0] for line in lines[1:]]
    k = 1 + next(i for i, m in enumerate(hashed_split(ids, 0.25, "fedjoint")) if not m)
    head, row = lines[0].rstrip("\n").split(","), lines[k].rstrip("\n").split(",")
    # every feature of that row far beyond the column's range (its id unchanged)
    row = [v if h == "id" else "1e6" for h, v in zip(head, row, strict=True)]
    csv.write_text("".join(lines[:k]) + ",".join(row) + "\n" + "".join(lines[k + 1:]))
    try:
        out = _joint(root, tb, tp)
    finally:
        csv.write_text(original)
    assert out["exit_code"] == 1, out
    d = out["diverged"]
    assert d["party"] == "platform-b" and d["kind"].startswith("sb."), d
    assert all(isinstance(i, int) for i in d["records"].values()), d
    assert "platform-b sent" in out["errors"][0]["message"], out["errors"]
    # a changed id: the platform's first PSI message differs
    lines[1] = "zz-not-an-id" + lines[1][lines[1].index(","):]
    csv.write_text("".join(lines))
    try:
        out = _joint(root, tb, tp)
    finally:
        csv.write_text(original)
    assert out["exit_code"] == 1 and out["diverged"]["party"] == "platform-b", out
    assert out["diverged"]["kind"].startswith("psi."), out


def test_a_tampered_bank_seed_is_named(job):
    root, job_id, tb, tp, bank_dir = job
    seed = bank_dir / "vault" / f"{job_id}.seed"
    good = seed.read_bytes()
    seed.write_bytes(os.urandom(32))
    try:
        out = _joint(root, tb, tp)
    finally:
        seed.write_bytes(good)
    assert out["exit_code"] == 1, out
    assert out["diverged"]["party"] == "bank-a", out
    assert out["errors"][0]["where"] == f"{os.path.basename(tb)} (bank-a)", out["errors"]
    seed.unlink()
    try:
        out = _joint(root, tb, tp)
    finally:
        seed.write_bytes(good)
    assert out["exit_code"] == 2 and "seed" in out["errors"][0]["message"], out


# ---- the joint link on its own (no nodes): stand-in pipelines, real checks ----------


def _fake(party: str, sent: list, received: list):
    """A transcript-like object whose effective messages are ``sent`` / ``received``
    (lists of (kind, payload))."""
    import hashlib
    from pathlib import Path
    from types import SimpleNamespace

    from federation.link import encode_payload

    recs = []
    for d, msgs in (("sent", sent), ("received", received)):
        for seq, (kind, payload) in enumerate(msgs, 1):
            ptype, data = encode_payload(payload)
            recs.append({"type": "msg", "dir": d, "seq": seq, "kind": kind, "ptype": ptype,
                         "len": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return SimpleNamespace(records=recs, path=Path(f"{party}.jsonl"))


@pytest.mark.parametrize("bank_sends", [1, 2])
def test_a_side_waiting_for_more_fails_instead_of_hanging(monkeypatch, bank_sends):
    from types import SimpleNamespace

    from federation import runner
    from federation.audit import joint

    msgs = [("psi.hello", {"n": 1}), ("psi.hello", {"n": 2})]
    ts = {"bank-a": _fake("bank-a", msgs, []), "platform-b": _fake("platform-b", [], msgs)}

    def run(spec, cfg, link, seed):
        if cfg == "bank":
            for kind, payload in msgs[:bank_sends]:    # the recorded run sent two
                link.send(kind, payload)
        else:
            for kind, _ in msgs:
                link.recv(kind)
        return SimpleNamespace(model_digest="d" * 64)

    monkeypatch.setattr(runner, "run_job_side", run)
    sides = {p: SimpleNamespace(spec=None, node_cfg=p.split("-")[0], seed=b"")
             for p in ts}
    rep = joint.JointReplayReport(False, 1, job_id="j", parties=list(ts))
    for t in ts.values():
        t.records.append({"type": "outcome", "statements": {
            p: {"model_digest": "d" * 64} for p in ts}})
    joint._run(rep, ts, sides)
    if bank_sends == 2:
        assert not rep.errors and rep.messages == 2, rep.errors
    else:
        assert rep.errors and "stopped while 'psi.hello' was expected" in str(rep.errors[0])
        assert "platform-b waited" in str(rep.errors[0]), rep.errors
