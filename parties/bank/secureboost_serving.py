"""SecureBoost online scoring, bank side: the trees compiled to arrays and walked for
all trees and rows at once (see :mod:`parties.common.serving`).

The walk makes the batch scoring decisions (``parties.common.tree.route`` with
``threshold_left`` for the bank's splits and the platform's answered bits for its
splits) and adds the trees' leaf values in tree order from ``base_margin``, so a served
score equals the scoring job's score bit for bit; it is only faster for a few rows
(numpy over (rows, trees) per tree level instead of Python per node).

Categorical features: ``Scorer.categories`` (the part's level lists) tells the caller
which bank features take a level rather than a number; their cells reach :meth:`score`
as level indices (NaN = missing or a level the model never saw, which goes the default
way). A bank categorical node sends the levels of its set right and every other level
left (a membership table row per such node), as
:func:`parties.common.categorical.split_left` in the scoring job.
"""

from __future__ import annotations

import numpy as np

from parties.bank import secureboost_objectives as O
from parties.common import secureboost_multiclass as MC
from parties.common.serving import Scores, ServingInputError


class Scorer:
    answer_dtype = "u1"

    def __init__(self, model):
        if model.algorithm != "secureboost" or model.party != "bank":
            raise ServingInputError("not the bank's SecureBoost model part")
        body = model.body
        self.categories = model.categories()
        self.body = body
        self.classes = list(body["classes"]) if body.get("num_class") else None
        self.features = list(model.feature_names)
        self.objective = body["objective"]
        self.base = None if self.classes else float(body["base_margin"])
        trees = body["trees"]
        self.keys = sorted({nd["key"] for tr in trees for nd in tr["nodes"]
                            if nd.get("owner") == "platform"})
        kidx = {k: i for i, k in enumerate(self.keys)}
        self.answer_width = (len(self.keys) + 7) // 8
        self.setup = {"keys": self.keys}
        T = len(trees)
        M = max([nd["id"] for tr in trees for nd in tr["nodes"]] + [0]) + 1
        self.leaf = np.ones((T, M), dtype=bool)
        self.bank = np.zeros((T, M), dtype=bool)
        self.index = np.zeros((T, M), dtype=np.int64)   # bank feature or platform key
        self.threshold = np.zeros((T, M), dtype=np.float32)
        self.default_left = np.zeros((T, M), dtype=bool)
        self.left = np.zeros((T, M), dtype=np.int64)
        self.right = np.zeros((T, M), dtype=np.int64)
        self.value = np.zeros((T, M), dtype=np.float64)
        self.cat_row = np.full((T, M), -1, dtype=np.int64)   # row of cat_right, or -1
        width = max([len(v) for v in self.categories.values()] + [1])
        cat_right = []
        depth = 0
        for t, tr in enumerate(trees):
            for nd in tr["nodes"]:
                i = nd["id"]
                depth = max(depth, int(nd.get("depth", 0)))
                if "owner" not in nd:
                    self.value[t, i] = nd["value"]
                    continue
                self.leaf[t, i] = False
                self.left[t, i], self.right[t, i] = nd["left"], nd["right"]
                self.default_left[t, i] = bool(nd["default_left"])
                if nd["owner"] == "bank":
                    self.bank[t, i] = True
                    self.index[t, i] = nd["feature"]
                    if "cats" in nd:
                        self.cat_row[t, i] = len(cat_right)
                        row = np.zeros(width, dtype=bool)
                        row[[c for c in nd["cats"] if 0 <= c < width]] = True
                        cat_right.append(row)
                    else:
                        self.threshold[t, i] = np.float32(nd["threshold"])
                else:
                    self.index[t, i] = kidx[nd["key"]]
        self.levels = depth + 1
        self.cat_right = np.array(cat_right, dtype=bool) if cat_right else None

    def check(self, X: np.ndarray) -> None:
        """Every float is a valid SecureBoost input (NaN takes the default direction)."""

    def score(self, X: np.ndarray, answers: np.ndarray, found: np.ndarray) -> Scores:
        """``X``: (rows, bank features) float64, NaN = missing; ``answers``: the
        platform's packed bits (rows, answer_width); ``found`` is not needed: the
        platform answered unknown rows with the default directions."""
        n, (T, M) = X.shape[0], self.leaf.shape
        Xf = np.asarray(X, dtype=np.float32)
        if Xf.shape[1] == 0:
            Xf = np.full((n, 1), np.nan, dtype=np.float32)
        bits = np.unpackbits(answers, axis=1, count=len(self.keys)).astype(bool)
        if bits.shape[1] == 0:
            bits = np.zeros((n, 1), dtype=bool)
        # flat indices: node (t, i) of row r is t * M + i; bank cells r * d + j, bits r * K + k
        d, K = Xf.shape[1], bits.shape[1]
        leaf, bank, index = self.leaf.ravel(), self.bank.ravel(), self.index.ravel()
        thr, dl = self.threshold.ravel(), self.default_left.ravel()
        left, right = self.left.ravel(), self.right.ravel()
        xs, bs = Xf.ravel(), bits.ravel()
        base = np.broadcast_to(np.arange(T) * M, (n, T)).ravel()
        row = np.repeat(np.arange(n), T)
        pos = base.copy()
        for _ in range(self.levels):
            lf = leaf[pos]
            if lf.all():
                break
            bk, idx = bank[pos], index[pos]
            v = xs[row * d + np.where(bk, idx, 0)]
            nan = np.isnan(v)
            bank_go = np.where(nan, dl[pos], v < thr[pos])
            if self.cat_right is not None:
                bank_go = self._categorical(bank_go, bk, pos, v, nan)
            go = np.where(bk, bank_go, bs[row * K + np.where(bk, 0, idx)])
            pos = np.where(lf, pos, base + np.where(go, left[pos], right[pos]))
        values = self.value.ravel()[pos].reshape(n, T)
        if self.classes is not None:    # (n, K) probabilities, as the scoring job's
            return Scores(score=None, probabilities=MC.probabilities(
                self.body, [values[:, t] for t in range(T)], n), classes=self.classes)
        margin = np.full(n, self.base)
        for t in range(T):              # tree order, as the scoring job adds them
            margin += values[:, t]
        prob = O.transform(self.objective, margin) if self.objective == "binary:logistic" \
            else None
        return Scores(score=margin, probability=prob)


    def _categorical(self, bank_go, bk, pos, v, nan) -> np.ndarray:
        """``bank_go`` with the decisions of bank categorical nodes: a level of the set
        right, another level (or an index the split never saw) left, NaN the default."""
        cr = self.cat_row.ravel()[pos]
        cat = bk & (cr >= 0)
        if not cat.any():
            return bank_go
        L = self.cat_right.shape[1]
        code = np.where(nan, -1, v).astype(np.int64)
        seen = (code >= 0) & (code < L)
        right = self.cat_right[np.where(cat, cr, 0), np.where(seen, code, 0)] & seen
        return np.where(cat, np.where(nan, self.default_left.ravel()[pos], ~right), bank_go)


def scorer(model) -> Scorer:
    return Scorer(model)
