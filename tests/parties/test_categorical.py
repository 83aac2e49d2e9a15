"""Categorical features in SecureBoost (issue 13 part 4) against XGBoost's
``enable_categorical=True`` with ``tree_method="hist"`` on the same rows.

Data: default_credit (6,000 rows), its code-like columns read as categories --
bank: PAY_6 (10 levels); platform: SEX (2, one-hot), EDUCATION (7), MARRIAGE (4),
PAY_0..PAY_4 (11 each: partitions) -- optionally with 10% of every column blanked.
Levels are the sorted distinct values (as the loader makes them), given to XGBoost as
the same codes (``feature_types="c"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from support.roles import contexts, run_roles, typed

from federation.link import ProtocolError, decode_payload, run_two_parties
from parties.bank import secureboost as bank_sb
from parties.common import secureboost_wire as W
from parties.common.categorical import best_split, resolve
from parties.common.metrics import auc
from parties.common.role import PartyData
from parties.common.tree import SplitRule
from parties.provincial_platform import secureboost as platform_sb
from secure_agg.cipher import PlainCipher

DATA = Path(__file__).resolve().parents[1] / "data"
BANK_CAT = ["x0"]
PLAT_CAT = ["p1", "p2", "p3", "p5", "p6", "p7", "p8", "p9"]
SB = dict(n_trees=8, max_depth=4, learning_rate=0.3, max_bin=32)


def _codes(col: np.ndarray) -> tuple[np.ndarray, list]:
    levels = np.unique(col)
    return np.searchsorted(levels, col).astype(float), list(range(len(levels)))


def credit(missing: float = 0.0, rows: int = 6000, bank_cat=BANK_CAT, plat_cat=PLAT_CAT):
    g = pd.read_csv(DATA / "default_credit_hetero_guest.csv").head(rows)
    h = pd.read_csv(DATA / "default_credit_hetero_host.csv").head(rows)
    Xb, y = g.drop(columns=["id", "y"]).to_numpy(float, copy=True), g.y.to_numpy(float)
    Xp = h.drop(columns=["id"]).to_numpy(float, copy=True)
    bn = [f"x{j}" for j in range(Xb.shape[1])]
    pn = [f"p{j}" for j in range(Xp.shape[1])]
    bc, pc = {}, {}
    for X, names, cats, out in ((Xb, bn, bank_cat, bc), (Xp, pn, plat_cat, pc)):
        for j, n in enumerate(names):
            if n in cats:
                X[:, j], out[n] = _codes(X[:, j])
    if missing:
        rng = np.random.default_rng(1)
        Xb[rng.random(Xb.shape) < missing] = np.nan
        Xp[rng.random(Xp.shape) < missing] = np.nan
    idx = np.random.default_rng(0).permutation(rows)
    k = int(0.8 * rows)
    return dict(Xb=Xb, Xp=Xp, y=y, bn=bn, pn=pn, bc=bc, pc=pc, tr=np.sort(idx[:k]),
                te=np.sort(idx[k:]))


def fit(d, params, cipher=None):
    tr = d["tr"]
    ob, op, crossed = run_roles(
        "secureboost", PartyData(d["Xb"][tr], d["bn"], y=d["y"][tr], categories=d["bc"]),
        PartyData(d["Xp"][tr], d["pn"], categories=d["pc"]), params,
        bank_cipher=cipher or PlainCipher(1024))
    return ob, op, crossed


def predict(ob, op, d, rows):
    cb, cp, _ = contexts()
    p, _ = run_two_parties(lambda: bank_sb.predict(cb, ob.model, d["Xb"][rows]),
                           lambda: platform_sb.predict(cp, op.model, d["Xp"][rows]),
                           timeout=60)
    return p


def xgb_fit(d, params):
    X = np.hstack([d["Xb"], d["Xp"]])
    ft = ["c" if n in d["bc"] else "q" for n in d["bn"]] + \
         ["c" if n in d["pc"] else "q" for n in d["pn"]]
    tr = d["tr"]
    m = xgb.train(dict(tree_method="hist", max_bin=params["max_bin"],
                       max_depth=params["max_depth"], eta=params["learning_rate"],
                       reg_lambda=1.0, min_child_weight=params.get("min_child_weight", 1.0),
                       base_score=float(d["y"][tr].mean()), objective="binary:logistic",
                       max_cat_to_onehot=params.get("max_cat_to_onehot", 4),
                       max_cat_threshold=params.get("max_cat_threshold", 64), nthread=1),
                  xgb.DMatrix(X[tr], d["y"][tr], feature_types=ft, enable_categorical=True),
                  params["n_trees"])
    return lambda rows: m.predict(xgb.DMatrix(X[rows], feature_types=ft,
                                              enable_categorical=True))


def sent(crossed, kind: str) -> list[dict]:
    """The JSON payloads of ``kind`` that crossed."""
    return [decode_payload(pt, data) for _, k, pt, data in crossed if k == kind]


def n_cat_splits(ob, op) -> tuple[int, int]:
    bank = sum("cats" in nd for t in ob.model.body["trees"] for nd in t["nodes"])
    return bank, sum("cats" in s for s in op.model.body["splits"].values())


@pytest.mark.parametrize("case,params,missing", [
    # bank categorical splits in plaintext (XGBoost's order by level: exact)
    ("bank", {}, 0.1),
    # platform partitions, XGBoost's defaults: levels below min_child_weight weigh 0
    # and tie (the platform orders such runs by level: sb.cat_ties / sb.cat_order)
    ("partition", {}, 0.1),
    ("partition-no-missing", {}, 0.0),
    ("partition-mcw0", {"min_child_weight": 0.0}, 0.1),
    # every feature one-hot (fewer levels than max_cat_to_onehot)
    ("onehot", {"max_cat_to_onehot": 12}, 0.1),
    # partitions walk at most max_cat_threshold levels per side
    ("threshold", {"min_child_weight": 0.0, "max_cat_threshold": 3}, 0.0),
])
def test_categorical_trees_equal_xgboost(case, params, missing):
    if case == "bank":   # the platform's code-like columns move to the bank
        d = credit(missing, bank_cat=BANK_CAT, plat_cat=[])
    else:
        d = credit(missing)
    params = {**SB, **params}
    ob, op, _ = fit(d, params)
    ref = xgb_fit(d, params)
    nb, np_ = n_cat_splits(ob, op)
    assert nb > 0 and (case == "bank" or np_ > 10), (nb, np_)
    for rows in (d["tr"], d["te"]):
        p, px = predict(ob, op, d, rows), ref(rows)
        assert np.abs(p - px).max() < 1e-5, (case, np.abs(p - px).max())


def test_categorical_both_sides_auc_within_tolerance():
    """Defaults, 10% missing: test AUC within 0.003 of XGBoost's (the issue's bar; the
    trees are equal, test_categorical_trees_equal_xgboost)."""
    d = credit(0.1)
    ob, op, _ = fit(d, SB)
    ref = xgb_fit(d, SB)
    a, ax = auc(d["y"][d["te"]], predict(ob, op, d, d["te"])), auc(d["y"][d["te"]],
                                                                    ref(d["te"]))
    print("categorical test AUC", a, "xgboost", ax)
    assert abs(a - ax) < 0.003, (a, ax)
    assert all(n > 0 for n in n_cat_splits(ob, op))


def test_paillier_equals_plain():
    """Real (small, test-only) Paillier keys: the same model parts as the plain cipher."""
    from secure_agg.paillier import PaillierPrivateCipher
    from secure_agg.rng import Drbg
    d = credit(0.1, rows=1500)
    params = dict(SB, n_trees=2, max_depth=3)
    key = PaillierPrivateCipher.generate(1024, rng=Drbg(b"k" * 32), insecure_test_key=True)
    ob, op, _ = fit(d, params, key)
    pb, pp, _ = fit(d, params)
    assert ob.model.body == pb.model.body and op.model.body == pp.model.body
    assert n_cat_splits(ob, op)[1] > 0


def test_multiclass_with_categorical_features():
    """multi:softprob on a 3-class label, categorical columns on both sides: XGBoost's
    probabilities (same trees)."""
    d = credit(0.0, rows=3000)
    y3 = np.where(d["y"] == 1, 2.0, (d["Xb"][:, 1] > 0).astype(float))
    d = dict(d, y=y3)
    params = dict(SB, n_trees=2, objective="multi:softprob", min_child_weight=0.0)
    tr = d["tr"]
    ob, op, _ = run_roles(
        "secureboost", PartyData(d["Xb"][tr], d["bn"], y=y3[tr].astype(np.int64),
                                 categories=d["bc"], classes=[0, 1, 2]),
        PartyData(d["Xp"][tr], d["pn"], categories=d["pc"]), params,
        bank_cipher=PlainCipher(2048))
    X = np.hstack([d["Xb"], d["Xp"]])
    ft = ["c" if n in d["bc"] else "q" for n in d["bn"]] + \
         ["c" if n in d["pc"] else "q" for n in d["pn"]]
    m = xgb.train(dict(tree_method="hist", max_bin=32, max_depth=4, eta=0.3, reg_lambda=1.0,
                       min_child_weight=0.0, objective="multi:softprob", num_class=3,
                       nthread=1),
                  xgb.DMatrix(X[tr], y3[tr], feature_types=ft, enable_categorical=True), 2)
    p = predict(ob, op, d, d["te"])
    px = m.predict(xgb.DMatrix(X[d["te"]], feature_types=ft, enable_categorical=True))
    assert np.abs(p - px).max() < 1e-5, np.abs(p - px).max()
    assert all(n > 0 for n in n_cat_splits(ob, op))


def test_bank_sees_permuted_level_groups_only():
    d = credit(0.0, rows=3000)
    ob, op, crossed = fit(d, dict(SB, n_trees=2))
    sizes = [s for m in sent(crossed, W.K_HIST_META) for s in m["cat_sizes"]]
    # per node: the platform's categorical blocks, sizes only (levels of 8 features)
    k = [int(np.nanmax(d["Xp"][d["tr"], d["pn"].index(c)])) + 1 for c in PLAT_CAT]
    assert sizes and all(sorted(s) == sorted(k) for s in sizes), (sizes[0], k)
    answers = [a for m in sent(crossed, W.K_SPLIT) for lst in m.get("cat", {}).values()
               for a in lst]
    assert answers and all(set(a) <= {"block", "onehot", "fixed", "tie", "m",
                                      "default_left"} for a in answers)
    # the platform's level sets stay in its own part; the bank's part has none of them
    assert set(op.model.body["categories"]) == set(PLAT_CAT)
    assert "cats" in str(op.model.body["splits"]) and "p2" not in str(ob.model.body)
    assert set(ob.model.body["categories"]) == set(BANK_CAT)


def test_block_order_is_fresh_per_node():
    """The same feature's block sits at different positions from node to node."""
    d = credit(0.0, rows=3000)
    _, _, crossed = fit(d, dict(SB, n_trees=2))
    orders = {tuple(s) for m in sent(crossed, W.K_HIST_META) for s in m["cat_sizes"]}
    assert len(orders) > 3


def test_best_split_one_hot_and_partition_by_hand():
    rule = SplitRule(reg_lambda=1.0, min_child_weight=0.0)
    Gc, Hc = np.array([4.0, -3.0, 1.0]), np.array([2.0, 2.0, 2.0])
    s = best_split(Gc, Hc, 2.0, 6.0, rule, 4, 64)            # 3 < 4: one-hot
    # right = {1}: G 5 | -3 over H 4 | 2: 25/5 + 9/3 - 4/7 (the best single level)
    assert s.onehot and s.right == [1] and abs(s.loss_chg - (8 - 4 / 7)) < 1e-12
    s = best_split(Gc, Hc, 2.0, 6.0, rule, 2, 64)            # partition: sorted by weight
    # weights -G/(H+1) = [-1.33, 1, -0.33] -> order 0, 2, 1; right = {0, 2}, left = {1}
    assert not s.onehot and s.right == [0, 2] and s.default_left
    assert abs(s.loss_chg - (8 - 4 / 7)) < 1e-12


@pytest.mark.parametrize("desc", [
    {"block": 0, "fixed": [9], "tie": [], "m": 0, "default_left": True},     # out of range
    {"block": 0, "fixed": [0, 0], "tie": [], "m": 0, "default_left": True},  # repeated
    {"block": 0, "fixed": [0, 1, 2], "tie": [], "m": 0, "default_left": True},  # all
    {"block": 0, "fixed": [0], "tie": [1], "m": 2, "default_left": True},    # m too big
    {"block": 0, "onehot": [[5, True]]},
    {"block": 0, "onehot": []},
    "right",
])
def test_platform_rejects_bad_categorical_answers(desc):
    with pytest.raises(ProtocolError, match="sb.split cat"):
        resolve(desc, np.array([2, 0, 1]))


@pytest.mark.parametrize("meta", [
    {"cat_sizes": [[3, 4]]},             # more entries than candidates
    {"cat_sizes": [[0]]},                # an empty block
    {"cat_sizes": [[2], [2]]},           # one list per node
    {"cat_sizes": "3"},
])
def test_bank_rejects_bad_block_sizes(meta):
    from parties.bank.secureboost_categorical import BankCategorical
    cat = BankCategorical(["a"], None, np.array([3]), typed("secureboost", {}),
                          SplitRule())
    with pytest.raises(ProtocolError, match="cat_sizes"):
        cat.read_sizes(meta, [0], [5])


@pytest.mark.parametrize("reply", [[[0, 1, 1, 2, 3]], [[0, 1]], [["0", 1, 2, 3, 4]], [],
                                   "x"])
def test_bank_rejects_bad_tie_orders(reply):
    from federation.link import local_link_pair
    from parties.bank.secureboost_categorical import BankCategorical
    cat = BankCategorical(["a"], None, np.array([3]), typed("secureboost", {}),
                          SplitRule())
    cat.sizes = {0: [5]}       # one block of 5 levels; all weigh 0 (H < 1), sums differ
    a, b, _ = local_link_pair("j")
    b.send(W.K_CAT_ORDER, {"runs": reply})
    with pytest.raises(ProtocolError, match="sb.cat_order"):
        cat.order_ties(a, {0: (np.array([0.0, 0.5, 0, 0, 0]), np.array([0.0, 0.2, 0, 0, 0]))})


@pytest.mark.parametrize("runs", [[[0, 0, [0, 5]]], [[0, 3, [0, 1]]], [[1, 0, [0]]],
                                  [[0, 0, [1, 1]]], "x"])
def test_platform_rejects_bad_tie_requests(runs):
    from federation.link import local_link_pair
    from parties.provincial_platform.secureboost_categorical import PlatformCategorical
    cat = PlatformCategorical(["a"], {"a": [0, 1, 2]}, np.array([2]))
    cat.perms = {0: [(0, np.array([2, 0, 1]))]}
    a, b, _ = local_link_pair("j")
    a.send(W.K_CAT_TIES, {"runs": runs})
    with pytest.raises(ProtocolError, match="sb.cat_ties"):
        cat.order_ties(b)


def test_resolve_ties_go_to_the_lowest_level():
    perm = np.array([3, 1, 0, 2])         # permuted index i is level perm[i]
    right, dl = resolve({"fixed": [0], "tie": [1, 2, 3], "m": 1, "default_left": False},
                        perm)
    assert right == [0, 3] and dl is False
    right, dl = resolve({"onehot": [[0, False], [2, False], [2, True]]}, perm)
    assert right == [0] and dl is True


def test_validation_rows_route_through_categorical_splits():
    """The per-tree validation metrics (the platform answers its categorical splits on
    the validation rows) equal scoring those rows with the final model."""
    from parties.common.metrics import log_loss
    d = credit(0.1, rows=3000)
    tr, te = d["tr"], d["te"]
    ob, op, _ = run_roles(
        "secureboost",
        PartyData(d["Xb"][tr], d["bn"], y=d["y"][tr], categories=d["bc"],
                  X_valid=d["Xb"][te], y_valid=d["y"][te]),
        PartyData(d["Xp"][tr], d["pn"], categories=d["pc"], X_valid=d["Xp"][te]),
        dict(SB, n_trees=3), bank_cipher=PlainCipher(1024))
    assert n_cat_splits(ob, op)[1] > 0
    p = predict(ob, op, d, te)
    assert abs(ob.history[-1]["valid"]["log_loss"] - log_loss(d["y"][te], p)) < 1e-9


def test_platform_policy_can_withhold_the_tie_order():
    """categorical_tie_order = false: the platform answers tie requests in their random
    order; training still works (the trees may differ from XGBoost's on such ties)."""
    from support.roles import policy
    d = credit(0.1, rows=3000)
    tr = d["tr"]
    params = dict(SB, n_trees=2)
    ob, op, crossed = run_roles(
        "secureboost", PartyData(d["Xb"][tr], d["bn"], y=d["y"][tr], categories=d["bc"]),
        PartyData(d["Xp"][tr], d["pn"], categories=d["pc"]), params,
        bank_cipher=PlainCipher(1024), platform_policy=policy(categorical_tie_order=False))
    asked = [r[2] for m in sent(crossed, W.K_CAT_TIES) for r in m["runs"]]
    told = [r for m in sent(crossed, W.K_CAT_ORDER) for r in m["runs"]]
    assert asked and told == asked and n_cat_splits(ob, op)[1] > 0
