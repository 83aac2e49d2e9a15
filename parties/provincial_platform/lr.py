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
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.params import ParamError
from parties.common.role import PartyData, RolePolicy
from parties.common.standardize import (
    InputError,
    as_feature_matrix,
    fit_own_columns,
    peer_view,
)
from secure_agg import masking
from secure_agg.cipher import PrivateCipher
from secure_agg.keypolicy import describe_public_key

PARTY = "platform"


def train(ctx: ProtocolContext, data: PartyData, params: C.LRParams, cipher: PrivateCipher,
          policy: RolePolicy) -> TrainOutcome:
    """Train jointly with the bank; returns the platform's model part. ``policy.keys``
    decides whether the bank's public key (scheme, size) is acceptable."""
    peer = C.Peer(ctx.link)
    try:
        return _train(ctx, peer, data.X, data.feature_names, params, cipher, data.X_valid,
                      policy)
    except C.LRError as exc:
        peer.abort(exc.peer_reason or str(exc))  # the peer fails too instead of waiting
        raise
    except (InputError, ParamError) as exc:
        peer.abort(peer_view(exc, PARTY, policy.reveal_feature_names)
                   if isinstance(exc, InputError) else str(exc))
        raise C.LRError(str(exc)) from None


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
    hello = {"version": C.PROTOCOL_VERSION, "ok": err is None, "error": shown,
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
    if curv != C.curvature_mode(p):
        raise C.LRError(f"bank announced residual layout {curv!r}, expected "
                        f"{C.curvature_mode(p)!r}")
    try:
        seed = bytes.fromhex(bh.get("shuffle_seed", ""))
    except (TypeError, ValueError):
        seed = b""
    if len(seed) != 32:
        raise C.LRError("bank announced a malformed shuffle seed")
    pk_b = C.peer_cipher(bh.get("key") or {}, cipher, ctx.workers, policy.keys)
    timings = {"setup": time.perf_counter() - t0}
    return _loop(ctx, peer, p, std, names, Xs, Xv, n, bs, d_b, wbits, curv, seed,
                 cipher, pk_b, timings)


def _loop(ctx, peer, p, std, names, Xs, Xv, n, bs, d_b, wbits, curv, seed, cipher,
          pk_b, timings):
    d_p = Xs.shape[1]
    rng_enc = ctx.rng.child("lr/encrypt")
    # obfuscators one batch ahead: [[z_p]] under the platform's key, and the uniform
    # r^n re-randomising the masked gradient (and the loss slot) under the bank's key
    ahead = C.Ahead(p.epochs, C.batch_sizes(n, bs))
    ahead.add("enc", cipher, rng_enc.child("zp"), lambda m: m)
    ahead.add("rr", pk_b, ctx.rng.child("lr/rerandomize"),
              lambda m: d_p + (0 if curv == "public" else 1), "standard")
    try:
        return _epochs(ctx, peer, p, std, names, Xs, Xv, n, bs, d_b, wbits, curv, seed,
                       cipher, pk_b, timings, ahead, rng_enc)
    finally:
        ahead.close()


def _epochs(ctx, peer, p, std, names, Xs, Xv, n, bs, d_b, wbits, curv, seed, cipher,
            pk_b, timings, ahead, rng_enc):
    d_p = Xs.shape[1]
    FX = p.x_frac_bits
    Xq = C.encode(Xs, FX)
    w = np.zeros(d_p)
    opt = C.Optimizer(p, d_p, np.ones(d_p))
    rng_mask = ctx.rng.child("lr/mask")
    ub, ab = C.u_bits(p.approximation, wbits), C.a_bits(wbits)
    a_const = int(C.encode(np.array([0.25]), C.FD)[0])
    grad_scale = float(2 ** (FX + C.FD + C.FZ))
    loss_scale = float(2 ** (C.FD + C.FZ))
    history: list[dict] = []
    ph = C.Phases()
    best_w = w.copy()
    t_train = time.perf_counter()
    epoch = 0
    for epoch in range(p.epochs):
        t_ep = time.perf_counter()
        for bi, idx in enumerate(C.epoch_batches(seed, epoch, n, bs)):
            m = idx.size
            obf = ahead.batch(epoch, bi)
            zp = Xs[idx] @ w
            C.check_predictor(zp, PARTY, epoch)
            zp_int = C.encode(zp, C.FZ)
            with ph("encrypt"):
                encZ = cipher.encrypt(zp_int, bound_bits=C.ZP_BITS, obfuscators=obf["enc"])
            peer.send_ct(C.K_ENC_ZP, cipher, encZ)
            with ph("wait"):
                U = peer.recv_ct(C.K_ENC_U, pk_b, m, ub)
                A = None
                if curv != "public":
                    A = peer.recv_ct(C.K_ENC_A, pk_b, m if curv == "row" else 1, ab)
            zq = C.encode(zp, C.FQ)
            q_plain = int((zq * zq).sum())
            with ph("homomorphic"):
                if curv == "public":
                    g = pk_b.matvec_t(Xq[idx], pk_b.add_plain(U, zp_int * a_const))
                elif curv == "row":
                    g = pk_b.matvec_t(Xq[idx], pk_b.add(U, pk_b.mul_plain(A, zp_int)))
                else:  # [[mean a]] times the exact X_p^T z_p
                    xz = Xq[idx].astype(object).T.dot(zp_int.astype(object))
                    g = pk_b.add(pk_b.matvec_t(Xq[idx], U),
                                 pk_b.mul_plain(pk_b.take(A, [0] * d_p), [int(v) for v in xz]))
                masked, masks = C.mask(pk_b, g, rng_mask, obf["rr"])
            peer.send_ct(C.K_PLAT_GRAD_CT, pk_b, masked)
            with ph("wait"):
                bvec = peer.recv_ct(C.K_BANK_GRAD_CT, cipher, d_b + 2, cipher.capacity_bits)
            with ph("decrypt"):
                vals = cipher.decrypt(bvec)
            peer.send_ints(C.K_BANK_GRAD_PLAIN, vals[:d_b + 1])
            pen = 2 * m * C.regularization(p, w)
            extra = vals[d_b + 1] + int(round(pen * loss_scale))
            with ph("homomorphic"):
                if curv == "public":
                    lct = pk_b.encrypt([extra + a_const * q_plain], rng_enc)
                else:
                    if curv == "row":
                        lq = pk_b.matvec_t((zq * zq)[:, None], A)
                    else:
                        lq = pk_b.mul_plain(A, [q_plain])
                    lct = pk_b.rerandomize(pk_b.add_plain(lq, [extra]),
                                           obfuscators=obf["rr"], obfuscation="standard")
            peer.send_ct(C.K_LOSS_CT, pk_b, lct)
            with ph("wait"):
                mine = peer.recv_ints(C.K_PLAT_GRAD_PLAIN, d_p, pk_b.n.bit_length())
            g_int = masking.unmask(mine, masks)
            grad = np.array([float(v) for v in g_int]) / grad_scale / m
            w = opt.step(w, grad, epoch)
        if p.early_stopping == "valid_auc":
            peer.send_array(C.K_VALID_SCORES, Xv @ w)
        ctrl = peer.recv_json(C.K_EPOCH_END)
        if ctrl.get("epoch") != epoch + 1:
            raise C.LRError(f"bank is at epoch {ctrl.get('epoch')}, platform at {epoch + 1}")
        if ctrl.get("best"):
            best_w = w.copy()
        rec = {"epoch": epoch + 1, "seconds": time.perf_counter() - t_ep}
        history.append(rec)
        ctx.log("lr.epoch", rec)
        if ctx.progress:
            ctx.progress("training", (epoch + 1) / p.epochs)
        ctx.checkpoint(epoch + 1, {"w": w})
        if ctrl.get("stop"):
            break
    timings["train"] = time.perf_counter() - t_train
    timings.update(ph.rounded())
    if p.early_stopping == "valid_auc":
        w = best_w
    if p.evaluate_train:
        peer.send_array(C.K_TRAIN_SCORES, Xs @ w)
    if Xv is not None:
        peer.send_array(C.K_FINAL_VALID_SCORES, Xv @ w)
    body = {"weights": [float(v) for v in w], "standardizer": std.to_dict(),
            "approximation": p.approximation, "x_frac_bits": p.x_frac_bits,
            "epochs_run": epoch + 1}
    part = ModelPart(C.ALGORITHM, PARTY, ctx.job_id, C.params_dict(p), body, list(names))
    C.exchange_part_digests(peer, part, send_first=False, peer_label="bank")
    return TrainOutcome(part, {"epochs_run": epoch + 1}, history, timings)


def predict(ctx: ProtocolContext, model: ModelPart, X) -> np.ndarray:
    """Send this party's partial scores ``X_p w_p`` to the bank (disclosed); returns them."""
    peer = C.Peer(ctx.link)
    Xs = C.scoring_handshake(peer, model, X, PARTY, "bank")
    z = Xs @ np.asarray(model.body["weights"], dtype=np.float64)
    peer.send_array(C.K_PARTIAL_SCORE, z)
    return z
