"""A pipeline resumes: the bank's job process is killed mid-way through the last stage
(``binning -> selection -> logistic_regression``, held right after checkpoint 3: the
first LR epoch, after ``bin/done`` and ``sel/done``); the job resumes from the last
checkpoint both nodes hold, playing the earlier stages back locally, and ends with the
parts of an uninterrupted run of the same job (same seeds), both transcripts verifying
with one restart record."""

from __future__ import annotations

import os
import signal
import time
from multiprocessing import active_children

from support.nodes import running_nodes, wait_state, write_node_tomls
from test_pipeline_nodes import frames, job_file

from federation import audit
from federation.admin import AdminClient
from federation.config import job_spec_from_dict, load_job_spec, load_node_config
from federation.link import local_link_pair, run_two_parties
from federation.node.compute import HOLD_ENV
from federation.runner import run_job_side


def _checkpoints(data_dir, job_id) -> list[bytes]:
    t = data_dir / "transcripts" / f"{job_id}.jsonl"
    return [line for line in (t.read_bytes().splitlines() if t.exists() else [])
            if b'"type":"checkpoint"' in line]


def test_pipeline_killed_mid_stage_resumes_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setenv(HOLD_ENV, "3")
    allowed = {"allowed_algorithms": ["binning", "selection", "logistic_regression"]}
    bank_toml, plat_toml = write_node_tomls(tmp_path, bank_policy=allowed,
                                            platform_policy=allowed)
    bank_df, plat_df = frames()
    bank_df.to_csv(tmp_path / "bank.csv", index=False)
    plat_df.to_csv(tmp_path / "platform.csv", index=False)
    cfgs = {p: load_node_config(t) for p, t in (("bank", bank_toml), ("platform", plat_toml))}
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        job = job_file(tmp_path)
        client = AdminClient(bank.data_dir)
        job_id = client.call("submit", spec=load_job_spec(job).to_dict(),
                             source=str(job))["job_id"]
        deadline = time.monotonic() + 120
        while min(len(_checkpoints(n.data_dir, job_id)) for n in (bank, plat)) < 3:
            assert time.monotonic() < deadline, "no checkpoint 3"
            time.sleep(0.05)
        assert b'"stage":"bin/done"' in _checkpoints(bank.data_dir, job_id)[0]
        assert b'"stage":"lr/train"' in _checkpoints(bank.data_dir, job_id)[2]
        child = [p for p in active_children() if p.name == f"fedjoint-job-{job_id}"]
        assert child, "the held job process is alive"
        os.kill(child[0].pid, signal.SIGKILL)
        rec = wait_state(client, job_id, timeout=120)
        assert rec["state"] == "done", rec["error"]
        paths = [n.data_dir / "transcripts" / f"{job_id}.jsonl" for n in (bank, plat)]
        rep = audit.verify(paths[0], peer_path=paths[1])
        assert rep.ok, rep.errors
        assert [r["checkpoint"] for r in rep.summary["restarts"]] == [3]
        got = tuple(rep.summary["model_digests"][n] for n in ("bank-a", "platform-b"))
        # the same pipeline (id, spec, both seeds, data) without interruption, in process
        seeds = {p: (c.data_dir / "vault" / f"{job_id}.seed").read_bytes()
                 for p, c in cfgs.items()}
        spec = job_spec_from_dict(rec["spec"], "job")
        a, b, _ = local_link_pair(job_id, "bank-a", "platform-b")
        ref_b, ref_p = run_two_parties(
            lambda: run_job_side(spec, cfgs["bank"], a, seeds["bank"]),
            lambda: run_job_side(spec, cfgs["platform"], b, seeds["platform"]))
        assert got == (ref_b.model_digest, ref_p.model_digest)
        stored = {m["model_id"]: m["digest"] for m in client.call("models")}
        assert [stored[f"{job_id}.{s['name']}"] for s in ref_b.stages] == \
            [s["model_digest"] for s in ref_b.stages]
