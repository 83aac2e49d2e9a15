"""The platform's epoch loop of the linear-model protocol, shared by logistic regression
(binary and multiclass) and linear regression (the bank's side, message by message,
is ``parties/bank/linear_loop.py``; what each party learns is in docs/lr.md).

Per mini-batch, for ``K`` residual columns (class-major), the platform

1. sends ``[[z_p]]_P`` (``m*K``, under its own key);
2. receives ``[[U]]_B`` and the curvature (its pattern, per row or batch mean, under
   the bank's key; nothing when public), forms ``[[d_k]]_B = [[U_k]]_B + sum_j
   z_pj [[A_kj]]_B`` (batch mean: ``X_p^T [[U_k]] + sum_j [[A_kj]] X_p^T z_pj``) and its
   masked, re-randomised gradient ``[[X_p^T d_k + R]]_B`` for every column;
3. decrypts the bank's masked vector, returns it, and folds its own loss terms
   (``z_p^T A z_p`` under the bank's key, and its penalty) into the loss slot without
   seeing the loss;
4. gets its masked gradient back in plaintext, unmasks it and steps its optimiser.

It learns its own gradient, the public sizes, ``K`` and the batch schedule; never the
labels, the bank's predictor, the residual or the loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from parties.common import linear_optim as O
from parties.common import lr_common as C
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.residuals import Layout
from secure_agg import masking

PARTY = "platform"


@dataclass
class PlatformJob:
    """What the loop needs: params, the job's layout, this party's standardised rows,
    the bank's feature count, batch schedule and both ciphers."""

    p: object
    layout: Layout
    Xs: np.ndarray
    d_b: int
    bs: int
    seed: bytes
    cipher: object
    pk_b: object
    Xv: np.ndarray | None = None
    event: str = "lr.epoch"
    error: type = C.LRError


def scores(X: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """Partial scores of the class-major weights: ``(rows,)`` for one column, else
    ``(rows, K)``."""
    if k == 1:
        return X @ w
    d = X.shape[1]
    return np.column_stack([X @ w[c * d:(c + 1) * d] for c in range(k)])


def train(ctx, peer: C.Peer, job: PlatformJob):
    """Run the epochs: -> (class-major weights, history, phase timings)."""
    lay = job.layout
    d_p = job.Xs.shape[1]
    n = job.Xs.shape[0]
    rng_enc = ctx.rng.child("lr/encrypt")
    # obfuscators one batch ahead: [[z_p]] under the platform's key, and the uniform
    # r^n re-randomising the masked gradient (and the loss slot) under the bank's key
    ahead = C.Ahead(job.p.epochs, C.batch_sizes(n, job.bs))
    ahead.add("enc", job.cipher, rng_enc.child("zp"), lambda m: m * lay.k)
    ahead.add("rr", job.pk_b, ctx.rng.child("lr/rerandomize"),
              lambda m: lay.k * d_p + (0 if lay.curvature == "public" else 1), "standard")
    try:
        return _epochs(ctx, peer, job, ahead, rng_enc)
    finally:
        ahead.close()


def finish(ctx, peer: C.Peer, job: PlatformJob, w, history, timings, algorithm: str,
           params: dict, body: dict, names) -> TrainOutcome:
    """Disclose the final partial scores (training rows with ``evaluate_train``,
    validation rows if any), exchange part digests, return the platform's outcome."""
    k = job.layout.k
    if job.p.evaluate_train:
        peer.send_array(C.K_TRAIN_SCORES, scores(job.Xs, w, k))
    if job.Xv is not None:
        peer.send_array(C.K_FINAL_VALID_SCORES, scores(job.Xv, w, k))
    part = ModelPart(algorithm, PARTY, ctx.job_id, params, body, list(names))
    C.exchange_part_digests(peer, part, send_first=False, peer_label="bank")
    return TrainOutcome(part, {"epochs_run": len(history)}, history, timings)


def _sum(pk, terms):
    acc = terms[0]
    for t in terms[1:]:
        acc = pk.add(acc, t)
    return acc


def _gradient(pk, lay: Layout, Xq, U, A, zp_int, m: int):
    """``[[X_p^T d_k]]_B`` for every column (concatenated)."""
    K = lay.k
    Us = U if K == 1 else [pk.take(U, range(c * m, (c + 1) * m)) for c in range(K)]
    Us = [Us] if K == 1 else Us
    out = []
    Xo = Xq.astype(object) if lay.curvature == "mean" else None
    for k in range(K):
        js = [(j, lay.entry(k, j)) for j in range(K) if lay.entry(k, j) is not None]
        if lay.curvature == "public":
            shift = zp_int[js[0][0]] * lay.public[js[0][1]]
            for j, e in js[1:]:
                shift = shift + zp_int[j] * lay.public[e]
            out.append(pk.matvec_t(Xq, pk.add_plain(Us[k], shift)))
        elif lay.curvature == "row":
            terms = [pk.mul_plain(pk.take(A, range(e * m, (e + 1) * m)) if len(lay.pattern) > 1
                                  else A, zp_int[j]) for j, e in js]
            out.append(pk.matvec_t(Xq, pk.add(Us[k], _sum(pk, terms))))
        else:  # [[mean a]] times the exact X_p^T z_p
            d_p = Xq.shape[1]
            terms = []
            for j, e in js:
                xz = Xo.T.dot(zp_int[j].astype(object))
                terms.append(pk.mul_plain(pk.take(A, [e] * d_p), [int(v) for v in xz]))
            out.append(pk.add(pk.matvec_t(Xq, Us[k]), _sum(pk, terms)))
    return out[0] if K == 1 else pk.concat(out)


def _loss_slot(pk, lay: Layout, A, zps, extra: int, obf, rng_enc, m: int):
    """``[[v + z_p^T A z_p + penalty]]_B`` (at ``loss_frac`` bits), re-randomised."""
    zq = [C.encode(z, lay.zq_frac) for z in zps]
    if lay.curvature == "public":
        quad = sum(lay.mult(e) * lay.public[e] *
                   int((zq[k].astype(object) * zq[j].astype(object)).sum())
                   for e, (k, j) in enumerate(lay.pattern))
        return pk.encrypt([extra + quad], rng_enc)
    if lay.curvature == "row":
        coef = np.concatenate([lay.mult(e) * zq[k] * zq[j]
                               for e, (k, j) in enumerate(lay.pattern)])
        lq = pk.matvec_t(coef[:, None], A)
    elif len(lay.pattern) == 1:
        lq = pk.mul_plain(A, [int((zq[0] * zq[0]).sum())])
    else:
        lq = _sum(pk, [pk.mul_plain(pk.take(A, [e]), [lay.mult(e) * int(
            (zq[k].astype(object) * zq[j].astype(object)).sum())])
            for e, (k, j) in enumerate(lay.pattern)])
    return pk.rerandomize(pk.add_plain(lq, [extra]), obfuscators=obf["rr"],
                          obfuscation="standard")


def _epochs(ctx, peer, job: PlatformJob, ahead, rng_enc):
    p, lay, cipher, pk_b = job.p, job.layout, job.cipher, job.pk_b
    n, d_p = job.Xs.shape
    K, d_b = lay.k, job.d_b
    Xq = C.encode(job.Xs, p.x_frac_bits)
    w = np.zeros(K * d_p)
    opt = O.Optimizer(p, K * d_p, np.ones(K * d_p))
    rng_mask = ctx.rng.child("lr/mask")
    grad_scale = float(2 ** (p.x_frac_bits + lay.u_frac))
    loss_scale = float(2 ** lay.loss_frac)
    history: list[dict] = []
    ph = O.Phases()
    best_w = w.copy()
    epoch = 0
    for epoch in range(p.epochs):
        t_ep = time.perf_counter()
        for bi, idx in enumerate(C.epoch_batches(job.seed, epoch, n, job.bs)):
            m = idx.size
            obf = ahead.batch(epoch, bi)
            z = scores(job.Xs[idx], w, K)
            C.check_predictor(z, PARTY, epoch)
            zps = [z] if K == 1 else [z[:, c] for c in range(K)]
            zp_int = [C.encode(zc, C.FZ) for zc in zps]
            with ph("encrypt"):
                encZ = cipher.encrypt(zp_int[0] if K == 1 else np.concatenate(zp_int),
                                      bound_bits=C.ZP_BITS, obfuscators=obf["enc"])
            peer.send_ct(C.K_ENC_ZP, cipher, encZ)
            with ph("wait"):
                U = peer.recv_ct(C.K_ENC_U, pk_b, m * K, lay.u_bits)
                A = None
                if lay.curvature != "public":
                    A = peer.recv_ct(C.K_ENC_A, pk_b, lay.a_count(m), lay.a_bits)
            with ph("homomorphic"):
                g = _gradient(pk_b, lay, Xq[idx], U, A, zp_int, m)
                masked, masks = C.mask(pk_b, g, rng_mask, obf["rr"])
            peer.send_ct(C.K_PLAT_GRAD_CT, pk_b, masked)
            g_len = K * (d_b + 1)
            with ph("wait"):
                bvec = peer.recv_ct(C.K_BANK_GRAD_CT, cipher, g_len + 1, cipher.capacity_bits)
            with ph("decrypt"):
                vals = cipher.decrypt(bvec)
            peer.send_ints(C.K_BANK_GRAD_PLAIN, vals[:g_len])
            # the loss slot: v = 2 sum(u z_p) + mask (decrypted, meaningless here) plus
            # z_p^T A z_p and this party's penalty, sent back under the bank's key
            pen = 2 * m * O.regularization(p, w)
            extra = vals[g_len] + int(round(pen * loss_scale))
            with ph("homomorphic"):
                lct = _loss_slot(pk_b, lay, A, zps, extra, obf, rng_enc, m)
            peer.send_ct(C.K_LOSS_CT, pk_b, lct)
            with ph("wait"):
                mine = peer.recv_ints(C.K_PLAT_GRAD_PLAIN, K * d_p, pk_b.n.bit_length())
            g_int = masking.unmask(mine, masks)
            grad = np.array([float(v) for v in g_int]) / grad_scale / m
            w = opt.step(w, grad, epoch)
        if p.early_stopping == "valid_auc":
            peer.send_array(C.K_VALID_SCORES, scores(job.Xv, w, K))
        ctrl = peer.recv_json(C.K_EPOCH_END)
        if ctrl.get("epoch") != epoch + 1:
            raise job.error(f"bank is at epoch {ctrl.get('epoch')}, platform at {epoch + 1}")
        if ctrl.get("best"):
            best_w = w.copy()
        rec = {"epoch": epoch + 1, "seconds": time.perf_counter() - t_ep}
        history.append(rec)
        ctx.log(job.event, rec)
        if ctx.progress:
            ctx.progress("training", (epoch + 1) / p.epochs)
        ctx.checkpoint(epoch + 1, {"w": w})
        if ctrl.get("stop"):
            break
    if p.early_stopping == "valid_auc":
        w = best_w
    return w, history, ph.rounded()
