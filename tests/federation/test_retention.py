"""[transcript] keep_received: how long a node keeps the payloads it received.

Real nodes over gRPC (test keys, 200 rows, plain-cipher LR): with ``"digests"`` the
job leaves no sidecar on that node, its transcript still verifies against the peer's,
and replay says what it needs; ``"days:N"`` prunes a closed job's sidecar once it is
older than N days (never an open, resumable one); a bad value is a config error
naming the key.
"""

from __future__ import annotations

import os
import time

import pytest
from click.testing import CliRunner

from federation.cli import cli
from federation.config import ConfigError, load_node_config
from federation.transcript import parse_keep_received, prune, sidecar_path


def _audit(*args: str):
    return CliRunner().invoke(cli, ["audit", *args])


def _with_keep(toml, keep: str):
    toml.write_text(toml.read_text() + f'\n[transcript]\nkeep_received = "{keep}"\n')
    return toml


def _run_job(tmp_path, bank_keep: str | None, plat_keep: str | None):
    from support.nodes import running_nodes, wait_state, write_job, write_node_tomls

    from federation.admin import AdminClient
    from federation.config import load_job_spec

    bank_toml, plat_toml = write_node_tomls(tmp_path, bank_rows=200, platform_rows=200)
    if bank_keep:
        _with_keep(bank_toml, bank_keep)
    if plat_keep:
        _with_keep(plat_toml, plat_keep)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        job = write_job(tmp_path, "j", "logistic_regression",
                        params={"epochs": 1, "batch_size": 0})
        job_id = client.call("submit", spec=load_job_spec(job).to_dict(),
                             source=str(job))["job_id"]
        rec = wait_state(client, job_id, timeout=120)
        assert rec["state"] == "done", rec["error"]
        if bank_keep == "digests":      # gone by the time the job reads "done"
            assert not sidecar_path(rec["artifacts"]["transcript"]).exists()
        prec = wait_state(AdminClient(plat.data_dir), job_id, timeout=30)
    return bank_toml, rec["artifacts"]["transcript"], prec["artifacts"]["transcript"]


def test_digests_only_node_keeps_no_sidecar_and_still_verifies(tmp_path):
    bank_toml, tb, tp = _run_job(tmp_path, "digests", None)
    assert not sidecar_path(tb).exists()          # the bank kept digests only
    assert sidecar_path(tp).stat().st_size > 0     # the platform keeps its own ("full")
    res = _audit("verify", tb, "--peer", tp, "--config", str(bank_toml))
    assert res.exit_code == 0, res.output
    assert "VERIFIED" in res.output
    res = _audit("replay", tb, "--party-dir", str(tmp_path))
    assert res.exit_code == 2, res.output
    assert "keep_received = 'digests'" in res.output and "sidecar" in res.output, res.output
    # the platform's full sidecar still replays its own side
    res = _audit("replay", tp, "--party-dir", str(tmp_path))
    assert res.exit_code == 0 and "REPLAYED" in res.output, res.output


def test_days_policy_prunes_only_old_closed_sidecars(tmp_path):
    _, tb, tp = _run_job(tmp_path, None, None)
    tdir = sidecar_path(tb).parent
    assert sidecar_path(tb).exists()
    assert prune(tdir, "days:1") == []             # just closed: kept
    old = time.time() - 3 * 86400
    os.utime(tb, (old, old))
    # an open transcript (a job that may resume), just as old: never pruned
    open_t = tdir / "open-job.jsonl"
    open_t.write_bytes(open(tb, "rb").read().split(b"\n")[0] + b"\n")
    sidecar_path(open_t).write_bytes(b"payloads")
    os.utime(open_t, (old, old))
    assert prune(tdir, "days:2") == [sidecar_path(tb)]
    assert not sidecar_path(tb).exists() and sidecar_path(open_t).exists()
    assert prune(tdir, "full") == []
    assert sidecar_path(tp).exists()               # the platform's own directory


def test_node_start_applies_days_policy(tmp_path):
    from federation.node import Node

    bank_toml, tb, _ = _run_job(tmp_path, None, None)
    old = time.time() - 10 * 86400
    os.utime(tb, (old, old))
    node = Node(load_node_config(_with_keep(bank_toml, "days:7")), quiet=True).start()
    node.stop()
    assert not sidecar_path(tb).exists()


@pytest.mark.parametrize("bad", ["forever", "days:0", "days:-1", "days:x", "digest"])
def test_invalid_keep_received_is_a_config_error_naming_the_key(tmp_path, bad):
    from support.nodes import write_node_tomls

    bank_toml, _ = write_node_tomls(tmp_path)
    with pytest.raises(ConfigError, match=r"transcript\.keep_received") as ei:
        load_node_config(_with_keep(bank_toml, bad))
    assert "full" in str(ei.value) and "days:N" in str(ei.value)


def test_parse_keep_received():
    assert parse_keep_received("full") is None
    assert parse_keep_received("digests") == 0.0
    assert parse_keep_received("days:30") == 30.0
    with pytest.raises(ValueError):
        parse_keep_received("days:inf")
