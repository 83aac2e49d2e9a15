"""Two real nodes on 127.0.0.1 with mutual TLS: proposals, policy, end-to-end jobs,
a peer that dies mid-job, the admin endpoint's token."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.nodes import (
    free_port,
    running_nodes,
    start_node,
    submit,
    wait_state,
    write_job,
    write_node_tomls,
)

from federation.admin import AdminClient, AdminError
from federation.config import load_node_config
from federation.node import Node


def _has(mod: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(mod) is not None
    except ImportError:
        return False

ROOT = Path(__file__).resolve().parents[2]

needs_psi = pytest.mark.skipif(not _has("psi.protocol"), reason="psi.protocol not built yet")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from support.nodes import make_party_keys
    return make_party_keys(tmp_path_factory.mktemp("keys"))


@needs_psi
def test_lr_job_end_to_end_and_admin_token(tmp_path, keys):
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        # the token file is the operator's alone
        tok = bank.data_dir / "admin.token"
        assert stat.S_IMODE(os.stat(tok).st_mode) == 0o600
        bad = AdminClient(bank.data_dir)
        bad.token = "nope"
        with pytest.raises(AdminError, match="token"):
            bad.call("list")

        job = write_job(tmp_path, "lr", params={"epochs": 3, "batch_size": 0})
        job_id = submit(client, job)
        rec = wait_state(client, job_id, timeout=60)
        assert rec["state"] == "done", rec["error"]
        m = rec["metrics"]
        assert m["intersection"] == 569 and m["test_auc"] > 0.9
        states = [e["state"] for e in client.call("logs", job_id=job_id)["events"]
                  if e["event"] == "state"]
        assert states == ["submitted", "approved", "psi", "training", "evaluating", "done"]
        prec = wait_state(AdminClient(plat.data_dir), job_id)
        assert prec["state"] == "done" and prec["role"] == "platform"
        # both model parts registered and bound to each other
        from federation.runner import unbound_digest
        from parties.common.artifact import ModelPart
        bm = client.call("model", model_id=job_id)
        pm = AdminClient(plat.data_dir).call("model", model_id=job_id)
        bpart, ppart = ModelPart.load(bm["path"]), ModelPart.load(pm["path"])
        assert bpart.digest() == bm["digest"] and ppart.digest() == pm["digest"]
        assert bpart.peer_part_digest == unbound_digest(ppart)
        assert ppart.peer_part_digest == unbound_digest(bpart)
        # transcripts exist on both sides; seeds are private
        assert Path(rec["artifacts"]["transcript"]).exists()
        seed = bank.data_dir / "vault" / f"{job_id}.seed"
        assert stat.S_IMODE(os.stat(seed).st_mode) == 0o600
        # an auditor verifies both transcripts and replays each party's side bit for bit
        from federation import audit
        ptr = prec["artifacts"]["transcript"]
        v = audit.verify(rec["artifacts"]["transcript"], ptr)
        assert v.ok, v.errors
        for tr in (rec["artifacts"]["transcript"], ptr):
            r = audit.replay(tr, tmp_path)
            assert r.ok, r.errors
        # logs are JSON lines without secrets
        log = (bank.data_dir / "node.log").read_text()
        for line in log.splitlines():
            json.loads(line)
        assert client.token not in log and seed.read_bytes().hex() not in log


def test_job_refused_by_platform_policy(tmp_path, keys):
    bank_toml, plat_toml = write_node_tomls(
        tmp_path, keys=keys, platform_policy={"allowed_algorithms": ["psi"]})
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        job_id = submit(client, write_job(tmp_path, "sb", "secureboost",
                                          params={"n_trees": 2}))
        rec = wait_state(client, job_id, timeout=20)
        assert rec["state"] == "failed"
        assert "refused by platform-b's policy" in rec["error"]
        assert "algorithm 'secureboost' is not allowed" in rec["error"]
        # insecure (plain) jobs are refused unless the platform allows them


def _wait_pending(client: AdminClient, job_id: str) -> None:
    """Until the bank has heard that the platform's operator must decide."""
    deadline = time.monotonic() + 20
    while "waiting" not in client.call("status", job_id=job_id):
        assert time.monotonic() < deadline, client.call("status", job_id=job_id)
        time.sleep(0.05)


@needs_psi
def test_insecure_job_refused_and_manual_approval(tmp_path, keys):
    bank_toml, plat_toml = write_node_tomls(
        tmp_path, keys=keys,
        platform_policy={"allow_insecure_test_jobs": False, "min_key_bits": 2048,
                         "require_approval": True})
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client, pclient = AdminClient(bank.data_dir), AdminClient(plat.data_dir)
        job_id = submit(client, write_job(tmp_path, "lr", params={"epochs": 1}))
        rec = wait_state(client, job_id, timeout=20)
        assert rec["state"] == "failed" and "allow_insecure_test_jobs" in rec["error"]

        # a PSI-only job waits for the platform operator's approval
        psi_id = submit(client, write_job(tmp_path, "psi-only", "psi"))
        _wait_pending(client, psi_id)
        assert pclient.call("status", job_id=psi_id)["state"] == "submitted"
        pclient.call("approve", job_id=psi_id)
        rec = wait_state(client, psi_id, timeout=30)
        assert rec["state"] == "done" and rec["metrics"]["intersection"] == 569
        # and a refusal by the operator reaches the modeler with its reason
        r2 = submit(client, write_job(tmp_path, "psi-two", "psi"))
        _wait_pending(client, r2)
        pclient.call("refuse", job_id=r2, reason="not this quarter")
        rec = wait_state(client, r2, timeout=20)
        assert rec["state"] == "failed" and "not this quarter" in rec["error"]


@needs_psi
def test_intersection_below_minimum_fails_both(tmp_path, keys):
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys, bank_rows=120,
                                            platform_policy={"min_intersection": 200})
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        job_id = submit(client, write_job(tmp_path, "lr", params={"epochs": 1,
                                                                   "batch_size": 0}))
        rec = wait_state(client, job_id, timeout=30)
        assert rec["state"] == "failed"
        assert "120" in rec["error"] and "min_intersection" in rec["error"] and "200" in rec["error"]


def test_unreachable_peer_is_named(tmp_path, keys):
    bank_toml, _ = write_node_tomls(tmp_path, keys=keys, deadline_s=2.0)
    bank = start_node(bank_toml)
    try:
        client = AdminClient(bank.data_dir)
        res = client.call("check", timeout=30)
        assert not res["ok"] and bank.cfg.peer.address in res["error"]
        job_id = submit(client, write_job(tmp_path, "psi-only", "psi"))
        rec = wait_state(client, job_id, timeout=30)
        assert rec["state"] == "failed" and bank.cfg.peer.address in rec["error"]
    finally:
        bank.stop()


@needs_psi
def test_peer_killed_mid_job_is_reported(tmp_path, keys):
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys, deadline_s=3.0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "federation.cli", "node", "start",
                             "--config", str(plat_toml), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    bank = start_node(bank_toml)
    try:
        pdata = load_node_config(plat_toml).data_dir
        deadline = time.monotonic() + 30
        while not (pdata / "admin.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "platform node did not start"
            time.sleep(0.1)
        client = AdminClient(bank.data_dir)
        # a long job: many epochs of mini-batch LR under a small Paillier test key
        job_id = submit(client, write_job(tmp_path, "long", params={
            "epochs": 200, "batch_size": 64, "early_stopping": "none"},
            evaluation={"cipher": "paillier", "key_bits": 512}))
        rec = wait_state(client, job_id, states=("training", "failed", "done"), timeout=30)
        assert rec["state"] == "training", rec["error"]
        time.sleep(0.5)
        assert client.call("status", job_id=job_id)["state"] == "training"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        # a silent peer fails the job, or interrupts it once it has a checkpoint (it
        # resumes when the peer is back: tests/federation/test_resume.py); the reason
        # names the peer
        rec = wait_state(client, job_id, states=("interrupted", "failed", "done"), timeout=30)
        assert rec["state"] in ("interrupted", "failed"), rec
        assert "platform-b" in rec["error"], rec["error"]
        print("peer-killed reason:", rec["error"])
        assert time.monotonic() - t0 < 3.0 + 10.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        bank.stop()


def test_admin_endpoint_is_loopback_only(tmp_path, keys):
    bank_toml, _ = write_node_tomls(tmp_path, keys=keys)
    text = bank_toml.read_text().replace('data_dir = "bank-a-data"',
                                         f'data_dir = "bank-a-data"\nadmin = "0.0.0.0:{free_port()}"')
    bank_toml.write_text(text)
    from federation.config import ConfigError
    with pytest.raises(ConfigError, match="loopback"):
        load_node_config(bank_toml)


@needs_psi
def test_secureboost_then_scoring_job(tmp_path, keys):
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        sb = submit(client, write_job(tmp_path, "sb", "secureboost",
                                      params={"n_trees": 3, "max_depth": 3}))
        rec = wait_state(client, sb, timeout=60)
        assert rec["state"] == "done", rec["error"]
        assert rec["metrics"]["test_auc"] > 0.9
        assert [m["model_id"] for m in client.call("models")] == [sb]
        out = tmp_path / "scores.csv"
        sc = submit(client, write_job(tmp_path, "score", "score",
                                      extra_job={"model": sb, "output": str(out)}))
        rec = wait_state(client, sc, timeout=60)
        assert rec["state"] == "done", rec["error"]
        states = [e["state"] for e in client.call("logs", job_id=sc)["events"]
                  if e["event"] == "state"]
        assert states == ["submitted", "approved", "psi", "scoring", "done"]
        lines = out.read_text().splitlines()
        assert lines[0] == "id,score" and len(lines) == 570
        # the scoring job replays too (the runner itself writes no files)
        from federation import audit
        before = out.read_bytes()
        out.unlink()
        for tr in (rec["artifacts"]["transcript"],
                   AdminClient(plat.data_dir).call("status", job_id=sc)["artifacts"]
                   ["transcript"]):
            r = audit.replay(tr, tmp_path)
            assert r.ok, r.errors
        assert not out.exists()
        out.write_bytes(before)
        assert all(0.0 <= float(v.split(",")[1]) <= 1.0 for v in lines[1:])
        # a model the platform does not have is refused by its node
        plat.store.add_model(sb, sb, "logistic_regression", "/nonexistent", "x")
        bad = submit(client, write_job(tmp_path, "score2", "score",
                                       extra_job={"model": sb}))
        rec = wait_state(client, bad, timeout=30)
        assert rec["state"] == "failed" and "logistic_regression" in rec["error"]


@needs_psi
def test_cancel_reaches_both_nodes(tmp_path, keys):
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client, pclient = AdminClient(bank.data_dir), AdminClient(plat.data_dir)
        job_id = submit(client, write_job(tmp_path, "long", params={
            "epochs": 200, "batch_size": 64, "early_stopping": "none"},
            evaluation={"cipher": "paillier", "key_bits": 512}))
        rec = wait_state(client, job_id, states=("training", "failed", "done"), timeout=30)
        assert rec["state"] == "training", rec["error"]
        client.call("cancel", job_id=job_id)
        assert wait_state(client, job_id, timeout=10)["state"] == "cancelled"
        assert wait_state(pclient, job_id, timeout=15)["state"] == "cancelled"
        with pytest.raises(AdminError, match="already cancelled"):
            client.call("cancel", job_id=job_id)
        # the nodes stay usable: a following job runs to completion
        psi_id = submit(client, write_job(tmp_path, "psi-only", "psi"))
        assert wait_state(client, psi_id, timeout=30)["state"] == "done"


def test_missing_dataset_files_are_named(tmp_path, keys):
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        (tmp_path / "platform.csv").unlink()
        job_id = submit(client, write_job(tmp_path, "psi-only", "psi"))
        rec = wait_state(client, job_id, timeout=20)
        assert rec["state"] == "failed" and "file is missing on platform-b" in rec["error"]
        (tmp_path / "bank.csv").unlink()
        with pytest.raises(AdminError, match=r"datasets\.loans\.path: .*bank\.csv does not "
                           "exist"):
            submit(client, write_job(tmp_path, "psi-two", "psi"))


def test_restart_fails_interrupted_jobs(tmp_path, keys):
    from federation.jobstore import JobStore
    bank_toml, _ = write_node_tomls(tmp_path, keys=keys)
    cfg = load_node_config(bank_toml)
    st = JobStore(cfg.data_dir / "jobs.db")
    st.create("j-1", "x", "psi", "bank", {})
    st.transition("j-1", "approved")
    st.transition("j-1", "psi")
    node = Node(cfg, quiet=True).start()
    try:
        rec = AdminClient(node.data_dir).call("status", job_id="j-1")
        assert rec["state"] == "failed" and "restarted" in rec["error"]
    finally:
        node.stop()


@needs_psi
def test_psi_jobs_in_every_mode_match_a_plain_intersection(tmp_path, keys):
    """PSI-only jobs through both nodes: balanced, unbalanced (the platform's long-lived
    per-peer key and cache under its data_dir) and cardinality-only."""
    import numpy as np
    import pandas as pd

    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys, bank_rows=300,
                                            platform_rows=420)
    ids_b = pd.read_csv(tmp_path / "bank.csv")["id"].astype(str).tolist()
    ids_p = pd.read_csv(tmp_path / "platform.csv")["id"].astype(str).tolist()
    ids_b = ids_b[::2] + [f"bank-only-{i}" for i in range(40)]   # partial overlap
    pd.DataFrame({"id": ids_b, "y": 0, "x0": 0.0}).to_csv(tmp_path / "bank.csv",
                                                          index=False)
    expected = set(ids_b) & set(ids_p)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client, pclient = AdminClient(bank.data_dir), AdminClient(plat.data_dir)
        for mode in ("balanced", "unbalanced", "cardinality"):
            job_id = submit(client, write_job(tmp_path, f"psi-{mode}", "psi",
                                              psi={"mode": mode}))
            rec = wait_state(client, job_id, timeout=60)
            assert rec["state"] == "done", (mode, rec["error"])
            prec = wait_state(pclient, job_id, timeout=30)
            assert rec["metrics"]["intersection"] == len(expected), mode
            assert prec["metrics"]["intersection"] == len(expected), mode
            if mode == "cardinality":
                assert "intersection_rows" not in rec["artifacts"]
                continue
            rb = np.load(rec["artifacts"]["intersection_rows"], allow_pickle=False)
            rp = np.load(prec["artifacts"]["intersection_rows"], allow_pickle=False)
            got_b, got_p = [ids_b[i] for i in rb], [ids_p[i] for i in rp]
            assert got_b == got_p and set(got_b) == expected, mode   # same rows, same order
        keyfiles = list((plat.data_dir / "psi" / "keys").iterdir())
        assert keyfiles and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in keyfiles)


def test_report_reads_the_explanation_its_algorithm_declares(tmp_path):
    """The report's importance rows come from the registry's declared explain function
    for the part's algorithm, not from guessing at body keys."""
    from federation.node.results import model_explanation
    from parties.common.artifact import ModelPart
    tree = ModelPart("secureboost", "bank", "j", {}, {"importance": {
        "total_gain": {"a": 2.0, "b": 1}, "split_count": {"b": 3, "c": 1}}}, ["a", "b"])
    tree.save(tmp_path / "sb.json")
    got = model_explanation(str(tmp_path / "sb.json"))
    assert got["feature_importance"] == [
        {"feature": "a", "gain": 2.0, "splits": 0}, {"feature": "b", "gain": 1.0, "splits": 3},
        {"feature": "c", "gain": 0.0, "splits": 1}]
    lr = ModelPart("logistic_regression", "bank", "j", {}, {"weights": [-0.5, 2]}, ["a", "b"])
    lr.save(tmp_path / "lr.json")
    rows = model_explanation(str(tmp_path / "lr.json"))["feature_importance"]
    assert [(r["feature"], r["gain"], r["coefficient"]) for r in rows] == [
        ("a", 0.5, -0.5), ("b", 2.0, 2.0)]
    ModelPart("unregistered", "bank", "j", {}, {"weights": [1.0]}, ["a"]).save(
        tmp_path / "x.json")
    assert model_explanation(str(tmp_path / "x.json")) == {}


def test_node_modules_import_only_modules_below_them():
    """federation.node's parts form a chain (no cycles, function-level imports too)."""
    import ast
    order = ["logs", "ray_pool", "context", "peer", "psi_budget", "checkpoint", "compute", "jobs",
             "control", "resume", "results", "reload", "admin_api", "daemon"]
    pkg = ROOT / "federation" / "node"
    assert sorted(p.stem for p in pkg.glob("*.py")) == sorted([*order, "__init__"])
    for i, name in enumerate(order):
        tree = ast.parse((pkg / f"{name}.py").read_text())
        used = {n.module.rpartition(".")[2] for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and n.module
                and n.module.startswith("federation.node.")}
        used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                 and n.module == "federation.node" for a in n.names}
        used |= {a.name.rpartition(".")[2] for n in ast.walk(tree) if isinstance(n, ast.Import)
                 for a in n.names if a.name.startswith("federation.node.")}
        assert used <= set(order[:i]), (name, used - set(order[:i]))


def test_restart_closes_interrupted_transcripts(tmp_path, keys):
    """A node that restarts after a job was killed mid-run fails the job and closes its
    transcript with a signed abort record: it verifies as failed, not incomplete."""
    from federation import audit
    from federation.keys import load_signing_key
    from federation.transcript import TranscriptWriter
    bank_toml, _ = write_node_tomls(tmp_path, keys=keys)
    cfg = load_node_config(bank_toml)
    node = Node(cfg, quiet=True)
    node.store.create("killed-1", "killed", "secureboost", "bank", {}, state="training")
    key = load_signing_key(cfg.keys.signing_key)
    peer_key = load_signing_key(load_node_config(tmp_path / "platform.toml").keys.signing_key)
    path = node.data_dir / "transcripts" / "killed-1.jsonl"
    w = TranscriptWriter.create(path, job_id="killed-1", party=cfg.name, peer=cfg.peer.name,
                                signing_key=key, peer_public_key=peer_key.public_key())
    w._fh.close()                      # the process died here: no closing record
    node.jobs.recover()
    assert node.store.get("killed-1").state == "failed"
    rep = audit.verify(path, pinned_keys={cfg.name: key.public_key(),
                                          cfg.peer.name: peer_key.public_key()})
    assert rep.ok and rep.summary["status"] == "aborted", rep.errors
    assert "node restarted" in rep.summary["reason"]


@needs_psi
def test_node_answers_while_a_job_computes(tmp_path, keys):
    """A job's computation runs in its own process: while both nodes generate 4096-bit
    Paillier keys and encrypt (which holds a Python process's GIL for seconds), the
    platform's admin endpoint and the channel's ping keep answering."""
    import statistics
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client, pclient = AdminClient(bank.data_dir), AdminClient(plat.data_dir)
        job = write_job(tmp_path, "big-keys", params={"epochs": 1, "batch_size": 0},
                        evaluation={"cipher": "paillier", "key_bits": 4096})
        job_id = submit(client, job)
        lat, busy = [], 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            t = time.perf_counter()
            jobs = {j["job_id"]: j["state"] for j in pclient.call("list")}
            state = jobs.get(job_id, "not yet proposed")
            plat.channel.ping(count=1, timeout=10)     # control RPC to the bank's node
            lat.append(time.perf_counter() - t)
            if state in ("psi", "training", "evaluating"):
                busy += 1
            if state in ("done", "failed"):
                break
            time.sleep(0.05)
        assert pclient.call("status", job_id=job_id)["state"] == "done"
        assert busy >= 5, "the job finished before the node could be probed"
        # the issue asks for answers within 1 s; a loaded CI core gets some slack
        assert statistics.median(lat) < 0.5 and max(lat) < 2.0, (statistics.median(lat),
                                                                   max(lat))
        children = [p for p in mp_active_children() if p.name.startswith("fedjoint-job-")]
        assert not children, "job processes are stopped when their job ends"


def mp_active_children():
    import multiprocessing
    return multiprocessing.active_children()


@needs_psi
def test_a_dying_job_process_fails_only_its_job(tmp_path, keys):
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client, pclient = AdminClient(bank.data_dir), AdminClient(plat.data_dir)
        job = write_job(tmp_path, "doomed", params={"epochs": 1, "batch_size": 0},
                        evaluation={"cipher": "paillier", "key_bits": 4096})
        job_id = submit(client, job)
        wait_state(client, job_id, states=("training",), timeout=60)
        mine = [p for p in mp_active_children() if p.name == f"fedjoint-job-{job_id}"]
        assert len(mine) == 2        # both nodes run in this test process
        os.kill(mine[0].pid, signal.SIGKILL)
        rec = wait_state(client, job_id, timeout=60)
        assert rec["state"] == "failed"
        assert "process died (exit code -9)" in rec["error"] or \
            "process died" in wait_state(pclient, job_id)["error"]
        # the nodes serve the next job
        ok = submit(client, write_job(tmp_path, "after", "psi"))
        assert wait_state(client, ok, timeout=60)["state"] == "done"


def test_peer_text_cannot_forge_log_fields(tmp_path):
    """A peer-supplied reason containing ``party=...`` stays text in the node's log (the
    bridge reads structured fields, it does not parse the line)."""
    import json
    import logging

    from federation.channel.settings import log_event
    from federation.node.logs import ChannelLogBridge, JsonLog
    jl = JsonLog("bank-a", tmp_path / "node.log", quiet=True)
    bridge = ChannelLogBridge(jl)
    logger = logging.getLogger("fedjoint.channel")
    logger.addHandler(bridge)
    try:
        log_event(logging.WARNING, "job.failed", job="j1", party="bank-a",
                  reason="bad frame party=platform-b peer=bank-a")
    finally:
        logger.removeHandler(bridge)
    rows = [json.loads(x) for x in (tmp_path / "node.log").read_text().splitlines()]
    row = next(r for r in rows if r.get("event") == "channel.job.failed")
    assert row["reason"] == "bad frame party=platform-b peer=bank-a"
    assert row["party"] == "bank-a"


@needs_psi
def test_node_reload_applies_policy_and_refuses_restart_keys(tmp_path, keys):
    """`fedjoint node reload`: [policy] edits apply to the next job without a restart;
    an edit that needs a restart (the listen address) applies nothing and says so."""
    from click.testing import CliRunner

    from federation.cli import cli
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        text = plat_toml.read_text()
        plat_toml.write_text(text.replace("min_intersection = 50", "min_intersection = 5000"))
        run = CliRunner().invoke(cli, ["node", "reload", "--config", str(plat_toml)])
        assert run.exit_code == 0 and "reloaded" in run.output and "policy" in run.output, \
            run.output
        assert plat.cfg.policy.min_intersection == 5000
        rec = wait_state(client, submit(client, write_job(tmp_path, "after-reload", "psi")))
        assert rec["state"] == "failed" and "min_intersection" in rec["error"]
        plat_toml.write_text(text.replace('listen = "127.0.0.1:', 'listen = "127.0.0.2:'))
        run = CliRunner().invoke(cli, ["node", "reload", "--config", str(plat_toml)])
        err = str(run.exception or "")     # `main` prints it; the bare group raises it
        assert run.exit_code != 0 and "changes listen" in err and "restart" in err, err
        assert plat.cfg.policy.min_intersection == 5000     # nothing applied


def test_job_process_errors_cross_as_records():
    """Errors from a job process are rebuilt from plain records (kind, type, message,
    peer message), never unpickled; the kinds the node's error handling reads survive."""
    from federation.config import ConfigError
    from federation.data import DataError
    from federation.link import PeerAborted, PeerGone, ProtocolError
    from federation.node.compute import _error_record, _rebuild
    from federation.runner import JobFailed
    for exc in (JobFailed("x", peer_message="y"), PeerAborted("a"), PeerGone("g"),
                ProtocolError("p"), DataError("d"), ConfigError("c")):
        back = _rebuild(_error_record(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
    assert _rebuild(_error_record(JobFailed("x", peer_message="y"))).peer_message == "y"
    other = _rebuild(_error_record(KeyError("k")))
    assert type(other) is RuntimeError and str(other) == "KeyError: 'k'"
