"""Vertically partitioned linear (ridge) regression, bank (active party, holds the target).

The protocol is logistic regression's (``parties/bank/lr.py``, docs/lr.md: same message
kinds, same masking and re-randomisation, same obfuscators one batch ahead) with the
exact squared-loss residual instead of a linearised sigmoid. The bank fits the target
standardised on its own training rows, ``y_s = (y - mean) / scale`` (never sent), so the
fixed-point layout does not depend on the target's units. For each batch row, from its
own ``z_b = X_b w_b + b`` and ``y_s``: ``u = z_b - y_s`` and ``a = 1`` (public), so

    d = u + z_p = z_b + z_p - y_s          (exact: the squared loss's residual)

Per mini-batch (rows chosen by a shuffle seed the bank sends at setup):

1. P -> B  ``lr.enc_zp``  ``[[z_p]]_P``;  B -> P  ``lr.enc_u``  ``[[u]]_B``  (no
   ``lr.enc_a``: the curvature is the public constant 1)
2. B forms ``[[d]]_P = [[z_p]]_P + u``, ``[[g_b]]_P = [X_b | 1]^T [[d]]_P`` and the loss
   piece ``[[2 sum(u z_p)]]_P``; masks (40 bits wider than the bound), re-randomises,
   sends ``lr.bank_grad_ct``. P forms ``[[d]]_B = [[u]]_B + z_p`` and
   ``[[g_p]]_B = X_p^T [[d]]_B``; masks, re-randomises, sends ``lr.platform_grad_ct``.
3. P decrypts B's masked vector and returns the masked gradient (``lr.bank_grad_plain``);
   for the loss slot it sends ``[[v + sum(z_p^2) + 2 |batch| penalty_p]]_B``
   (``lr.loss_ct``) without learning ``v``. B decrypts P's masked gradient and the loss
   slot and returns the masked gradient (``lr.platform_grad_plain``).
4. Each party unmasks its own exact gradient, adds its own L2 term and steps.

After each epoch B sends ``lr.epoch_end`` (stop or continue).

What each party learns, per batch, is what it learns in logistic regression with
``a = 1`` (docs/linreg.md): the bank its own gradient ``[X_b | 1]^T d / |batch|`` --
equivalently the ``d_b + 1`` sums ``[X_b | 1]^T z_p`` -- and the batch's exact loss (one
aggregate mixing ``sum(u z_p)``, ``sum(z_p^2)`` and the platform's penalty); the
platform its own gradient ``X_p^T d / |batch|``, ``d_p`` linear combinations of the
target-dependent residual (in the first batch, with ``w = 0``, exactly ``-X_p^T y_s``
on the batch rows). Unlike LR nothing about class weights is sent. At the end (with
``evaluate_train``, and on validation rows if any) the platform discloses its partial
scores ``X_p w_p`` so the bank can report RMSE, MAE and R^2; both model-part digests
are exchanged.

Scoring (:func:`predict`): the platform sends its partial score ``X_p w_p`` per row;
the bank returns ``mean + scale * (X_b w_b + b + z_p)`` in the target's units.
"""

from __future__ import annotations

import time

import numpy as np

from federation.link import ProtocolContext
from parties.bank import linear_loop as loop
from parties.common import linreg_common as L
from parties.common import lr_common as C
from parties.common import residuals as R
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.metrics import regression_report
from parties.common.params import ParamError
from parties.common.role import PartyData, RolePolicy
from parties.common.standardize import InputError, Standardizer, as_feature_matrix
from secure_agg.cipher import PrivateCipher

PARTY = "bank"


def train(ctx: ProtocolContext, data: PartyData, params: L.LinRegParams,
          cipher: PrivateCipher, policy: RolePolicy) -> TrainOutcome:
    """Train jointly with the platform; returns the bank's model part and the metrics.
    ``policy.keys`` decides whether the platform's public key is acceptable."""
    return L.guarded(ctx, PARTY, _train, data, params, cipher, policy)


def _target(y, n_rows: int, where: str) -> np.ndarray:
    if y is None:
        raise InputError(f"{where}: the target (label) column is missing")
    arr = np.asarray(y).ravel()
    if arr.size != n_rows:
        raise InputError(f"{where}: {arr.size} target values for {n_rows} feature rows")
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: the target is not numeric (dtype {arr.dtype})") from None
    if not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise InputError(f"{where}: target missing or infinite at row {i}")
    return arr


def _train(ctx, peer, data, p, cipher, policy):
    t_start = time.perf_counter()
    err = None
    try:
        Xm, names = as_feature_matrix(data.X, data.feature_names, "bank training data")
        std = Standardizer.fit(Xm, names, "bank training data", standardize=p.standardize,
                               nan_policy=p.nan_policy)
        Xs = std.transform(Xm, "bank training data")
        n = Xs.shape[0]
        y = _target(data.y, n, "bank training target")
        target = L.TargetScaler.fit(y, p.fit_intercept, "bank training target")
        bs = C.check_batch_size(p, n)
        Xv = yv = None
        if data.X_valid is not None:
            Xvm, _ = as_feature_matrix(data.X_valid, names, "bank validation data")
            Xv = std.transform(Xvm, "bank validation data")
            yv = _target(data.y_valid, Xv.shape[0], "bank validation target")
    except (InputError, ParamError) as exc:
        err = exc
    hello = L.hello(err, PARTY, cipher)
    shown = hello["error"]
    if err is None:
        seed = C.shuffle_seed(p, ctx.rng)
        hello.update({"n_rows": n, "n_valid": 0 if Xv is None else Xv.shape[0],
                      "n_features": Xs.shape[1], "shared": p.shared(),
                      "shuffle_seed": seed.hex()})
    peer.send_json(C.K_HELLO, hello)
    ph = peer.recv_json(C.K_HELLO)
    if err is not None:
        raise L.LinRegError(str(err), shown=shown)
    L.check_peer_hello(hello, ph, p, PARTY, "platform")
    d_p = ph.get("n_features")
    if not isinstance(d_p, int) or not 1 <= d_p <= 100000:
        raise L.LinRegError("platform announced an invalid feature count")
    pk_p = C.peer_cipher(ph.get("key") or {}, cipher, ctx.workers, policy.keys)
    timings = {"setup": time.perf_counter() - t_start}

    d_b = Xs.shape[1]
    job = loop.BankJob(p, R.Squared(L.U_BITS), Xs, target.transform(y), np.ones(n), d_p, bs,
                       seed, cipher, pk_p, Xv, event="linreg.epoch", error=L.LinRegError)
    w, history, stopped, ph_t, _ = loop.train(ctx, peer, job)
    timings["train"] = time.perf_counter() - t_start - timings["setup"]
    timings.update(ph_t)

    t_eval = time.perf_counter()
    epochs_run = len(history)
    metrics: dict = {"epochs_run": epochs_run, "stopped_early": stopped,
                     "final_loss": history[-1]["loss"]}
    for name, z, labels in zip(("train", "valid"), loop.final_predictors(peer, job, w),
                               (y, yv), strict=True):
        if z is not None:
            metrics[name] = regression_report(labels, target.inverse(z))
    timings["evaluate"] = time.perf_counter() - t_eval
    body = {"objective": L.OBJECTIVE, "weights": [float(v) for v in w[:d_b]],
            "intercept": float(w[d_b]), "target": target.to_dict(),
            "standardizer": std.to_dict(), "x_frac_bits": p.x_frac_bits,
            "peer_n_features": d_p, "epochs_run": epochs_run,
            "loss_curve": [h["loss"] for h in history]}
    part = ModelPart(L.ALGORITHM, PARTY, ctx.job_id, p.to_dict(), body, list(names))
    C.exchange_part_digests(peer, part, send_first=True, peer_label="platform")
    timings["total"] = time.perf_counter() - t_start
    return TrainOutcome(part, metrics, history, timings)


def predict(ctx: ProtocolContext, model: ModelPart, X) -> np.ndarray:
    """Score aligned rows: the platform sends its partial scores; returns predictions in
    the target's units."""
    peer = C.Peer(ctx.link)
    Xs = L.scoring_handshake(peer, model, X, PARTY, "platform")
    zp = peer.recv_scores(C.K_PARTIAL_SCORE, Xs.shape[0])
    w = np.asarray(model.body["weights"], dtype=np.float64)
    z = C.linear_predictor(Xs, w) + float(model.body["intercept"]) + zp
    return L.TargetScaler.from_dict(model.body["target"]).inverse(z)
