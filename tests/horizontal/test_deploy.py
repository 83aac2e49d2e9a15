"""A horizontal job through Flower's real processes, launched by the fedjoint CLI: the
platform's SuperLink (TLS from its own CA, SuperNode authentication: only registered
keys connect) and one SuperNode per bank on 127.0.0.1, the job submitted with
`fedjoint horizontal run`; every process stopped by its PID at the end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import job
from horizontal_nodes import write_horizontal_nodes
from support.nodes import _toml_value, free_port

import fedjoint
from federation.horizontal.keys import init_platform_keys, init_supernode_key

FEDJOINT = [sys.executable, "-m", "federation.cli"]


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*FEDJOINT, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(900)   # ~35 s idle; one flwr-clientapp (torch import) per message
def test_superlink_supernodes_tls_auth_cli(tmp_path: Path, banks, columns):
    kd = tmp_path / "keys" / "horizontal"
    pk = init_platform_keys(kd, ["127.0.0.1"])
    names = ["bank-0", "bank-1"]
    sn = {b: init_supernode_key(b, kd) for b in names}
    port = free_port()
    tail = []
    for b in names:
        tail += [f"[horizontal.banks.{b}]",
                 f"supernode_key = {_toml_value(sn[b]['supernode_pub'])}",
                 f"signing_public_key = {_toml_value(str(tmp_path / 'keys' / b / f'{b}.sign.pub'))}",
                 ""]
    extra = {b: {"aggregator": f"127.0.0.1:{port}", "aggregator_ca": pk["ca_cert"],
                 "supernode_key": sn[b]["supernode_key"], "supernode_port": free_port(),
                 "require_secure_aggregation": False, "min_banks": 2} for b in names}
    platform, tomls, _ = write_horizontal_nodes(
        tmp_path, {b: banks[b].iloc[:1200] for b in names}, bank_extra=extra,
        platform_extra={"listen": f"127.0.0.1:{port}", "tls_cert": pk["tls_cert"],
                        "tls_key": pk["tls_key"], "ca_cert": pk["ca_cert"]},
        platform_tail=tail)
    spec = job(columns, rounds=1, min_banks=2, secure_aggregation=False)
    spec["job"].pop("job_id")
    jt = tmp_path / "job.toml"
    jt.write_text("\n".join(
        [f"[{t}]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in spec[t].items())
         for t in ("job", "horizontal", "params")]) + "\n")
    started = []
    try:
        r = cli("horizontal", "superlink", "start", "--config", str(platform))
        assert r.returncode == 0, r.stdout + r.stderr
        started.append(("superlink", platform))
        assert sorted(json.loads(r.stdout)["nodes"].values()) == names
        for b in names:
            r = cli("horizontal", "supernode", "start", "--config", str(tomls[b]))
            assert r.returncode == 0, r.stdout + r.stderr
            started.append(("supernode", tomls[b]))
        r = cli("horizontal", "run", str(jt), "--config", str(platform), timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(r.stdout)
        assert res["state"] == "done" and sorted(res["banks"]) == names
        assert 0.5 < 1 - res["metrics"]["test_log_loss"] / 2
        job_id = res["job_id"]
        for b in names:
            t_bank = tmp_path / f"{b}-data" / "horizontal" / job_id / "transcript.jsonl"
            t_agg = tmp_path / "platform-data" / "horizontal" / job_id / f"{b}.transcript.jsonl"
            rep = fedjoint.verify(t_bank, peer_path=t_agg)
            assert rep.ok, [str(e) for e in rep.errors]
    finally:
        for role, cfg in reversed(started):
            r = cli("horizontal", role, "stop", "--config", str(cfg))
            assert "stopped" in r.stdout
