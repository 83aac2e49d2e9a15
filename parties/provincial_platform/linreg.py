"""Vertically partitioned linear (ridge) regression, platform (passive party, features
only).

The protocol and exactly what each party learns are in ``parties/bank/linreg.py`` and
docs/linreg.md (this module mirrors the bank's steps and never imports the bank's
package). It is logistic regression's protocol with the exact squared-loss residual
``d = [[u]]_B + z_p`` (the curvature is the public constant 1). Per mini-batch the
platform

1. sends ``[[z_p]]_P`` (its partial linear predictor, under its own key);
2. receives ``[[u]]_B`` under the bank's key, forms ``[[d]]_B = [[u]]_B + z_p`` and its
   masked, re-randomised gradient ``[[X_p^T d + R]]_B``;
3. decrypts the bank's masked gradient vector, returns it, and adds its own loss terms
   (``sum(z_p^2)`` and its penalty) to the loss slot under the bank's key, without
   seeing the loss;
4. gets its masked gradient back in plaintext, unmasks it and updates ``w_p``.

The platform learns its own gradient ``X_p^T d / |batch|`` per batch (``d_p`` linear
combinations of the target-dependent residual), the public sizes and the batch
schedule. It never learns the target, its scaling, the bank's predictor, the residual
itself or the loss. It discloses its partial scores ``X_p w_p`` at the end of training
(training rows if ``evaluate_train``, validation rows if given) and at scoring time.
"""

from __future__ import annotations

import time

import numpy as np

from federation.link import ProtocolContext
from parties.common import linreg_common as L
from parties.common import lr_common as C
from parties.common import residuals as R
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.params import ParamError
from parties.common.role import PartyData, RolePolicy
from parties.common.standardize import InputError, Standardizer, as_feature_matrix
from parties.provincial_platform import linear_loop as loop
from secure_agg.cipher import PrivateCipher

PARTY = "platform"


def train(ctx: ProtocolContext, data: PartyData, params: L.LinRegParams,
          cipher: PrivateCipher, policy: RolePolicy) -> TrainOutcome:
    """Train jointly with the bank; returns the platform's model part. ``policy.keys``
    decides whether the bank's public key (scheme, size) is acceptable."""
    return L.guarded(ctx, PARTY, _train, data, params, cipher, policy)


def _train(ctx, peer, data, p, cipher, policy):
    t0 = time.perf_counter()
    err = None
    try:
        Xm, names = as_feature_matrix(data.X, data.feature_names, "platform training data")
        std = Standardizer.fit(Xm, names, "platform training data",
                               standardize=p.standardize, nan_policy=p.nan_policy)
        Xs = std.transform(Xm, "platform training data")
        n = Xs.shape[0]
        bs = C.check_batch_size(p, n)
        Xv = None
        if data.X_valid is not None:
            Xvm, _ = as_feature_matrix(data.X_valid, names, "platform validation data")
            Xv = std.transform(Xvm, "platform validation data")
    except (InputError, ParamError) as exc:
        err = exc
    hello = L.hello(err, PARTY, cipher)
    shown = hello["error"]
    if err is None:
        hello.update({"n_rows": n, "n_valid": 0 if Xv is None else Xv.shape[0],
                      "n_features": Xs.shape[1], "shared": p.shared()})
    peer.send_json(C.K_HELLO, hello)
    bh = peer.recv_json(C.K_HELLO)
    if err is not None:
        raise L.LinRegError(str(err), shown=shown)
    L.check_peer_hello(hello, bh, p, PARTY, "bank")
    d_b = bh.get("n_features")
    if not isinstance(d_b, int) or not 0 <= d_b <= 100000:
        raise L.LinRegError("bank announced an invalid feature count")
    seed = C.announced_seed(bh, L.LinRegError)
    pk_b = C.peer_cipher(bh.get("key") or {}, cipher, ctx.workers, policy.keys)
    timings = {"setup": time.perf_counter() - t0}

    job = loop.PlatformJob(p, R.Squared(L.U_BITS).layout, Xs, d_b, bs, seed, cipher, pk_b,
                           Xv, event="linreg.epoch", error=L.LinRegError)
    w, history, ph_t = loop.train(ctx, peer, job)
    timings["train"] = time.perf_counter() - t0 - timings["setup"]
    timings.update(ph_t)
    body = {"weights": [float(v) for v in w], "standardizer": std.to_dict(),
            "x_frac_bits": p.x_frac_bits, "epochs_run": len(history)}
    return loop.finish(ctx, peer, job, w, history, timings, L.ALGORITHM, p.to_dict(), body,
                       names)


def predict(ctx: ProtocolContext, model: ModelPart, X) -> np.ndarray:
    """Send this party's partial scores ``X_p w_p`` to the bank (disclosed); returns them."""
    peer = C.Peer(ctx.link)
    Xs = L.scoring_handshake(peer, model, X, PARTY, "bank")
    z = C.linear_predictor(Xs, model.body["weights"])
    peer.send_array(C.K_PARTIAL_SCORE, z)
    return z
