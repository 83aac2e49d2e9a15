"""SecureBoost multiclass (``multi:softprob`` / ``multi:softmax``), bank side.

Per round ``r`` the bank computes the softmax gradients of the round's margins (rows x
K), then builds K class trees ``r * K + k`` in class order exactly as XGBoost's default
``one_output_per_tree`` strategy: tree ``k`` is an ordinary SecureBoost tree on class
``k``'s ``(g, h)`` column (parties.bank.secureboost ``_build_tree``). The round's row
ciphertexts cross once, with class tree 0: each row's K fixed-point pairs packed into
``groups`` ciphertexts (parties.common.secureboost_multiclass). The fixed-point codec is
fixed for the job from the softmax bounds (``|g| <= 1``, ``h <= 1/2``), so the number of
obfuscators per round (``n * groups``) is known before the round starts and they are
computed in the background as for binary jobs.

What the bank learns per class tree is what a binary tree tells it (the platform masks
the other classes' slots of every histogram entry); what it reveals beyond a binary
job: K (``sb.init``: ``num_class``, in-band protocol version 3).
"""

from __future__ import annotations

import math
import time

import numpy as np

from parties.common import metrics
from parties.common import secureboost_multiclass as M
from parties.common import secureboost_wire as W
from parties.common.artifact import TrainOutcome
from parties.common.tree import GradCodec, quantize


def _round_report(y: np.ndarray, proba: np.ndarray) -> dict:
    rep = metrics.multiclass_report(y, proba)
    return {k: rep[k] for k in ("log_loss", "accuracy", "macro_f1", "auc", "n")}


class BankMulticlass:
    """The round loop of a multiclass job, driving the bank's ``_BankTrainer`` (its
    handshake, sampling, ``_build_tree``, routing and model part)."""

    def __init__(self, trainer, classes: list | None):
        """Class list (the loader's, in index order) and K; labels must be indices."""
        self.tr = trainer
        self.p, self.n, self.Xv, self.yv = trainer.p, trainer.n, trainer.Xv, trainer.yv
        self.cipher, self.link, self.ctx = trainer.cipher, trainer.link, trainer.ctx
        y = trainer.y
        if y.size and (np.any(y != np.round(y)) or y.min() < 0):
            raise ValueError(f"objective {self.p.objective}: labels must be class indices "
                             "0..K-1")
        K = len(classes) if classes else max(int(self.p.num_class), int(y.max()) + 1)
        if self.p.num_class and self.p.num_class != K:
            raise ValueError(f"num_class = {self.p.num_class} but the label has {K} classes")
        if K < 2 or y.max() >= K:
            raise ValueError(f"objective {self.p.objective}: labels must be class indices "
                             f"0..{K - 1} of at least 2 classes")
        if self.yv is not None and (self.yv.max() >= K or self.yv.min() < 0):
            raise ValueError("validation labels must be class indices 0..K-1")
        self.K, self.classes = K, list(classes) if classes else list(range(K))
        self.yi = y.astype(np.int64)
        trainer.init_extra = {"version": M.MULTICLASS_VERSION, "num_class": K}
        fb = self.p.precision_bits
        # softmax bounds: |g| <= 1, h <= 1/2, so one codec serves every round
        self.codec = GradCodec.for_gradients(np.array([1 << fb]), np.array([1 << (fb - 1)]),
                                             self.n, fb)
        self.pack = M.ClassPacking.plan(K, self.codec.row_bits, self.n,
                                        self.cipher.capacity_bits)

    def precompute(self, r: int) -> None:
        """The round's obfuscators: ``n * groups``, from the round's stream."""
        tr = self.tr
        if r < self.p.n_trees and tr._federated(r) and r not in tr._obf:
            tr._obf[r] = self.cipher.precompute_obfuscators(
                self.n * self.pack.groups, rng=self.ctx.rng.child(f"sb/enc/{r}"))

    def _send_round(self, r: int, gh: list) -> None:
        """The round's row ciphertexts: per group, chunks of packed K-class rows."""
        p, cipher, link, n, codec, pack = (self.p, self.cipher, self.link, self.n,
                                           self.codec, self.pack)
        fb = p.precision_bits
        g_int = np.stack([quantize(g, fb, "gradients") for g, _ in gh], axis=1)
        h_int = np.stack([quantize(h, fb, "hessians") for _, h in gh], axis=1)
        chunk = p.chunk_rows
        n_chunks = (n + chunk - 1) // chunk
        link.send(W.K_GRAD_META, {"tree": r * self.K, "s": codec.s,
                                  "row_bits": codec.row_bits, "frac_bits": fb,
                                  "n_chunks": n_chunks, "chunk_rows": chunk, **pack.meta()})
        obf = self.tr._obf.pop(r)
        for grp in range(pack.groups):
            lo_k = grp * pack.per_row
            cols = range(lo_k, lo_k + pack.width(grp))
            for c in range(n_chunks):
                lo, hi = c * chunk, min(n, (c + 1) * chunk)
                te = time.perf_counter()
                v = np.empty((hi - lo, self.K), dtype=object)
                for j in cols:
                    v[:, j] = codec.encode_rows(g_int[lo:hi, j], h_int[lo:hi, j])
                plain = pack.encode_rows(v, grp)
                ct = cipher.encrypt(plain, bound_bits=pack.row_bound(grp), obfuscators=obf)
                blob = cipher.to_bytes(ct)
                self.tr.timer.add("encrypt", time.perf_counter() - te)
                ts = time.perf_counter()
                link.send(W.K_GRAD, blob)
                self.tr.timer.add("send", time.perf_counter() - ts)
        obf.close()

    def run(self) -> TrainOutcome:
        tr, p, K, n = self.tr, self.p, self.K, self.n
        t0 = time.perf_counter()
        self.precompute(0)
        tr.handshake()
        if tr.n_platform == 0:
            tr._close_obfuscators()
        base = M.base_margin(p.base_score, self.yi, K)
        margin = np.tile(base, (n, 1))
        vmargin = None if self.Xv is None else np.tile(base, (self.Xv.shape[0], 1))
        yv = None if self.yv is None else self.yv.astype(np.int64)
        trees, history, contribs = [], [], []
        best, best_it, since = math.inf, -1, 0
        rng_np = p.sampling_rng(self.ctx.rng)
        for r in range(p.n_trees):
            tt = time.perf_counter()
            G, H = M.grad_hess(self.yi, margin)
            gh = [tr._sample(G[:, k], H[:, k], rng_np) for k in range(K)]
            federated = tr._federated(r) and tr.n_platform > 0
            if tr.n_platform > 0:
                self.precompute(r)
                self.precompute(r + 1)
            contrib = np.zeros((n, K))
            n_leaves = 0
            for k in range(K):
                t = r * K + k
                bank_allowed, plat_allowed = tr._colsample(rng_np)
                self.link.send(W.K_TREE, {"tree": t, "federated": federated, "stop": False,
                                          "platform_features": plat_allowed, "class": k})
                if federated and k == 0:
                    self._send_round(r, gh)
                view = self.pack.view(self.codec, k) if federated else None
                nodes, leaf_of = tr._build_tree(t, gh[k][0], gh[k][1], bank_allowed,
                                                  federated, codec=view)
                tree = {"nodes": [nodes[i].to_json() for i in sorted(nodes)]}
                trees.append(tree)
                leaf_val = {i: nd.value for i, nd in nodes.items() if not nd.owner}
                contrib[:, k] = [leaf_val[i] for i in leaf_of.tolist()]
                n_leaves += len(leaf_val)
                if vmargin is not None:
                    vmargin[:, k] += tr._route_tree(tree, self.Xv, t, "valid")
            contribs.append(contrib)
            margin += contrib
            rec = {"tree": r, "federated": federated, "seconds": time.perf_counter() - tt,
                   "train": _round_report(self.yi, M.softmax(margin)), "n_leaves": n_leaves}
            if vmargin is not None:
                rec["valid"] = _round_report(yv, M.softmax(vmargin))
                if rec["valid"]["log_loss"] < best - 1e-12:
                    best, best_it, since = rec["valid"]["log_loss"], r, 0
                else:
                    since += 1
            history.append(rec)
            self.ctx.log("secureboost.tree", {k: v for k, v in rec.items()
                                              if k in ("tree", "seconds", "n_leaves")})
            if self.ctx.progress:
                self.ctx.progress("training", (r + 1) / p.n_trees)
            self.ctx.checkpoint(r + 1, {"margin": margin, "n_trees": len(trees)})
            if p.early_stopping_rounds and since >= p.early_stopping_rounds:
                break
        n_keep = len(history)
        if p.early_stopping_rounds and best_it >= 0:
            n_keep = best_it + 1
            trees = trees[:n_keep * K]
        self.link.send(W.K_TREE, {"tree": len(history) * K, "stop": True,
                                  "n_trees": n_keep * K, "federated": False,
                                  "platform_features": None})
        labels = W.recv_json(self.link, W.K_LABELS)
        model = tr._model(trees, [float(b) for b in base], labels, n_keep * K)
        model.body.update({"num_class": K, "classes": self.classes, "n_rounds": n_keep})
        final = base + np.sum(contribs[:n_keep], axis=0)
        outcome_metrics = {"train": metrics.multiclass_report(self.yi, M.softmax(final))}
        if self.Xv is not None:
            outcome_metrics["valid"] = history[n_keep - 1]["valid"]
        outcome_metrics["best_iteration"] = n_keep - 1
        self.link.send(W.K_DIGEST, {"digest": model.digest()})
        peer = W.recv_json(self.link, W.K_DIGEST)
        model.peer_part_digest = str(peer.get("digest", ""))
        timings = dict(tr.timer.t)
        timings["total"] = time.perf_counter() - t0
        tr.final_margin = final
        return TrainOutcome(model=model, metrics=outcome_metrics, history=history,
                            timings=timings)
