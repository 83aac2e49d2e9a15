"""Policy knobs the docs name exist and act: [policy] refresh (SecureBoost) and
psi_check_subgroup (each node's own choice; a job cannot switch it off)."""

from __future__ import annotations

import pytest

from federation.config import ConfigError, job_spec_from_dict
from fedjoint import FedjointError, run_local
from fedjoint.testing import TEST_POLICY, synthetic_parties

JOB = {"job": {"name": "knobs", "algorithm": "secureboost", "dataset": "d",
               "peer_dataset": "d"}, "psi": {"id_type": "string"},
       "params": {"n_trees": 1, "max_depth": 2, "max_bin": 8},
       "evaluation": {"key_bits": 1024}}


def test_platform_refresh_policy_reaches_the_role():
    """1024-bit test keys. Same trees, different refreshed histogram ciphertexts."""
    bank, plat = synthetic_parties()
    runs = {mode: run_local(JOB, bank=bank, platform=plat, bank_policy=TEST_POLICY,
                            platform_policy=dict(TEST_POLICY, refresh=mode), seed=4)
            for mode in ("djn_full", "standard")}
    a, b = runs["djn_full"], runs["standard"]
    assert a.platform_model.body == b.platform_model.body
    assert a.bank_model.body["trees"] == b.bank_model.body["trees"]
    hist = {m: [w[3] for w in r.wire if w[1] == "sb.hist"] for m, r in runs.items()}
    assert hist["djn_full"] and hist["djn_full"] != hist["standard"]
    with pytest.raises(FedjointError, match=r"refresh = 'djn': expected one of"):
        run_local(JOB, bank=bank, platform=plat, bank_policy=TEST_POLICY,
                  platform_policy=dict(TEST_POLICY, refresh="djn"))


def test_subgroup_check_is_the_receivers_choice(monkeypatch):
    with pytest.raises(ConfigError, match="check_subgroup is each node's own choice"):
        job_spec_from_dict({**JOB, "psi": {"id_type": "string", "check_subgroup": False}})
    from psi import protocol
    seen: dict = {}
    real = protocol.run_psi

    def spy(ctx, role, ids, params, **kw):
        seen[role] = params.check_subgroup
        return real(ctx, role, ids, params, **kw)

    monkeypatch.setattr(protocol, "run_psi", spy)
    bank, plat = synthetic_parties()
    run_local({**JOB, "job": {**JOB["job"], "algorithm": "psi"}, "params": {}},
              bank=bank, platform=plat, bank_policy=dict(TEST_POLICY, psi_check_subgroup=False),
              platform_policy=TEST_POLICY)
    assert seen == {"bank": False, "platform": True}
