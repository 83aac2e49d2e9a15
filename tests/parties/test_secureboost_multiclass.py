"""Multiclass SecureBoost (multi:softprob / multi:softmax) against XGBoost, the packed
gradients (one encryption per row and round), the masked histogram slots, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from support.roles import TEST_POLICY, contexts, policy, run_roles

from federation.link import PeerAborted, ProtocolError, run_two_parties
from parties.bank import secureboost as bank
from parties.common import secureboost_multiclass as M
from parties.common.role import PartyData
from parties.common.tree import GradCodec, unpack_entries
from parties.provincial_platform import secureboost as plat
from secure_agg.cipher import PlainCipher
from secure_agg.paillier import PaillierPrivateCipher
from secure_agg.rng import Drbg

DATA = Path(__file__).resolve().parents[1] / "data"


def breast4():
    """breast's two halves and a 4-class label that needs both parties' columns."""
    g = pd.read_csv(DATA / "breast_hetero_guest.csv")
    h = pd.read_csv(DATA / "breast_hetero_host.csv")
    Xb, Xp = g.drop(columns=["id", "y"]).to_numpy(), h.drop(columns=["id"]).to_numpy()
    s = Xb[:, 0] + Xp[:, 0]
    return Xb, Xp, (2 * g.y.to_numpy() + (s > np.median(s))).astype(np.int64)


def fit(Xb, Xp, y, params, cipher=None, classes=(0, 1, 2, 3), platform_policy=TEST_POLICY,
        Xbv=None, yv=None, Xpv=None):
    bd = PartyData(Xb, [f"b{i}" for i in range(Xb.shape[1])], y=y.astype(float),
                   X_valid=Xbv, y_valid=yv, classes=list(classes))
    pd_ = PartyData(Xp, [f"p{i}" for i in range(Xp.shape[1])], X_valid=Xpv)
    return run_roles("secureboost", bd, pd_, params, bank_cipher=cipher or PlainCipher(2048),
                     platform_policy=platform_policy)


def score(ob, op, Xb, Xp):
    cb, cp, _ = contexts()
    pb, _ = run_two_parties(lambda: bank.predict(cb, ob.model, Xb),
                            lambda: plat.predict(cp, op.model, Xp), timeout=60)
    return pb


def xgb_multi(X, y, rounds, objective="multi:softprob", **kw):
    return xgb.train(dict(tree_method="hist", max_bin=256, max_depth=3, eta=0.3,
                          objective=objective, num_class=4, nthread=1, **kw),
                     xgb.DMatrix(X, y), rounds)


def test_trees_and_probabilities_match_xgboost_when_cuts_agree():
    # breast: few enough rows that XGBoost's sketch is exact at max_bin = 256
    Xb, Xp, y = breast4()
    params = dict(objective="multi:softprob", n_trees=4, max_depth=3, max_bin=256,
                  learning_rate=0.3, precision_bits=40)
    ob, op, _ = fit(Xb, Xp, y, params)
    body = ob.model.body
    assert body["num_class"] == 4 and body["classes"] == [0, 1, 2, 3]
    assert len(body["trees"]) == 16 and body["n_rounds"] == 4
    ref = xgb_multi(np.hstack([Xb, Xp]), y, 4)
    # XGBoost 3's intercept: centred log class frequencies
    cfg = json.loads(ref.save_config())["learner"]["learner_model_param"]
    assert np.abs(np.array(json.loads(cfg["base_score"])) - body["base_margin"]).max() < 1e-6
    p = score(ob, op, Xb, Xp)
    px = ref.predict(xgb.DMatrix(np.hstack([Xb, Xp])))
    assert p.shape == (len(y), 4) and np.abs(p - px).max() < 1e-6
    # the margins too (softmax is shift-invariant: compare them centred per row)
    mx = ref.predict(xgb.DMatrix(np.hstack([Xb, Xp])), output_margin=True)
    lp = np.log(p)
    assert np.abs((lp - lp.mean(1, keepdims=True)) - (mx - mx.mean(1, keepdims=True))
                  ).max() < 1e-5
    owners = {nd.get("owner") for t in body["trees"] for nd in t["nodes"]}
    assert {"bank", "platform"} <= owners           # both parties' features split
    assert ob.metrics["train"]["accuracy"] > 0.9
    assert len(ob.metrics["train"]["confusion"]) == 4


def test_softmax_trains_the_same_trees_and_a_given_base_score():
    Xb, Xp, y = breast4()
    params = dict(objective="multi:softmax", n_trees=2, max_depth=3, max_bin=256,
                  learning_rate=0.3, precision_bits=40, base_score=0.5)
    ob, op, _ = fit(Xb, Xp, y, params)
    X = np.hstack([Xb, Xp])
    ref = xgb_multi(X, y, 2, "multi:softmax", base_score=0.5)
    p = score(ob, op, Xb, Xp)
    assert ob.model.body["base_margin"] == [0.5] * 4
    assert (p.argmax(axis=1) == ref.predict(xgb.DMatrix(X))).all()
    soft = xgb_multi(X, y, 2, base_score=0.5).predict(xgb.DMatrix(X))
    assert np.abs(p - soft).max() < 1e-6


def test_paillier_equals_plain_one_encryption_per_row_and_round():
    Xb, Xp, y = breast4()
    params = dict(objective="multi:softprob", n_trees=2, max_depth=2, max_bin=8,
                  learning_rate=0.3, chunk_rows=4096)
    ob1, _, _ = fit(Xb, Xp, y, params)
    key = PaillierPrivateCipher.generate(1024, rng=Drbg(b"k" * 32), insecure_test_key=True)
    ob2, op2, crossed = fit(Xb, Xp, y, params, cipher=key)
    for a, b in zip(ob1.model.body["trees"], ob2.model.body["trees"], strict=True):
        assert [n.get("owner") for n in a["nodes"]] == [n.get("owner") for n in b["nodes"]]
        assert max(abs(x.get("value", 0) - z.get("value", 0))
                   for x, z in zip(a["nodes"], b["nodes"], strict=True)) < 1e-6
    grads = [blob for _, kind, _, blob in crossed if kind == "sb.grad"]
    # 2 rounds x 1 chunk: one ciphertext per row per round for K = 4 (not 4)
    assert len(grads) == 2 and all(len(b) == len(y) * key.ciphertext_bytes for b in grads)
    metas = [m for _, k, _, m in crossed if k == "sb.grad_meta"]
    assert len(metas) == 2 and json.loads(metas[0])["groups"] == 1


def test_histogram_entries_show_the_bank_only_its_class_slot():
    """Pack, sum over a row subset, mask as the platform does, decrypt as the bank:
    the tree's own class decodes exactly, every other slot is masked."""
    rng = np.random.default_rng(3)
    n, K, fb = 300, 4, 24
    g = rng.uniform(-1, 1, (n, K))
    h = rng.uniform(0, 0.5, (n, K))
    gi, hi = (np.rint(a * (1 << fb)).astype(np.int64) for a in (g, h))
    codec = GradCodec.for_gradients(np.array([1 << fb]), np.array([1 << (fb - 1)]), n, fb)
    cipher = PlainCipher(1024)
    pack = M.ClassPacking.plan(K, codec.row_bits, n, cipher.capacity_bits)
    assert pack.groups == 1 and pack.class_bits == pack.sum_bits + M.MASK_BITS + 2
    v = np.empty((n, K), dtype=object)
    for j in range(K):
        v[:, j] = codec.encode_rows(gi[:, j], hi[:, j])
    enc = cipher.encrypt(pack.encode_rows(v, 0), bound_bits=pack.row_bound(0))
    subsets = [rng.random(n) < 0.5 for _ in range(3)]
    sums = cipher.concat([cipher.sum(cipher.take(enc, np.flatnonzero(s))) for s in subsets])
    eb = pack.entry_bits(0)
    for k in range(K):
        per_ct = (cipher.capacity_bits - 1) // eb
        packed = cipher.pack(type(sums)(sums.key_id, sums.data, pack.sum_bound(0)), eb, per_ct)
        masked = cipher.add_plain(packed, pack.masks(Drbg(b"m" * 32, str(k)), k, 3, per_ct))
        entries = unpack_entries(cipher.decrypt(masked), eb, per_ct, 3)
        view = pack.view(codec, k)
        for e, s in zip(entries, subsets, strict=True):
            assert view.decode_sum(e) == (int(gi[s, k].sum()), int(hi[s, k].sum()))
            slots = unpack_entries([e], pack.class_bits, K, K)
            for j in range(K):
                true = int(gi[s, j].sum()) + (int(hi[s, j].sum()) << codec.s)
                assert (slots[j] == true) == (j == k)
                if j != k:   # masked: far outside what a true sum can be
                    assert abs(slots[j]) > 1 << (pack.sum_bits + 8)


def test_validation_early_stopping_and_label_classes():
    Xb, Xp, y = breast4()
    idx = np.random.default_rng(0).permutation(len(y))
    tr, va = np.sort(idx[:450]), np.sort(idx[450:])
    params = dict(objective="multi:softprob", n_trees=40, max_depth=3, max_bin=16,
                  learning_rate=0.8, early_stopping_rounds=2, subsample=0.9,
                  colsample_bytree=0.8)
    ob, op, _ = fit(Xb[tr], Xp[tr], y[tr], params, classes=["a", "b", "c", "d"],
                    Xbv=Xb[va], yv=y[va].astype(float), Xpv=Xp[va])
    n_rounds = ob.model.body["n_rounds"]
    assert n_rounds < 40 and len(ob.model.body["trees"]) == 4 * n_rounds
    assert ob.model.body["classes"] == ["a", "b", "c", "d"]
    p = score(ob, op, Xb[va], Xp[va])
    from parties.common.metrics import multiclass_report
    assert abs(multiclass_report(y[va], p)["log_loss"] -
               ob.metrics["valid"]["log_loss"]) < 1e-9
    assert ob.metrics["valid"]["accuracy"] > 0.8


def test_bad_input_is_refused_clearly():
    Xb, Xp, y = breast4()
    params = dict(objective="multi:softprob", n_trees=1, max_depth=2, max_bin=8)
    # the platform's limits.max_classes bounds the K a bank may announce
    with pytest.raises((ValueError, PeerAborted), match="limits.max_classes = 3|aborted"):
        fit(Xb, Xp, y, params, platform_policy=policy(max_classes=3))
    with pytest.raises(ValueError, match="num_class = 3 but the label has 4 classes"):
        fit(Xb, Xp, y, dict(params, num_class=3))
    from parties.common.params import ParamError
    from parties.common.secureboost_params import SecureBoostParams
    with pytest.raises(ParamError, match="num_class"):
        SecureBoostParams(num_class=4)
    with pytest.raises(ParamError, match="goss"):
        SecureBoostParams(objective="multi:softprob", goss=True)
    with pytest.raises(ParamError, match="class_weight"):
        SecureBoostParams(objective="multi:softmax", class_weight="balanced")
    assert SecureBoostParams(objective="multi:softmax").label_kind() == "multiclass"
    assert "num_class" not in SecureBoostParams().to_dict()   # binary parts unchanged
    # a platform of another version / objective refuses the multiclass handshake
    with pytest.raises((ProtocolError, PeerAborted)):
        bd = PartyData(Xb, [f"b{i}" for i in range(Xb.shape[1])], y=y.astype(float),
                       classes=[0, 1, 2, 3])
        from support.roles import typed
        cb, cp, _ = contexts()
        run_two_parties(
            lambda: bank.train(cb, bd, typed("secureboost", params), PlainCipher(2048),
                               TEST_POLICY),
            lambda: plat.train(cp, PartyData(Xp, [f"p{i}" for i in range(Xp.shape[1])]),
                               typed("secureboost", dict(params, objective="binary:logistic")),
                               None, TEST_POLICY), timeout=60)
