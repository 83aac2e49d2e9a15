"""Vertically partitioned logistic regression, platform (passive party, features only).

The protocol, message by message, and exactly what each party learns are documented
in ``parties/bank/lr.py`` and docs/lr.md (this module mirrors the bank's steps and never
imports the bank's package). In short, per mini-batch the platform

1. sends ``[[z_p]]_P`` (its partial linear predictor, under its own key);
2. receives ``[[u]]_B`` and (unless public) ``[[a]]_B`` under the bank's key, forms
   ``[[d]]_B = [[u]]_B + z_p * [[a]]_B`` and its masked, re-randomised gradient
   ``[[X_p^T d + R]]_B``;
3. decrypts the bank's masked gradient vector, returns it, and folds its own loss terms
   (``sum(a * z_p^2)`` under the bank's key, and its penalty) into the loss slot
   without seeing the loss;
4. gets its masked gradient back in plaintext, unmasks it and updates ``w_p``.

The platform learns its own gradient ``X_p^T d / |batch|`` per batch (``d_p`` linear
combinations of the label-dependent residual), the public sizes and the batch schedule,
and ``ceil(log2(max class weight))``. It never learns labels, the bank's predictor,
the residual itself or the loss. It discloses its partial scores ``X_p w_p`` at the end
of training (training rows if ``evaluate_train``, validation rows if given), on
validation rows each epoch only if it set ``allow_validation_scores`` and the job uses
``early_stopping = "valid_auc"``, and at scoring time.
"""

from __future__ import annotations

import time

import numpy as np

from federation.link import ProtocolContext
from parties.common import lr_common as C
from parties.common import residuals as R
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.params import ParamError
from parties.common.role import PartyData, RolePolicy
from parties.common.standardize import (
    InputError,
    as_feature_matrix,
    fit_own_columns,
    peer_view,
)
from parties.provincial_platform import linear_loop as loop
from secure_agg.cipher import PrivateCipher
from secure_agg.keypolicy import describe_public_key

PARTY = "platform"


def train(ctx: ProtocolContext, data: PartyData, params: C.LRParams, cipher: PrivateCipher,
          policy: RolePolicy) -> TrainOutcome:
    """Train jointly with the bank; returns the platform's model part. ``policy.keys``
    decides whether the bank's public key (scheme, size) is acceptable."""
    return C.guarded(ctx, lambda exc: peer_view(exc, PARTY, policy.reveal_feature_names),
                     C.LRError, _train, data.X, data.feature_names, params, cipher,
                     data.X_valid, policy)


def _train(ctx, peer, X, feature_names, params, cipher, X_valid, policy):
    t0 = time.perf_counter()
    if hasattr(X, "__len__"):  # both parties know the row count: fail before the hello
        C.check_batch_size(params, len(X))
    err = shown = None
    try:
        p = params
        Xm, names = as_feature_matrix(X, feature_names, "platform training data")
        # this party's nan_policy per column, statistics from its own rows (kept here)
        std = fit_own_columns(Xm, names, PARTY, "platform training data",
                              nan_policy=p.nan_policy, standardize=p.standardize,
                              log=ctx.log)
        Xs = std.transform(Xm, "platform training data")
        n = Xs.shape[0]
        bs = C.check_batch_size(p, n)
        Xv = None
        if X_valid is not None:
            Xvm, _ = as_feature_matrix(X_valid, names, "platform validation data")
            Xv = std.transform(Xvm, "platform validation data")
    except InputError as exc:  # names the platform's columns: the bank gets no details
        err, shown = str(exc), peer_view(exc, PARTY, policy.reveal_feature_names)
    except ParamError as exc:
        err = shown = str(exc)
    hello = {"version": params.version(), "ok": err is None, "error": shown,
             "key": describe_public_key(cipher.public(), form="modulus")}
    if err is None:
        hello.update({"n_rows": n, "n_valid": 0 if Xv is None else Xv.shape[0],
                      "n_features": Xs.shape[1], "shared": p.shared(),
                      "valid_scores_allowed": bool(p.allow_validation_scores)})
    peer.send_json(C.K_HELLO, hello)
    bh = peer.recv_json(C.K_HELLO)
    if err is not None:
        raise C.LRError(err, peer_reason=shown)
    C.check_peer_hello(hello, bh, p, PARTY, "bank")
    if p.early_stopping == "valid_auc" and not p.allow_validation_scores:
        raise C.LRError("early_stopping = \"valid_auc\" needs the platform's consent "
                        "(allow_validation_scores = true in its params)")
    d_b = bh.get("n_features")
    wbits = bh.get("weight_bits")
    curv = bh.get("curvature")
    if not isinstance(d_b, int) or not 0 <= d_b <= 100000:
        raise C.LRError("bank announced an invalid feature count")
    if not isinstance(wbits, int) or not 0 <= wbits <= C.MAX_WEIGHT_BITS:
        raise C.LRError("bank announced invalid class-weight bits")
    if curv != R.curvature_mode(p):
        raise C.LRError(f"bank announced residual layout {curv!r}, expected "
                        f"{R.curvature_mode(p)!r}")
    seed = C.announced_seed(bh, C.LRError)
    if p.multi_class is None:
        layout = R.Sigmoid(p, wbits).layout
    else:  # K: the one thing about the labels the platform learns at setup
        k = bh.get("n_classes")
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= policy.max_classes:
            raise C.LRError(f"bank announced {k!r} classes; this node allows 2.."
                            f"{policy.max_classes} (limits.max_classes)")
        layout = (R.Softmax if p.multi_class == "multinomial" else R.OneVsRest)(
            p, wbits, k).layout
    pk_b = C.peer_cipher(bh.get("key") or {}, cipher, ctx.workers, policy.keys)
    timings = {"setup": time.perf_counter() - t0}
    job = loop.PlatformJob(p, layout, Xs, d_b, bs, seed, cipher, pk_b, Xv)
    t_train = time.perf_counter()
    w, history, phases = loop.train(ctx, peer, job)
    timings["train"] = time.perf_counter() - t_train
    timings.update(phases)
    if p.multi_class is None:
        coef = {"weights": [float(v) for v in w]}
    else:
        coef = {"multi_class": p.multi_class,
                "weights": [[float(v) for v in row] for row in w.reshape(layout.k, -1)]}
    body = {**coef, "standardizer": std.to_dict(),
            "approximation": p.approximation, "x_frac_bits": p.x_frac_bits,
            "epochs_run": len(history)}
    return loop.finish(ctx, peer, job, w, history, timings, C.ALGORITHM, C.params_dict(p),
                       body, names)


def predict(ctx: ProtocolContext, model: ModelPart, X) -> np.ndarray:
    """Send this party's partial scores ``X_p w_p`` to the bank (disclosed); returns them."""
    peer = C.Peer(ctx.link)
    Xs = C.scoring_handshake(peer, model, X, PARTY, "bank")
    w = np.asarray(model.body["weights"], dtype=np.float64)
    z = C.linear_predictor(Xs, w) if w.ndim == 1 else \
        np.column_stack([C.linear_predictor(Xs, wk) for wk in w])   # (rows, K) multiclass
    peer.send_array(C.K_PARTIAL_SCORE, z)
    return z
