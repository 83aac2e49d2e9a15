"""Resumable jobs (issue 12 part 5) through real nodes on 127.0.0.1: kill -9 of a job
process, of the bank, of the platform; the resumed model equals an uninterrupted run of
the same job (same id, seeds, data) bit for bit; the transcripts verify with their
restart records; `fedjoint job resume` refusals; a tampered checkpoint is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from multiprocessing import active_children
from pathlib import Path

import pytest
from support.nodes import (
    running_nodes,
    start_node,
    submit,
    wait_state,
    write_job,
    write_node_tomls,
)

from federation import audit
from federation.admin import AdminClient
from federation.config import job_spec_from_dict, load_node_config
from federation.link import local_link_pair, run_two_parties
from federation.node import Node
from federation.runner import run_job_side

ROOT = Path(__file__).resolve().parents[2]
SB = {"n_trees": 4, "max_depth": 2, "max_bin": 8}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from support.nodes import make_party_keys
    return make_party_keys(tmp_path_factory.mktemp("keys"))


def _checkpoints(data_dir: Path, job_id: str, restarts: int = 0) -> int:
    """Checkpoints recorded in the party's transcript (the file is written first),
    after its ``restarts``-th restart record."""
    t = data_dir / "transcripts" / f"{job_id}.jsonl"
    parts = t.read_bytes().split(b'"type":"restart"') if t.exists() else [b""]
    return parts[restarts].count(b'"type":"checkpoint"') if len(parts) > restarts else 0


def _wait_checkpoints(data_dir: Path, job_id: str, n: int, timeout: float = 120,
                      restarts: int = 0) -> None:
    deadline = time.monotonic() + timeout
    while _checkpoints(data_dir, job_id, restarts) < n:
        assert time.monotonic() < deadline, f"no checkpoint {n} for {job_id}"
        time.sleep(0.05)


def _reference_digests(bank_toml: Path, plat_toml: Path, job_id: str, spec: dict):
    """The same job (id, spec, both seeds, data) run without interruption, in process."""
    cfgs = {p: load_node_config(t) for p, t in (("bank", bank_toml), ("platform", plat_toml))}
    seeds = {p: (c.data_dir / "vault" / f"{job_id}.seed").read_bytes() for p, c in cfgs.items()}
    js = job_spec_from_dict(spec, "job")
    a, b, _ = local_link_pair(job_id, "bank-a", "platform-b")
    res_b, res_p = run_two_parties(
        lambda: run_job_side(js, cfgs["bank"], a, seeds["bank"]),
        lambda: run_job_side(js, cfgs["platform"], b, seeds["platform"]), timeout=600)
    return res_b.model_digest, res_p.model_digest


def _rewrite(src: Path, dst: Path, keep, change, key) -> None:
    """Rewrite a transcript as its own writer could (every record re-signed and
    re-chained): ``keep(rec)`` drops records, ``change(rec)`` edits them."""
    from federation.transcript import ZERO_HASH, canonical, record_signing_bytes, sha256_hex
    prev, out = ZERO_HASH, []
    recs = [json.loads(line) for line in src.read_bytes().splitlines()]
    for rec in (r for r in recs if keep(r)):
        change(rec)
        rec.update(i=len(out), prev=prev)
        rec.pop("rsig")
        rec["rsig"] = key.sign(record_signing_bytes(rec)).hex()
        line = canonical(rec)
        out.append(line)
        prev = sha256_hex(line)
    dst.write_bytes(b"".join(line + b"\n" for line in out))


def _bank_cannot_rewrite_its_restart(bank, plat, job_id, keys, tmp_path) -> None:
    """The bank re-signs its transcript with a restart naming another checkpoint, or
    without the restart (hiding the interruption): verify refuses both."""
    from federation.keys import load_signing_key
    key = load_signing_key(keys["bank-a"]["signing_key"])
    src = bank.data_dir / "transcripts" / f"{job_id}.jsonl"
    peer = plat.data_dir / "transcripts" / f"{job_id}.jsonl"
    forged = tmp_path / "forged.jsonl"

    def renumber(rec):
        if rec["type"] == "restart":
            rec["checkpoint"] = 99

    _rewrite(src, forged, lambda r: True, renumber, key)
    rep = audit.verify(forged)
    assert not rep.ok and "restart from checkpoint 99" in rep.detail, rep.detail
    _rewrite(src, forged, lambda r: r["type"] != "restart", lambda r: None, key)
    rep = audit.verify(forged, peer_path=peer)
    assert not rep.ok, "a transcript that hides its restart must not verify"
    print("hidden restart:", rep.detail)


def _verify_pair(bank: Node | Path, plat: Node | Path, job_id: str, restarts: int = 1):
    dirs = [n.data_dir if isinstance(n, Node) else n for n in (bank, plat)]
    paths = [d / "transcripts" / f"{job_id}.jsonl" for d in dirs]
    rep = audit.verify(paths[0], peer_path=paths[1])
    assert rep.ok, rep.errors
    for s in (rep.summary, rep.peer_summary):
        assert s["status"] == "done"
        assert len(s["restarts"]) == restarts, s["restarts"]
    return rep


def test_sb_job_process_killed_during_tree_resumes_bit_identical(tmp_path, keys):
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        job_id = submit(client, write_job(tmp_path, "sb", "secureboost", params=SB,
                                          evaluation={"cipher": "paillier",
                                                      "key_bits": 1024}))
        _wait_checkpoints(bank.data_dir, job_id, 1)
        _wait_checkpoints(plat.data_dir, job_id, 1)
        child = [p for p in active_children() if p.name == f"fedjoint-job-{job_id}"]
        os.kill(child[0].pid, signal.SIGKILL)
        rec = wait_state(client, job_id, timeout=60)
        assert rec["state"] == "done", rec["error"]
        spec = rec["spec"]
        rep = _verify_pair(bank, plat, job_id)
        ref = _reference_digests(bank_toml, plat_toml, job_id, spec)
        got = tuple(rep.summary["model_digests"][n] for n in ("bank-a", "platform-b"))
        assert got == ref
        # each side's resumed transcript replays from its party's files
        for node, toml in ((bank, bank_toml), (plat, plat_toml)):
            r = audit.replay(node.data_dir / "transcripts" / f"{job_id}.jsonl", toml)
            assert r.ok, r.errors
            assert r.model_digest == r.signed_digest
        caught = [e for e in bank.store.events(job_id) if e["event"] == "resume.caught_up"]
        assert caught, "the resumed run logs when it caught up with its checkpoint"
        _bank_cannot_rewrite_its_restart(bank, plat, job_id, keys, tmp_path)


def _spawn(toml: Path, env: dict | None = None) -> subprocess.Popen:
    """A node in its own process group: kill -9 of the group is a crash of the node
    (daemon, job process, workers)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "federation.cli", "node", "start",
                             "--config", str(toml), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    admin = load_node_config(toml).data_dir / "admin.json"
    deadline = time.monotonic() + 60
    while not admin.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "node did not start"
        time.sleep(0.1)
    return proc


def _crash(proc: subprocess.Popen, toml: Path) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    (load_node_config(toml).data_dir / "admin.json").unlink(missing_ok=True)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _resume_after_crash(tmp_path, keys, crash: str, job: Path, after: int,
                        tamper_last: bool = False) -> tuple[dict, object]:
    """Run ``job`` with the ``crash`` node in its own process, kill -9 it once both
    nodes hold ``after`` checkpoints, restart it: the job resumes by itself."""
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys, deadline_s=3.0)
    tomls = {"bank": bank_toml, "platform": plat_toml}
    other = "platform" if crash == "bank" else "bank"
    proc = _spawn(tomls[crash])
    node = start_node(tomls[other])
    dirs = {p: load_node_config(t).data_dir for p, t in tomls.items()}
    try:
        client = AdminClient(dirs["bank"])
        job_id = submit(client, job)
        for d in dirs.values():
            _wait_checkpoints(d, job_id, after)
        _crash(proc, tomls[crash])
        if tamper_last:      # the crashed node's newest checkpoint file is altered
            n = _checkpoints(dirs[crash], job_id)
            last = dirs[crash] / "jobs" / job_id / "checkpoints" / f"{n}.json"
            body = json.loads(last.read_text())
            body["step"] += 1
            last.write_text(json.dumps(body))
        proc = _spawn(tomls[crash])
        rec = wait_state(AdminClient(dirs["bank"]), job_id, timeout=120)
        assert rec["state"] == "done", rec["error"]
        prec = wait_state(AdminClient(dirs["platform"]), job_id, timeout=30)
        assert prec["state"] == "done", prec["error"]
        rep = _verify_pair(dirs["bank"], dirs["platform"], job_id)
        got = tuple(rep.summary["model_digests"][n] for n in ("bank-a", "platform-b"))
        assert got == _reference_digests(bank_toml, plat_toml, job_id, rec["spec"])
        # the stored model files are the ones the digests name
        models = {p: json.loads((dirs[p] / "models" / f"{job_id}.json").read_text())
                  for p in dirs}
        assert all(m for m in models.values())
        return rep.summary, dirs[crash] / "node.log"
    finally:
        _stop(proc)
        node.stop()


def test_bank_killed_between_trees_resumes_at_start_and_refuses_a_tampered_checkpoint(
        tmp_path, keys):
    job = write_job(tmp_path, "sb", "secureboost", params=SB,
                    evaluation={"cipher": "paillier", "key_bits": 1024})
    summary, log = _resume_after_crash(tmp_path, keys, "bank", job, after=2,
                                       tamper_last=True)
    restart = summary["restarts"][0]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    refused = [e for e in events if e["event"] == "checkpoint.refused"]
    assert refused and "does not match the digest" in refused[0]["why"]
    # it rolled back past the tampered checkpoint, to one both parties hold
    assert restart["checkpoint"] < int(refused[0]["why"].split()[1])
    print("bank restart:", restart)


def test_platform_killed_between_epochs_resumes_lr_bit_identical(tmp_path, keys):
    job = write_job(tmp_path, "lr", params={"epochs": 6, "batch_size": 64,
                                            "early_stopping": "none"},
                    evaluation={"cipher": "paillier", "key_bits": 1024})
    summary, _ = _resume_after_crash(tmp_path, keys, "platform", job, after=2)
    assert summary["restarts"][0]["checkpoint"] >= 2


def test_lr_2048_bit_keys_job_process_killed_resumes_bit_identical(tmp_path, keys):
    """Default-size keys: both parties' Paillier keys are 2048 bits (small data)."""
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys, bank_rows=160,
                                            platform_rows=160)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        job_id = submit(client, write_job(tmp_path, "lr2048", params={
            "epochs": 3, "batch_size": 0, "early_stopping": "none"},
            evaluation={"cipher": "paillier", "key_bits": 2048}))
        for n in (bank, plat):
            _wait_checkpoints(n.data_dir, job_id, 1)
        child = [p for p in active_children() if p.name == f"fedjoint-job-{job_id}"]
        os.kill(child[-1].pid, signal.SIGKILL)
        rec = wait_state(client, job_id, timeout=120)
        assert rec["state"] == "done", rec["error"]
        rep = _verify_pair(bank, plat, job_id)
        assert rep.summary["key_sizes"]["paillier"] == 2048
        got = tuple(rep.summary["model_digests"][n] for n in ("bank-a", "platform-b"))
        assert got == _reference_digests(bank_toml, plat_toml, job_id, rec["spec"])


def test_sigterm_interrupts_a_resumable_job_and_the_restarted_node_resumes_it(
        tmp_path, keys):
    """SIGTERM to the bank's node while its job holds a checkpoint: the node exits within
    10 s, the job is ``interrupted`` (not failed) on both nodes with its transcripts
    open; the bank keeps digests only, yet its node refuses to delete the sidecar that
    the resume needs; restarted, it resumes the job to the uninterrupted model."""
    from federation.jobstore import JobStore
    from federation.node.compute import HOLD_ENV
    from federation.transcript import sidecar_path
    from federation.transcript.retention import is_closed
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys, deadline_s=3.0)
    bank_toml.write_text(bank_toml.read_text() + '\n[transcript]\nkeep_received = "digests"\n')
    bdir = load_node_config(bank_toml).data_dir
    proc = _spawn(bank_toml, {HOLD_ENV: "1"})     # the bank's job holds at checkpoint 1
    plat = start_node(plat_toml)
    try:
        job_id = submit(AdminClient(bdir), write_job(
            tmp_path, "sb", "secureboost", params={**SB, "n_trees": 3},
            evaluation={"cipher": "paillier", "key_bits": 512}))
        for d in (bdir, plat.data_dir):
            _wait_checkpoints(d, job_id, 1)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0, proc.stderr.read().decode()[-2000:]
        print(f"bank node exited {time.monotonic() - t0:.2f} s after SIGTERM")
        (bdir / "admin.json").unlink(missing_ok=True)
        brec = JobStore(bdir / "jobs.db").get(job_id)
        assert brec.state == "interrupted" and "was stopped" in brec.error, brec.error
        tb = bdir / "transcripts" / f"{job_id}.jsonl"
        assert not is_closed(tb) and sidecar_path(tb).exists()
        prec = wait_state(AdminClient(plat.data_dir), job_id,
                          states=("interrupted", "failed", "done"), timeout=30)
        assert prec["state"] == "interrupted", prec
        proc = _spawn(bank_toml)
        rec = wait_state(AdminClient(bdir), job_id, timeout=120)
        assert rec["state"] == "done", rec["error"]
        assert wait_state(AdminClient(plat.data_dir), job_id, timeout=30)["state"] == "done"
        rep = _verify_pair(bdir, plat.data_dir, job_id)
        got = tuple(rep.summary["model_digests"][n] for n in ("bank-a", "platform-b"))
        assert got == _reference_digests(bank_toml, plat_toml, job_id, rec["spec"])
        events = [json.loads(line) for line in (bdir / "node.log").read_text().splitlines()]
        refused = [e for e in events if e["event"] == "transcript.retention_refused"]
        assert refused and refused[0]["job_id"] == job_id, refused
        assert not sidecar_path(tb).exists()     # closed now: "digests" deletes it
    finally:
        _stop(proc)
        plat.stop()


def test_job_resume_command_refusals(tmp_path, keys, capsys):
    from federation.cli import main
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)

        def resume(job_id: str) -> str:
            with pytest.raises(SystemExit):
                main(["job", "resume", job_id, "--config", str(bank_toml)])
            return capsys.readouterr().err

        assert "no job 'nope-1' on bank-a" in resume("nope-1")
        done = submit(client, write_job(tmp_path, "psi-only", "psi"))
        assert wait_state(client, done, timeout=60)["state"] == "done"
        assert "finished (done): nothing to resume" in resume(done)
        # a job interrupted before its first checkpoint: failed at restart, closed
        bank.store.create("early-1", "early", "secureboost", "bank", {}, state="training")
        bank.jobs.recover()
        err = resume("early-1")
        assert "is failed (interrupted: the node restarted" in err and "cannot resume" in err
        # an interrupted job whose checkpoint files are gone
        job_id = submit(client, write_job(tmp_path, "lr", params={
            "epochs": 40, "batch_size": 64, "early_stopping": "none"},
            evaluation={"cipher": "paillier", "key_bits": 512}))
        _wait_checkpoints(bank.data_dir, job_id, 1)
        _wait_checkpoints(plat.data_dir, job_id, 1)
        bank.jobs.stop_live(job_id, "test: stopped")
        assert client.call("status", job_id=job_id)["state"] == "interrupted"
        for f in (bank.data_dir / "jobs" / job_id / "checkpoints").glob("*.json"):
            f.unlink()
        err = resume(job_id)
        assert "did not resume" in err and "is missing" in err, err
        assert client.call("status", job_id=job_id)["state"] == "failed"
        assert wait_state(AdminClient(plat.data_dir), job_id, timeout=30)["state"] == \
            "failed"
        rep = audit.verify(bank.data_dir / "transcripts" / f"{job_id}.jsonl")
        assert rep.ok and rep.summary["status"] == "aborted", rep.errors
        # by hand, from the platform's CLI: it asks the bank to drive the resume
        job_id = submit(client, write_job(tmp_path, "lr2", params={
            "epochs": 8, "batch_size": 64, "early_stopping": "none"},
            evaluation={"cipher": "paillier", "key_bits": 512}))
        _wait_checkpoints(bank.data_dir, job_id, 1)
        _wait_checkpoints(plat.data_dir, job_id, 1)
        assert "is training, not interrupted" in resume(job_id)
        bank.jobs.stop_live(job_id, "test: stopped")
        wait_state(AdminClient(plat.data_dir), job_id, states=("interrupted",), timeout=30)
        main(["job", "resume", job_id, "--config", str(plat_toml)])
        assert "resumed from checkpoint" in capsys.readouterr().out
        assert wait_state(client, job_id, timeout=60)["state"] == "done"
        _verify_pair(bank, plat, job_id)


def test_changed_data_after_a_crash_fails_the_job_with_signed_abort_records(tmp_path, keys):
    """The bank's data changed while it was down: its play-back does not reproduce what
    it sent, so the job fails on both nodes and both transcripts are closed."""
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys, deadline_s=3.0)
    proc = _spawn(bank_toml)
    plat = start_node(plat_toml)
    bdir = load_node_config(bank_toml).data_dir
    try:
        job_id = submit(AdminClient(bdir), write_job(tmp_path, "lr", params={
            "epochs": 20, "batch_size": 64, "early_stopping": "none"},
            evaluation={"cipher": "paillier", "key_bits": 512}))
        for d in (bdir, plat.data_dir):
            _wait_checkpoints(d, job_id, 2)
        _crash(proc, bank_toml)
        rows = [r.split(",") for r in (tmp_path / "bank.csv").read_text().splitlines()]
        col = rows[0].index("x0")
        vals = [r[col] for r in rows[1:]][::-1]    # one feature's values reversed
        for r, v in zip(rows[1:], vals, strict=True):  # (standardising would undo a
            r[col] = v                                 # shift or a scale)
        (tmp_path / "bank.csv").write_text("".join(",".join(r) + "\n" for r in rows))
        proc = _spawn(bank_toml)
        rec = wait_state(AdminClient(bdir), job_id, timeout=120)
        assert rec["state"] == "failed" and "did not reproduce its recorded run" in \
            rec["error"], rec["error"]
        assert wait_state(AdminClient(plat.data_dir), job_id, timeout=30)["state"] == \
            "failed"
        for d in (bdir, plat.data_dir):
            rep = audit.verify(d / "transcripts" / f"{job_id}.jsonl")
            assert rep.ok and rep.summary["status"] == "aborted", rep.errors
            assert len(rep.summary["restarts"]) == 1
    finally:
        _stop(proc)
        plat.stop()


def test_a_resumed_job_interrupted_again_resumes_again(tmp_path, keys, monkeypatch):
    """Two kills of a job process, the second after the resumed run's own checkpoint:
    two restart records, the model still equals the uninterrupted run's, and a joint
    replay of both transcripts matches. Each job
    process holds after checkpoints 1 and 2 (the test-only FEDJOINT_TEST_HOLD_AT_CHECKPOINTS,
    federation/node/compute.py), so the kills land there however fast the machine is."""
    from federation.node.compute import HOLD_ENV
    monkeypatch.setenv(HOLD_ENV, "1,2")
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        job_id = submit(client, write_job(tmp_path, "sb", "secureboost",
                                          params={**SB, "n_trees": 4},
                                          evaluation={"cipher": "paillier",
                                                      "key_bits": 512}))
        for restarts in (0, 1):   # checkpoint 1 of the first run, then 2 of the resumed
            for n in (bank, plat):
                _wait_checkpoints(n.data_dir, job_id, 1, restarts=restarts)
            child = [p for p in active_children() if p.name == f"fedjoint-job-{job_id}"]
            assert child, "a held job process is alive"
            os.kill(child[0].pid, signal.SIGKILL)
        rec = wait_state(client, job_id, timeout=120)
        assert rec["state"] == "done", rec["error"]
        rep = _verify_pair(bank, plat, job_id, restarts=2)
        assert [r["checkpoint"] for r in rep.summary["restarts"]] == [1, 2]
        got = tuple(rep.summary["model_digests"][n] for n in ("bank-a", "platform-b"))
        assert got == _reference_digests(bank_toml, plat_toml, job_id, rec["spec"])
        tb = bank.data_dir / "transcripts" / f"{job_id}.jsonl"
        r = audit.replay(tb, bank_toml)
        assert r.ok, r.errors
        # joint replay regenerates the effective messages of both resumed transcripts
        j = audit.joint_replay(tb, bank_toml,
                               plat.data_dir / "transcripts" / f"{job_id}.jsonl", plat_toml)
        assert j.ok, j.errors
        assert {p: d["replayed"] for p, d in j.model_digests.items()} == \
            dict(zip(("bank-a", "platform-b"), got, strict=True))


def test_multiclass_secureboost_resumes_bit_identical(tmp_path, keys):
    """A 3-class SecureBoost job (a tree per class and round; checkpoints per round)."""
    import numpy as np
    import pandas as pd
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    g = pd.read_csv(tmp_path / "bank.csv")
    g["y"] = np.digitize(g["x0"], np.quantile(g["x0"], [1 / 3, 2 / 3]))
    g.to_csv(tmp_path / "bank.csv", index=False)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        job_id = submit(client, write_job(tmp_path, "mc", "secureboost", params={
            "objective": "multi:softprob", "num_class": 3, "n_trees": 3, "max_depth": 2,
            "max_bin": 8}, evaluation={"cipher": "paillier", "key_bits": 512}))
        for n in (bank, plat):
            _wait_checkpoints(n.data_dir, job_id, 1)
        child = [p for p in active_children() if p.name == f"fedjoint-job-{job_id}"]
        os.kill(child[-1].pid, signal.SIGKILL)
        rec = wait_state(client, job_id, timeout=120)
        assert rec["state"] == "done", rec["error"]
        rep = _verify_pair(bank, plat, job_id)
        got = tuple(rep.summary["model_digests"][n] for n in ("bank-a", "platform-b"))
        assert got == _reference_digests(bank_toml, plat_toml, job_id, rec["spec"])
