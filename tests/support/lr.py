"""Shared fixtures for the LR tests: data loading, hashed split, running both roles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from federation.link import ProtocolContext, local_link_pair, run_two_parties
from parties.bank import lr as bank_lr
from parties.provincial_platform import lr as platform_lr
from secure_agg.cipher import PlainCipher
from secure_agg.rng import Drbg
from support.roles import TEST_POLICY, contexts, data, run_roles, typed

ALGO = "logistic_regression"
DATA = Path(__file__).resolve().parents[1] / "data"


def load(name: str):
    """Joined (by id) guest/host frames of a FATE data set with an 80/20 hashed-id split."""
    g = pd.read_csv(DATA / f"{name}_hetero_guest.csv")
    h = pd.read_csv(DATA / f"{name}_hetero_host.csv")
    j = g[["id"]].merge(h[["id"]], on="id")
    g = g.set_index("id").loc[j["id"]]
    h = h.set_index("id").loc[j["id"]]
    bucket = np.array([int(hashlib.sha256(str(i).encode()).hexdigest()[:8], 16) % 100
                       for i in j["id"]])
    train = bucket < 80
    gx = g.drop(columns=["y"])
    return {"Xb": gx.to_numpy(float), "bnames": list(gx.columns), "y": g["y"].to_numpy(float),
            "Xp": h.to_numpy(float), "pnames": list(h.columns), "train": train}


def run(Xb, y, Xp, params, *, bank_cipher=None, plat_cipher=None, Xb_v=None, y_v=None,
        Xp_v=None, bnames=None, pnames=None, job="lrtest", pparams=None, bank_policy=None,
        plat_policy=None):
    bank_cipher = bank_cipher or PlainCipher(2048)
    plat_cipher = plat_cipher or PlainCipher(2048)
    bnames = bnames or [f"b{j}" for j in range(Xb.shape[1])]
    pnames = pnames or [f"p{j}" for j in range(Xp.shape[1])]
    if pparams is not None:   # the two parties read different tables (a mismatch test)
        ca, cb, crossed = contexts(job)
        ob, op = run_two_parties(
            lambda: bank_lr.train(ca, data(Xb, bnames, y, Xb_v, y_v), typed(ALGO, params),
                                  bank_cipher, bank_policy or TEST_POLICY),
            lambda: platform_lr.train(cb, data(Xp, pnames, X_valid=Xp_v),
                                      typed(ALGO, pparams), plat_cipher,
                                      plat_policy or TEST_POLICY))
        return ob, op, crossed
    return run_roles(ALGO, data(Xb, bnames, y, Xb_v, y_v), data(Xp, pnames, X_valid=Xp_v),
                     params, bank_cipher=bank_cipher, platform_cipher=plat_cipher,
                     bank_policy=bank_policy or TEST_POLICY,
                     platform_policy=plat_policy or TEST_POLICY, job=job, timeout=600)


def score(bank_part, plat_part, Xb, Xp, job="lrscore"):
    la, lb, crossed = local_link_pair(job)
    ca = ProtocolContext(la, job, Drbg(b"b" * 32, "bank"))
    cb = ProtocolContext(lb, job, Drbg(b"p" * 32, "platform"))
    pb, zp = run_two_parties(lambda: bank_lr.predict(ca, bank_part, Xb),
                             lambda: platform_lr.predict(cb, plat_part, Xp))
    return pb, zp, crossed
