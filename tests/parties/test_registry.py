"""The registry and the role contract: every registered algorithm passes the
conformance check; a plug-in algorithm needs only its own files and one register call;
broken declarations fail at registration, undeclared kinds before anything crosses."""

from __future__ import annotations

import types
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from federation.link import (
    DeclaredLink,
    PeerAborted,
    ProtocolError,
    local_link_pair,
    run_two_parties,
)
from fedjoint import FedjointError, run_local
from fedjoint.testing import TEST_POLICY, check_algorithm, synthetic_parties
from parties import registry

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"secureboost": {"n_trees": 2, "max_depth": 3, "max_bin": 16},
         "logistic_regression": {"epochs": 2, "batch_size": 64},
         "linear_regression": {"epochs": 3, "batch_size": 64},
         "binning": {"method": "monotonic", "n_prebins": 10},
         "selection": {"iv_min": 0.02, "max_corr": 0.9},
         "woe_lr": {"epochs": 3, "batch_size": 64}}
#: algorithms that consume earlier outputs run after these stages (a pipeline)
BEFORE = {"selection": {"before": [{"name": "bin", "algorithm": "binning",
                                    "params": {"method": "quantile", "n_bins": 5}}],
                        "inputs": {"binning": "bin"}},
          "woe_lr": {"before": [{"name": "bin", "algorithm": "binning",
                                 "params": {"method": "monotonic", "n_prebins": 8}}],
                     "inputs": {"binning": "bin"}}}
#: the test metric each must reach on the conformance data (0/1 labels from a logistic
#: model; linear_regression fits them as a continuous target: a linear probability model)
QUALITY = {"linear_regression": ("test_r2", 0.3),
           "binning": ("n_platform_features", 3),   # a transform: it binned all 4
           "selection": ("n_selected", 2)}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builtin_algorithms_pass_conformance(name):
    """1024-bit test keys (test policy)."""
    res = check_algorithm(name, SMALL[name], **BEFORE.get(name, {}))
    metric, floor = QUALITY.get(name, ("test_auc", 0.7))
    assert res.metrics[metric] > floor


def test_every_registered_algorithm_is_checked():
    assert set(registry.names()) == set(SMALL)


@pytest.fixture
def row_count():
    from support import rowcount
    algo = registry.register(rowcount.algorithm())
    yield algo
    registry.unregister("row_count")


def test_plugin_algorithm_needs_no_runtime_edit(row_count):
    res = check_algorithm("row_count")
    assert res.bank_model.body == {"own_rows": 200, "peer_rows": 200}
    assert res.platform.metrics["peer_rows"] == 200
    # no file of the runtime names it: the registry is the only way in
    for path in [*(ROOT / "federation").rglob("*.py"), *(ROOT / "fedjoint").rglob("*.py")]:
        assert "row_count" not in path.read_text(), path


def test_new_algorithm_is_off_until_the_platform_lists_it(row_count):
    bank, plat = synthetic_parties()
    job = {"job": {"name": "rc", "algorithm": "row_count", "dataset": "d",
                   "peer_dataset": "d"}, "psi": {"id_type": "string"}}
    default = {k: v for k, v in TEST_POLICY.items() if k != "allowed_algorithms"}
    with pytest.raises(FedjointError, match="platform side: refused by its policy: "
                                            "algorithm 'row_count' is not allowed"):
        run_local(job, bank=bank, platform=plat, bank_policy=TEST_POLICY,
                  platform_policy=default)
    listed = dict(default, allowed_algorithms=["psi", "row_count"])
    res = run_local(job, bank=bank, platform=plat, bank_policy=TEST_POLICY,
                    platform_policy=listed)
    assert res.bank_model.body["peer_rows"] == 200


def _module(**fns) -> types.ModuleType:
    mod = types.ModuleType("fake_role")
    mod.__dict__.update(fns)
    return mod


def _ok_train(ctx, data, params, cipher, policy):
    return None


def _ok_predict(ctx, model, X):
    return None


@dataclass
class _Params:
    x: int = 1


def _algo(**changes):
    from support.rowcount import TABLE
    good = _module(train=_ok_train, predict=_ok_predict)
    base = registry.Algorithm("fake_algo", "train", _Params, good, good, TABLE, ("bank",))
    return replace(base, **changes)


@pytest.mark.parametrize("changes,match", [
    ({"kind": "cluster"}, "kind 'cluster' is not one of"),
    ({"params": dict}, "params must be a dataclass"),
    ({"key_holders": ("auditor",)}, "key_holders"),
    ({"protocol": "sb"}, "declared ProtocolTable"),
    ({"platform": _module(train=_ok_train)}, r"has no function predict\(\)"),
    ({"bank": _module(train=lambda ctx, X, y, params: None, predict=_ok_predict)},
     r"does not match the role contract train\('ctx', 'data', 'params', 'cipher', "
     r"'policy'\)"),
    ({"name": "Bad-Name"}, "lowercase"),
])
def test_broken_declarations_fail_at_registration(changes, match):
    with pytest.raises(registry.RegistryError, match=match):
        registry.register(_algo(**changes))
    assert "fake_algo" not in registry.names()


def test_unknown_algorithm_names_the_registered_ones():
    with pytest.raises(registry.RegistryError, match="unknown algorithm 'xgb' .*secureboost"):
        registry.get("xgb")


def test_undeclared_kind_fails_before_anything_crosses():
    from federation import job_protocol
    a, b, crossed = local_link_pair("k")
    link = DeclaredLink(a, [job_protocol.TABLE, registry.get("secureboost").protocol], "bank")
    with pytest.raises(ProtocolError, match="'sb.secret' is not declared by this job's "
                                            "protocols \\(job, secureboost\\)"):
        link.send("sb.secret", {"x": 1})
    with pytest.raises(ProtocolError, match="declared as sent by the platform"):
        link.send("sb.hist", b"\x01")           # the bank never sends histograms
    with pytest.raises(ProtocolError, match="declared as sent by the bank"):
        link.recv("sb.grad")                    # ... nor receives gradients
    assert crossed == []
    link.send("sb.tree", {"tree": 0})           # declared, bank -> platform
    assert [k for _, k, *_ in crossed] == ["sb.tree"]


def test_two_parties_raise_the_root_cause_not_the_peer_aborted():
    def fails():
        raise ValueError("the real cause")

    def aborted():
        raise PeerAborted("peer aborted while we waited for 'sb.init'")

    for pair in ((fails, aborted), (aborted, fails)):
        with pytest.raises(ValueError, match="the real cause"):
            run_two_parties(*pair, timeout=5)


def test_wire_doc_is_current():
    from federation.job_protocol import wire_doc
    assert (ROOT / "docs" / "wire.md").read_text() == wire_doc() + "\n", \
        "regenerate: python -m federation.job_protocol > docs/wire.md"
