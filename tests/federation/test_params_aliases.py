"""[params] vocabulary: XGBoost / scikit-learn aliases resolved once at parse time to one
canonical name per concept; duplicates, unknown and refused keys; model parts that stay
byte-identical for jobs that use none of the new keys; and the SecureBoost knobs the
vocabulary added (reg_alpha, max_delta_step, class weights, seed) checked against
XGBoost and against the job's own randomness."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from support.roles import contexts, data, run_roles

from federation.config import ConfigError, job_spec_from_dict
from federation.link import run_two_parties
from parties import registry
from parties.bank import secureboost as bank_sb
from parties.common.lr_common import LRParams, params_dict
from parties.common.params import aliases, close_matches
from parties.common.secureboost_params import SecureBoostParams
from parties.provincial_platform import secureboost as plat_sb
from secure_agg.cipher import PlainCipher
from secure_agg.rng import Drbg

DATA = Path(__file__).resolve().parents[1] / "data"
ALGOS = ("secureboost", "logistic_regression")


def job(algorithm: str, params: dict) -> dict:
    return {"job": {"name": "j", "algorithm": algorithm, "dataset": "d",
                    "peer_dataset": "e"},
            "psi": {"id_type": "string"}, "params": params,
            "evaluation": {"cipher": "plain", "key_bits": 1024}}


def spec(algorithm: str, params: dict):
    return job_spec_from_dict(job(algorithm, params), "job.toml")


def error(algorithm: str, params: dict) -> str:
    with pytest.raises(ConfigError) as ei:
        spec(algorithm, params)
    return str(ei.value)


# ---------------------------------------------------------------- one vocabulary


def test_one_canonical_name_per_shared_concept():
    sb, lr = (registry.get(a).params for a in ALGOS)
    for concept in ("learning_rate", "reg_lambda", "reg_alpha", "seed", "class_weight"):
        assert concept in {f.name for f in dataclasses.fields(sb)}, concept
        assert concept in {f.name for f in dataclasses.fields(lr)}, concept
    a_sb, a_lr = aliases(sb), aliases(lr)
    for name in set(a_sb) & set(a_lr):      # an alias means the same in both
        assert a_sb[name].canonical == a_lr[name].canonical, name
    assert {n: a_sb[n].canonical for n in ("eta", "n_estimators", "num_boost_round",
                                           "lambda", "l2", "alpha", "l1", "min_split_loss",
                                           "random_state", "scale_pos_weight")} == {
        "eta": "learning_rate", "n_estimators": "n_trees", "num_boost_round": "n_trees",
        "lambda": "reg_lambda", "l2": "reg_lambda", "alpha": "reg_alpha",
        "l1": "reg_alpha", "min_split_loss": "gamma", "random_state": "seed",
        "scale_pos_weight": "class_weight"}
    assert {n: a_lr[n].canonical for n in ("eta", "lambda", "l2", "l1", "random_state",
                                           "scale_pos_weight")} == {
        "eta": "learning_rate", "lambda": "reg_lambda", "l2": "reg_lambda",
        "l1": "reg_alpha", "random_state": "seed", "scale_pos_weight": "class_weight"}


@pytest.mark.parametrize("algorithm,given,canonical", [
    ("secureboost", {"eta": 0.1, "n_estimators": 3, "lambda": 2.0, "alpha": 0.5,
                     "min_split_loss": 0.1, "random_state": 7, "max_depth": 2},
     {"learning_rate": 0.1, "n_trees": 3, "reg_lambda": 2.0, "reg_alpha": 0.5,
      "gamma": 0.1, "seed": 7, "max_depth": 2}),
    ("secureboost", {"num_boost_round": 4, "scale_pos_weight": 3},
     {"n_trees": 4, "class_weight": {"0": 1.0, "1": 3.0}}),
    ("logistic_regression", {"l2": 0.01, "l1": 0.001, "eta": 0.2, "random_state": 3},
     {"reg_lambda": 0.01, "reg_alpha": 0.001, "learning_rate": 0.2, "seed": 3}),
    ("logistic_regression", {"lambda": 0.5, "scale_pos_weight": 4.0},
     {"reg_lambda": 0.5, "class_weight": {"0": 1.0, "1": 4.0}}),
])
def test_aliases_become_the_canonical_table_that_is_proposed(algorithm, given, canonical):
    s = spec(algorithm, given)
    assert s.params == canonical
    assert s.to_dict()["params"] == canonical          # what the peer receives and stores
    for key, value in canonical.items():
        assert getattr(s.parsed, key) == value
    # the peer parses the proposal: the same typed params, nothing left to resolve
    again = job_spec_from_dict(s.to_dict(), "proposal")
    assert again.params == canonical and again.parsed == s.parsed and not again.aliases
    assert sorted(c for _, c in s.aliases) == sorted(
        c for k, c in zip(given, canonical, strict=True) if k != c)


def test_a_table_without_aliases_is_proposed_unchanged():
    given = {"n_trees": 2, "max_depth": 3, "max_bin": 16}
    s = spec("secureboost", given)
    assert s.params == given and list(s.params) == list(given) and s.aliases == []
    assert "features" not in s.to_dict() and "peer_features" not in s.to_dict()


@pytest.mark.parametrize("algorithm,params,names", [
    ("secureboost", {"eta": 0.1, "learning_rate": 0.2}, ("'eta'", "'learning_rate'")),
    ("secureboost", {"n_estimators": 3, "num_boost_round": 3},
     ("'n_estimators'", "'num_boost_round'")),
    ("secureboost", {"scale_pos_weight": 2, "class_weight": "balanced"},
     ("'scale_pos_weight'", "'class_weight'")),
    ("logistic_regression", {"l2": 0.1, "reg_lambda": 0.1}, ("'l2'", "'reg_lambda'")),
    ("logistic_regression", {"learning_rate": 0.1, "eta": 0.1},
     ("'learning_rate'", "'eta'")),
])
def test_one_parameter_under_two_names_is_one_error_naming_both(algorithm, params, names):
    msg = error(algorithm, params)
    assert all(n in msg for n in names) and "same parameter" in msg, msg
    assert msg.count("\n") == 0


def test_unknown_keys_list_the_valid_keys_and_suggest_only_typos():
    msg = error("secureboost", {"reg_alfa": 1.0})
    assert "unknown key 'reg_alfa'; did you mean 'reg_alpha'?" in msg
    assert "valid keys for secureboost: objective, n_trees" in msg and "eta = learning_rate" in msg
    msg = error("secureboost", {"min_split_los": 0.1})          # an alias is suggested too
    assert "did you mean 'min_split_loss' (= gamma)?" in msg
    assert "did you mean 'epochs'?" in error("logistic_regression", {"epoch": 1})
    # similar-looking words are not typos: LightGBM's lambda_l1 is an L1 penalty, not
    # reg_lambda; reg_gamma is no key at all (difflib suggested reg_lambda for both)
    for key in ("lambda_l1", "reg_gamma"):
        msg = error("secureboost", {key: 1.0})
        assert f"unknown key {key!r} (valid keys" in msg and "did you mean" not in msg, msg
    msg = error("logistic_regression", {"reg_gamma": 1.0})
    assert "did you mean" not in msg and "valid keys for logistic_regression: epochs" in msg
    assert close_matches("reg_alpha", ["reg_lambda"]) == []
    assert close_matches("max_depht", ["max_depth", "max_bin"]) == ["max_depth"]


@pytest.mark.parametrize("algorithm,key,value,says", [
    ("logistic_regression", "n_estimators", 10, "trains no trees (its passes over the data "
                                                "are epochs)"),
    ("logistic_regression", "max_delta_step", 1.0, "logistic_regression trains no trees"),
    ("logistic_regression", "gamma", 1.0, "logistic_regression trains no trees"),
    ("logistic_regression", "alpha", 0.1, "ambiguous"),
    ("logistic_regression", "C", 1.0, "reg_lambda = 1 / (C * n)"),
    ("secureboost", "colsample_bylevel", 0.5, "protocol change"),
    ("secureboost", "monotone_constraints", [1], "protocol change"),
    ("secureboost", "nthread", 2, "workers"),
])
def test_known_but_meaningless_or_protocol_changing_names_are_refused(algorithm, key, value,
                                                                       says):
    msg = error(algorithm, {key: value})
    assert f"{key} is not accepted" in msg and says in msg, msg
    assert "unknown key" not in msg


def test_values_are_checked_under_their_canonical_name():
    assert "learning_rate = 0.0: must be in (0, 1]" in error("secureboost", {"eta": 0.0})
    assert "scale_pos_weight = -1" in error("secureboost", {"scale_pos_weight": -1})
    assert "reg_alpha = -1.0: must be >= 0" in error("secureboost", {"alpha": -1.0})
    assert "max_delta_step" in error("secureboost", {"max_delta_step": -0.5})
    assert "class_weight['1'] = 300.0 must be in (0, 256)" in error(
        "logistic_regression", {"scale_pos_weight": 300})
    msg = error("secureboost", {"objective": "reg:squarederror", "scale_pos_weight": 2})
    assert "class_weight" in msg and "has no classes" in msg


# ---------------------------------------------------------------- model parts stay put


def test_model_parts_record_new_keys_only_when_set():
    # LR parts keep the names fedjoint-lr-v1 recorded; the digest of an LR part of a job
    # that sets the penalty under either name is the same
    d = params_dict(LRParams(reg_lambda=0.1))
    assert d["l2"] == 0.1 and d["l1"] == 0.0 and "reg_lambda" not in d
    assert spec("logistic_regression", {"l2": 0.1}).parsed == \
        spec("logistic_regression", {"reg_lambda": 0.1}).parsed
    base = SecureBoostParams().to_dict()
    for key in ("reg_alpha", "max_delta_step", "class_weight", "seed"):
        assert key not in base
    set_ = SecureBoostParams(reg_alpha=0.5, seed=3, class_weight={"0": 1, "1": 2}).to_dict()
    assert set_["reg_alpha"] == 0.5 and set_["seed"] == 3 and "max_delta_step" not in set_


# ---------------------------------------------------------------- SecureBoost knobs


def _breast():
    g = pd.read_csv(DATA / "breast_hetero_guest.csv")
    h = pd.read_csv(DATA / "breast_hetero_host.csv")
    return (g.drop(columns=["id", "y"]).values, g.y.values.astype(float),
            h.drop(columns=["id"]).values)


def _fit(params, cipher=None, seeds=(b"b" * 32, b"p" * 32)):
    Xb, y, Xp = _breast()
    ob, op, crossed = run_roles("secureboost", data(Xb, None, y), data(Xp), params,
                                bank_cipher=cipher or PlainCipher(1024), seeds=seeds)
    return ob, op, crossed


def _predict(ob, op):
    Xb, _, Xp = _breast()
    cb, cp, _ = contexts()
    p, _ = run_two_parties(lambda: bank_sb.predict(cb, ob.model, Xb),
                           lambda: plat_sb.predict(cp, op.model, Xp), timeout=60)
    return p


def _xgb(params: dict, extra: dict, base: float):
    Xb, y, Xp = _breast()
    X = np.hstack([Xb, Xp])
    m = xgb.train(dict(tree_method="hist", max_bin=params["max_bin"],
                       max_depth=params["max_depth"], eta=params["learning_rate"],
                       reg_lambda=1.0, min_child_weight=1.0, base_score=base,
                       objective="binary:logistic", nthread=1, **extra),
                  xgb.DMatrix(X, y), params["n_trees"])
    return m.predict(xgb.DMatrix(X))


# breast has few enough rows that XGBoost's sketch is exact at max_bin = 256: the same
# cuts, so the same trees
BASE = dict(n_trees=4, max_depth=3, max_bin=256, learning_rate=0.3)


@pytest.mark.parametrize("ours,theirs", [
    ({"alpha": 2.0}, {"reg_alpha": 2.0}),
    ({"max_delta_step": 0.3}, {"max_delta_step": 0.3}),
    ({"l1": 1.0, "max_delta_step": 0.5}, {"reg_alpha": 1.0, "max_delta_step": 0.5}),
    ({"scale_pos_weight": 3.0}, {"scale_pos_weight": 3.0}),
])
def test_bank_local_knobs_give_xgboosts_trees(ours, theirs):
    _, y, _ = _breast()
    w = np.where(y == 1, float(theirs.get("scale_pos_weight", 1.0)), 1.0)
    base = float((w * y).sum() / w.sum())       # the weighted mean label
    p = _predict(*_fit({**BASE, **ours})[:2])
    assert np.abs(p - _xgb(BASE, theirs, base)).max() < 1e-5
    # and the knob did something: plain XGBoost differs
    assert np.abs(p - _xgb(BASE, {}, float(y.mean()))).max() > 1e-3


def test_balanced_class_weight_is_n_over_two_n_class():
    _, y, _ = _breast()
    n, n1 = y.size, y.sum()
    w1, w0 = n / (2 * n1), n / (2 * (n - n1))
    assert np.allclose(SecureBoostParams(class_weight="balanced").row_weights(y),
                       np.where(y == 1, w1, w0))
    params = dict(BASE, n_trees=2)
    a, _, _ = _fit({**params, "class_weight": "balanced"})
    b, _, _ = _fit({**params, "class_weight": {"0": w0, "1": w1}})
    assert a.model.body["trees"] == b.model.body["trees"]
    assert a.model.body["base_margin"] == pytest.approx(0.0, abs=1e-9)   # weighted mean 1/2
    c, _, _ = _fit(params)
    assert c.model.body["trees"] != a.model.body["trees"]


def test_seed_fixes_the_sampling_draws_but_never_the_encryption():
    from secure_agg.paillier import PaillierPrivateCipher

    def key():
        return PaillierPrivateCipher.generate(1024, rng=Drbg(b"k" * 32),
                                              insecure_test_key=True)
    params = dict(n_trees=2, max_depth=2, max_bin=16, subsample=0.6, colsample_bytree=0.5)
    job1, job2 = (b"1" * 32, b"p" * 32), (b"2" * 32, b"p" * 32)   # two jobs' own seeds
    a, _, wa = _fit({**params, "random_state": 11}, key(), seeds=job1)
    b, _, wb = _fit({**params, "seed": 11}, key(), seeds=job2)
    assert a.model.body["trees"] == b.model.body["trees"]
    grads = [[hashlib.sha256(d).hexdigest() for s, k, _, d in w if k == "sb.grad"]
             for w in (wa, wb)]
    assert grads[0] and not set(grads[0]) & set(grads[1])   # fresh obfuscation per job
    # without a seed two jobs sample differently; another seed samples differently
    c, _, _ = _fit(params, seeds=job1)
    d, _, _ = _fit(params, seeds=job2)
    e, _, _ = _fit({**params, "seed": 12}, seeds=job1)
    f, _, _ = _fit({**params, "seed": 11}, seeds=job2)
    assert c.model.body["trees"] != d.model.body["trees"]
    assert e.model.body["trees"] != f.model.body["trees"]
    assert [len(t["nodes"]) for t in f.model.body["trees"]] == \
        [len(t["nodes"]) for t in a.model.body["trees"]]      # plain: the same draws
