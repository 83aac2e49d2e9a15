"""The platform's control plane under a hostile peer: per-peer limits on proposals
(``limits.max_peer_jobs``, ``limits.max_peer_proposals_per_minute``), job ids checked
before any side effect, and SIGTERM stopping a node with a job running.

Real nodes on 127.0.0.1 (real gRPC + TLS, SQLite, job processes). The peer's requests are
sent from the bank node's own channel (it holds the pinned certificate and signing key),
as a buggy or compromised bank would send them. Each test ends with the node serving an
honest job. docs/threat-model.md maps the tests to the attacks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.nodes import running_nodes, start_node, submit, wait_state, write_job, write_node_tomls

from federation.admin import AdminClient, AdminError
from federation.config import load_job_spec, load_node_config
from federation.config.limits import JOB_ID_RE, Limits, job_id_problem
from federation.jobstore import JobNotFound, JobStore
from federation.node import Node

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from support.nodes import make_party_keys
    return make_party_keys(tmp_path_factory.mktemp("keys"))


def _files(node: Node) -> list[str]:
    return sorted(str(p.relative_to(node.data_dir))
                  for sub in ("vault", "transcripts", "jobs")
                  for p in (node.data_dir / sub).rglob("*"))


def _honest_job(tmp_path: Path, bank: Node, name: str = "honest") -> dict:
    client = AdminClient(bank.data_dir)
    job = write_job(tmp_path, name, "psi")
    job_id = client.call("submit", spec=load_job_spec(job).to_dict(),
                         source=str(job))["job_id"]
    return wait_state(client, job_id, timeout=60)


def test_defaults_and_the_one_job_id_definition():
    lim = Limits()
    assert lim.max_peer_jobs == 4 and lim.max_peer_proposals_per_minute == 30
    from federation.channel import settings
    assert settings.JOB_ID_RE is JOB_ID_RE     # the channel and the node share it
    for good in ("lr-20261201225959-a1b2c3", "x", "a.b:c_d-e", "x" * 128):
        assert job_id_problem(good) is None, good
    for bad in ("", "..", ".hidden", "a/b", "../../etc/x", "ａｂｃ", "a\n", "a\x00b",
                "a b", "x" * 129, "é", 7, None):
        assert job_id_problem(bad), repr(bad)
        assert not isinstance(bad, str) or not JOB_ID_RE.match(bad)


def test_proposal_flood_is_capped_per_peer(tmp_path, keys):
    """200 proposals (the issue: all accepted, 218 threads, 201 seed files): 4 are kept
    (``limits.max_peer_jobs``), the rest are refused naming their limit, with no store
    row, seed file or thread; then an honest job runs."""
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys,
                                            platform_policy={"require_approval": True})
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        spec = load_job_spec(write_job(tmp_path, "flood", "psi")).to_dict()
        threads_before = threading.active_count()
        replies = [bank.channel.request("job.propose", {"job_id": f"flood-{i}", "spec": spec,
                                                        "from": "bank-a"})
                   for i in range(200)]
        decisions = [r["decision"] for r in replies]
        assert decisions[:4] == ["pending"] * 4 and decisions.count("pending") == 4
        reasons = [r["reason"] for r in replies[4:]]
        assert all(r.startswith("bank-a already has 4 open jobs") and
                   "limits.max_peer_jobs = 4" in r for r in reasons[:26]), reasons[:26]
        assert all("limits.max_peer_proposals_per_minute = 30" in r
                   for r in reasons[26:]), reasons[26:]
        stored = {r.job_id for r in plat.store.list(limit=1000)}
        assert stored == {f"flood-{i}" for i in range(4)}
        assert _files(plat) == []                   # pending jobs hold no seed yet
        # a repeated proposal (the bank retrying after a dropped connection) gets the
        # first one's answer, not a limit; another spec under the same id is refused
        again = bank.channel.request("job.propose", {"job_id": "flood-0", "spec": spec,
                                                     "from": "bank-a"})
        assert again == {"decision": "pending"}
        other = dict(spec, name="other")
        clash = bank.channel.request("job.propose", {"job_id": "flood-0", "spec": other,
                                                     "from": "bank-a"})
        assert clash == {"decision": "refuse", "reason": "job id 'flood-0' already exists"}
        assert len(plat.store.list(limit=1000)) == 4
        assert threading.active_count() <= threads_before + 2
        # the operator refuses the four; the bucket refills (one proposal per 2 s)
        pclient = AdminClient(plat.data_dir)
        for i in range(4):
            pclient.call("refuse", job_id=f"flood-{i}", reason="flood")
        time.sleep(60 / 30 + 0.2)
        client = AdminClient(bank.data_dir)
        job = write_job(tmp_path, "honest", "psi")
        job_id = client.call("submit", spec=load_job_spec(job).to_dict(),
                             source=str(job))["job_id"]
        deadline = time.monotonic() + 30
        while True:
            try:
                if plat.store.get(job_id).state == "submitted":
                    break
            except JobNotFound:
                pass
            assert time.monotonic() < deadline, client.call("status", job_id=job_id)
            time.sleep(0.1)
        pclient.call("approve", job_id=job_id)
        rec = wait_state(client, job_id, timeout=60)
        assert rec["state"] == "done", rec["error"]
        assert plat.channel.ping(count=1, timeout=10)


def test_concurrent_jobs_per_peer_with_automatic_approval(tmp_path, keys):
    """With automatic approval each accepted proposal starts a job: no more than
    ``limits.max_peer_jobs`` at once, each with one seed file; the refused ones leave
    nothing."""
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with open(plat_toml, "a") as fh:
        fh.write("\n[limits]\nmax_peer_jobs = 2\nmax_peer_proposals_per_minute = 1000\n")
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        assert plat.cfg.limits.max_peer_jobs == 2
        spec = load_job_spec(write_job(tmp_path, "many", "psi")).to_dict()
        # the bank never opens these jobs, so the platform's runners wait on it
        replies = [bank.channel.request("job.propose", {"job_id": f"many-{i}", "spec": spec,
                                                        "from": "bank-a"})
                   for i in range(20)]
        accepted = [i for i, r in enumerate(replies) if r["decision"] == "accept"]
        refused = [r["reason"] for r in replies if r["decision"] == "refuse"]
        assert len(accepted) <= 2 and len(accepted) + len(refused) == 20
        assert all("limits.max_peer_jobs = 2" in r for r in refused), refused
        stored = {r.job_id for r in plat.store.list(limit=1000)}
        assert stored == {f"many-{i}" for i in accepted}
        seeds = sorted(p.name for p in (plat.data_dir / "vault").iterdir())
        assert seeds == sorted(f"many-{i}.seed" for i in accepted)
        for i in accepted:          # the bank tells the platform to drop them
            bank.channel.request("job.cancel", {"job_id": f"many-{i}"})
        rec = _honest_job(tmp_path, bank)
        assert rec["state"] == "done", rec["error"]


BAD_IDS = ["..", "a/b", "../../vault/x", "ｊｏｂ１", "job\n", "job\x00x", "job\x1b[31m",
           "j" * 129, "", 12]


def test_bad_job_ids_are_refused_before_any_side_effect(tmp_path, keys):
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        spec = load_job_spec(write_job(tmp_path, "bad", "psi")).to_dict()
        log_before = (plat.data_dir / "node.log").read_text()
        for bad in BAD_IDS:
            r = bank.channel.request("job.propose", {"job_id": bad, "spec": spec,
                                                     "from": "bank-a"})
            assert r["decision"] == "refuse" and r["reason"].startswith("invalid job id: ")
            assert "job id" in r["reason"], r
            for kind in ("job.cancel", "job.abort", "job.decision"):
                r = bank.channel.request(kind, {"job_id": bad, "reason": "x",
                                                "decision": "accept"})
                assert r["ok"] is False and "job id" in r["reason"], (kind, bad, r)
            if isinstance(bad, str):
                assert "job id" in plat.control.job_filter(bad)   # a stream's hello
                with pytest.raises(ValueError, match="job id"):
                    plat.jobs.launch(bad)
                with pytest.raises(ValueError, match="job id"):
                    plat.jobs.recorder_for(bad)
        assert plat.store.list(limit=1000) == []
        assert _files(plat) == [] and _files(bank) == []
        new_log = (plat.data_dir / "node.log").read_text()[len(log_before):]
        rows = [json.loads(line) for line in new_log.splitlines()]
        refused = [r for r in rows if r["event"] == "job.refused"]
        # logged once each, quoted (repr) inside the reason, never as a job_id field
        assert len(refused) == len(BAD_IDS) and not any("job_id" in r for r in refused)
        assert "\x1b" not in new_log
        # the channel refuses the same ids on its side (and a trailing newline, which
        # its old pattern's "$" let through)
        with pytest.raises(ValueError, match="invalid job id"):
            bank.channel.link("job\n")
        rec = _honest_job(tmp_path, bank)
        assert rec["state"] == "done", rec["error"]
        assert plat.channel.ping(count=1, timeout=10)


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "fedjoint").exists() and
                    not os.environ.get("VIRTUAL_ENV"), reason="no fedjoint console script")
def test_sigterm_stops_the_node_and_fails_its_running_job(tmp_path, keys):
    """``fedjoint node start`` exits within 10 s of SIGTERM while a job computes; the job
    is failed "the node stopped" and its transcript is closed with a signed abort record;
    the restarted node runs the next job."""
    from federation import audit
    from federation.keys import load_signing_key
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    exe = Path(sys.executable).with_name("fedjoint")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "federation.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pcfg = load_node_config(plat_toml)
    proc = subprocess.Popen([*cmd, "node", "start", "--config", str(plat_toml), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    bank = start_node(bank_toml)
    plat = None
    try:
        deadline = time.monotonic() + 30
        while not (pcfg.data_dir / "admin.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "platform node did not start"
            time.sleep(0.1)
        client, pclient = AdminClient(bank.data_dir), AdminClient(pcfg.data_dir)
        job = write_job(tmp_path, "slow", params={"epochs": 1, "batch_size": 0},
                        evaluation={"cipher": "paillier", "key_bits": 4096})
        job_id = client.call("submit", spec=load_job_spec(job).to_dict(),
                             source=str(job))["job_id"]
        deadline = time.monotonic() + 60
        while True:                          # proposed, then PSI, then key generation
            try:
                state = pclient.call("status", job_id=job_id)["state"]
            except AdminError:
                state = "not yet proposed"
            if state in ("training", "done", "failed"):
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        assert state == "training", pclient.call("status", job_id=job_id)
        time.sleep(1.0)                      # well inside the 4096-bit key generation
        assert pclient.call("status", job_id=job_id)["state"] == "training"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)             # raises TimeoutExpired after 10 s
        print(f"platform node exited {code} after {time.monotonic() - t0:.2f} s")
        assert code == 0, proc.stderr.read().decode()[-2000:]
        prec = JobStore(pcfg.data_dir / "jobs.db").get(job_id)
        assert prec.state == "failed" and "the node stopped" in prec.error, prec.error
        path = pcfg.data_dir / "transcripts" / f"{job_id}.jsonl"
        bcfg = load_node_config(bank_toml)
        pinned = {pcfg.name: load_signing_key(pcfg.keys.signing_key).public_key(),
                  bcfg.name: load_signing_key(bcfg.keys.signing_key).public_key()}
        rep = audit.verify(path, pinned_keys=pinned)
        assert rep.ok and rep.summary["status"] == "aborted", rep.errors
        assert "the node stopped" in rep.summary["reason"], rep.summary
        brec = wait_state(client, job_id, timeout=30)     # the bank's side fails too
        assert brec["state"] == "failed", brec
        deadline = time.monotonic() + 10                 # and stops its job process
        while any(p.name == f"fedjoint-job-{job_id}" for p in _children()):
            assert time.monotonic() < deadline, "the bank's job process is still running"
            time.sleep(0.1)
        # the platform starts again and serves the next job
        plat = start_node(plat_toml)
        deadline = time.monotonic() + 30     # the bank's gRPC client reconnects (backoff)
        while True:
            try:
                bank.channel.ping(count=1, timeout=5)
                break
            except Exception:  # noqa: BLE001 - unreachable until it reconnects
                assert time.monotonic() < deadline, "the bank cannot reach the platform"
                time.sleep(0.5)
        rec = _honest_job(tmp_path, bank, "after-stop")
        assert rec["state"] == "done", rec["error"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        bank.stop()
        if plat is not None:
            plat.stop()


def _children():
    import multiprocessing
    return multiprocessing.active_children()


def test_a_proposal_to_a_platform_not_yet_up_is_retried(tmp_path, keys):
    """The bank's first proposal finds no platform (connection refused); the platform
    starts within the retry pauses and the job runs to the end, proposed once more."""
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    bank = start_node(bank_toml)
    plat = None
    try:
        client = AdminClient(bank.data_dir)
        job_id = submit(client, write_job(tmp_path, "late", "psi"))
        deadline = time.monotonic() + 20
        while "job.propose_retry" not in (bank.data_dir / "node.log").read_text():
            assert time.monotonic() < deadline, client.call("status", job_id=job_id)
            time.sleep(0.05)
        plat = start_node(plat_toml)
        rec = wait_state(client, job_id, timeout=60)
        assert rec["state"] == "done", rec["error"]
        assert [r.job_id for r in plat.store.list(limit=10)] == [job_id]
    finally:
        bank.stop()
        if plat is not None:
            plat.stop()
