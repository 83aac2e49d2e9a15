"""Pinned wire and model digests of logistic and linear regression variants (both roles
over an in-memory link, 512-bit test Paillier keys, fixed seeds).

tests/federation/test_golden.py pins one LR job through the node pipeline; this pins
the residual variants the shared epoch loop serves (batch-mean / per-row / public
curvature, class weights, L1, valid-AUC early stopping, no intercept, and linear
regression). The digests were recorded on the code before the loop was shared
(commit 9c2b60e); a behaviour-preserving change leaves them equal. Re-record with
FEDJOINT_RECORD_LR_DIGESTS=1 only with a deliberate wire change (and a version bump).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from support.lr import load
from support.roles import data, run_roles

from secure_agg.paillier import PaillierPrivateCipher
from secure_agg.rng import Drbg

PINNED = Path(__file__).resolve().parents[1] / "data" / "lr_variant_digests.json"
BASE = dict(epochs=2, batch_size=160, learning_rate=0.1, seed=5)
VARIANTS = {
    "lr/batch_mean": ("logistic_regression", dict(reg_lambda=1e-2)),
    "lr/per_row_weighted": ("logistic_regression", dict(
        platform_curvature="per_row", class_weight={"0": 1, "1": 3}, optimizer="momentum")),
    "lr/taylor_l1": ("logistic_regression", dict(approximation="taylor", optimizer="sgd",
                                                 reg_alpha=1e-3)),
    "lr/valid_auc_no_intercept": ("logistic_regression", dict(
        early_stopping="valid_auc", allow_validation_scores=True, fit_intercept=False,
        epochs=3)),
    "linreg/default": ("linear_regression", dict(reg_lambda=1e-3)),
    "linreg/no_intercept_sgd": ("linear_regression", dict(
        fit_intercept=False, optimizer="sgd", learning_rate=0.02, nan_policy="mean")),
}


@pytest.fixture(scope="module")
def setup():
    d = load("breast")
    kb = PaillierPrivateCipher.generate(512, rng=Drbg(b"kb" * 16), insecure_test_key=True)
    kp = PaillierPrivateCipher.generate(512, rng=Drbg(b"kp" * 16), insecure_test_key=True)
    return d, kb, kp


def _digests(name: str, setup) -> dict:
    d, kb, kp = setup
    algo, extra = VARIANTS[name]
    tr, te = d["train"], ~d["train"]
    Xb, Xp = d["Xb"].copy(), d["Xp"].copy()
    y = d["y"] if algo == "logistic_regression" else Xb[:, 0] * 2.0 + Xp[:, 1]
    if algo == "linear_regression":
        Xb = Xb[:, 1:]
        if extra.get("nan_policy") == "mean":
            Xb[::17, 2] = np.nan
            Xp[::13, 0] = np.nan
    ob, op, crossed = run_roles(
        algo, data(Xb[tr], None, y[tr], Xb[te], y[te]), data(Xp[tr], None, X_valid=Xp[te]),
        {**BASE, **extra}, bank_cipher=kb, platform_cipher=kp, timeout=600)
    out = {"bank_model": ob.model.digest(), "platform_model": op.model.digest(),
           "messages": len(crossed)}
    for party in ("bank", "platform"):
        h = hashlib.sha256()
        for who, kind, ptype, payload in crossed:
            if who == party:
                h.update(f"{kind} {ptype} ".encode() + hashlib.sha256(payload).digest())
        out[f"{party}_sent"] = h.hexdigest()
    return out


def test_variant_digests_are_unchanged(setup):
    got = {name: _digests(name, setup) for name in VARIANTS}
    if os.environ.get("FEDJOINT_RECORD_LR_DIGESTS") == "1":
        PINNED.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
        pytest.skip("recorded LR variant digests")
    assert got == json.loads(PINNED.read_text())
