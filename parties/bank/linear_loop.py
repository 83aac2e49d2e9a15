"""The bank's epoch loop of the linear-model protocol, shared by logistic regression
(binary and multiclass) and linear regression; what differs is the residual strategy
(``parties.common.residuals``).

Per mini-batch, for ``K`` residual columns (class-major: all batch rows of column 0,
then column 1, ...):

1. B -> P ``lr.enc_u`` ``[[U]]_B`` (``m*K``), ``lr.enc_a`` the curvature (its pattern,
   per row or batch mean; nothing when public); P -> B ``lr.enc_zp`` ``[[z_p]]_P``.
2. B forms ``[[d_k]]_P = U_k + sum_j A_kj [[z_pj]]_P`` (per-row ``A``),
   ``[[ [X_b 1]^T d_k ]]_P`` for every column and the loss piece ``[[2 sum u z_p]]_P``;
   masks (40 bits wider than the bound), re-randomises, sends ``lr.bank_grad_ct``.
3. B receives P's masked gradient ``lr.platform_grad_ct`` (``K*d_p``), its own
   decrypted masked vector ``lr.bank_grad_plain`` and the loss slot ``lr.loss_ct``;
   decrypts P's gradient and the slot, returns the gradient (``lr.platform_grad_plain``).
4. unmasks its gradient and steps its optimiser.

After each epoch ``lr.epoch_end`` (stop or not, best-so-far for valid-AUC stopping).
What each party learns is in docs/lr.md; ``K = 1`` is the binary / regression protocol
message for message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from parties.common import linear_optim as O
from parties.common import lr_common as C
from parties.common.residuals import Layout
from secure_agg import masking

PARTY = "bank"


@dataclass
class BankJob:
    """What the loop needs: params, strategy, this party's standardised rows, labels,
    row weights, the peer's feature count, batch schedule and both ciphers."""

    p: object
    residual: object             #: parties.common.residuals strategy
    Xs: np.ndarray
    y: np.ndarray
    sw: np.ndarray
    d_p: int
    bs: int
    seed: bytes
    cipher: object
    pk_p: object
    Xv: np.ndarray | None = None
    valid_metric: object = None  #: (validation z) -> score, for early_stopping valid_auc
    event: str = "lr.epoch"
    error: type = C.LRError


def cols(vec, m: int, k: int, pk) -> list:
    """The ``k`` class-major columns of a ciphertext vector of ``m * k``."""
    return [vec] if k == 1 else [pk.take(vec, range(c * m, (c + 1) * m)) for c in range(k)]


def scores(X: np.ndarray, w: np.ndarray, k: int, intercept: bool) -> np.ndarray:
    """(rows, K) predictors of the bank's class-major weights ``[w_k | b_k]``."""
    d = X.shape[1]
    return np.column_stack([X @ w[c * (d + 1):c * (d + 1) + d] +
                            (w[c * (d + 1) + d] if intercept else 0.0) for c in range(k)])


def train(ctx, peer: C.Peer, job: BankJob):
    """Run the epochs: -> (weights class-major ``[w_k | b_k]``, history, stopped early,
    phase timings, epochs run)."""
    lay: Layout = job.residual.layout
    d_b = job.Xs.shape[1]
    n = job.Xs.shape[0]
    # obfuscators one batch ahead: [[u]], [[a]] under the bank's key, and the uniform
    # r^n re-randomising the masked vector under the platform's key
    ahead = C.Ahead(job.p.epochs, C.batch_sizes(n, job.bs))
    ahead.add("enc", job.cipher, ctx.rng.child("lr/encrypt"),
              lambda m: m * lay.k + lay.a_count(m))
    ahead.add("rr", job.pk_p, ctx.rng.child("lr/rerandomize"),
              lambda m: lay.k * (d_b + 1) + 1, "standard")
    try:
        return _epochs(ctx, peer, job, lay, ahead)
    finally:
        ahead.close()


def final_predictors(peer: C.Peer, job: BankJob, w: np.ndarray):
    """The joint predictors ``z_b + z_p`` on the training rows (with ``evaluate_train``)
    and the validation rows (if any), from the platform's disclosed partial scores:
    ``(rows,)`` for one column, else ``(rows, K)``; None where nothing was sent."""
    k = job.residual.layout.k
    out = []
    for kind, X, on in ((C.K_TRAIN_SCORES, job.Xs, job.p.evaluate_train),
                        (C.K_FINAL_VALID_SCORES, job.Xv, job.Xv is not None)):
        if not on:
            out.append(None)
            continue
        z = scores(X, w, k, True) + peer.recv_scores(kind, X.shape[0], k).reshape(-1, k)
        out.append(z[:, 0] if k == 1 else z)
    return tuple(out)


def _batch(job: BankJob, lay: Layout, w, idx, Xaug, obf, peer, rng_mask, ph, epoch):
    """One mini-batch: -> (2 * loss sum on the batch, gradient)."""
    p, cipher, pk_p, K = job.p, job.cipher, job.pk_p, lay.k
    m = idx.size
    d_b = job.Xs.shape[1]
    zb = scores(job.Xs[idx], w, K, p.fit_intercept)
    C.check_predictor(zb, PARTY, epoch)
    two_c0, u, a = job.residual.coefficients(zb, job.y[idx], job.sw[idx])
    U = np.ascontiguousarray(C.encode(u, lay.u_frac).T).ravel()
    ul = np.ascontiguousarray(C.encode(u, lay.loss_frac - C.FZ).T).ravel()
    with ph("encrypt"):
        encU = cipher.encrypt(U, bound_bits=lay.u_bits, obfuscators=obf["enc"])
    peer.send_ct(C.K_ENC_U, cipher, encU)
    a_int = {}
    if lay.curvature == "public":
        a_int = {e: np.array([v]) for e, v in zip(lay.pattern, lay.public, strict=True)}
    elif a is not None:
        a_int = {e: C.encode(a[e], lay.a_frac) for e in lay.pattern}
        if lay.curvature == "row":
            a_send = np.concatenate([a_int[e] for e in lay.pattern])
        else:
            a_send = C.encode(np.array([a[e].mean() for e in lay.pattern]), lay.a_frac)
        with ph("encrypt"):
            encA = cipher.encrypt(a_send, bound_bits=lay.a_bits, obfuscators=obf["enc"])
        peer.send_ct(C.K_ENC_A, cipher, encA)
    with ph("wait"):
        zp = peer.recv_ct(C.K_ENC_ZP, pk_p, m * K, C.ZP_BITS)
    with ph("homomorphic"):
        zps = cols(zp, m, K, pk_p)
        parts = []
        for k in range(K):
            Uk = U[k * m:(k + 1) * m]
            if lay.identity:
                dct = pk_p.add_plain(zps[k], Uk)
            else:
                terms = [pk_p.mul_plain(zps[j], a_int[e]) for j in range(K)
                         if (e := _key(lay, k, j)) is not None]
                acc = terms[0]
                for t in terms[1:]:
                    acc = pk_p.add(acc, t)
                dct = pk_p.add_plain(acc, Uk)
            parts.append(pk_p.matvec_t(Xaug[idx], dct))
        parts.append(pk_p.matvec_t((2 * ul)[:, None], zp))
        masked, masks = C.mask(pk_p, pk_p.concat(parts), rng_mask, obf["rr"])
    peer.send_ct(C.K_BANK_GRAD_CT, pk_p, masked)
    g_len = K * (d_b + 1)
    with ph("wait"):
        pg = peer.recv_ct(C.K_PLAT_GRAD_CT, cipher, K * job.d_p, cipher.capacity_bits)
        mine = peer.recv_ints(C.K_BANK_GRAD_PLAIN, g_len, pk_p.n.bit_length())
        lct = peer.recv_ct(C.K_LOSS_CT, cipher, 1, cipher.capacity_bits)
    with ph("decrypt"):
        dec = cipher.decrypt(cipher.concat([pg, lct]))
    peer.send_ints(C.K_PLAT_GRAD_PLAIN, dec[:K * job.d_p])
    g_int = masking.unmask(mine, masks[:g_len])
    grad = np.array([float(v) for v in g_int]) / float(2 ** (p.x_frac_bits + lay.u_frac)) / m
    if not p.fit_intercept:
        grad[d_b::d_b + 1] = 0.0
    return two_c0 + (dec[K * job.d_p] - masks[g_len]) / float(2 ** lay.loss_frac), grad


def _key(lay: Layout, k: int, j: int):
    """The (k, j) curvature key the bank holds per row, or None if that entry is 0."""
    return None if lay.entry(k, j) is None else (min(k, j), max(k, j))


def _epochs(ctx, peer, job: BankJob, lay: Layout, ahead):
    p = job.p
    n, d_b = job.Xs.shape
    FX = p.x_frac_bits
    Xq = C.encode(job.Xs, FX)
    ones = np.full((n, 1), (1 << FX) if p.fit_intercept else 0, dtype=np.int64)
    Xaug = np.hstack([Xq, ones])
    K = lay.k
    w = np.zeros(K * (d_b + 1))  # class-major [w_k | b_k]
    opt = O.Optimizer(p, K * (d_b + 1), np.tile(np.r_[np.ones(d_b), 0.0], K))
    rng_mask = ctx.rng.child("lr/mask")
    history: list[dict] = []
    ph = O.Phases()
    best = {"score": -1.0, "w": w.copy()}
    stale = 0
    prev_loss = first_loss = None
    stopped = False
    epoch = 0
    for epoch in range(p.epochs):
        t_ep = time.perf_counter()
        loss_sum = 0.0
        for bi, idx in enumerate(C.epoch_batches(job.seed, epoch, n, job.bs)):
            m = idx.size
            two_l, grad = _batch(job, lay, w, idx, Xaug, ahead.batch(epoch, bi), peer,
                                 rng_mask, ph, epoch)
            reg = sum(O.regularization(p, w[c * (d_b + 1):c * (d_b + 1) + d_b])
                      for c in range(K))
            loss_sum += (0.5 * two_l / m + reg) * m
            w = opt.step(w, grad, epoch)
        loss = loss_sum / n
        rec = {"epoch": epoch + 1, "loss": loss, "seconds": time.perf_counter() - t_ep}
        if not np.isfinite(loss) or (first_loss is not None and loss > 1e3 * max(first_loss, 1)):
            raise job.error(f"training diverged at epoch {epoch + 1}: loss {loss:g}; "
                            "lower learning_rate")
        first_loss = loss if first_loss is None else first_loss
        stop = new_best = False
        if p.early_stopping == "valid_auc":
            zpv = peer.recv_scores(C.K_VALID_SCORES, job.Xv.shape[0], K).reshape(-1, K)
            score = job.valid_metric(scores(job.Xv, w, K, True) + zpv)
            rec["valid_auc"] = score
            if score > best["score"] + p.tol:
                best = {"score": score, "w": w.copy()}
                new_best, stale = True, 0
            else:
                stale += 1
                stop = stale >= p.patience
        elif p.early_stopping == "loss" and prev_loss is not None:
            stop = abs(prev_loss - loss) <= p.tol * max(1.0, abs(prev_loss))
        prev_loss = loss
        history.append(rec)
        ctx.log(job.event, rec)
        if ctx.progress:
            ctx.progress("training", (epoch + 1) / p.epochs)
        last = stop or epoch + 1 == p.epochs
        peer.send_json(C.K_EPOCH_END, {"epoch": epoch + 1, "stop": bool(last),
                                       "best": new_best})
        ctx.checkpoint(epoch + 1, {"w": w})
        stopped = stop
        if last:
            break
    if p.early_stopping == "valid_auc":
        w = best["w"]
    return w, history, stopped, ph.rounded(), epoch + 1
