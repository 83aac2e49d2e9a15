"""SecureBoost multiclass (``multi:softprob`` / ``multi:softmax``), bank side.

Per round ``r`` the bank computes the softmax gradients of the round's margins (rows x
K), then builds K class trees ``r * K + k`` in class order exactly as XGBoost's default
``one_output_per_tree`` strategy: tree ``k`` is an ordinary SecureBoost tree on class
``k``'s ``(g, h)`` column (parties.bank.secureboost ``grow_tree``). The round's row
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

import numpy as np

from parties.bank import secureboost_exchange as XC
from parties.common import metrics
from parties.common import secureboost_multiclass as M
from parties.common import secureboost_wire as W
from parties.common.artifact import ModelPart
from parties.common.tree import GradCodec, quantize


def _round_report(y: np.ndarray, proba: np.ndarray) -> dict:
    rep = metrics.multiclass_report(y, proba)
    return {k: rep[k] for k in ("log_loss", "accuracy", "macro_f1", "auc", "n")}


class BankMulticlass:
    """The rounds of a multiclass job for the bank's ``_BankTrainer`` round loop (its
    handshake, sampling, ``grow_tree``, routing and model part serve every class tree)."""

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
        fb, codec, pack = self.p.precision_bits, self.codec, self.pack
        g_int = np.stack([quantize(g, fb, "gradients") for g, _ in gh], axis=1)
        h_int = np.stack([quantize(h, fb, "hessians") for _, h in gh], axis=1)

        def encode(grp, lo, hi):
            v = np.empty((hi - lo, self.K), dtype=object)
            for j in range(grp * pack.per_row, grp * pack.per_row + pack.width(grp)):
                v[:, j] = codec.encode_rows(g_int[lo:hi, j], h_int[lo:hi, j])
            return pack.encode_rows(v, grp), pack.row_bound(grp)

        XC.send_gradients(self.tr, r, r * self.K, codec, encode, pack.groups, pack.meta())

    # ---- the rounds, driven by the trainer's round loop (``_BankTrainer._train``) ------
    def base_margin(self) -> np.ndarray:
        return M.base_margin(self.p.base_score, self.yi, self.K)

    def margins(self, base: np.ndarray, rows: int) -> np.ndarray:
        return np.tile(base, (rows, 1))

    def grow(self, r, margin, vmargin, rng_np, federated):
        """Round ``r``: softmax gradients, then the K class trees in class order."""
        tr, K = self.tr, self.K
        G, H = M.grad_hess(self.yi, margin)
        gh = [tr._sample(G[:, k], H[:, k], rng_np) for k in range(K)]
        trees, contrib, n_leaves = [], np.zeros((self.n, K)), 0
        for k in range(K):
            t = r * K + k
            bank_allowed, plat_allowed = tr._colsample(rng_np)
            self.link.send(W.K_TREE, {"tree": t, "federated": federated, "stop": False,
                                      "platform_features": plat_allowed, "class": k})
            if federated and k == 0:
                self._send_round(r, gh)
            view = self.pack.view(self.codec, k) if federated else None
            tree, contrib[:, k], leaves, vcontrib = tr.grow_tree(
                t, gh[k][0], gh[k][1], bank_allowed, federated, codec=view)
            trees.append(tree)
            n_leaves += leaves
            if vmargin is not None:
                vmargin[:, k] += vcontrib
        return trees, contrib, n_leaves

    def round_report(self, which: str, margin: np.ndarray) -> dict:
        y = self.yi if which == "train" else self.yv.astype(np.int64)
        return _round_report(y, M.softmax(margin))

    def stop_loss(self, rep: dict) -> float:
        return rep["log_loss"]

    def final_report(self, final: np.ndarray) -> dict:
        return metrics.multiclass_report(self.yi, M.softmax(final))

    def model_part(self, trees, base, labels, n_keep) -> ModelPart:
        model = self.tr._model(trees, [float(b) for b in base], labels, n_keep * self.K)
        model.body.update({"num_class": self.K, "classes": self.classes,
                           "n_rounds": n_keep})
        return model
