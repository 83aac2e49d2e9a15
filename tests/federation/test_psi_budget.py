"""The platform's PSI query budget and OPRF key rotation (federation/node/psi_budget.py):
the durable rolling-window ledger, the node.toml keys, and two real nodes on 127.0.0.1
(budget exhausted across two jobs with a platform restart between them; rotation on
demand and by schedule, the intersection equal to the plain set intersection)."""

from __future__ import annotations

import csv
import os
import threading
import time

import pytest
from support.nodes import (
    running_nodes,
    start_node,
    submit,
    wait_state,
    write_job,
    write_node_tomls,
)

from federation.admin import AdminClient
from federation.config import ConfigError, load_node_config
from federation.node.psi_budget import DAY_S, PsiLedger, rotation_due
from federation.transcript import reader
from psi.cache import KeyStore
from psi.protocol import PsiBudgetError

DISC = "IDs the bank looked up in the platform's set (its query budget)"


class Clock:
    def __init__(self, t: float = 1.8e9):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _charge(led: PsiLedger, n: int, per_job: int = 1000, per_day: int = 100,
            job: str = "j") -> dict:
    return led.charge(peer="bank-a", job_id=job, n=n, key_id="k1", per_job=per_job,
                      per_day=per_day, node="platform-b")


def test_rolling_window_counts_every_job_and_survives_reopening(tmp_path):
    clock = Clock()
    led = PsiLedger(tmp_path / "ledger.db", clock)
    assert _charge(led, 60)["left_24h"] == 40
    clock.t += 3600
    with pytest.raises(PsiBudgetError, match=r"bank-a looked up 60 IDs in the last 24 h; "
                       r"this job's 50 would exceed \[policy\] psi_max_queries_per_day = "
                       r"100 in platform-b's node.toml \(40 left; enough frees up at "):
        _charge(led, 50)
    led2 = PsiLedger(tmp_path / "ledger.db", clock)      # a restarted node
    assert led2.used("bank-a") == 60                       # the refusal was not counted
    assert _charge(led2, 40)["left_24h"] == 0
    clock.t += DAY_S - 3600 + 1                            # the first charge expired
    assert led2.used("bank-a") == 40 and _charge(led2, 60)["used_24h"] == 100
    with pytest.raises(PsiBudgetError, match=r"above \[policy\] psi_max_queries_per_job "
                       r"= 30 in platform-b's node.toml; nothing was computed"):
        _charge(led2, 31, per_job=30, per_day=10**6)
    assert led2.served("bank-a", "k1") == 160


def test_splitting_one_query_across_jobs_gains_nothing(tmp_path):
    led = PsiLedger(tmp_path / "ledger.db")
    done = [_charge(led, 15, job=f"j{i}") for i in range(6)]
    assert done[-1]["used_24h"] == 90
    with pytest.raises(PsiBudgetError, match=r"this job's 15 would exceed .* \(10 left"):
        _charge(led, 15, job="j6")
    with pytest.raises(PsiBudgetError, match="the set alone is larger than the daily"):
        _charge(led, 101, job="j7")


def test_concurrent_charges_never_overspend(tmp_path):
    led = PsiLedger(tmp_path / "ledger.db")
    ok, refused = [], []

    def one(i):
        try:
            ok.append(_charge(PsiLedger(tmp_path / "ledger.db"), 20, job=f"c{i}"))
        except PsiBudgetError:
            refused.append(i)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert len(ok) == 5 and len(refused) == 3 and led.used("bank-a") == 100


def test_policy_keys_parse_and_belong_to_the_platform(tmp_path):
    bank_toml, plat_toml = write_node_tomls(tmp_path, platform_policy={
        "psi_max_queries_per_job": 10, "psi_max_queries_per_day": 20,
        "psi_key_rotation": "days:7, queries:1000"})
    pol = load_node_config(plat_toml).policy
    assert (pol.psi_max_queries_per_job, pol.psi_max_queries_per_day) == (10, 20)
    assert pol.key_rotation == (7.0, 1000)
    assert load_node_config(bank_toml).policy.key_rotation == (30.0, None)   # default
    text = plat_toml.read_text()
    for bad, match in (('psi_key_rotation = "weekly"', r"psi_key_rotation = 'weekly': "
                        r"'weekly': expected 'days:N' and/or 'queries:N'"),
                       ('psi_key_rotation = "days:0"', "expected 'days:N'"),
                       ('psi_key_rotation = "never"\npsi_max_queries_per_job = 0',
                        "psi_max_queries_per_job = 0: expected an integer >= 1")):
        plat_toml.write_text(text.replace('psi_key_rotation = "days:7, queries:1000"', bad)
                             .replace("psi_max_queries_per_job = 10\n", ""))
        with pytest.raises(ConfigError, match=match):
            load_node_config(plat_toml)
    bt = bank_toml.read_text().replace("[policy]", "[policy]\npsi_max_queries_per_day = 5")
    bank_toml.write_text(bt)
    with pytest.raises(ConfigError, match="psi_max_queries_per_day applies on the "
                       "platform's node"):
        load_node_config(bank_toml)
    from click.testing import CliRunner

    from federation.cli import cli
    bank_toml.write_text(bt.replace("psi_max_queries_per_day = 5\n", ""))
    res = CliRunner().invoke(cli, ["psi", "rotate", "--config", str(bank_toml)])
    assert res.exit_code != 0 and "bank-a is the bank's node" in res.output


def test_rotation_falls_due_by_age_and_by_queries_served(tmp_path):
    _, plat_toml = write_node_tomls(tmp_path, platform_policy={
        "psi_key_rotation": "days:2,queries:100"})
    cfg = load_node_config(plat_toml)
    clock = Clock(time.time())
    led = PsiLedger(tmp_path / "l.db", clock)
    keys = KeyStore(cfg.data_dir / "psi" / "keys")
    assert rotation_due(cfg, led) is None                 # no key yet
    from psi.cache import key_id
    kid = key_id(keys.oprf_key("bank-a"))
    assert rotation_due(cfg, led) is None
    led.charge(peer="bank-a", job_id="j", n=100, key_id=kid, per_job=10**6,
               per_day=10**6, node="p")
    assert rotation_due(cfg, led) == (kid, "100 queries served under the key "
                                           "(psi_key_rotation = queries:100)")
    keys.rotate("bank-a")
    assert rotation_due(cfg, led) is None                 # the new key has served none
    clock.t += 2 * DAY_S + 60
    assert "days old (psi_key_rotation = days:2)" in rotation_due(cfg, led)[1]


# --------------------------------------------------------------------- real nodes


def _plain_intersection(tmp_path) -> set[str]:
    def ids(name):
        with open(tmp_path / name) as fh:
            return {r["id"] for r in csv.DictReader(fh)}
    return ids("bank.csv") & ids("platform.csv")


def _sent_kinds(path) -> list[str]:
    return [m["kind"] for m in reader.load(path).messages("sent")]


def test_budget_exhausted_across_two_jobs_survives_a_platform_restart(tmp_path):
    bank_toml, plat_toml = write_node_tomls(tmp_path, bank_rows=300, platform_rows=400,
                                            platform_policy={"psi_max_queries_per_day": 500})
    job = write_job(tmp_path, "q", algorithm="psi", psi={"mode": "unbalanced"})
    bank, plat = start_node(bank_toml), start_node(plat_toml)
    try:
        client, pclient = AdminClient(bank.data_dir), AdminClient(plat.data_dir)
        j1 = submit(client, job)
        assert wait_state(client, j1)["state"] == "done"
        prec = wait_state(pclient, j1)
        assert prec["state"] == "done" and prec["metrics"]["intersection"] == 300
        assert prec["checkpoint"]["psi"]["budget"] == {
            "charged": 300, "used_24h": 300, "left_24h": 200, "max_per_day": 500,
            "max_per_job": 1000000, "key_id": prec["checkpoint"]["psi"]["key_id"]}
        # the platform's signed ledger counts the queries it received and answered
        t1 = reader.load(prec["artifacts"]["transcript"])
        assert t1.closing["statements"]["platform-b"]["disclosed"][DISC] == 300
        plat.stop()
        plat = start_node(plat_toml)                        # the count is on disk
        pclient = AdminClient(plat.data_dir)
        j2 = submit(client, job)
        rec = wait_state(client, j2)
        prec2 = wait_state(pclient, j2)
        want = ("bank-a looked up 300 IDs in the last 24 h; this job's 300 would exceed "
                "[policy] psi_max_queries_per_day = 500 in platform-b's node.toml "
                "(200 left; enough frees up at ")
        assert rec["state"] == prec2["state"] == "failed"
        assert want in prec2["error"] and want in rec["error"], rec["error"]
        # nothing computed for the excess: the platform sent its hello and nothing else
        sent = _sent_kinds(tmp_path / "platform-b-data" / "transcripts" / f"{j2}.jsonl")
        assert [k for k in sent if k.startswith("psi.")] == ["psi.hello"]
        assert PsiLedger(tmp_path / "platform-b-data" / "psi" / "ledger.db"
                         ).used("bank-a") == 300
    finally:
        bank.stop()
        plat.stop()


def test_rotation_on_demand_and_by_schedule_through_nodes(tmp_path):
    from click.testing import CliRunner

    from federation.cli import cli
    bank_toml, plat_toml = write_node_tomls(tmp_path, bank_rows=300, platform_rows=450,
                                            platform_policy={"psi_key_rotation":
                                                             "queries:250"})
    job = write_job(tmp_path, "r", algorithm="psi", psi={"mode": "unbalanced"})
    want = _plain_intersection(tmp_path)
    peer_sets = tmp_path / "bank-a-data" / "psi" / "cache" / "psi-peer-sets" / "platform-b"
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client, pclient = AdminClient(bank.data_dir), AdminClient(plat.data_dir)

        def run() -> tuple[dict, set]:
            jid = submit(client, job)
            assert wait_state(client, jid)["state"] == "done"
            prec = wait_state(pclient, jid)
            assert prec["state"] == "done", prec["error"]
            import numpy as np
            rows = np.load(prec["artifacts"]["intersection_rows"])
            with open(tmp_path / "platform.csv") as fh:
                ids = [r["id"] for r in csv.DictReader(fh)]
            (tset,) = [np.load(peer_sets / f) for f in os.listdir(peer_sets)]
            assert {ids[i] for i in rows} == want and len(rows) == len(want)
            return prec, set(tset.tolist())

        p1, t1 = run()
        res = CliRunner().invoke(cli, ["psi", "rotate", "--config", str(plat_toml)])
        assert res.exit_code == 0, res.output
        assert "450 cached IDs re-encrypted in 1 cache(s)" in res.output
        key_file = tmp_path / "platform-b-data" / "psi" / "keys" / "psi-oprf-bank-a.key"
        assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
        p2, t2 = run()
        k1, k2 = p1["checkpoint"]["psi"]["key_id"], p2["checkpoint"]["psi"]["key_id"]
        assert k1 != k2 and not t1 & t2              # new outputs, same intersection
        p3, t3 = run()                               # 300 served under k2 >= 250
        k3 = p3["checkpoint"]["psi"]["key_id"]
        assert k3 not in (k1, k2) and not t3 & t2
        events = pclient.call("logs", job_id=p3["job_id"])["events"]
        rot = [e for e in events if e["event"] == "psi.key_rotated"]
        assert rot and rot[0]["old_key_id"] == k2
        assert "300 queries served under the key" in rot[0]["reason"]
        st = CliRunner().invoke(cli, ["psi", "status", "--config", str(plat_toml)])
        assert st.exit_code == 0 and f"OPRF key {k3}" in st.output, st.output
        assert "bank-a looked up 900 IDs in the last 24 h" in st.output


def test_a_job_in_flight_at_rotation_uses_one_key_through_nodes(tmp_path):
    """The test holds the key lock while the job starts and a rotation waits for it;
    released, either may go first: the job then runs wholly under the old key or
    wholly under the new one, and its intersection is the plain one either way."""
    from click.testing import CliRunner

    from federation.cli import cli
    bank_toml, plat_toml = write_node_tomls(tmp_path, bank_rows=300, platform_rows=450)
    job = write_job(tmp_path, "f", algorithm="psi", psi={"mode": "unbalanced"})
    want = _plain_intersection(tmp_path)
    keys = KeyStore(tmp_path / "platform-b-data" / "psi" / "keys")
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client, pclient = AdminClient(bank.data_dir), AdminClient(plat.data_dir)

        def finished(jid: str) -> dict:
            assert wait_state(client, jid)["state"] == "done"
            prec = wait_state(pclient, jid)
            assert prec["state"] == "done", prec["error"]
            import numpy as np
            rows = np.load(prec["artifacts"]["intersection_rows"])
            with open(tmp_path / "platform.csv") as fh:
                ids = [r["id"] for r in csv.DictReader(fh)]
            assert {ids[i] for i in rows} == want and len(rows) == len(want)
            return prec

        old = finished(submit(client, job))["checkpoint"]["psi"]["key_id"]
        out: list = []
        with keys.using("bank-a", exclusive=True):
            jid = submit(client, job)
            deadline = time.monotonic() + 60
            while not any(j["job_id"] == jid for j in pclient.call("list")):
                assert time.monotonic() < deadline, "the platform never got the job"
                time.sleep(0.1)
            rot = threading.Thread(target=lambda: out.append(CliRunner().invoke(
                cli, ["psi", "rotate", "--config", str(plat_toml)])))
            rot.start()
            time.sleep(1.0)   # both now wait for the lock (not asserted on)
        rot.join(120)
        assert out and out[0].exit_code == 0, out[0].output if out else "no result"
        new = keys.oprf_key("bank-a")
        from psi.cache import key_id
        during = finished(jid)["checkpoint"]["psi"]["key_id"]
        assert during in (old, key_id(new)) and old != key_id(new)
        after = finished(submit(client, job))["checkpoint"]["psi"]["key_id"]
        assert after == key_id(new)
