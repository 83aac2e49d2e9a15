"""SecureBoost: lossless vs XGBoost, encrypted == plain, scoring round trip, bad input."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from support.roles import STRICT_POLICY, TEST_POLICY, contexts, data, run_roles, typed

from federation.link import ProtocolError, run_two_parties
from parties.bank import secureboost as bank
from parties.common.metrics import auc
from parties.provincial_platform import secureboost as plat
from secure_agg.cipher import PlainCipher
from secure_agg.rng import Drbg

DATA = Path(__file__).resolve().parents[1] / "data"
POLICY = TEST_POLICY


def load(name, n=None):
    g = pd.read_csv(DATA / f"{name}_hetero_guest.csv")
    h = pd.read_csv(DATA / f"{name}_hetero_host.csv")
    assert (g.id.values == h.id.values).all()
    if n:
        g, h = g[:n], h[:n]
    return (g.drop(columns=["id", "y"]).values, g.y.values.astype(float),
            h.drop(columns=["id"]).values, list(g.columns[2:]), list(h.columns[1:]))


def split(n, frac=0.8, seed=0):
    idx = np.random.default_rng(seed).permutation(n)
    k = int(frac * n)
    return np.sort(idx[:k]), np.sort(idx[k:])


def fit(Xb, y, Xp, nb, npf, params, cipher, policy=POLICY, Xbv=None, yv=None, Xpv=None):
    return run_roles("secureboost", data(Xb, nb, y, Xbv, yv), data(Xp, npf, X_valid=Xpv),
                     params, bank_cipher=cipher, bank_policy=policy, platform_policy=policy)


def score(ob, op, Xb, Xp):
    cb, cp, _ = contexts()
    pb, _ = run_two_parties(lambda: bank.predict(cb, ob.model, Xb),
                            lambda: plat.predict(cp, op.model, Xp), timeout=60)
    return pb


def xgb_ref(X, y, Xte, params, base):
    m = xgb.train(dict(tree_method="hist", max_bin=params["max_bin"],
                       max_depth=params["max_depth"], eta=params["learning_rate"],
                       reg_lambda=1.0, min_child_weight=1.0, base_score=base,
                       objective="binary:logistic", nthread=1),
                  xgb.DMatrix(X, y), params["n_trees"])
    return m.predict(xgb.DMatrix(Xte))


@pytest.mark.parametrize("name,n", [("breast", None), ("default_credit", None)])
def test_auc_matches_xgboost_and_scoring_roundtrip(name, n):
    Xb, y, Xp, nb, npf = load(name, n)
    tr, te = split(len(y))
    params = dict(n_trees=8, max_depth=4, max_bin=32, learning_rate=0.3)
    ob, op, _ = fit(Xb[tr], y[tr], Xp[tr], nb, npf, params, PlainCipher(1024))
    p_ours = score(ob, op, Xb[te], Xp[te])
    p_xgb = xgb_ref(np.hstack([Xb, Xp])[tr], y[tr], np.hstack([Xb, Xp])[te], params,
                    float(y[tr].mean()))
    a_ours, a_xgb = auc(y[te], p_ours), auc(y[te], p_xgb)
    assert abs(a_ours - a_xgb) < 0.003, (a_ours, a_xgb)
    # scoring the training rows reproduces the in-training predictions
    p_train = score(ob, op, Xb[tr], Xp[tr])
    assert abs(auc(y[tr], p_train) - ob.metrics["train"]["auc"]) < 1e-12
    from parties.common.metrics import log_loss
    assert abs(log_loss(y[tr], p_train) - ob.metrics["train"]["log_loss"]) < 1e-9
    assert ob.history[-1]["train"]["auc"] > 0.7
    assert any(k.startswith("platform_f") for k in
               ob.model.body["importance"]["split_count"])


def test_identical_trees_to_xgboost_when_cuts_agree():
    # breast has few enough rows that XGBoost's sketch is exact at max_bin=256
    Xb, y, Xp, nb, npf = load("breast")
    params = dict(n_trees=4, max_depth=3, max_bin=256, learning_rate=0.3)
    ob, op, _ = fit(Xb, y, Xp, nb, npf, params, PlainCipher(1024))
    p = score(ob, op, Xb, Xp)
    X = np.hstack([Xb, Xp])
    assert np.abs(p - xgb_ref(X, y, X, params, float(y.mean()))).max() < 1e-5


def test_bank_splits_name_no_bank_feature_or_bin_to_the_platform():
    # the platform needs only the sides of its rows at a bank split (sb.bank_partition);
    # the bank's winning feature and bin stay with the bank
    from federation.link.codec import decode_payload
    Xb, y, Xp, nb, npf = load("breast")
    ob, _, crossed = fit(Xb, y, Xp, nb, npf, dict(n_trees=2, max_depth=3, max_bin=16),
                         PlainCipher(1024))
    sent = [decode_payload(t, b) for s, k, t, b in crossed if k == "sb.split"]
    bank_entries = [sp for m in sent for sp in m["splits"] if sp[1] == "bank"]
    plat_entries = [sp for m in sent for sp in m["splits"] if sp[1] == "platform"]
    assert bank_entries and plat_entries
    assert all(sp[2] == 0 and sp[3] == [] for sp in bank_entries)
    assert len({sp[2] for sp in plat_entries}) > 1       # platform picks still named
    assert len({nd["feature"] for t in ob.model.body["trees"] for nd in t["nodes"]
                if nd.get("owner") == "bank" and "feature" in nd}) > 1


@pytest.mark.parametrize("name,n", [("breast", None), ("default_credit", 4000)])
def test_encrypted_equals_plain(name, n):
    from secure_agg.paillier import PaillierPrivateCipher
    Xb, y, Xp, nb, npf = load(name, n)
    params = dict(n_trees=2, max_depth=3, max_bin=16, learning_rate=0.3)
    ob1, _, _ = fit(Xb, y, Xp, nb, npf, dict(params), PlainCipher(1024))
    key = PaillierPrivateCipher.generate(1024, rng=Drbg(b"k" * 32), insecure_test_key=True)
    ob2, op2, crossed = fit(Xb, y, Xp, nb, npf, dict(params), key)
    t1, t2 = ob1.model.body["trees"], ob2.model.body["trees"]
    for a, b in zip(t1, t2, strict=True):
        assert len(a["nodes"]) == len(b["nodes"])
        for x, z in zip(a["nodes"], b["nodes"], strict=True):
            assert x.get("owner") == z.get("owner") and x["id"] == z["id"]
            assert abs(x.get("value", 0) - z.get("value", 0)) < 1e-6
    assert any(nd.get("owner") == "platform" for t in t2 for nd in t["nodes"])
    # the platform's policy can force uniform r^n refreshes: same trees
    ob3, _, _ = fit(Xb, y, Xp, nb, npf, dict(params), key,
                    policy=replace(POLICY, refresh="standard"))
    assert ob3.model.body["trees"] == t2
    # nothing raw crossed: the platform received ciphertext bytes and control messages
    kinds = {k for s, k, _, _ in crossed if s == "bank"}
    assert "sb.grad" in kinds and not any("label" in k for k in kinds)


def test_options_missing_values_validation_early_stopping():
    Xb, y, Xp, nb, npf = load("default_credit", 3000)
    Xb = Xb.copy()
    Xp = Xp.copy()
    rng = np.random.default_rng(1)
    Xb[rng.random(Xb.shape) < 0.1] = np.nan
    Xp[rng.random(Xp.shape) < 0.1] = np.nan
    tr, te = split(len(y))
    params = dict(n_trees=30, max_depth=3, max_bin=16, learning_rate=0.5,
                  early_stopping_rounds=2, subsample=0.8, colsample_bytree=0.8,
                  complete_secure=1, gamma=0.5)
    ob, op, _ = fit(Xb[tr], y[tr], Xp[tr], nb, npf, params, PlainCipher(1024),
                    Xbv=Xb[te], yv=y[te], Xpv=Xp[te])
    n_keep = ob.model.body["n_trees"]
    assert n_keep < 30 and ob.history[0]["federated"] is False
    assert "valid" in ob.metrics and ob.metrics["valid"]["auc"] > 0.65
    assert any(nd.get("default_left") for t in ob.model.body["trees"] for nd in t["nodes"])
    p = score(ob, op, Xb[te], Xp[te])
    assert abs(auc(y[te], p) - ob.metrics["valid"]["auc"]) < 1e-9
    # GOSS and regression run too
    params = dict(n_trees=3, max_depth=3, max_bin=16, goss=True)
    ob, _, _ = fit(Xb[tr], y[tr], Xp[tr], nb, npf, params, PlainCipher(1024))
    params = dict(n_trees=3, max_depth=3, max_bin=16,
                  objective="reg:squarederror")
    ob, _, _ = fit(Xb[tr], y[tr] * 3 + 1, Xp[tr], nb, npf, params, PlainCipher(1024))
    assert ob.history[-1]["train"]["rmse"] < ob.history[0]["train"]["rmse"]


def _bad(Xb, y, Xp, params, policy=POLICY):
    nb = [f"b{i}" for i in range(Xb.shape[1])]
    npf = [f"p{i}" for i in range(Xp.shape[1])]
    return fit(Xb, y, Xp, nb, npf, params, PlainCipher(1024), policy)


def _platform_error(Xb, y, Xp, params, policy=POLICY):
    """Run both roles; return the platform's exception (the bank sees an abort)."""
    cb, cp, _ = contexts()
    errs = {}

    def wrap(name, fn):
        def run():
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                errs[name] = exc
        return run
    nb = [f"b{i}" for i in range(Xb.shape[1])]
    npf = [f"p{i}" for i in range(Xp.shape[1])]
    run_two_parties(wrap("bank", lambda: bank.train(cb, data(Xb, nb, y),
                                                    typed("secureboost", params),
                                                    PlainCipher(1024), policy)),
                    wrap("platform", lambda: plat.train(cp, data(Xp, npf),
                                                        typed("secureboost", params), None,
                                                        policy)),
                    timeout=60)
    assert isinstance(errs.get("bank"), ProtocolError)
    return errs["platform"]


def test_bad_input():
    Xb, y, Xp, _, _ = load("breast")
    params = dict(n_trees=2, max_depth=2, max_bin=8)
    with pytest.raises(ValueError, match="label y is missing"):
        _bad(Xb, None, Xp, params)
    with pytest.raises(ValueError, match="not numeric"):
        _bad(Xb, np.array(["a"] * len(y)), Xp, params)
    yn = y.copy()
    yn[3] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        _bad(Xb, yn, Xp, params)
    with pytest.raises(ValueError, match="0/1"):
        _bad(Xb, y * 2, Xp, params)
    err = _platform_error(Xb, y, np.ones_like(Xp), params)
    assert isinstance(err, ValueError) and "constant or all missing" in str(err)
    err = _platform_error(Xb, y, Xp, params, policy=STRICT_POLICY)
    assert isinstance(err, PermissionError) and "policy" in str(err)
    with pytest.raises(ProtocolError, match="alignment"):
        _bad(Xb, y, Xp[:-1], params)
    # a constant / all-missing bank column is logged and never split
    Xc = Xb.copy()
    Xc[:, 0] = 1.0
    Xc[:, 1] = np.nan
    ob, _, _ = _bad(Xc, y, Xp, params)
    used = {nd.get("feature") for t in ob.model.body["trees"] for nd in t["nodes"]
            if nd.get("owner") == "bank"}
    assert not used & {0, 1}


def _tamper(monkeypatch, kind, fn):
    from federation.link import link as protocol
    orig = protocol._LocalLink.send

    def send(self, k, payload):
        if k == kind and self.party == "platform":
            payload = fn(payload)
        return orig(self, k, payload)
    monkeypatch.setattr(protocol._LocalLink, "send", send)


@pytest.mark.parametrize("kind,fn,msg", [
    ("sb.partition_meta", lambda m: dict(m, sizes=[s - 1 for s in m["sizes"]]),
     "disagree with the node sizes"),
    ("sb.hist", lambda b: b[:-1], "wrong histogram shape"),
    ("sb.hist", lambda b: b"\xff" * len(b), "out of range"),
])
def test_malicious_platform(monkeypatch, kind, fn, msg):
    Xb, y, Xp, _, _ = load("breast")
    # platform features only on the bank's side would never ask for a partition
    params = dict(n_trees=1, max_depth=2, max_bin=8)
    _tamper(monkeypatch, kind, fn)
    with pytest.raises(ProtocolError, match=msg):
        _bad(Xb[:, :1] * 0, y, Xp, params)


def test_refresh_mode():
    assert plat.refresh_mode("djn_full", POLICY) == "djn_full"
    assert plat.refresh_mode("djn_full", replace(POLICY, refresh="standard")) == "standard"
    assert plat.refresh_mode("standard", POLICY) == "standard"
    with pytest.raises(ValueError, match="refresh"):
        plat.refresh_mode("djn_full", replace(POLICY, refresh="djn"))
    from parties.common.params import ParamError
    with pytest.raises(ParamError, match="refresh"):
        typed("secureboost", {"refresh": "short"})
