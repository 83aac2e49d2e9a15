"""cipher = "ou" through two real nodes (gRPC over loopback, mutual TLS, SQLite job
stores): a platform whose allowed_ciphers leaves OU out refuses the proposal naming
the key; once it lists OU (`node reload`), SecureBoost and LR jobs train with OU keys (their
transcripts verify and the bank's side replays from its seed, OU key included)
and give the same test scores as the same jobs under Paillier (the plaintext
arithmetic is identical: fixed-point, lossless, no subsampling, full-batch LR); with one
job seed (the Python API, same code path below the channel) OU, Paillier and the
plain cipher give bit-identical scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.nodes import make_party_keys, wait_state, write_job, write_node_tomls

from federation.admin import AdminClient
from federation.config import load_job_spec, load_node_config
from federation.node import Node

KEY_BITS = 1024   # test keys (allow_insecure_test_jobs nodes): 212-bit OU plaintexts
SB = {"n_trees": 2, "max_depth": 3, "max_bin": 16, "learning_rate": 0.3}
LR = {"epochs": 3, "batch_size": 0, "learning_rate": 0.15}


def _submit(client: AdminClient, job: Path) -> dict:
    job_id = client.call("submit", spec=load_job_spec(job).to_dict(),
                         source=str(job))["job_id"]
    return {**wait_state(client, job_id, timeout=240.0), "job_id": job_id}


def _scores(rec: dict) -> dict:
    """Test score per enterprise id (the row order follows each job's PSI)."""
    s = json.loads(Path(rec["artifacts"]["test_scores"]).read_text())
    return dict(zip(s["ids"], s["p"], strict=True))


def test_ou_jobs_match_paillier_and_the_allow_list_refuses(tmp_path):
    from click.testing import CliRunner

    from federation.cli import cli
    keys = make_party_keys(tmp_path)
    test_keys = {"ou_min_key_bits": 512, "min_key_bits": 512}
    bank_toml, plat_toml = write_node_tomls(
        tmp_path, keys=keys, bank_rows=300, platform_rows=300, deadline_s=30.0,
        bank_policy={"allowed_ciphers": ["paillier", "ou"], **test_keys},
        platform_policy=test_keys)                       # default list: Paillier only
    bank = Node(load_node_config(bank_toml), quiet=True).start()
    plat = Node(load_node_config(plat_toml), quiet=True).start()
    try:
        client = AdminClient(bank.data_dir)
        ou = {"cipher": "ou", "key_bits": KEY_BITS}
        rec = _submit(client, write_job(tmp_path, "sb-ou-refused", "secureboost", SB, ou))
        assert rec["state"] == "failed", rec
        assert "cipher 'ou' is not in this node's [policy] allowed_ciphers" in rec["error"]
        assert "allowed: paillier" in rec["error"]

        text = plat_toml.read_text()
        plat_toml.write_text(text.replace("[policy]\n",
                                          '[policy]\nallowed_ciphers = ["paillier", "ou"]\n'))
        run = CliRunner().invoke(cli, ["node", "reload", "--config", str(plat_toml)])
        assert run.exit_code == 0, run.output
        assert plat.cfg.policy.allowed_ciphers == ["paillier", "ou"]

        pai = {"cipher": "paillier", "key_bits": KEY_BITS}
        for algo, params in (("secureboost", SB), ("logistic_regression", LR)):
            got = {}
            for name, ev in (("paillier", pai), ("ou", ou)):
                rec = _submit(client, write_job(tmp_path, f"{algo[:2]}-{name}", algo, params,
                                                ev))
                assert rec["state"] == "done", rec.get("error")
                got[name] = (_scores(rec), rec["metrics"])
                if name == "ou":   # the auditor verifies both transcripts, replays the bank
                    prec = wait_state(AdminClient(plat.data_dir), rec["job_id"], timeout=30)
                    tb, tp = rec["artifacts"]["transcript"], prec["artifacts"]["transcript"]
                    res = CliRunner().invoke(cli, ["audit", "verify", tb, "--peer", tp,
                                                   "--config", str(bank_toml)])
                    assert res.exit_code == 0 and "VERIFIED" in res.output, res.output
                    res = CliRunner().invoke(cli, ["audit", "replay", tb, "--party-dir",
                                                   str(tmp_path)])
                    assert res.exit_code == 0 and "REPLAYED" in res.output, res.output
            # each job's PSI orders the rows differently, so float sums may round in
            # the last bit; with one seed (below) the scores are bit-identical
            assert got["ou"][0].keys() == got["paillier"][0].keys()
            assert len(got["ou"][0]) > 50
            assert got["ou"][0] == pytest.approx(got["paillier"][0], rel=1e-12, abs=1e-12)
            assert got["ou"][1]["test_auc"] == got["paillier"][1]["test_auc"]
            assert got["ou"][1]["test_auc"] > 0.9
    finally:
        bank.stop()
        plat.stop()


@pytest.mark.parametrize("bad,match", [
    ({"allowed_ciphers": ["paillier", "rsa"]}, r"allowed_ciphers.*'rsa'"),
    ({"ou_min_key_bits": 1024}, "ou_min_key_bits.*test keys"),
    ({"ou_min_key_bits": 4096, "ou_max_key_bits": 2048}, "ou_max_key_bits"),
])
def test_policy_keys_are_validated(tmp_path, bad, match):
    from federation.config import ConfigError
    bank_toml, plat_toml = write_node_tomls(tmp_path, platform_policy={
        "allow_insecure_test_jobs": False, "min_key_bits": 2048, **bad})
    with pytest.raises(ConfigError, match=match):
        load_node_config(plat_toml)


@pytest.mark.parametrize("algo,params", [("secureboost", SB), ("logistic_regression", LR),
                                         ("linear_regression", LR)])
def test_same_seed_same_scores_for_every_cipher(algo, params):
    import pandas as pd

    from fedjoint import run_local
    from fedjoint.testing import TEST_POLICY
    data = Path(__file__).resolve().parents[1] / "data"
    bank = pd.read_csv(data / "breast_hetero_guest.csv")[:250]
    plat = pd.read_csv(data / "breast_hetero_host.csv")[:250]
    pol = {**TEST_POLICY, "allowed_ciphers": ["paillier", "ou"], "ou_min_key_bits": 512}
    got = {}
    for cipher in ("plain", "paillier", "ou"):
        job = {"job": {"name": "same-seed", "algorithm": algo, "dataset": "d",
                       "peer_dataset": "d"}, "psi": {"id_type": "string"}, "params": params,
               "evaluation": {"cipher": cipher, "key_bits": KEY_BITS}}
        res = run_local(job, bank=bank, platform=plat, bank_policy=pol, platform_policy=pol,
                        seed=7)
        got[cipher] = res.bank.test_scores["p"]
    assert got["ou"] == got["paillier"] == got["plain"]


def test_refresh_standard_refuses_ou():
    """A platform that asks for refreshes against a deviating key holder refuses OU."""
    import pandas as pd

    from fedjoint import FedjointError, run_local
    from fedjoint.testing import TEST_POLICY
    data = Path(__file__).resolve().parents[1] / "data"
    pol = {**TEST_POLICY, "allowed_ciphers": ["paillier", "ou"], "ou_min_key_bits": 512}
    job = {"job": {"name": "ou-std", "algorithm": "secureboost", "dataset": "d",
                   "peer_dataset": "d"}, "psi": {"id_type": "string"}, "params": SB,
           "evaluation": {"cipher": "ou", "key_bits": KEY_BITS}}
    with pytest.raises(FedjointError, match="refresh = 'standard'.*OU"):
        run_local(job, bank=pd.read_csv(data / "breast_hetero_guest.csv")[:120],
                  platform=pd.read_csv(data / "breast_hetero_host.csv")[:120],
                  bank_policy=pol, platform_policy={**pol, "refresh": "standard"})
