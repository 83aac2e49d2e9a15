"""The platform's epoch loop of the linear-model protocol, shared by logistic regression
(binary and multiclass) and linear regression (the bank's side, message by message,
is ``parties/bank/linear_loop.py``; what each party learns is in docs/lr.md).

Per mini-batch, for ``K`` residual columns (class-major), the platform

1. sends ``[[z_p]]_P`` (``m*K``, under its own key);
2. receives ``[[U]]_B`` and the curvature (its pattern, per row or batch mean, under
   the bank's key; nothing when public), forms ``[[d_k]]_B = [[U_k]]_B + sum_j
   z_pj [[A_kj]]_B`` (batch mean: ``X_p^T [[U_k]] + sum_j [[A_kj]] X_p^T z_pj``) and its
   masked, re-randomised gradient ``[[X_p^T d_k + R]]_B`` for every column (a batch of
   more than 4096 rows: step 1 and 2 chunk by chunk, the sums folded per chunk as the
   bank's chunks arrive, ``parties.common.lr_stream``);
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
from parties.common import lr_stream as S
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
    ahead = S.Ahead(job.p.epochs, C.batch_sizes(n, job.bs))
    ahead.add("enc", job.cipher, rng_enc.child("zp"),
              lambda m: [(hi - lo) * lay.k for lo, hi in S.spans(m)])
    ahead.add("rr", job.pk_b, ctx.rng.child("lr/rerandomize"),
              lambda m: [lay.k * d_p + (0 if lay.curvature == "public" else 1)], "standard")
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


def _chunk_gradient(pk, lay: Layout, Xq, U, A, zc, r: int, xz: list | None):
    """One chunk's ``[[X_p^T d_k]]_B`` for every column (concatenated); with a batch-mean
    curvature only ``X_p^T [[U_k]]``, the exact ``X_p^T z_pj`` added to ``xz[j]``."""
    K = lay.k
    Us = [U] if K == 1 else [pk.take(U, range(c * r, (c + 1) * r)) for c in range(K)]
    out = []
    for k in range(K):
        js = [(j, lay.entry(k, j)) for j in range(K) if lay.entry(k, j) is not None]
        if lay.curvature == "public":
            shift = zc[js[0][0]] * lay.public[js[0][1]]
            for j, e in js[1:]:
                shift = shift + zc[j] * lay.public[e]
            out.append(pk.matvec_t(Xq, pk.add_plain(Us[k], shift)))
        elif lay.curvature == "row":
            terms = [pk.mul_plain(pk.take(A, range(e * r, (e + 1) * r)) if len(lay.pattern) > 1
                                  else A, zc[j]) for j, e in js]
            out.append(pk.matvec_t(Xq, pk.add(Us[k], _sum(pk, terms))))
        else:
            out.append(pk.matvec_t(Xq, Us[k]))
    if xz is not None:
        Xo = Xq.astype(object)
        for j in range(K):
            xz[j] = xz[j] + Xo.T.dot(zc[j].astype(object))
    return out[0] if K == 1 else pk.concat(out)


def _mean_terms(pk, lay: Layout, A, xz: list, d_p: int):
    """``[[mean a_kj]] X_p^T z_pj`` summed over ``j``, for every column (concatenated)."""
    out = []
    for k in range(lay.k):
        out.append(_sum(pk, [pk.mul_plain(pk.take(A, [e] * d_p), [int(v) for v in xz[j]])
                             for j in range(lay.k) if (e := lay.entry(k, j)) is not None]))
    return out[0] if lay.k == 1 else pk.concat(out)


def _row_loss(pk, lay: Layout, A, zq: list, ch):
    """One chunk's ``[[z_p^T A z_p]]_B`` with per-row curvature."""
    coef = np.concatenate([lay.mult(e) * zq[k][ch.lo:ch.hi] * zq[j][ch.lo:ch.hi]
                           for e, (k, j) in enumerate(lay.pattern)])
    return pk.matvec_t(coef[:, None], A)


def _batch(job: PlatformJob, w, idx, ahead, key, peer, rng_mask, rng_enc, ph):
    """One mini-batch, its per-row vectors chunk by chunk (``parties.common.lr_stream``):
    -> the gradient."""
    p, lay, cipher, pk_b = job.p, job.layout, job.cipher, job.pk_b
    epoch, bi = key
    m = idx.size
    d_p = job.Xs.shape[1]
    K, d_b = lay.k, job.d_b
    z = scores(S.batch_rows(job.Xs, idx), w, K)
    C.check_predictor(z, PARTY, epoch)
    zps = [z] if K == 1 else [z[:, c] for c in range(K)]
    zp_int = [C.encode(zc, C.FZ) for zc in zps]
    zq = [C.encode(zc, lay.zq_frac) for zc in zps] if lay.curvature == "row" else None
    xz = [0] * K if lay.curvature == "mean" else None
    grads, losses, A = [], [], None
    for ch in S.chunks(epoch, bi, m):
        zc = [v[ch.lo:ch.hi] for v in zp_int]
        with ph("encrypt"):
            encZ = cipher.encrypt(zc[0] if K == 1 else np.concatenate(zc), bound_bits=C.ZP_BITS,
                                  obfuscators=ahead.take("enc", epoch, bi, ch.index))
        S.send(peer, C.K_ENC_ZP, cipher, encZ, ch)
        with ph("wait"):
            U = S.recv(peer, C.K_ENC_U, pk_b, ch.rows * K, lay.u_bits, ch)
            Ac = None
            if lay.curvature == "row":
                Ac = S.recv(peer, C.K_ENC_A, pk_b, lay.a_count(ch.rows), lay.a_bits, ch)
            elif lay.curvature == "mean" and ch.last:
                A = peer.recv_ct(C.K_ENC_A, pk_b, lay.a_count(m), lay.a_bits)
        with ph("homomorphic"):
            Xq = C.encode(job.Xs[idx[ch.lo:ch.hi]], p.x_frac_bits)
            grads.append(_chunk_gradient(pk_b, lay, Xq, U, Ac, zc, ch.rows, xz))
            if Ac is not None:
                losses.append(_row_loss(pk_b, lay, Ac, zq, ch))
    obf = {"rr": ahead.take("rr", epoch, bi)}
    with ph("homomorphic"):
        g = S.total(pk_b, grads)
        if xz is not None:
            g = pk_b.add(g, _mean_terms(pk_b, lay, A, xz, d_p))
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
    extra = vals[g_len] + int(round(pen * float(2 ** lay.loss_frac)))
    with ph("homomorphic"):
        lq = S.total(pk_b, losses) if losses else None
        lct = _loss_slot(pk_b, lay, A, lq, zps, extra, obf, rng_enc)
    peer.send_ct(C.K_LOSS_CT, pk_b, lct)
    with ph("wait"):
        mine = peer.recv_ints(C.K_PLAT_GRAD_PLAIN, K * d_p, pk_b.n.bit_length())
    g_int = masking.unmask(mine, masks)
    return np.array([float(v) for v in g_int]) / float(2 ** (p.x_frac_bits + lay.u_frac)) / m


def _loss_slot(pk, lay: Layout, A, lq, zps, extra: int, obf, rng_enc):
    """``[[v + z_p^T A z_p + penalty]]_B`` (at ``loss_frac`` bits), re-randomised;
    ``lq``: the per-row curvature's ``[[z_p^T A z_p]]`` summed over the chunks."""
    zq = [C.encode(z, lay.zq_frac) for z in zps]
    if lay.curvature == "public":
        quad = sum(lay.mult(e) * lay.public[e] *
                   int((zq[k].astype(object) * zq[j].astype(object)).sum())
                   for e, (k, j) in enumerate(lay.pattern))
        return pk.encrypt([extra + quad], rng_enc)
    if lay.curvature == "mean" and len(lay.pattern) == 1:
        lq = pk.mul_plain(A, [int((zq[0] * zq[0]).sum())])
    elif lay.curvature == "mean":
        lq = _sum(pk, [pk.mul_plain(pk.take(A, [e]), [lay.mult(e) * int(
            (zq[k].astype(object) * zq[j].astype(object)).sum())])
            for e, (k, j) in enumerate(lay.pattern)])
    return pk.rerandomize(pk.add_plain(lq, [extra]), obfuscators=obf["rr"],
                          obfuscation="standard")


def _epochs(ctx, peer, job: PlatformJob, ahead, rng_enc):
    p, K = job.p, job.layout.k
    n, d_p = job.Xs.shape
    w = np.zeros(K * d_p)
    opt = O.Optimizer(p, K * d_p, np.ones(K * d_p))
    rng_mask = ctx.rng.child("lr/mask")
    history: list[dict] = []
    ph = O.Phases()
    best_w = w.copy()
    epoch = 0
    for epoch in range(p.epochs):
        t_ep = time.perf_counter()
        for bi, idx in enumerate(C.epoch_batches(job.seed, epoch, n, job.bs)):
            grad = _batch(job, w, idx, ahead, (epoch, bi), peer, rng_mask, rng_enc, ph)
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
