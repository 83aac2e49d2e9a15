"""Real protocols, real channel: LR and SecureBoost trained over mutually authenticated
gRPC on loopback with both transcripts recorded by the channel; then each transcript is
verified (alone and against the peer's) and each party's side is replayed from its own
data and per-job seed, reproducing every Paillier ciphertext bit for bit.

Small test sizes (Paillier 1024-bit keys flagged insecure_test_key, 120 rows, few
epochs/trees) keep this under half a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.roles import TEST_POLICY, typed

from federation import audit
from federation.link import ProtocolContext, run_two_parties
from federation.transcript import TranscriptWriter, exchange_outcome, public_key_bytes
from parties import registry
from parties.common.role import PartyData
from secure_agg.rng import Drbg

DATA = Path(__file__).resolve().parents[1] / "data"
BANK, PLATFORM = "bank-a", "platform-b"
KEY_BITS = 1024          # test size only (flagged insecure_test_key)
ROWS = 120

LR_PARAMS = {"epochs": 2, "batch_size": 64}
SB_PARAMS = {"n_trees": 2, "max_depth": 2, "max_bin": 8}


def _data():
    g = pd.read_csv(DATA / "breast_hetero_guest.csv")
    h = pd.read_csv(DATA / "breast_hetero_host.csv")
    m = g.merge(h, on="id", suffixes=("_b", "_p")).head(ROWS)
    bank_cols = [c for c in g.columns if c not in ("id", "y")]
    plat_cols = [c for c in h.columns if c != "id"]
    Xb = m[[c + "_b" if c + "_b" in m else c for c in bank_cols]].to_numpy(np.float64)
    Xp = m[[c + "_p" if c + "_p" in m else c for c in plat_cols]].to_numpy(np.float64)
    return (Xb, m["y"].to_numpy(np.int64), bank_cols), (Xp, plat_cols)


def _cipher(seed: bytes, job_id: str):
    from secure_agg.paillier import PaillierPrivateCipher

    root = Drbg(seed, f"job/{job_id}")
    return root, PaillierPrivateCipher.generate(KEY_BITS, rng=root.child("paillier"),
                                                insecure_test_key=True)


def _side(algorithm: str, role: str):
    """A party's pipeline: seed -> cipher and protocol randomness -> train -> digest."""

    def run(side: audit.ReplaySide, link) -> str:
        data, job_id = side.node_cfg, link.job_id
        root, cipher = _cipher(side.seed, job_id)
        ctx = ProtocolContext(link=link, job_id=job_id, rng=root.child("train"))
        name = "logistic_regression" if algorithm == "lr" else "secureboost"
        algo = registry.get(name)
        X, names, *y = data if role == "platform" else (data[0], data[2], data[1])
        out = algo.role(role).train(
            ctx, PartyData(X, names, y=y[0] if y else None),
            typed(name, LR_PARAMS if algorithm == "lr" else SB_PARAMS),
            cipher if algo.holds_key(role) else None, TEST_POLICY)
        return out.model.digest()

    return run


@pytest.fixture(scope="module")
def grpc(tmp_path_factory):
    pytest.importorskip("federation.channel.peer")
    from federation.channel.peer import PeerChannel
    from federation.channel.testing import identities, make_keys

    tmp = tmp_path_factory.mktemp("grpc")
    ka, kb = make_keys(tmp / "keys", BANK), make_keys(tmp / "keys", PLATFORM)
    la, pa = identities(ka, kb)
    lb, pb = identities(kb, ka)
    writers: dict[str, dict] = {BANK: {}, PLATFORM: {}}
    ca = PeerChannel(la, pa, "127.0.0.1:0",
                     recorder_factory=lambda j: writers[BANK].get(j)).start()
    cb = PeerChannel(lb, pb, "127.0.0.1:0", f"127.0.0.1:{ca.port}",
                     recorder_factory=lambda j: writers[PLATFORM].get(j)).start()
    ca.peer_addr = f"127.0.0.1:{cb.port}"
    yield dict(tmp=tmp, chans={BANK: ca, PLATFORM: cb}, ids={BANK: la, PLATFORM: lb},
               writers=writers)
    ca.stop(0)
    cb.stop(0)


def _run_job(grpc, algorithm: str, job_id: str):
    tmp, ids = grpc["tmp"], grpc["ids"]
    (bank_data, plat_data) = _data()
    seeds = {BANK: os.urandom(32), PLATFORM: os.urandom(32)}
    paths = {}
    for me, other in ((BANK, PLATFORM), (PLATFORM, BANK)):
        paths[me] = tmp / me / "transcripts" / f"{job_id}.jsonl"
        grpc["writers"][me][job_id] = TranscriptWriter.create(
            paths[me], job_id=job_id, party=me, peer=other,
            signing_key=ids[me].signing_key,
            peer_public_key=ids[other].signing_key.public_key(),
            spec={"job": {"name": job_id, "algorithm": algorithm}},
            protocols={algorithm: "1"}, key_sizes={"paillier": KEY_BITS},
            roles={BANK: "bank", PLATFORM: "platform"})
    sides = {
        BANK: audit.ReplaySide(bank_data, None, seeds[BANK],
                               public_key_bytes(ids[BANK].signing_key).hex()),
        PLATFORM: audit.ReplaySide(plat_data, None, seeds[PLATFORM],
                                   public_key_bytes(ids[PLATFORM].signing_key).hex()),
    }

    def party(me: str, role: str):
        link = grpc["chans"][me].link(job_id)
        writer = grpc["writers"][me][job_id]
        try:
            digest = _side(algorithm, role)(sides[me], link)
        except BaseException as exc:
            writer.abort(f"{type(exc).__name__}: {exc}")
            raise
        exchange_outcome(link, writer, digest)
        link.close()
        return digest

    run_two_parties(lambda: party(BANK, "bank"), lambda: party(PLATFORM, "platform"),
                    timeout=300)
    pins = {n: ids[n].signing_key.public_key() for n in (BANK, PLATFORM)}
    return paths, sides, pins


@pytest.mark.parametrize("algorithm", ["lr", "secureboost"])
def test_real_job_over_grpc_verifies_and_replays_on_both_sides(grpc, algorithm):
    paths, sides, pins = _run_job(grpc, algorithm, f"job-{algorithm}-1")
    rep = audit.verify(paths[BANK], paths[PLATFORM], pinned_keys=pins)
    assert rep.ok, rep.errors
    assert rep.summary["status"] == rep.peer_summary["status"] == "done"
    assert rep.summary["messages"]["sent"] > 5 and rep.summary["messages"]["received"] > 5
    # a different dataset at the platform, a different seed at the bank: the first
    # message that depends on them is named
    Xp, names = sides[PLATFORM].node_cfg
    Xp2 = Xp.copy()
    Xp2[7, 0] += 0.25
    other = audit.ReplaySide((Xp2, names), None, sides[PLATFORM].seed,
                             sides[PLATFORM].signing_public_hex)
    r = audit.replay(paths[PLATFORM], side=other, runner=_side(algorithm, "platform"))
    assert not r.ok and r.first_bad.record is not None
    assert "differs from the record" in r.first_bad.message, r.errors
    other = audit.ReplaySide(sides[BANK].node_cfg, None, os.urandom(32),
                             sides[BANK].signing_public_hex)
    r = audit.replay(paths[BANK], side=other, runner=_side(algorithm, "bank"))
    assert not r.ok and r.first_bad.record is not None
    assert "differs from the record" in r.first_bad.message, r.errors
    for name, role in ((BANK, "bank"), (PLATFORM, "platform")):
        r = audit.replay(paths[name], side=sides[name], runner=_side(algorithm, role),
                         pinned_keys=pins)
        assert r.ok, (name, r.errors)
        assert r.model_digest == r.signed_digest
        assert all(x["replay"] == "ok" for x in r.timeline)


# ------------------------------------------------- full nodes, run_job_side, the CLI


def _cli(*args: str):
    from click.testing import CliRunner

    from federation.cli import cli

    return CliRunner().invoke(cli, ["audit", *args])


@pytest.mark.parametrize("algorithm,params", [
    ("secureboost", {"n_trees": 2, "max_depth": 3}),
    ("logistic_regression", {"epochs": 2, "batch_size": 0}),
])
def test_node_job_audited_with_the_cli(tmp_path, algorithm, params):
    """Two real nodes (gRPC, mTLS, SQLite, run_job_side with real PSI and Paillier);
    the auditor's commands exactly as in docs/audit.md."""
    pytest.importorskip("psi.protocol")
    from support.nodes import running_nodes, wait_state, write_job, write_node_tomls

    from federation.admin import AdminClient
    from federation.config import load_job_spec

    bank_toml, plat_toml = write_node_tomls(tmp_path, bank_rows=200, platform_rows=200)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        job = write_job(tmp_path, "j", algorithm, params=params,
                        evaluation={"cipher": "paillier", "key_bits": KEY_BITS})
        job_id = client.call("submit", spec=load_job_spec(job).to_dict(),
                             source=str(job))["job_id"]
        rec = wait_state(client, job_id, timeout=120)
        assert rec["state"] == "done", rec["error"]
        prec = wait_state(AdminClient(plat.data_dir), job_id, timeout=30)
    tb, tp = rec["artifacts"]["transcript"], prec["artifacts"]["transcript"]

    res = _cli("verify", tb, "--peer", tp, "--config", str(bank_toml))
    assert res.exit_code == 0, res.output
    assert "VERIFIED" in res.output and "NOT pinned" not in res.output
    res = _cli("show", tp, "--json")
    assert res.exit_code == 0 and json.loads(res.output)["summary"]["status"] == "done"
    # the disclosure ledger counts what the protocol documents promise crossed
    ledger = json.loads(_cli("verify", tb, "--peer", tp, "--config", str(bank_toml),
                             "--json").output)["summary"]["ledger"]
    cats = " | ".join(e["category"] for e in ledger)
    assert "double-blinded points" in cats and "set size" in cats, ledger
    if algorithm == "secureboost":
        assert "histograms" in cats and "partitions" in cats, ledger
    else:
        assert "own gradient" in cats and "aggregate batch loss" in cats, ledger

    res = _cli("replay", tb, "--party-dir", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "REPLAYED" in res.output
    # a different per-job seed in the bank's vault: the first message it feeds is named
    seed = bank.data_dir / "vault" / f"{job_id}.seed"
    good = seed.read_bytes()
    seed.write_bytes(os.urandom(32))
    res = _cli("replay", tb, "--party-dir", str(tmp_path), "--json")
    out = json.loads(res.output)
    assert res.exit_code == 1 and out["errors"][0]["record"] is not None, out
    seed.write_bytes(good)
    # a different dataset at the bank: a column reversed, some labels flipped (PSI is the
    # same; training differs), then one row fewer (PSI differs)
    csv = tmp_path / "bank.csv"
    original = csv.read_text()
    df = pd.read_csv(csv)
    df["x0"] = df["x0"].to_numpy()[::-1]
    df.loc[:30, "y"] = 1 - df.loc[:30, "y"]     # (a feature no split uses changes nothing)
    df.to_csv(csv, index=False)
    res = _cli("replay", tb, "--party-dir", str(tmp_path), "--json")
    out = json.loads(res.output)
    assert res.exit_code == 1 and out["errors"][0]["record"] is not None, out
    csv.write_text("".join(original.splitlines(keepends=True)[:-1]))
    res = _cli("replay", tb, "--party-dir", str(tmp_path), "--json")
    out = json.loads(res.output)
    assert res.exit_code == 1 and "psi." in out["errors"][0]["message"], out
    csv.write_text(original)
    # another fedjoint, speaking another PSI version, refuses to replay (exit 2, says why)
    import psi.protocol as psi_protocol
    recorded = json.loads(Path(tb).read_text().splitlines()[0])
    assert recorded["protocols"]["psi"] == psi_protocol.PROTOCOL_VERSION
    real = psi_protocol.PROTOCOL_VERSION
    psi_protocol.PROTOCOL_VERSION = "fedjoint-psi-v999"
    try:
        res = _cli("replay", tb, "--party-dir", str(tmp_path), "--json")
    finally:
        psi_protocol.PROTOCOL_VERSION = real
    assert res.exit_code == 2 and "other protocol versions" in res.output, res.output
    # no seed at all: cannot run
    seed.unlink()
    assert _cli("replay", tb, "--party-dir", str(tmp_path)).exit_code == 2
    # the platform's side, with its own node.toml
    res = _cli("replay", tp, "--party-dir", str(plat_toml), "--json")
    out = json.loads(res.output)
    assert res.exit_code == 0, out["errors"]
