"""Regression: linear_regression's coefficients against scikit-learn (OLS and ridge, in
the same standardised space), Paillier == plain, scoring, what crosses, bad input;
SecureBoost's reg: objectives against XGBoost; the regression metrics against
scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from support.roles import contexts, data, run_roles, typed

from federation.link import run_two_parties
from parties.bank import linreg as bank_lr
from parties.bank import secureboost as bank_sb
from parties.common import metrics
from parties.common.linreg_common import LinRegError
from parties.common.lr_common import LRError
from parties.common.params import ParamError
from parties.common.secureboost_params import SecureBoostParams
from parties.provincial_platform import linreg as plat_lr
from parties.provincial_platform import lr as plat_logreg
from parties.provincial_platform import secureboost as plat_sb
from secure_agg.cipher import PlainCipher
from secure_agg.paillier import PaillierPrivateCipher
from secure_agg.rng import Drbg

DATA = Path(__file__).resolve().parents[1] / "data"
ALGO = "linear_regression"


def load(name: str, target: str, n: int | None = None):
    """A FATE set with the bank's column ``target`` as the continuous target (dropped
    from the bank's features)."""
    g = pd.read_csv(DATA / f"{name}_hetero_guest.csv")
    h = pd.read_csv(DATA / f"{name}_hetero_host.csv")
    assert (g.id.values == h.id.values).all()
    if n:
        g, h = g[:n], h[:n]
    gx = g.drop(columns=["id", "y", target])
    return {"Xb": gx.to_numpy(float), "bnames": list(gx.columns),
            "y": g[target].to_numpy(float), "Xp": h.drop(columns=["id"]).to_numpy(float),
            "pnames": list(h.columns[1:])}


def fit(d, params, rows=slice(None), valid=None, **kw):
    kw.setdefault("bank_cipher", PlainCipher(1024))
    kw.setdefault("platform_cipher", PlainCipher(1024))
    v = {} if valid is None else {"Xb_v": d["Xb"][valid], "y_v": d["y"][valid],
                                  "Xp_v": d["Xp"][valid]}
    return run_roles(ALGO, data(d["Xb"][rows], d["bnames"], d["y"][rows], v.get("Xb_v"),
                                v.get("y_v")),
                     data(d["Xp"][rows], d["pnames"], X_valid=v.get("Xp_v")), params,
                     timeout=600, **kw)


def joined_coefficients(ob, op):
    """Both parts' coefficients in the target's units on standardised features, and the
    intercept: what scikit-learn fits on the standardised joined matrix."""
    t = ob.model.body["target"]
    w = np.r_[ob.model.body["weights"], op.model.body["weights"]] * t["scale"]
    return w, t["mean"] + t["scale"] * ob.model.body["intercept"]


def standardised(d, rows=slice(None)):
    X = np.c_[d["Xb"], d["Xp"]][rows]
    return (X - X.mean(0)) / X.std(0)


def heavy_ball(Xs, lam: float) -> dict:
    """The heavy-ball (``optimizer = "momentum"``) step and momentum that are optimal for
    a quadratic with this spectrum (learning_rate 4/(sqrt L + sqrt mu)^2, momentum
    ((sqrt k - 1)/(sqrt k + 1))^2): the optimiser's choice, not the protocol's."""
    ev = np.linalg.eigvalsh(Xs.T @ Xs / len(Xs))
    big, small = ev.max() + lam, ev.min() + lam
    k = np.sqrt(big / small)
    return {"optimizer": "momentum", "learning_rate": 4 / (np.sqrt(big) + np.sqrt(small)) ** 2,
            "momentum": ((k - 1) / (k + 1)) ** 2}


# ---- metrics --------------------------------------------------------------------------
def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.normal(size=500) * 3 + 1
    p = y + rng.standard_t(3, size=500)
    rep = metrics.regression_report(y, p)
    assert abs(rep["rmse"] - mean_squared_error(y, p) ** 0.5) < 1e-12
    assert abs(rep["mae"] - mean_absolute_error(y, p)) < 1e-12
    assert abs(rep["r2"] - r2_score(y, p)) < 1e-12 and rep["n"] == 500
    assert metrics.report("continuous", y, p) == rep
    assert set(metrics.report("binary", (y > 1).astype(int), p)) >= {"auc", "ks", "log_loss"}
    const = np.full(4, 2.0)        # scikit-learn's convention for a constant target
    assert metrics.r2(const, const) == r2_score(const, const) == 1.0
    assert metrics.r2(const, const + 1) == r2_score(const, const + 1) == 0.0
    with pytest.raises(ValueError, match="label kind"):
        metrics.report("ordinal", y, p)


# ---- linear regression vs scikit-learn --------------------------------------------------
def test_ols_coefficients_match_sklearn_on_default_credit():
    """Exact gradients: with enough full-batch epochs the coefficients are
    scikit-learn's LinearRegression on the joined, standardised data (bank column x0 as
    the target: the platform's features explain most of it)."""
    d = load("default_credit", "x0", n=4000)
    Xs = standardised(d)
    params = {"epochs": 200, "batch_size": 0, "early_stopping": "none", "x_frac_bits": 20,
              **heavy_ball(Xs, 0.0)}
    ob, op, _ = fit(d, params)
    sk = LinearRegression().fit(Xs, d["y"])
    w, b = joined_coefficients(ob, op)
    print("OLS max|w - sklearn|", np.abs(w - sk.coef_).max(), "|b - b_sk|",
          abs(b - sk.intercept_))
    assert np.abs(w - sk.coef_).max() < 1e-4
    assert abs(b - sk.intercept_) < 1e-4
    assert abs(ob.metrics["train"]["r2"] - sk.score(Xs, d["y"])) < 1e-6
    # the protocol's loss is the exact half mean squared error on the standardised target
    z = (sk.predict(Xs) - ob.model.body["target"]["mean"]) / ob.model.body["target"]["scale"]
    ys = (d["y"] - d["y"].mean()) / d["y"].std()
    assert abs(ob.metrics["final_loss"] - 0.5 * np.mean((ys - z) ** 2)) < 1e-6
    # bank-only features explain far less: the platform's columns carry the fit
    assert LinearRegression().fit(Xs[:, :len(d["bnames"])], d["y"]).score(
        Xs[:, :len(d["bnames"])], d["y"]) < ob.metrics["train"]["r2"] - 0.4


def test_ridge_coefficients_match_sklearn_on_breast():
    """reg_lambda = l on the mean loss is scikit-learn's Ridge(alpha = n * l) (default
    x_frac_bits)."""
    d = load("breast", "x0")
    Xs = standardised(d)
    lam = 0.1
    params = {"epochs": 100, "batch_size": 0, "early_stopping": "none", "reg_lambda": lam,
              **heavy_ball(Xs, lam)}
    ob, op, _ = fit(d, params)
    sk = Ridge(alpha=len(d["y"]) * lam).fit(Xs, d["y"])
    w, b = joined_coefficients(ob, op)
    print("ridge max|w - sklearn|", np.abs(w - sk.coef_).max())
    assert np.abs(w - sk.coef_).max() < 1e-4 and abs(b - sk.intercept_) < 1e-4
    # a different penalty is a different model: the comparison can fail
    other = Ridge(alpha=len(d["y"]) * lam * 2).fit(Xs, d["y"])
    assert np.abs(w - other.coef_).max() > 1e-3


def test_paillier_weights_equal_plain_and_what_crosses():
    d = load("breast", "x0", n=200)
    params = {"epochs": 2, "batch_size": 64, "learning_rate": 0.1, "early_stopping": "none"}
    ob1, op1, _ = fit(d, params)
    keys = [PaillierPrivateCipher.generate(1024, rng=Drbg(s * 32, "k"), insecure_test_key=True)
            for s in (b"b", b"p")]
    ob2, op2, crossed = fit(d, params, bank_cipher=keys[0], platform_cipher=keys[1])
    assert ob2.model.body["weights"] == ob1.model.body["weights"]
    assert op2.model.body["weights"] == op1.model.body["weights"]
    assert ob2.metrics["final_loss"] == ob1.metrics["final_loss"]
    kinds = [(s, k) for s, k, *_ in crossed]
    n_batches = 2 * 4                                   # 2 epochs of ceil(200 / 64)
    assert kinds.count(("bank", "lr.enc_u")) == n_batches
    assert kinds.count(("platform", "lr.enc_zp")) == n_batches
    assert not any(k == "lr.enc_a" for _, k in kinds)   # the curvature is the public 1
    # the target never crosses: no message carries the bank's target values' bytes
    raw = [d["y"][i:i + 2].astype(np.float64).tobytes() for i in range(0, 200, 20)]
    ys = (d["y"] - d["y"].mean()) / d["y"].std()
    raw += [ys[i:i + 2].tobytes() for i in range(0, 200, 20)]
    payloads = [m[3] for m in crossed if isinstance(m[3], bytes)]
    assert not any(r in p for r in raw for p in payloads)
    # the platform's part holds no target scaling
    assert "target" not in op2.model.body and "target" in ob2.model.body


def test_scoring_reproduces_validation_predictions():
    d = load("breast", "x0")
    rng = np.random.default_rng(0)
    valid = rng.random(len(d["y"])) < 0.25
    params = {"epochs": 30, "batch_size": 0, "learning_rate": 0.1,
              "early_stopping": "none"}
    ob, op, _ = fit(d, params, rows=~valid, valid=valid)
    cb, cp, crossed = contexts("score")
    pred, zp = run_two_parties(lambda: bank_lr.predict(cb, ob.model, d["Xb"][valid]),
                               lambda: plat_lr.predict(cp, op.model, d["Xp"][valid]),
                               timeout=60)
    assert abs(metrics.rmse(d["y"][valid], pred) - ob.metrics["valid"]["rmse"]) < 1e-12
    assert ob.metrics["valid"]["r2"] > 0.95           # x0 is nearly a function of x2, x3
    # predictions are in the target's units, not probabilities
    assert pred.min() < 0 < pred.max() and np.abs(pred).max() > 1
    assert [k for _, k, *_ in crossed] == ["lr.score_hello", "lr.score_hello",
                                          "lr.partial_score"]


def _both(bank_fn, plat_fn):
    errs = {}

    def wrap(name, fn):
        def run():
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                errs[name] = exc
        return run
    run_two_parties(wrap("bank", bank_fn), wrap("platform", plat_fn), timeout=60)
    return errs


def test_bad_input_fails_both_sides_naming_the_cause():
    d = load("breast", "x0", n=120)
    p = typed(ALGO, {"epochs": 1, "batch_size": 0})
    cb, cp, _ = contexts()
    errs = _both(lambda: bank_lr.train(cb, data(d["Xb"], d["bnames"], np.full(120, 3.0)), p,
                                       PlainCipher(1024), _policy()),
                 lambda: plat_lr.train(cp, data(d["Xp"], d["pnames"]), p, PlainCipher(1024),
                                       _policy()))
    assert isinstance(errs["bank"], LinRegError) and "target is constant" in str(errs["bank"])
    # the platform is told the bank's data is unusable, not what about it
    assert "bank's own data is not usable" in str(errs["platform"])
    # a NaN target
    y = d["y"].copy()
    y[7] = np.nan
    cb, cp, _ = contexts()
    errs = _both(lambda: bank_lr.train(cb, data(d["Xb"], d["bnames"], y), p,
                                       PlainCipher(1024), _policy()),
                 lambda: plat_lr.train(cp, data(d["Xp"], d["pnames"]), p, PlainCipher(1024),
                                       _policy()))
    assert "target missing or infinite at row 7" in str(errs["bank"])
    # params that shape the protocol differ
    cb, cp, _ = contexts()
    errs = _both(lambda: bank_lr.train(cb, data(d["Xb"], d["bnames"], d["y"]), p,
                                       PlainCipher(1024), _policy()),
                 lambda: plat_lr.train(cp, data(d["Xp"], d["pnames"]),
                                       typed(ALGO, {"epochs": 2, "batch_size": 0}),
                                       PlainCipher(1024), _policy()))
    assert "differ: epochs" in str(errs["bank"]) and "differ: epochs" in str(errs["platform"])


def test_a_logistic_regression_peer_is_refused():
    """Same protocol table, different residual: an LR platform and a linear-regression
    bank fail at the hello, neither trains."""
    d = load("breast", "x0", n=120)
    cb, cp, _ = contexts()
    errs = _both(lambda: bank_lr.train(cb, data(d["Xb"], d["bnames"], d["y"]),
                                       typed(ALGO, {"epochs": 1, "batch_size": 0}), PlainCipher(1024),
                                       _policy()),
                 lambda: plat_logreg.train(cp, data(d["Xp"], d["pnames"]),
                                           typed("logistic_regression", {"epochs": 1, "batch_size": 0}),
                                           PlainCipher(1024), _policy()))
    assert set(errs) == {"bank", "platform"}
    assert all(isinstance(e, LRError) for e in errs.values())
    assert "runs residual None, not linear regression's 'squared'" in str(errs["bank"])
    assert "parameters differ" in str(errs["platform"])


def _policy():
    from support.roles import TEST_POLICY
    return TEST_POLICY


def test_params():
    p = typed(ALGO, {"reg_lambda": 0.5, "reg_alpha": 0.1})
    assert (p.l2, p.l1) == (0.5, 0.1)     # the names lr_common's optimiser reads
    q = typed(ALGO, {"l2": 0.5, "l1": 0.1, "eta": 0.2})   # aliases, as for LR
    assert (q.reg_lambda, q.reg_alpha, q.learning_rate) == (0.5, 0.1, 0.2)
    with pytest.raises(ParamError, match="alpha is not accepted: ambiguous.*reg_lambda = "
                                         "alpha / n"):
        typed(ALGO, {"alpha": 1.0})
    with pytest.raises(ParamError, match="n_trees is not accepted: a tree parameter"):
        typed(ALGO, {"n_trees": 5})
    for bad, match in [({"epochs": 0}, "epochs"), ({"early_stopping": "valid_auc"},
                                                    "early_stopping"),
                       ({"optimizer": "lbfgs"}, "optimizer"), ({"reg_lambda": -1}, ">= 0")]:
        with pytest.raises(ParamError, match=match):
            typed(ALGO, bad)


# ---- SecureBoost regression objectives vs XGBoost ----------------------------------------
@pytest.fixture(scope="module")
def breast_target():
    g = pd.read_csv(DATA / "breast_hetero_guest.csv")
    h = pd.read_csv(DATA / "breast_hetero_host.csv")
    Xb, Xp = g.drop(columns=["id", "y"]).to_numpy(float), h.drop(columns=["id"]).to_numpy(float)
    rng = np.random.default_rng(5)
    t = 1.5 * Xb[:, 1] - Xp[:, 3] + 0.5 * Xp[:, 5] ** 2 + 0.5 * rng.standard_t(3, len(Xb))
    return Xb, Xp, (t - t.mean()) / t.std()   # heavy-tailed noise, unit scale


def _sb(Xb, Xp, y, params):
    ob, op, _ = run_roles("secureboost", data(Xb, None, y),
                          data(Xp, [f"p{j}" for j in range(Xp.shape[1])]), params,
                          bank_cipher=PlainCipher(1024))
    cb, cp, _ = contexts()
    pred, _ = run_two_parties(lambda: bank_sb.predict(cb, ob.model, Xb),
                              lambda: plat_sb.predict(cp, op.model, Xp), timeout=60)
    return ob, pred


def _xgb(X, y, objective, slope=None):
    p = dict(tree_method="hist", max_bin=256, max_depth=3, eta=0.3, reg_lambda=1.0,
             min_child_weight=1.0, objective=objective, nthread=1)
    if slope is not None:
        p["huber_slope"] = slope
    return xgb.train(p, xgb.DMatrix(X, y), 6).predict(xgb.DMatrix(X))


@pytest.mark.parametrize("objective,slope", [("reg:squarederror", None),
                                             ("reg:pseudohubererror", 1.0),
                                             ("reg:pseudohubererror", 0.5)])
def test_secureboost_regression_equals_xgboost(breast_target, objective, slope):
    """breast is small enough that the cuts agree at max_bin = 256; XGBoost predicts in
    float32 (ulp 2.4e-7 to 4.8e-7 at these |predictions| of 2-4), hence 1e-6. Its
    default base_score (mean; one Newton step from 0 for pseudo-Huber) is used on both
    sides."""
    Xb, Xp, y = breast_target
    params = dict(n_trees=6, max_depth=3, max_bin=256, learning_rate=0.3,
                  objective=objective, **({} if slope is None else {"huber_slope": slope}))
    ob, pred = _sb(Xb, Xp, y, params)
    ref = _xgb(np.c_[Xb, Xp], y, objective, slope)
    print(objective, slope, "max|pred - xgboost|", np.abs(pred - ref).max())
    assert np.abs(pred - ref).max() < 1e-6
    assert set(ob.metrics["train"]) == {"rmse", "mae", "r2", "n"}
    assert abs(ob.metrics["train"]["rmse"] - metrics.rmse(y, pred)) < 1e-6
    if objective == "reg:pseudohubererror":     # a different loss, different trees
        assert np.abs(pred - _xgb(np.c_[Xb, Xp], y, "reg:squarederror")).max() > 1e-2
        assert ob.model.params["huber_slope"] == slope
    else:
        assert "huber_slope" not in ob.model.params   # parts as before the key existed


def test_secureboost_objectives_it_cannot_run_are_refused():
    with pytest.raises(ParamError, match="reg:absoluteerror.*median of its rows"):
        SecureBoostParams(objective="reg:absoluteerror")
    with pytest.raises(ParamError, match="expected one of"):
        SecureBoostParams(objective="reg:gamma")
    assert SecureBoostParams().label_kind() == "binary"
    assert SecureBoostParams(objective="reg:pseudohubererror").label_kind() == "continuous"


# ---- the label kind is the algorithm's declaration ---------------------------------------
def test_label_kind_is_declared_by_each_algorithm():
    from dataclasses import replace

    from support import rowcount

    from parties import registry
    sb, lr, lin = (registry.get(n) for n in ("secureboost", "logistic_regression", ALGO))
    assert sb.labels_for(typed("secureboost", {})) == ("binary", "objective binary:logistic")
    assert sb.labels_for(typed("secureboost", {"objective": "reg:squarederror"})) == (
        "continuous", "objective reg:squarederror")
    assert lr.labels_for(typed("logistic_regression", {})) == ("binary", "logistic_regression")
    assert lin.labels_for(typed(ALGO, {})) == ("continuous", "linear_regression")
    # an algorithm that takes labels must say what they must be
    undeclared = replace(rowcount.algorithm(), name="labelled_rows", needs_label=True)
    with pytest.raises(registry.RegistryError, match="needs_label: declare label_kind"):
        registry.register(undeclared)
    assert "labelled_rows" not in registry.names()
    assert rowcount.algorithm().labels_for(None) is None     # takes no labels
