"""Two-party logistic regression: accuracy vs scikit-learn, Paillier == plain, scoring,
what crosses the link, and bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from support.lr import ALGO, load, run, score
from support.roles import STRICT_POLICY, TEST_POLICY, data, typed

from federation.link import ProtocolContext, local_link_pair
from parties.bank import lr as bank_lr
from parties.common.artifact import ModelPart
from parties.common.lr_common import LRError, fingerprint
from parties.provincial_platform import lr as platform_lr
from secure_agg.cipher import PlainCipher
from secure_agg.paillier import PaillierPrivateCipher
from secure_agg.rng import Drbg


@pytest.fixture(scope="module")
def credit():
    return load("default_credit")


@pytest.fixture(scope="module")
def breast():
    return load("breast")


def sklearn_auc(d, lam, class_weight=None):
    tr, te = d["train"], ~d["train"]
    X = np.c_[d["Xb"], d["Xp"]]
    mu, sd = X[tr].mean(0), X[tr].std(0)
    X = (X - mu) / sd
    sk = LogisticRegression(C=1.0 / (tr.sum() * lam), max_iter=5000,
                            class_weight=class_weight).fit(X[tr], d["y"][tr])
    return roc_auc_score(d["y"][te], sk.decision_function(X[te]))


def fit(d, params, **kw):
    tr, te = d["train"], ~d["train"]
    return run(d["Xb"][tr], d["y"][tr], d["Xp"][tr], params, Xb_v=d["Xb"][te],
               y_v=d["y"][te], Xp_v=d["Xp"][te], bnames=d["bnames"], pnames=d["pnames"], **kw)


# ---- accuracy ---------------------------------------------------------------------------
def test_default_credit_auc_matches_sklearn(credit):
    lam = 1e-3
    params = dict(epochs=10, batch_size=4096, learning_rate=0.05, l2=lam,
                  early_stopping="none", seed=7)
    ob, op, _ = fit(credit, params)
    ref = sklearn_auc(credit, lam)
    got = ob.metrics["valid"]["auc"]
    assert abs(got - ref) < 0.005, (got, ref)
    # bank-side metrics and the loss curve are stored with the outcome
    assert set(ob.metrics["valid"]) >= {"auc", "ks", "accuracy", "log_loss"}
    assert ob.metrics["train"]["auc"] > 0.71
    losses = [h["loss"] for h in ob.history]
    assert len(losses) == 10 and losses[-1] < losses[0]
    # the protocol's approximate loss tracks the true training log loss
    assert abs(losses[-1] - ob.metrics["train"]["log_loss"]) < 0.01
    assert op.metrics["epochs_run"] == 10


def test_breast_auc_matches_sklearn(breast):
    lam = 1e-2
    params = dict(epochs=30, batch_size=0, learning_rate=0.1, l2=lam, early_stopping="none")
    ob, _, _ = fit(breast, params)
    ref = sklearn_auc(breast, lam)
    assert abs(ob.metrics["valid"]["auc"] - ref) < 0.01


def test_class_weights_and_l1(credit):
    params = dict(epochs=4, batch_size=8192, learning_rate=0.5, l2=1e-3, l1=0.02,
                  optimizer="sgd",
                  class_weight="balanced", early_stopping="none", seed=1)
    ob, op, _ = fit(credit, params)
    assert ob.metrics["valid"]["auc"] > 0.70
    w = np.r_[ob.model.body["weights"], op.model.body["weights"]]
    assert (w == 0).sum() >= 1  # the proximal step zeroes weak features
    # balanced weights move the decision threshold: far more predicted positives
    assert ob.metrics["valid"]["accuracy"] < 0.8


# ---- encrypted == plain -------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys():
    kb = PaillierPrivateCipher.generate(512, rng=Drbg(b"kb" * 16), insecure_test_key=True)
    kp = PaillierPrivateCipher.generate(512, rng=Drbg(b"kp" * 16), insecure_test_key=True)
    return kb, kp


@pytest.mark.parametrize("extra", [
    dict(),                                                   # linearized, batch-mean curvature
    dict(platform_curvature="per_row", class_weight={"0": 1, "1": 3}, optimizer="momentum"),
    dict(approximation="taylor", optimizer="sgd", l1=1e-3),   # public curvature 1/4
])
def test_paillier_weights_equal_plain(breast, keys, extra):
    tr = breast["train"]
    params = dict(epochs=2, batch_size=160, learning_rate=0.1, l2=1e-2,
                  early_stopping="none", seed=5, evaluate_train=False, **extra)
    args = (breast["Xb"][tr], breast["y"][tr], breast["Xp"][tr], params)
    eb, ep, crossed = run(*args, bank_cipher=keys[0], plat_cipher=keys[1])
    pb, pp, _ = run(*args, bank_cipher=PlainCipher(512), plat_cipher=PlainCipher(512))
    np.testing.assert_allclose(eb.model.body["weights"], pb.model.body["weights"], atol=1e-6)
    np.testing.assert_allclose(ep.model.body["weights"], pp.model.body["weights"], atol=1e-6)
    assert abs(eb.model.body["intercept"] - pb.model.body["intercept"]) < 1e-6
    np.testing.assert_allclose([h["loss"] for h in eb.history],
                               [h["loss"] for h in pb.history], atol=1e-9)
    # real ciphertexts crossed: nothing the platform sent during training is plaintext
    kinds = {k for s, k, _, _ in crossed}
    assert "lr.enc_zp" in kinds and "lr.enc_u" in kinds


# ---- what crosses -------------------------------------------------------------------------
def test_only_documented_messages_cross(breast):
    tr, te = breast["train"], ~breast["train"]
    params = dict(epochs=2, batch_size=200, learning_rate=0.1, l2=1e-2, seed=2)
    ob, op, crossed = run(breast["Xb"][tr], breast["y"][tr], breast["Xp"][tr], params,
                          Xb_v=breast["Xb"][te], y_v=breast["y"][te], Xp_v=breast["Xp"][te])
    bank_sent = {k for s, k, _, _ in crossed if s == "bank"}
    plat_sent = {k for s, k, _, _ in crossed if s == "platform"}
    assert bank_sent == {"lr.hello", "lr.enc_u", "lr.enc_a", "lr.bank_grad_ct",
                         "lr.platform_grad_plain", "lr.epoch_end", "lr.part_digest"}
    assert plat_sent == {"lr.hello", "lr.enc_zp", "lr.platform_grad_ct",
                         "lr.bank_grad_plain", "lr.loss_ct", "lr.train_scores",
                         "lr.final_valid_scores", "lr.part_digest"}
    # the bank never sends an array (no labels, features or scores leave it)
    assert all(pt != "npy" for s, _, pt, _ in crossed if s == "bank")
    # the platform's only arrays are its documented end-of-training partial scores
    assert {k for s, k, pt, _ in crossed if s == "platform" and pt == "npy"} == \
        {"lr.train_scores", "lr.final_valid_scores"}
    # model parts reference each other
    assert ob.model.peer_part_digest == fingerprint(op.model)
    assert op.model.peer_part_digest == fingerprint(ob.model)


def test_scoring_roundtrip_and_fingerprint(breast, tmp_path):
    tr, te = breast["train"], ~breast["train"]
    params = dict(epochs=5, batch_size=0, learning_rate=0.1, l2=1e-2, seed=2)
    ob, op, _ = run(breast["Xb"][tr], breast["y"][tr], breast["Xp"][tr], params,
                    Xb_v=breast["Xb"][te], y_v=breast["y"][te], Xp_v=breast["Xp"][te])
    ob.model.save(tmp_path / "bank.json")
    op.model.save(tmp_path / "platform.json")
    bpart = ModelPart.load(tmp_path / "bank.json")
    ppart = ModelPart.load(tmp_path / "platform.json")
    prob, zp, crossed = score(bpart, ppart, breast["Xb"][te], breast["Xp"][te])
    assert prob.shape == (int(te.sum()),) and np.all((prob > 0) & (prob < 1))
    assert abs(roc_auc_score(breast["y"][te], prob) - ob.metrics["valid"]["auc"]) < 1e-12
    assert [k for s, k, _, _ in crossed if s == "platform"] == ["lr.score_hello",
                                                                "lr.partial_score"]
    # a platform part from another training run is refused
    other = ModelPart(**{**ppart.__dict__, "job_id": "other"})
    with pytest.raises(LRError, match="fingerprint"):
        score(bpart, other, breast["Xb"][te], breast["Xp"][te])


def test_seeded_runs_are_deterministic(breast):
    tr = breast["train"]
    params = dict(epochs=2, batch_size=100, seed=11, evaluate_train=False)
    a, _, _ = run(breast["Xb"][tr], breast["y"][tr], breast["Xp"][tr], params)
    b, _, _ = run(breast["Xb"][tr], breast["y"][tr], breast["Xp"][tr], params)
    assert a.model.body["weights"] == b.model.body["weights"]


def test_early_stopping_on_loss(breast):
    tr = breast["train"]
    params = dict(epochs=50, batch_size=0, learning_rate=1.0, optimizer="sgd", l2=1e-2,
                  early_stopping="loss", tol=1e-3)
    ob, op, _ = run(breast["Xb"][tr], breast["y"][tr], breast["Xp"][tr], params)
    assert ob.metrics["stopped_early"] and ob.metrics["epochs_run"] < 50
    assert op.metrics["epochs_run"] == ob.metrics["epochs_run"]


def test_early_stopping_on_valid_auc_needs_consent(breast):
    tr, te = breast["train"], ~breast["train"]
    base = dict(epochs=20, batch_size=0, learning_rate=0.1, l2=1e-2,
                early_stopping="valid_auc", patience=2)
    kw = dict(Xb_v=breast["Xb"][te], y_v=breast["y"][te], Xp_v=breast["Xp"][te])
    with pytest.raises(LRError, match="consent"):
        run(breast["Xb"][tr], breast["y"][tr], breast["Xp"][tr], base, **kw)
    params = {**base, "allow_validation_scores": True}
    ob, _, crossed = run(breast["Xb"][tr], breast["y"][tr], breast["Xp"][tr], params, **kw)
    assert all("valid_auc" in h for h in ob.history)
    assert "lr.valid_scores" in {k for _, k, _, _ in crossed}


# ---- bad input ----------------------------------------------------------------------------
def both_errors(Xb, y, Xp, params, pparams=None, bnames=None, pnames=None):
    """Run both roles; return (bank exception, platform exception)."""
    la, lb, _ = local_link_pair("bad")
    ca = ProtocolContext(la, "bad", Drbg(b"b" * 32))
    cb = ProtocolContext(lb, "bad", Drbg(b"p" * 32))
    errs: list = [None, None]

    def role(i, fn):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            errs[i] = exc

    ts = [threading.Thread(target=role, args=(0, lambda: bank_lr.train(
              ca, data(Xb, bnames, y), typed(ALGO, params), PlainCipher(2048),
              TEST_POLICY))),
          threading.Thread(target=role, args=(1, lambda: platform_lr.train(
              cb, data(Xp, pnames), typed(ALGO, pparams or params), PlainCipher(2048),
              TEST_POLICY)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return errs


@pytest.fixture
def small(breast):
    tr = breast["train"]
    return (breast["Xb"][tr][:200].copy(), breast["y"][tr][:200].copy(),
            breast["Xp"][tr][:200].copy())


P = dict(epochs=1, batch_size=50)


def test_label_missing_or_not_binary(small):
    Xb, y, Xp = small
    eb, ep = both_errors(Xb, None, Xp, P)
    assert isinstance(eb, LRError) and "label column is missing" in str(eb)
    assert isinstance(ep, LRError) and "bank refused" in str(ep)
    eb, _ = both_errors(Xb, y * 2, Xp, P)
    assert "binary" in str(eb)
    eb, _ = both_errors(Xb, np.zeros_like(y), Xp, P)
    assert "only class 0" in str(eb)


def test_non_numeric_constant_and_nan_columns(small):
    Xb, y, Xp = small
    names = [f"p{j}" for j in range(Xp.shape[1])]
    bad = Xp.astype(object)
    bad[3, 4] = "n/a"
    _, ep = both_errors(Xb, y, bad, P, pnames=names)
    assert "'p4' is not numeric" in str(ep)
    const = Xp.copy()
    const[:, 2] = 7.0
    eb, ep = both_errors(Xb, y, const, P, pnames=names)
    assert "'p2' is constant" in str(ep) and "platform refused" in str(eb)
    nan = Xp.copy()
    nan[5, 1] = np.nan
    _, ep = both_errors(Xb, y, nan, P, pnames=names)
    assert "'p1' has 1 missing" in str(ep)
    # imputation by policy trains fine and stores the fill values with the model part
    ob, op, _ = run(Xb, y, nan, {**P, "nan_policy": "mean"}, pnames=names)
    assert op.model.body["standardizer"]["nan_policy"] == "mean"


def test_batch_size_larger_than_intersection(small):
    Xb, y, Xp = small
    eb, ep = both_errors(Xb, y, Xp, dict(epochs=1, batch_size=500))
    for e in (eb, ep):
        assert isinstance(e, LRError) and "larger than the 200 intersecting" in str(e)


def test_divergence_fails_both_parties(small):
    Xb, y, Xp = small
    params = dict(epochs=30, batch_size=50, optimizer="sgd", learning_rate=1e4,
                  early_stopping="none")
    eb, ep = both_errors(Xb * 1e3, y, Xp * 1e3, {**params, "standardize": False})
    assert isinstance(eb, LRError) and isinstance(ep, LRError)
    assert "diverged" in str(eb) + str(ep)


def test_parameter_errors(small):
    Xb, y, Xp = small
    eb, ep = both_errors(Xb, y, Xp, {**P, "learnig_rate": 0.1})
    assert "did you mean 'learning_rate'" in str(eb)
    eb, ep = both_errors(Xb, y, Xp, P, pparams={**P, "epochs": 3})
    assert "parameters differ: epochs" in str(eb) and "parameters differ" in str(ep)
    eb, ep = both_errors(Xb, y, Xp[:150], P)
    assert "row counts differ" in str(eb)


def test_platform_policy_refuses_plain_cipher(small):
    Xb, y, Xp = small
    la, lb, _ = local_link_pair("pol")
    ca = ProtocolContext(la, "pol", Drbg(b"b" * 32))
    cb = ProtocolContext(lb, "pol", Drbg(b"p" * 32))
    errs: list = [None, None]

    def bank():
        try:
            bank_lr.train(ca, data(Xb, None, y), typed(ALGO, P), PlainCipher(2048),
                          TEST_POLICY)
        except Exception as exc:  # noqa: BLE001
            errs[0] = exc

    t = threading.Thread(target=bank)
    t.start()
    with pytest.raises(LRError, match="refused by this node's policy"):
        platform_lr.train(cb, data(Xp), typed(ALGO, P), PlainCipher(2048), STRICT_POLICY)
    t.join(30)
    assert isinstance(errs[0], LRError)
