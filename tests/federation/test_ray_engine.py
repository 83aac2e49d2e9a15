"""Ray as a party's compute engine (issue 17 part 4), on one local Ray cluster per module
(a head on 127.0.0.1 with 2 CPUs, started and stopped by PID; no Ray process may be left).

* the executor seam: Paillier encryption, background obfuscators, histograms, LR's
  ``X.T @ enc`` and PSI blinding as Ray tasks give exactly the local engine's bytes; a kernel error is a clear
  error; a Ray worker killed mid-task (SIGKILL by PID) is retried with the same result,
  and without retries the call fails with the reason;
* two real nodes with ``engine = "ray"``, one Ray worker killed by PID while a kernel
  task runs on it: a SecureBoost job's models and every message digest equal the same
  job (id, seeds, data) run in process on the local engine;
* an unreachable ``ray_address`` fails the job fast, naming the key and the address.

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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with ray_head(tmp_path_factory.mktemp("ray")) as (address, pid):
        yield address, pid


@pytest.fixture
def on_ray(cluster):
    """This (pytest) process's kernels on the test cluster, for one test."""
    info = executor.configure("ray", cluster[0], 60.0)
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
    assert on_ray["cpus"] == 2 and on_ray["nodes"] == 1
    pub, sk = generate_keypair(512, rng=Drbg(SEED, "k512"), insecure_test_key=True)
    executor.configure("local")
    local, _ = _kernels(pub, sk, 2)
    local_psi = _psi(1)
    executor.configure("ray", cluster[0], 60.0)
    got, pool = _kernels(pub, sk, 2)
    assert got == local
    assert pool._procs and all(isinstance(w, RayWorker) for w in pool._procs)
    assert _psi(2) == local_psi
    with pytest.raises(RuntimeError, match="encryption worker failed: ValueError: unknown op"):
        get_pool(2).run([({"op": "bogus"}, b"")])


def _slow_request(pub):
    """A ~seconds-long worker request: standard obfuscators (one powmod each)."""
    from secure_agg.framing import obfuscate_request
    from secure_agg.paillier import PaillierPublicCipher
    c = PaillierPublicCipher(pub, workers=1)
    draws = c._draw(Drbg(SEED, "slow"), 1500, "standard")
    return c, draws, obfuscate_request(c._spec(), draws, "standard", 0, 8)


def _kill_busy_worker(head_pid: int, timeout: float = 30.0, until=None) -> int | None:
    """SIGKILL (by PID) the Ray worker process of this head running a kernel task; None
    if ``until()`` came true first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (until and until()):
        busy = [p for p in children(head_pid) if cmdline(p).startswith("ray::fedjoint_kernel")]
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
    reply = worker.recv()             # Ray ran the task again on another worker process
    assert split_reply(reply, spec_width(c._spec()), len(draws), "obf") == expected
    ref = backend.kernel.options(max_retries=0).remote(head, body)
    assert _kill_busy_worker(cluster[1]) != killed
    with pytest.raises(RuntimeError, match="failed on this party's Ray cluster after .*"
                                           "retries: .*(Crashed|Died|Worker)"):
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


def _use_ray(toml: Path, address: str, timeout: float = 60.0) -> None:
    text = toml.read_text().replace(
        "[node]\n", f'[node]\nengine = "ray"\nray_address = "{address}"\n'
                    f"ray_connect_timeout_s = {timeout}\nworkers = 2\n", 1)
    toml.write_text(text)


def test_secureboost_on_ray_nodes_equals_local_and_bad_address_fails_fast(cluster, tmp_path):
    bank_toml, plat_toml = write_node_tomls(tmp_path)
    for t in (bank_toml, plat_toml):
        _use_ray(t, cluster[0])
    bank = Node(load_node_config(bank_toml), quiet=True).start()
    plat = Node(load_node_config(plat_toml), quiet=True).start()
    try:
        client = AdminClient(bank.data_dir)
        job = write_job(tmp_path, "sb", algorithm="secureboost", params=SB,
                        evaluation={"cipher": "paillier", "key_bits": 1024})
        spec = load_job_spec(job).to_dict()
        job_id = client.call("submit", spec=spec, source=str(job))["job_id"]
        # a Ray worker lost mid-job: Ray re-runs its task; the model must not change
        killed = _kill_busy_worker(cluster[1], 180, lambda: client.call(
            "status", job_id=job_id)["state"] in ("done", "failed"))
        print(f"Ray worker killed mid-job: {killed or 'none was busy when polled'}")
        rec = wait_state(client, job_id, timeout=180)
        assert rec["state"] == "done", rec["error"]
        for c in (client, AdminClient(plat.data_dir)):
            events = c.call("logs", job_id=job_id)["events"]
            conn = [e for e in events if e["event"] == "engine.connected"]
            assert conn and conn[0]["engine"] == "ray" and conn[0]["cpus"] == 2, events
        prec = wait_state(AdminClient(plat.data_dir), job_id)
        models = (client.call("model", model_id=job_id)["digest"],
                  AdminClient(plat.data_dir).call("model", model_id=job_id)["digest"])
        ref_b, ref_p, ref_msgs = _reference({"bank": bank_toml, "platform": plat_toml},
                                            job_id, spec)
        assert models == (ref_b, ref_p)
        for tr in (rec["artifacts"]["transcript"], prec["artifacts"]["transcript"]):
            got = _messages(Path(tr))     # + the node's closing outcome exchange
            for who in ("bank-a", "platform-b"):
                assert got[who][:-1] == ref_msgs[who], who
                assert got[who][-1].startswith("job.outcome "), got[who][-1]

        # the bank's node now points at a port where no Ray head listens
        gone = f"127.0.0.1:{free_port()}"
        bank_toml.write_text(bank_toml.read_text().replace(cluster[0], gone)
                             .replace("ray_connect_timeout_s = 60.0",
                                      "ray_connect_timeout_s = 3.0"))
        assert "engine" in client.call("reload")["reloaded"]
        t0 = time.monotonic()
        bad = client.call("submit", spec=spec, source=str(job))["job_id"]
        rec = wait_state(client, bad, timeout=60)
        took = time.monotonic() - t0
        assert rec["state"] == "failed"
        assert "node.ray_address" in rec["error"] and gone in rec["error"], rec["error"]
        assert "ray_connect_timeout_s" in rec["error"]
        print(f"unreachable Ray address: failed in {took:.1f} s: {rec['error']}")
        with pytest.raises(AdminError):     # nothing half-written: no model registered
            client.call("model", model_id=bad)
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
