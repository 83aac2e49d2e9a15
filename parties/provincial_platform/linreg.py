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
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.params import ParamError
from parties.common.role import PartyData, RolePolicy
from parties.common.standardize import InputError, Standardizer, as_feature_matrix
from secure_agg import masking
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
    try:
        seed = bytes.fromhex(bh.get("shuffle_seed", ""))
    except (TypeError, ValueError):
        seed = b""
    if len(seed) != 32:
        raise L.LinRegError("bank announced a malformed shuffle seed")
    pk_b = C.peer_cipher(bh.get("key") or {}, cipher, ctx.workers, policy.keys)
    timings = {"setup": time.perf_counter() - t0}

    d_p = Xs.shape[1]
    rng_enc = ctx.rng.child("lr/encrypt")
    # obfuscators one batch ahead: [[z_p]] under the platform's key, and the uniform
    # r^n re-randomising the masked gradient under the bank's key
    ahead = C.Ahead(p.epochs, C.batch_sizes(n, bs))
    ahead.add("enc", cipher, rng_enc.child("zp"), lambda m: m)
    ahead.add("rr", pk_b, ctx.rng.child("lr/rerandomize"), lambda m: d_p, "standard")
    try:
        w, history, ph_t = _epochs(ctx, peer, p, Xs, n, bs, d_b, seed, cipher, pk_b,
                                   ahead, rng_enc)
    finally:
        ahead.close()
    timings["train"] = time.perf_counter() - t0 - timings["setup"]
    timings.update(ph_t)
    if p.evaluate_train:
        peer.send_array(C.K_TRAIN_SCORES, Xs @ w)
    if Xv is not None:
        peer.send_array(C.K_FINAL_VALID_SCORES, Xv @ w)
    body = {"weights": [float(v) for v in w], "standardizer": std.to_dict(),
            "x_frac_bits": p.x_frac_bits, "epochs_run": len(history)}
    part = ModelPart(L.ALGORITHM, PARTY, ctx.job_id, p.to_dict(), body, list(names))
    C.exchange_part_digests(peer, part, send_first=False, peer_label="bank")
    return TrainOutcome(part, {"epochs_run": len(history)}, history, timings)


def _epochs(ctx, peer, p, Xs, n, bs, d_b, seed, cipher, pk_b, ahead, rng_enc):
    d_p = Xs.shape[1]
    FX = p.x_frac_bits
    Xq = C.encode(Xs, FX)
    w = np.zeros(d_p)
    opt = C.Optimizer(p, d_p, np.ones(d_p))
    rng_mask = ctx.rng.child("lr/mask")
    grad_scale = float(2 ** (FX + L.FZ))
    loss_scale = float(2 ** L.LOSS_FRAC)
    history: list[dict] = []
    ph = C.Phases()
    for epoch in range(p.epochs):
        t_ep = time.perf_counter()
        for bi, idx in enumerate(C.epoch_batches(seed, epoch, n, bs)):
            m = idx.size
            obf = ahead.batch(epoch, bi)
            zp = Xs[idx] @ w
            C.check_predictor(zp, PARTY, epoch)
            zp_int = C.encode(zp, L.FZ)
            with ph("encrypt"):
                encZ = cipher.encrypt(zp_int, bound_bits=C.ZP_BITS, obfuscators=obf["enc"])
            peer.send_ct(C.K_ENC_ZP, cipher, encZ)
            with ph("wait"):
                U = peer.recv_ct(C.K_ENC_U, pk_b, m, L.U_BITS)
            with ph("homomorphic"):
                g = pk_b.matvec_t(Xq[idx], pk_b.add_plain(U, zp_int))
                masked, masks = C.mask(pk_b, g, rng_mask, obf["rr"])
            peer.send_ct(C.K_PLAT_GRAD_CT, pk_b, masked)
            with ph("wait"):
                bvec = peer.recv_ct(C.K_BANK_GRAD_CT, cipher, d_b + 2, cipher.capacity_bits)
            with ph("decrypt"):
                vals = cipher.decrypt(bvec)
            peer.send_ints(C.K_BANK_GRAD_PLAIN, vals[:d_b + 1])
            # the loss slot: v = 2 sum(u z_p) + mask (decrypted, meaningless here) plus
            # sum(z_p^2) and this party's penalty, sent back under the bank's key
            zz = int((zp_int.astype(object) ** 2).sum())
            pen = int(round(2 * m * C.regularization(p, w) * loss_scale))
            with ph("encrypt"):
                lct = pk_b.encrypt([vals[d_b + 1] + zz + pen], rng_enc)
            peer.send_ct(C.K_LOSS_CT, pk_b, lct)
            with ph("wait"):
                mine = peer.recv_ints(C.K_PLAT_GRAD_PLAIN, d_p, pk_b.n.bit_length())
            g_int = masking.unmask(mine, masks)
            grad = np.array([float(v) for v in g_int]) / grad_scale / m
            w = opt.step(w, grad, epoch)
        ctrl = peer.recv_json(C.K_EPOCH_END)
        if ctrl.get("epoch") != epoch + 1:
            raise L.LinRegError(f"bank is at epoch {ctrl.get('epoch')}, platform at "
                                f"{epoch + 1}")
        rec = {"epoch": epoch + 1, "seconds": time.perf_counter() - t_ep}
        history.append(rec)
        ctx.log("linreg.epoch", rec)
        if ctx.progress:
            ctx.progress("training", (epoch + 1) / p.epochs)
        ctx.checkpoint(epoch + 1, {"w": w})
        if ctrl.get("stop"):
            break
    return w, history, ph.rounded()


def predict(ctx: ProtocolContext, model: ModelPart, X) -> np.ndarray:
    """Send this party's partial scores ``X_p w_p`` to the bank (disclosed); returns them."""
    peer = C.Peer(ctx.link)
    Xs = L.scoring_handshake(peer, model, X, PARTY, "bank")
    z = Xs @ np.asarray(model.body["weights"], dtype=np.float64)
    peer.send_array(C.K_PARTIAL_SCORE, z)
    return z
