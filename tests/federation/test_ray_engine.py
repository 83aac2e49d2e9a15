"""Ray as a party's compute engine (issue 17 part 4), on one local Ray cluster per module
(a head on 127.0.0.1 with 2 CPUs and token authentication, started and stopped by PID;
no Ray process may be left).

* the executor seam: Paillier encryption, background obfuscators, histograms, LR's
  ``X.T @ enc`` and PSI blinding on the pool's actors give exactly the local engine's
  bytes; a kernel error is a clear error; a pool actor killed mid-call (SIGKILL by PID)
  is restarted and the call retried with the same result, and without retries the call
  fails with the reason; a token file readable by others is refused;
* two real nodes with ``engine = "ray"``, one pool actor killed by PID while a kernel
  call runs on it: a SecureBoost job's models and every message digest equal the same
  job (id, seeds, data) run in process on the local engine; then an LR job's models
  equal the local engine's too, and both jobs ran on the pool's existing actor
  processes (none created, the same PIDs);
* a wrong token and an unreachable ``ray_address`` fail the job fast, naming the key.

Small test sizes: 1024-bit Paillier (512 at the seam), 2 trees of depth 2.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support.nodes import free_port, wait_state, write_job, write_node_tomls
from support.ray_cluster import children, cmdline, ray_head

from federation.admin import AdminClient, AdminError
from federation.config import (
    ConfigError,
    job_spec_from_dict,
    load_job_spec,
    load_node_config,
    node_config_from_dict,
)
from federation.link import local_link_pair, run_two_parties
from federation.node import Node
from federation.runner import run_job_side
from secure_agg import executor
from secure_agg.keys import generate_keypair
from secure_agg.rng import Drbg

if importlib.util.find_spec("ray") is None:   # not imported here: the engine imports it
    pytest.skip("the ray extra is not installed", allow_module_level=True)

SEED = bytes(range(32))
SB = {"n_trees": 2, "max_depth": 2, "max_bin": 8}
LR = {"epochs": 2, "batch_size": 0, "learning_rate": 0.15}
ACTOR = "ray::KernelHost"       # a pool actor's process title (+ ".method" during a call)


def _token(path: Path, mode: int = 0o600) -> Path:
    path.write_text(hashlib.sha256(path.name.encode()).hexdigest())
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``(address, head_pid, token_file)``."""
    root = tmp_path_factory.mktemp("ray")
    token = _token(root / "ray.token")
    with ray_head(root, token_file=token) as (address, pid):
        yield address, pid, token


@pytest.fixture
def on_ray(cluster):
    """This (pytest) process's kernels on the test cluster, for one test."""
    info = executor.configure("ray", cluster[0], 60.0, str(cluster[2]))
    try:
        yield info
    finally:
        executor.configure("local")


def _kernels(pub, sk, workers: int):
    import secure_agg.paillier_ops as ops
    from secure_agg.paillier import PaillierPrivateCipher, PaillierPublicCipher
    from secure_agg.procpool import get_pool
    v = list(range(-300, 300))
    c = PaillierPrivateCipher(sk, workers=workers)
    enc = c.encrypt(v, rng=Drbg(SEED, "enc"))
    batch = c.precompute_obfuscators(400, rng=Drbg(SEED, "pre"))   # background pool
    pre = c.encrypt(v[:400], obfuscators=batch)
    bins = np.random.default_rng(3).integers(0, 5, (600, 4))
    old, ops.PROCESS_MIN_ROWS = ops.PROCESS_MIN_ROWS, 8
    try:
        pc = PaillierPublicCipher(pub, workers=workers)
        hist = pc.histogram(enc, bins, 5)
        lr = pc.matvec_t(bins - 2, enc)          # LR's X.T @ enc
    finally:
        ops.PROCESS_MIN_ROWS = old
    return (enc.data, pre.data, hist.data, lr.data), get_pool(workers)


def _psi(workers: int) -> list[bytes]:
    from psi.engine import Engine
    ids = [f"9131{i:014d}" for i in range(20_000)]
    with Engine(workers) as eng:
        blinded = list(eng.hash_blind_witnessed_stream(ids, b"fedjoint-test", SEED, 6000))
        return blinded + list(eng.mult_witnessed_stream(iter(blinded), SEED[::-1], True))


def test_kernels_on_ray_are_the_local_bytes(cluster, on_ray):
    from secure_agg.procpool import get_pool
    from secure_agg.ray_engine import RayWorker
    assert on_ray["cpus"] == 2 and on_ray["nodes"] == 1 and on_ray["pool"] == 2
    pub, sk = generate_keypair(512, rng=Drbg(SEED, "k512"), insecure_test_key=True)
    executor.configure("local")
    local, _ = _kernels(pub, sk, 2)
    local_psi = _psi(1)
    executor.configure("ray", cluster[0], 60.0, str(cluster[2]))
    got, pool = _kernels(pub, sk, 2)
    assert got == local
    assert pool._procs and all(isinstance(w, RayWorker) for w in pool._procs)
    assert _psi(2) == local_psi
    with pytest.raises(RuntimeError, match="encryption worker failed: ValueError: unknown op"):
        get_pool(2).run([({"op": "bogus"}, b"")])
    loose = _token(cluster[2].with_name("loose.token"), 0o644)
    with pytest.raises(executor.EngineUnavailable, match=r"loose.token has mode 644; .*chmod 600"):
        executor.configure("ray", cluster[0], 60.0, str(loose))


def _slow_request(pub):
    """A ~seconds-long worker request: standard obfuscators (one powmod each)."""
    from secure_agg.framing import obfuscate_request
    from secure_agg.paillier import PaillierPublicCipher
    c = PaillierPublicCipher(pub, workers=1)
    draws = c._draw(Drbg(SEED, "slow"), 1500, "standard")
    return c, draws, obfuscate_request(c._spec(), draws, "standard", 0, 8)


def _kill_busy_worker(head_pid: int, timeout: float = 30.0, until=None) -> int | None:
    """SIGKILL (by PID) the pool actor process of this head running a kernel call; None
    if ``until()`` came true first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (until and until()):
        busy = [p for p in children(head_pid) if cmdline(p).startswith(ACTOR + ".kernel")]
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            return busy[0]
        time.sleep(0.01)
    if until is None:
        raise AssertionError("no Ray worker ran the kernel task")
    return None


def test_a_killed_ray_worker_is_retried_or_fails_with_the_reason(cluster, on_ray):
    from secure_agg import ray_engine
    from secure_agg.framing import spec_width, split_reply
    pub, _ = generate_keypair(1024, rng=Drbg(SEED, "k1024"), insecure_test_key=True)
    c, draws, (head, body) = _slow_request(pub)
    expected = c._obfuscate_local(draws, "standard")
    backend = executor._backend
    worker = ray_engine.RayWorker(backend)
    worker.send(head, body)
    killed = _kill_busy_worker(cluster[1])
    reply = worker.recv()             # Ray restarted the actor and ran the call again
    assert split_reply(reply, spec_width(c._spec()), len(draws), "obf") == expected
    _, ref = backend.submit("kernel", head, body, max_task_retries=0)
    assert _kill_busy_worker(cluster[1]) != killed
    with pytest.raises(RuntimeError, match="failed on this party's Ray cluster after .*"
                                           "retries: .*(Died|Unavailable|Crashed)"):
        backend.get(ref, "encryption worker")


def _messages(transcript: Path) -> dict[str, list[str]]:
    """Per sender: its messages' ``kind ptype sha256`` in order."""
    lines: dict[str, list[str]] = {}
    for raw in transcript.read_bytes().splitlines():
        rec = json.loads(raw)
        if rec.get("type") == "msg":
            lines.setdefault(rec["sender"], []).append(
                f"{rec['kind']} {rec['ptype']} {rec['sha256']}")
    return lines


def _reference(tomls: dict, job_id: str, spec: dict):
    """The same job in this process on the local engine, from the nodes' vault seeds."""
    cfgs = {p: load_node_config(t) for p, t in tomls.items()}
    cfgs = {p: replace(c, engine=replace(c.engine, engine="local")) for p, c in cfgs.items()}
    seeds = {p: (c.data_dir / "vault" / f"{job_id}.seed").read_bytes() for p, c in cfgs.items()}
    js = job_spec_from_dict(spec, "job")
    a, b, crossed = local_link_pair(job_id, "bank-a", "platform-b")
    res_b, res_p = run_two_parties(
        lambda: run_job_side(js, cfgs["bank"], a, seeds["bank"]),
        lambda: run_job_side(js, cfgs["platform"], b, seeds["platform"]), timeout=600)
    lines: dict[str, list[str]] = {}
    for who, kind, ptype, data in crossed:
        lines.setdefault(who, []).append(f"{kind} {ptype} {hashlib.sha256(data).hexdigest()}")
    return res_b.model_digest, res_p.model_digest, lines


def _use_ray(toml: Path, address: str, token: Path, timeout: float = 60.0) -> None:
    text = toml.read_text().replace(
        "[node]\n", f'[node]\nengine = "ray"\nray_address = "{address}"\n'
                    f'ray_auth_token_file = "{token}"\n'
                    f"ray_connect_timeout_s = {timeout}\nworkers = 2\n", 1)
    toml.write_text(text)


def _actors(head_pid: int) -> set[int]:
    return {p for p in children(head_pid) if cmdline(p).startswith(ACTOR)}


def _node_events(data_dir: Path, event: str, wait_s: float = 0.0) -> list[dict]:
    deadline = time.monotonic() + wait_s
    while True:
        lines = (data_dir / "node.log").read_text().splitlines()
        got = [r for r in map(json.loads, lines) if r.get("event") == event]
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def _job_on_ray(clients, tomls, tmp_path, name, alg, params, head_pid=None):
    """Run one job through the nodes (optionally killing a busy pool actor meanwhile);
    assert its models and messages equal the local engine's; its engine.connected."""
    job = write_job(tmp_path, name, algorithm=alg, params=params,
                    evaluation={"cipher": "paillier", "key_bits": 1024})
    spec = load_job_spec(job).to_dict()
    job_id = clients[0].call("submit", spec=spec, source=str(job))["job_id"]
    if head_pid:    # a pool actor lost mid-job: Ray restarts it and re-runs the call
        killed = _kill_busy_worker(head_pid, 180, lambda: clients[0].call(
            "status", job_id=job_id)["state"] in ("done", "failed"))
        print(f"pool actor killed mid-job: {killed or 'none was busy when polled'}")
    recs = [wait_state(c, job_id, timeout=180) for c in clients]
    assert [r["state"] for r in recs] == ["done", "done"], [r["error"] for r in recs]
    models = tuple(c.call("model", model_id=job_id)["digest"] for c in clients)
    ref_b, ref_p, ref_msgs = _reference(tomls, job_id, spec)
    assert models == (ref_b, ref_p), alg
    for rec in recs:
        got = _messages(Path(rec["artifacts"]["transcript"]))   # + the closing outcome
        for who in ("bank-a", "platform-b"):
            assert got[who][:-1] == ref_msgs[who], who
            assert got[who][-1].startswith("job.outcome "), got[who][-1]
    conns = []
    for c in clients:
        events = c.call("logs", job_id=job_id)["events"]
        conn = [e for e in events if e["event"] == "engine.connected"]
        assert conn and conn[0]["engine"] == "ray" and conn[0]["cpus"] == 2, events
        conns.append(conn[0])
    return spec, job, conns


def _failed_fast(client, spec, job) -> str:
    t0 = time.monotonic()
    bad = client.call("submit", spec=spec, source=str(job))["job_id"]
    rec = wait_state(client, bad, timeout=60)
    assert rec["state"] == "failed"
    assert "node.ray_address" in rec["error"] and "ray_connect_timeout_s" in rec["error"]
    print(f"failed in {time.monotonic() - t0:.1f} s: {rec['error']}")
    with pytest.raises(AdminError):     # nothing half-written: no model registered
        client.call("model", model_id=bad)
    return rec["error"]


def test_secureboost_and_lr_on_ray_nodes_equal_local_and_bad_engine_fails_fast(cluster,
                                                                                 tmp_path):
    bank_toml, plat_toml = write_node_tomls(tmp_path)
    tomls = {"bank": bank_toml, "platform": plat_toml}
    for t in (bank_toml, plat_toml):
        _use_ray(t, cluster[0], cluster[2])
    bank = Node(load_node_config(bank_toml), quiet=True).start()
    plat = Node(load_node_config(plat_toml), quiet=True).start()
    try:
        clients = (AdminClient(bank.data_dir), AdminClient(plat.data_dir))
        for n in (bank, plat):      # each node's warm-up driver found the pool
            assert [e["pool"] for e in _node_events(n.data_dir, "engine.pool", 180)] == [2]
        _job_on_ray(clients, tomls, tmp_path, "sb", "secureboost", SB, cluster[1])
        # the next job: a new driver, the pool's existing actor processes
        before = _actors(cluster[1])
        spec, job, conns = _job_on_ray(clients, tomls, tmp_path, "lr",
                                       "logistic_regression", LR)
        assert [c["pool"] for c in conns] == [2, 2]
        assert [c["pool_created"] for c in conns] == [0, 0]
        assert _actors(cluster[1]) == before and len(before) == 2

        # a token the cluster does not know (0600, but not its token)
        wrong = _token(tmp_path / "wrong.token")
        text = bank_toml.read_text().replace("ray_connect_timeout_s = 60.0",
                                             "ray_connect_timeout_s = 3.0")
        bank_toml.write_text(text.replace(str(cluster[2]), str(wrong)))
        assert "engine" in clients[0].call("reload")["reloaded"]
        err = _failed_fast(clients[0], spec, job)
        assert "is node.ray_auth_token_file the cluster's token?" in err
        assert wrong.read_text() not in err

        # the bank's node now points at a port where no Ray head listens
        gone = f"127.0.0.1:{free_port()}"
        bank_toml.write_text(text.replace(cluster[0], gone))
        assert "engine" in clients[0].call("reload")["reloaded"]
        assert gone in _failed_fast(clients[0], spec, job)
    finally:
        bank.stop()
        plat.stop()


def _node_raw(**node) -> dict:
    return {"node": {"party": "bank", "name": "b", "listen": "127.0.0.1:0",
                     "data_dir": "d", **node},
            "keys": {"tls_key": "k", "tls_cert": "c", "signing_key": "s"},
            "peer": {"name": "p", "address": "127.0.0.1:1", "cert_fingerprint": "00" * 32,
                     "signing_public_key": "00" * 32, "cert": "p.crt"},
            "datasets": {}, "policy": {}}


@pytest.mark.parametrize("node, match", [
    ({"engine": "ray"}, "node.ray_address is required"),
    ({"engine": "ray", "ray_address": "10.0.0.5:6379"}, "node.workers = 1: with engine"),
    ({"ray_address": "10.0.0.5:6379"}, "node.ray_address is set but node.engine is 'local'"),
    ({"engine": "ray", "ray_address": "head", "workers": 4}, "node.ray_address = 'head'"),
    ({"engine": "dask"}, "node.engine = 'dask': expected one of 'local', 'ray'"),
])
def test_engine_config_errors(node, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        node_config_from_dict(_node_raw(**node), "node.toml", base=tmp_path)
    ok = node_config_from_dict(_node_raw(engine="ray", ray_address="10.0.0.5:6379", workers=8,
                                         ray_auth_token_file="ray.token"),
                               "node.toml", base=tmp_path)
    assert ok.engine.engine == "ray" and ok.engine.ray_auth_token_file == tmp_path / "ray.token"
