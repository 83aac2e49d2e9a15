"""Missing feature values end to end (issue 13): SecureBoost against XGBoost (hist, same
parameters) and LR's ``nan_policy`` against scikit-learn (SimpleImputer + StandardScaler +
LogisticRegression with the same L2), on the FATE sets with 10-30% of the cells of BOTH
parties' columns blanked by a seeded rng; what crosses the link; LR on small data.

The node-level tests (blank CSV cells, two real nodes) are in
tests/federation/test_missing_values_nodes.py.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from support.lr import load as lr_load
from support.lr import run as lr_run
from support.lr import score as lr_score
from support.roles import TEST_POLICY, contexts, data, policy, run_roles, typed

from federation.link import run_two_parties
from parties.bank import lr as bank_lr
from parties.bank import secureboost as bank_sb
from parties.common.binning import bin_columns
from parties.common.lr_common import LRError
from parties.common.metrics import auc
from parties.common.params import ParamError
from parties.common.residuals import sigmoid
from parties.common.standardize import Standardizer, column_nan_policies
from parties.provincial_platform import lr as platform_lr
from parties.provincial_platform import secureboost as platform_sb
from secure_agg.cipher import PlainCipher

DATA = Path(__file__).resolve().parents[1] / "data"
SB = dict(n_trees=8, max_depth=4, learning_rate=0.3)


def blank(X: np.ndarray, rng: np.random.Generator, lo: float = 0.10,
          hi: float = 0.30) -> np.ndarray:
    """A copy of ``X`` with a share in [lo, hi] (drawn per column) of its cells NaN."""
    X = np.array(X, dtype=np.float64)
    X[rng.random(X.shape) < rng.uniform(lo, hi, X.shape[1])] = np.nan
    return X


# ---------------------------------------------------------------------- SecureBoost
def sb_data(name: str, seed: int = 13):
    g = pd.read_csv(DATA / f"{name}_hetero_guest.csv")
    h = pd.read_csv(DATA / f"{name}_hetero_host.csv")
    assert (g.id.values == h.id.values).all()
    rng = np.random.default_rng(seed)
    Xb = blank(g.drop(columns=["id", "y"]).values, rng)
    Xp = blank(h.drop(columns=["id"]).values, rng)
    y = g.y.values.astype(float)
    idx = np.random.default_rng(0).permutation(len(y))
    k = int(0.8 * len(y))
    return Xb, Xp, y, np.sort(idx[:k]), np.sort(idx[k:])


def sb_fit_score(Xb, Xp, y, tr, te, params):
    ob, op, _ = run_roles("secureboost", data(Xb[tr], None, y[tr]), data(Xp[tr]), params,
                          bank_cipher=PlainCipher(1024))
    cb, cp, _ = contexts()
    p, _ = run_two_parties(lambda: bank_sb.predict(cb, ob.model, Xb[te]),
                           lambda: platform_sb.predict(cp, op.model, Xp[te]), timeout=60)
    return ob, op, p


def xgb_predict(X, y, tr, te, params):
    m = xgb.train(dict(tree_method="hist", max_bin=params["max_bin"],
                       max_depth=params["max_depth"], eta=params["learning_rate"],
                       reg_lambda=1.0, min_child_weight=1.0, base_score=float(y[tr].mean()),
                       objective="binary:logistic", nthread=1),
                  xgb.DMatrix(X[tr], y[tr]), params["n_trees"])
    return m.predict(xgb.DMatrix(X[te]))


def cuts_agree(Xb, Xp, tr, max_bin) -> bool:
    """Each party's own cut points (what its role bins with) == XGBoost's cuts of the
    joined training matrix."""
    q = xgb.QuantileDMatrix(np.hstack([Xb, Xp])[tr], max_bin=max_bin, nthread=1)
    ptr, cuts = q.get_quantile_cut()
    ours = bin_columns(Xb[tr], max_bin).cuts + bin_columns(Xp[tr], max_bin).cuts
    return all(np.array_equal(np.asarray(cuts[ptr[j]:ptr[j + 1]], np.float32)[1:-1], c)
               for j, c in enumerate(ours))


@pytest.mark.parametrize("name,max_bin", [("breast", 256), ("default_credit", 32)])
def test_secureboost_with_missing_cells_matches_xgboost_auc(name, max_bin):
    Xb, Xp, y, tr, te = sb_data(name)
    assert 0.10 < np.isnan(Xb).mean() < 0.30 and 0.10 < np.isnan(Xp).mean() < 0.30
    params = dict(SB, max_bin=max_bin)
    ob, op, p = sb_fit_score(Xb, Xp, y, tr, te, params)
    px = xgb_predict(np.hstack([Xb, Xp]), y, tr, te, params)
    a, ax = auc(y[te], p), auc(y[te], px)
    assert abs(a - ax) < 0.003, (a, ax)
    # default directions were learnt both ways, at the bank's and the platform's splits
    bank_dl = {nd["default_left"] for t in ob.model.body["trees"] for nd in t["nodes"]
               if nd.get("owner") == "bank"}
    plat_dl = {s["default_left"] for s in op.model.body["splits"].values()}
    assert bank_dl == {False, True} and True in plat_dl


def _exact(name, max_bin, rows):
    Xb, Xp, y, tr, te = sb_data(name)
    params = dict(SB, max_bin=max_bin)
    assert cuts_agree(Xb, Xp, tr, max_bin)
    at = tr if rows == "train" else te
    _, _, p = sb_fit_score(Xb, Xp, y, tr, at, params)
    px = xgb_predict(np.hstack([Xb, Xp]), y, tr, at, params)
    assert np.abs(p - px).max() < 1e-5, (np.abs(p - px).max(), (np.abs(p - px) > 1e-5).sum())


@pytest.mark.parametrize("name,max_bin", [("breast", 256), ("default_credit", 32)])
def test_secureboost_with_missing_cells_equals_xgboost_on_training_rows(name, max_bin):
    """Same cuts -> the same gains, splits, default directions and leaf values: every
    training row gets XGBoost's prediction."""
    _exact(name, max_bin, "train")


@pytest.mark.parametrize("name,max_bin", [("breast", 256), ("default_credit", 32)])
def test_secureboost_with_missing_cells_equals_xgboost_on_unseen_rows(name, max_bin):
    _exact(name, max_bin, "test")


# ------------------------------------------------------------------------------- LR
@pytest.fixture(scope="module")
def credit_blank():
    d = lr_load("default_credit")
    rng = np.random.default_rng(5)
    return {**d, "Xb": blank(d["Xb"], rng), "Xp": blank(d["Xp"], rng)}


@pytest.fixture(scope="module")
def breast_blank():
    d = lr_load("breast")
    rng = np.random.default_rng(6)
    return {**d, "Xb": blank(d["Xb"], rng), "Xp": blank(d["Xp"], rng)}


def lr_fit(d, params):
    tr, te = d["train"], ~d["train"]
    return lr_run(d["Xb"][tr], d["y"][tr], d["Xp"][tr], params, Xb_v=d["Xb"][te],
                  y_v=d["y"][te], Xp_v=d["Xp"][te], bnames=d["bnames"], pnames=d["pnames"])


def imputer(strategy: str) -> SimpleImputer:
    if strategy == "zero":
        return SimpleImputer(strategy="constant", fill_value=0.0)
    return SimpleImputer(strategy=strategy)


def sklearn_reference(d, strategies: list[str], lam: float):
    """Per-column SimpleImputer on the joined training rows, then StandardScaler and
    LogisticRegression(C = 1/(n*lam)): (fill values, test AUC)."""
    tr, te = d["train"], ~d["train"]
    X = np.c_[d["Xb"], d["Xp"]]
    fills = np.array([imputer(s).fit(X[tr][:, [j]]).statistics_[0]
                      for j, s in enumerate(strategies)])
    Xi = np.where(np.isnan(X), fills, X)
    mu, sd = Xi[tr].mean(0), Xi[tr].std(0)
    Xs = (Xi - mu) / sd
    sk = LogisticRegression(C=1.0 / (tr.sum() * lam), max_iter=5000).fit(Xs[tr], d["y"][tr])
    return fills, roc_auc_score(d["y"][te], sk.decision_function(Xs[te]))


CREDIT = dict(epochs=10, batch_size=4096, learning_rate=0.05, early_stopping="none", seed=7)


@pytest.mark.parametrize("strategy", ["mean", "median", "zero"])
def test_lr_nan_policy_matches_sklearn_imputer(credit_blank, strategy):
    d, lam = credit_blank, 1e-3
    ob, op, _ = lr_fit(d, {**CREDIT, "l2": lam, "nan_policy": strategy})
    ncol = d["Xb"].shape[1] + d["Xp"].shape[1]
    fills, ref = sklearn_reference(d, [strategy] * ncol, lam)
    sb, sp = ob.model.body["standardizer"], op.model.body["standardizer"]
    # each party's statistic, computed on its own training rows, is the imputer's
    assert np.abs(np.r_[sb["fill"], sp["fill"]] - fills).max() < 1e-12
    assert sb["nan_policy"] == sp["nan_policy"] == strategy
    got = ob.metrics["valid"]["auc"]
    assert abs(got - ref) < 0.005, (got, ref)   # test_lr's default_credit tolerance
    # scoring imputes with the stored statistics: the federated score of rows with
    # missing cells is the model applied to the imputer's output
    te = ~d["train"]
    pb, _, _ = lr_score(ob.model, op.model, d["Xb"][te], d["Xp"][te])
    nb = d["Xb"].shape[1]

    def part(X, body, f):
        st = body["standardizer"]
        Xi = np.where(np.isnan(X), f, X)
        return ((Xi - st["mean"]) / st["scale"]) @ np.asarray(body["weights"])
    z = (part(d["Xb"][te], ob.model.body, fills[:nb]) + ob.model.body["intercept"]
         + part(d["Xp"][te], op.model.body, fills[nb:]))
    assert np.abs(pb - sigmoid(z)).max() < 1e-12


BREAST = dict(epochs=30, batch_size=0, learning_rate=0.1, early_stopping="none")
TABLE = {"*": "mean", "x0": "zero", "platform:x3": "median", "bank:x5": "median",
         "x12": "median"}


def table_strategies(d) -> list[str]:
    """What TABLE means for the joined columns (x0 is a column of both parties, x12
    only of the platform's, x3/x5 exist on both sides but are qualified)."""
    out = []
    for party, names in (("bank", d["bnames"]), ("platform", d["pnames"])):
        for c in names:
            out.append(TABLE.get(f"{party}:{c}", TABLE.get(c, TABLE["*"])))
    return out


def test_lr_nan_policy_table_per_column_matches_sklearn(breast_blank):
    d, lam = breast_blank, 1e-2
    ob, op, _ = lr_fit(d, {**BREAST, "l2": lam, "nan_policy": TABLE})
    strategies = table_strategies(d)
    fills, ref = sklearn_reference(d, strategies, lam)
    nb = d["Xb"].shape[1]
    sb, sp = ob.model.body["standardizer"], op.model.body["standardizer"]
    assert sb["nan_policy"] == strategies[:nb] and sp["nan_policy"] == strategies[nb:]
    assert sb["nan_policy"][0] == "zero" and sb["nan_policy"][5] == "median"
    assert sp["nan_policy"][3] == "median" and sp["nan_policy"][5] == "mean"
    assert np.abs(np.r_[sb["fill"], sp["fill"]] - fills).max() < 1e-12
    assert abs(ob.metrics["valid"]["auc"] - ref) < 0.01   # test_lr's breast tolerance


def test_imputation_adds_nothing_to_the_wire(breast_blank):
    """The job on data with missing cells and nan_policy sends exactly the bytes of
    the same job on the data imputed beforehand with the same statistics: the fill
    values stay in each party's part, nothing new crosses."""
    d = breast_blank
    tr = d["train"]
    params = {**BREAST, "epochs": 3, "l2": 1e-2, "seed": 3}
    _, _, crossed = lr_run(d["Xb"][tr], d["y"][tr], d["Xp"][tr],
                           {**params, "nan_policy": TABLE},
                           bnames=d["bnames"], pnames=d["pnames"])
    nb = d["Xb"].shape[1]
    strategies = table_strategies(d)
    X = np.c_[d["Xb"], d["Xp"]][tr]
    fills = [np.nanmean(X[:, j]) if s == "mean" else np.nanmedian(X[:, j])
             if s == "median" else 0.0 for j, s in enumerate(strategies)]
    Xi = np.where(np.isnan(X), fills, X)
    _, _, crossed0 = lr_run(Xi[:, :nb], d["y"][tr], Xi[:, nb:], params,
                            bnames=d["bnames"], pnames=d["pnames"])
    # each direction's sequence (the interleaving of the two is not deterministic);
    # model-part digests differ (the parts hold the policy and the fill values)
    for sender in ("bank", "platform"):
        strip = [m for m in crossed if m[0] == sender and m[1] != "lr.part_digest"]
        strip0 = [m for m in crossed0 if m[0] == sender and m[1] != "lr.part_digest"]
        assert len(strip) == len(strip0) > 10
        assert strip == strip0, sender


# ---------------------------------------------------------------- LR policy semantics
@pytest.fixture
def small():
    d = lr_load("breast")
    tr = d["train"]
    return (d["Xb"][tr][:200].copy(), d["y"][tr][:200].copy(), d["Xp"][tr][:200].copy(),
            d["bnames"], d["pnames"])


def both(Xb, y, Xp, params, bnames, pnames, bank_policy=TEST_POLICY,
         plat_policy=TEST_POLICY, logs=None):
    """Train both LR roles; returns ([bank error, platform error], crossed)."""
    cb, cp, crossed = contexts("lrmiss")
    if logs is not None:
        cb = dataclasses.replace(cb, log=lambda e, f: logs.append(("bank", e, f)))
        cp = dataclasses.replace(cp, log=lambda e, f: logs.append(("platform", e, f)))
    errs: list = [None, None]

    def role(i, fn):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            errs[i] = exc

    tp = typed("logistic_regression", params)
    ts = [threading.Thread(target=role, args=(0, lambda: bank_lr.train(
              cb, data(Xb, bnames, y), tp, PlainCipher(2048), bank_policy))),
          threading.Thread(target=role, args=(1, lambda: platform_lr.train(
              cp, data(Xp, pnames), tp, PlainCipher(2048), plat_policy)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return errs, crossed


P = dict(epochs=1, batch_size=50)


def test_default_fail_names_the_column_and_nan_policy_but_only_locally(small):
    Xb, y, Xp, bn, pn = small
    Xp = Xp.copy()
    Xp[[3, 9, 11], 4] = np.nan
    (eb, ep), crossed = both(Xb, y, Xp, P, bn, pn)
    assert isinstance(ep, LRError) and isinstance(eb, LRError)
    assert "'x4' has 3 missing" in str(ep) and "nan_policy" in str(ep)
    assert "median" in str(ep)
    # the bank learns that the platform refused, not which column or how many cells
    assert "platform refused" in str(eb) and "x4" not in str(eb) and " 3 " not in str(eb)
    sent = b"".join(m[3] for m in crossed if m[0] == "platform")
    assert b"x4" not in sent
    # a platform whose policy reveals its feature names tells the bank
    (eb, ep), _ = both(Xb, y, Xp, P, bn, pn,
                       plat_policy=policy(reveal_feature_names=True))
    assert "'x4' has 3 missing" in str(eb)
    # the bank's own columns: the same, the other way round
    Xb = Xb.copy()
    Xb[0, 2] = np.nan
    (eb, ep), _ = both(Xb, y, Xp, {**P, "nan_policy": {"platform:x4": "mean"}}, bn, pn)
    assert "'x2' has 1 missing" in str(eb) and "bank refused" in str(ep)
    assert "x2" not in str(ep)


def test_table_columns_not_named_fail_and_names_are_checked(small):
    Xb, y, Xp, bn, pn = small
    Xb, Xp = Xb.copy(), Xp.copy()
    Xb[5, 1] = np.nan
    Xp[7, 6] = np.nan
    # named at its party (unqualified): imputed; not named and no "*": fails
    (eb, ep), _ = both(Xb, y, Xp, {**P, "nan_policy": {"x1": "mean"}}, bn, pn)
    assert eb is not None and "bank refused" not in str(eb)
    assert "platform refused" in str(eb) and "'x6' has 1 missing" in str(ep)
    logs: list = []
    (eb, ep), _ = both(Xb, y, Xp, {**P, "nan_policy": {"x1": "mean", "platform:x6": "zero",
                                                      "income": "median"}}, bn, pn,
                       logs=logs)
    assert eb is None and ep is None
    # each party logs (locally) the table names that are not its columns, and what it
    # imputed; "x6" qualified for the platform is not the bank's concern
    notown = {p: f["names"] for p, e, f in logs if e == "lr.nan_policy_not_own_columns"}
    assert notown == {"bank": ["income"], "platform": ["income"]}
    imputed = {p: f["columns"] for p, e, f in logs if e == "lr.missing_values"}
    assert imputed["bank"] == [{"column": "x1", "missing": 1, "policy": "mean",
                                "fill": pytest.approx(np.nanmean(Xb[:, 1]), abs=1e-12)}]
    assert imputed["platform"] == [{"column": "x6", "missing": 1, "policy": "zero",
                                    "fill": 0.0}]
    # a qualified name the party does not have is an error there (a typo, surely)
    (eb, ep), _ = both(Xb, y, Xp, {**P, "nan_policy": {"*": "mean", "platform:x99": "zero"}},
                       bn, pn)
    assert "['x99']" in str(ep) and "platform refused" in str(eb) and "x99" not in str(eb)


@pytest.mark.parametrize("value,match", [
    ("avg", "nan_policy = 'avg'; expected one of fail, mean, median, zero"),
    ({"x1": "avg"}, "nan_policy['x1'] = 'avg'"),
    ({"bank:": "mean"}, "must be a column name"),
    (["mean"], "is not a valid"),
])
def test_nan_policy_param_errors(value, match):
    with pytest.raises(ParamError, match=match.replace("[", r"\[").replace("]", r"\]")):
        typed("logistic_regression", {"nan_policy": value})


def test_column_entirely_missing_and_policies_resolve():
    X = np.c_[np.arange(6.0), np.full(6, np.nan)]
    from parties.common.standardize import InputError
    with pytest.raises(InputError, match="'b' is entirely missing"):
        Standardizer.fit(X, ["a", "b"], "t", nan_policy="mean")
    pol, other = column_nan_policies({"*": "zero", "a": "median", "bank:a": "mean",
                                      "platform:b": "fail", "c": "mean"}, ["a", "b"], "bank")
    assert pol == ["mean", "zero"] and other == ["c"]
    assert column_nan_policies({"platform:b": "mean"}, ["a", "b"], "bank")[0] == \
        ["fail", "fail"]


def test_standardizer_round_trip_and_scoring_fail_column(small):
    X = np.array([[1.0, np.nan, 3.0], [2.0, 5.0, np.nan], [4.0, 7.0, 9.0],
                  [8.0, 6.0, 1.0]])
    std = Standardizer.fit(X, ["a", "b", "c"], "t", nan_policy=["fail", "median", "zero"])
    d = std.to_dict()
    assert d["nan_policy"] == ["fail", "median", "zero"] and d["fill"] == [0.0, 6.0, 0.0]
    back = Standardizer.from_dict(d)
    assert np.array_equal(back.transform(X[1:2], "s"), std.transform(X[1:2], "s"))
    from parties.common.standardize import InputError
    with pytest.raises(InputError, match="'a' has 1 missing .* nan_policy \"fail\""):
        back.transform(np.array([[np.nan, 1.0, 1.0]]), "s")
    # one policy for every column is stored as before (a string: old parts load as is)
    assert Standardizer.fit(X[:, 1:], ["b", "c"], "t",
                            nan_policy=["mean", "mean"]).to_dict()["nan_policy"] == "mean"
    # federated scoring: a missing cell in a column trained with "fail" stops both
    # parties; the peer is not told the column
    Xb, y, Xp, bn, pn = small
    ob, op, _ = lr_run(Xb, y, Xp, P, bnames=bn, pnames=pn)
    Xs = Xp[:20].copy()
    Xs[2, 7] = np.nan
    cb, cp, crossed = contexts("lrscore")
    errs: dict = {}

    def role(name, fn):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            errs[name] = exc
    ts = [threading.Thread(target=role, args=("bank", lambda: bank_lr.predict(
              cb, ob.model, Xb[:20]))),
          threading.Thread(target=role, args=("platform", lambda: platform_lr.predict(
              cp, op.model, Xs)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert "'x7' has 1 missing" in str(errs["platform"])
    assert "platform refused the scoring job" in str(errs["bank"])
    assert b"x7" not in b"".join(m[3] for m in crossed)


# ---------------------------------------------------------------- LR on small data
def test_batch_size_above_training_rows_fails_before_anything_crosses(small):
    Xb, y, Xp, bn, pn = small
    (eb, ep), crossed = both(Xb, y, Xp, dict(epochs=1, batch_size=4096), bn, pn)
    for e in (eb, ep):
        assert isinstance(e, LRError)
        assert "batch_size = 4096 is larger than the 200 intersecting training rows" in str(e)
        assert "batch_size = 0" in str(e)
    # no hello, no key: each party stopped on its own (both know the row count)
    assert {m[1] for m in crossed} == {"lr.abort"}


def test_small_data_through_the_pipeline():
    import fedjoint
    bank = pd.read_csv(DATA / "breast_hetero_guest.csv")
    plat = pd.read_csv(DATA / "breast_hetero_host.csv")
    pol = {"allow_insecure_test_jobs": True, "min_key_bits": 1024}
    job = {"job": {"name": "small", "algorithm": "logistic_regression", "dataset": "a",
                   "peer_dataset": "b"}, "psi": {"id_type": "string"},
           "params": {"epochs": 2},           # batch_size: the default, 4096
           "evaluation": {"cipher": "plain", "key_bits": 1024}}
    with pytest.raises(fedjoint.FedjointError, match=r"batch_size = 4096 is larger than the "
                       r"\d+ intersecting training rows") as ei:
        fedjoint.run_local(job, bank=bank, platform=plat, seed=1, bank_policy=pol,
                           platform_policy=pol)
    assert ei.value.party in ("bank", "platform")
