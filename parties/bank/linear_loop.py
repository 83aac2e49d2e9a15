"""The bank's epoch loop of the linear-model protocol, shared by logistic regression
(binary and multiclass) and linear regression; what differs is the residual strategy
(``parties.common.residuals``).

Per mini-batch, for ``K`` residual columns (class-major: all batch rows of column 0,
then column 1, ...):

1. B -> P ``lr.enc_u`` ``[[U]]_B`` (``m*K``), ``lr.enc_a`` the curvature (its pattern,
   per row or batch mean; nothing when public); P -> B ``lr.enc_zp`` ``[[z_p]]_P``.
   A batch of more than 4096 rows sends the per-row ones in 4096-row chunks
   (``lr.enc_*_part``, ``parties.common.lr_stream``), in lockstep with step 2.
2. B forms ``[[d_k]]_P = U_k + sum_j A_kj [[z_pj]]_P`` (per-row ``A``),
   ``[[ [X_b 1]^T d_k ]]_P`` for every column and the loss piece ``[[2 sum u z_p]]_P``;
   (summed chunk by chunk as ``[[z_p]]_P`` arrives), masks (40 bits wider than the
   bound), re-randomises, sends ``lr.bank_grad_ct``.
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
from parties.common import lr_stream as S
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
    ahead = S.Ahead(job.p.epochs, C.batch_sizes(n, job.bs))
    ahead.add("enc", job.cipher, ctx.rng.child("lr/encrypt"), lambda m: enc_pieces(lay, m))
    ahead.add("rr", job.pk_p, ctx.rng.child("lr/rerandomize"),
              lambda m: [lay.k * (d_b + 1) + 1], "standard")
    try:
        return _epochs(ctx, peer, job, lay, ahead)
    finally:
        ahead.close()


def enc_pieces(lay: Layout, m: int) -> list[int]:
    """The bank's encryptions per chunk of a batch of ``m`` rows: the chunk's ``U``,
    its per-row curvature, and after the last chunk's ``U`` the batch-mean curvature."""
    sp = S.spans(m)
    return [(hi - lo) * lay.k + (lay.a_count(hi - lo) if lay.curvature == "row" else
                                 lay.a_count(m) if i == len(sp) - 1 else 0)
            for i, (lo, hi) in enumerate(sp)]


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


def _batch(job: BankJob, lay: Layout, w, idx, ahead, key, peer, rng_mask, ph):
    """One mini-batch, its per-row vectors chunk by chunk (``parties.common.lr_stream``):
    -> (2 * loss sum on the batch, gradient)."""
    p, cipher, pk_p, K = job.p, job.cipher, job.pk_p, lay.k
    epoch, bi = key
    m = idx.size
    d_b = job.Xs.shape[1]
    zb = scores(S.batch_rows(job.Xs, idx), w, K, p.fit_intercept)
    C.check_predictor(zb, PARTY, epoch)
    two_c0, u, a = job.residual.coefficients(zb, job.y[idx], job.sw[idx])
    Ui, uli = C.encode(u, lay.u_frac), C.encode(u, lay.loss_frac - C.FZ)
    a_int = {}
    if lay.curvature == "public":
        a_int = {e: np.array([v]) for e, v in zip(lay.pattern, lay.public, strict=True)}
    elif a is not None:
        a_int = {e: C.encode(a[e], lay.a_frac) for e in lay.pattern}
    parts = []
    for ch in S.chunks(epoch, bi, m):
        obf = ahead.take("enc", epoch, bi, ch.index)
        U = S.rows(Ui, ch)
        with ph("encrypt"):
            encU = cipher.encrypt(U, bound_bits=lay.u_bits, obfuscators=obf)
        S.send(peer, C.K_ENC_U, cipher, encU, ch)
        if a is not None and lay.curvature == "row":
            with ph("encrypt"):
                encA = cipher.encrypt(np.concatenate([a_int[e][ch.lo:ch.hi]
                                                      for e in lay.pattern]),
                                      bound_bits=lay.a_bits, obfuscators=obf)
            S.send(peer, C.K_ENC_A, cipher, encA, ch)
        elif a is not None and lay.curvature == "mean" and ch.last:
            a_mean = C.encode(np.array([a[e].mean() for e in lay.pattern]), lay.a_frac)
            with ph("encrypt"):
                encA = cipher.encrypt(a_mean, bound_bits=lay.a_bits, obfuscators=obf)
            peer.send_ct(C.K_ENC_A, cipher, encA)
        with ph("wait"):
            zp = S.recv(peer, C.K_ENC_ZP, pk_p, ch.rows * K, C.ZP_BITS, ch)
        with ph("homomorphic"):
            parts.append(_chunk_sums(job, lay, zp, U, S.rows(uli, ch), a_int, idx, ch))
    with ph("homomorphic"):
        masked, masks = C.mask(pk_p, S.total(pk_p, parts), rng_mask,
                               ahead.take("rr", epoch, bi))
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


def _chunk_sums(job: BankJob, lay: Layout, zp, U, ul, a_int, idx, ch):
    """One chunk's ``[[ [X_b 1]^T d_k ]]_P`` for every column and its loss piece
    ``[[2 sum u z_p]]_P``, from the chunk's ``[[z_p]]_P``, ``U`` and ``ul``."""
    pk_p, K, r = job.pk_p, lay.k, ch.rows
    FX = job.p.x_frac_bits
    Xq = C.encode(job.Xs[idx[ch.lo:ch.hi]], FX)
    one = (1 << FX) if job.p.fit_intercept else 0
    Xaug = np.hstack([Xq, np.full((r, 1), one, dtype=np.int64)])
    zps = cols(zp, r, K, pk_p)
    out = []
    for k in range(K):
        Uk = U[k * r:(k + 1) * r]
        if lay.identity:
            dct = pk_p.add_plain(zps[k], Uk)
        else:
            terms = [pk_p.mul_plain(zps[j], _rows(a_int[e], ch)) for j in range(K)
                     if (e := _key(lay, k, j)) is not None]
            acc = terms[0]
            for t in terms[1:]:
                acc = pk_p.add(acc, t)
            dct = pk_p.add_plain(acc, Uk)
        out.append(pk_p.matvec_t(Xaug, dct))
    out.append(pk_p.matvec_t((2 * ul)[:, None], zp))
    return pk_p.concat(out)


def _rows(a: np.ndarray, ch) -> np.ndarray:
    """The chunk's entries of a per-row curvature (a public one is one value)."""
    return a if a.size == 1 else a[ch.lo:ch.hi]


def _key(lay: Layout, k: int, j: int):
    """The (k, j) curvature key the bank holds per row, or None if that entry is 0."""
    return None if lay.entry(k, j) is None else (min(k, j), max(k, j))


def _epochs(ctx, peer, job: BankJob, lay: Layout, ahead):
    p = job.p
    n, d_b = job.Xs.shape
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
            two_l, grad = _batch(job, lay, w, idx, ahead, (epoch, bi), peer, rng_mask, ph)
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
