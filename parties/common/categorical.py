"""Categorical splits of SecureBoost, as XGBoost's ``hist`` with ``enable_categorical``.

A categorical feature holds level indices ``0..k-1`` (the owner's sorted level list,
``federation.data.category_codes``; NaN = missing). Its histogram has one slot per
level, and a split sends a *set* of levels right (XGBoost's ``cat_bits``), the others
left, missing cells to the learned default direction. Following XGBoost
(``src/tree/hist/evaluate_splits.h``; ``k`` = max level index in the training rows + 1,
XGBoost's bin count):

* ``k < max_cat_to_onehot``: one-hot splits. For each level ``c`` in order, right =
  ``{c}`` with missing left, then right = ``{c}`` + missing (``EnumerateOneHot``).
* otherwise partitions: levels are stable-sorted by their float32 weight
  ``CalcWeight(G_c, H_c)`` (0 when ``H_c < min_child_weight``); forward, right = the
  first ``j`` sorted levels (missing left), then backward, left = the last ``j``
  (missing right), ``j = 1 .. min(max_cat_threshold, k) - 1`` (``EnumeratePart``).

The first candidate of maximal gain wins; features are compared as XGBoost does (the
lower feature index wins a tie).

**Platform-owned categorical features.** The platform sends, per histogrammed node,
the encrypted per-level ``(G_c, H_c)`` of each of its categorical features, the
features' blocks in a fresh random order and the levels inside each block in a fresh
random order (stream ``sb/catperm/<tree>/<node>``), after its numeric candidates in
the same packed ciphertexts; ``sb.hist_meta`` carries the block sizes (``cat_sizes``).
The bank decrypts and sorts each block's permuted levels by weight. XGBoost's stable
sort orders equal weights by level (levels below ``min_child_weight`` all weigh 0),
so for every run of equal weights whose sums differ the bank asks the platform for
the run's level order (``sb.cat_ties`` -> ``sb.cat_order``: the same permuted indices,
sorted by level; sent at every level of a job with platform categorical features).
It then runs the enumeration above and, when a block wins, answers in ``sb.split``'s
``cat`` field with permuted indices only (:func:`describe`; every block of equal best
gain, so the platform keeps the lowest feature): one-hot, the equal-gain
``(level, default_left)`` choices; a partition, the levels sorted before the boundary
(``fixed``), the run of equal-weight (and then equal-sum) levels the boundary cuts
(``tie``) and how many of that run go right (``m``). The platform maps them back
(:func:`resolve`), ties going to the lowest real level as XGBoost's stable sort and
strict-greater update do, records the level set in its own split record and returns
the partition like any platform split. Given the same bins the trees are XGBoost's.

What the bank learns of a platform categorical feature: per histogrammed node, the
``(G, H)`` sum of every level (so each level's row count in the node through ``H`` at
tree 0, and its label sum), in an order that is fresh per node, and the number of
levels of each categorical feature (block sizes), and for levels whose weights tie
exactly (mostly levels with too little hessian in the node) their relative order by
level (not with the platform policy ``categorical_tie_order = false``). Not the levels or their names, the order of the others, nor which block is
which feature from one node to the next beyond its size. As
with a numeric bin holding one row, a level with one row in a node reveals that row's
``g`` (the bank can then tell which row it is). The platform learns nothing new: the
winning permuted levels and the partition it computes itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from federation.link import ProtocolError
from parties.common.tree import SplitRule, threshold_left


@dataclass
class CatSplit:
    """The best split of one categorical feature, in the index space given (level
    indices, or a block's permuted indices)."""

    loss_chg: float
    right: list[int]            # indices that go right
    default_left: bool
    onehot: bool
    tied: list = field(default_factory=list)   # one-hot: equal-gain [index, default_left]
    fixed: list = field(default_factory=list)  # partition: sorted before the tie run
    tie: list = field(default_factory=list)    # partition: equal-weight run at the cut
    m: int = 0                                  # ... of which go right


def _weights(Gc: np.ndarray, Hc: np.ndarray, rule: SplitRule) -> np.ndarray:
    """XGBoost's ``CalcWeightCat`` (``CalcWeight``), in float32 as XGBoost sorts."""
    ok = (Hc >= rule.min_child_weight) & (Hc > 0)
    w = rule._weights(Gc, np.where(ok, Hc, 1.0))
    return np.where(ok, w, 0.0).astype(np.float32)


def mixed_ties(Gc, Hc, rule: SplitRule) -> list[list[int]]:
    """Runs of indices whose sort weights tie while their sums differ: their order
    (by level, in XGBoost's stable sort) changes the partitions a search can reach."""
    Gc, Hc = np.asarray(Gc, np.float64), np.asarray(Hc, np.float64)
    w = _weights(Gc, Hc, rule)
    runs = []
    for v in np.unique(w):
        idx = np.flatnonzero(w == v)
        if idx.size > 1 and not (np.all(Gc[idx] == Gc[idx[0]])
                                 and np.all(Hc[idx] == Hc[idx[0]])):
            runs.append(idx.tolist())
    return runs


def best_split(Gc, Hc, G: float, H: float, rule: SplitRule, max_cat_to_onehot: int,
               max_cat_threshold: int, key: np.ndarray | None = None) -> CatSplit | None:
    """XGBoost's best split of one categorical feature from its per-level sums (the
    node's totals ``G, H`` include its missing rows). None if no split is allowed.
    ``key``: the order among equal weights (default: the index; for a platform block,
    the level order of its :func:`mixed_ties` runs as the platform reported it)."""
    Gc, Hc = np.asarray(Gc, np.float64), np.asarray(Hc, np.float64)
    k = Gc.size
    if k == 0:
        return None
    Gm, Hm = G - Gc.sum(), H - Hc.sum()
    if k < max_cat_to_onehot:
        GR, HR = np.repeat(Gc, 2), np.repeat(Hc, 2)
        GR[1::2] += Gm
        HR[1::2] += Hm
        chg = rule.loss_chg(G - GR, H - HR, G, H)
        b = int(np.argmax(chg))
        if not np.isfinite(chg[b]):
            return None
        tied = [[int(i) // 2, i % 2 == 0] for i in np.flatnonzero(chg == chg[b]).tolist()]
        return CatSplit(float(chg[b]), [b // 2], b % 2 == 0, True, tied=tied)
    w = _weights(Gc, Hc, rule)
    order = np.lexsort((np.arange(k) if key is None else np.asarray(key), w))
    n = min(max_cat_threshold, k)
    if n < 2:
        return None
    fG, fH = np.cumsum(Gc[order])[:n - 1], np.cumsum(Hc[order])[:n - 1]
    bG, bH = np.cumsum(Gc[order][::-1])[:n - 1], np.cumsum(Hc[order][::-1])[:n - 1]
    chg = np.concatenate([rule.loss_chg(G - fG, H - fH, G, H),   # forward: missing left
                          rule.loss_chg(bG, bH, G, H)])          # backward: missing right
    b = int(np.argmax(chg))
    if not np.isfinite(chg[b]):
        return None
    pos = b + 1 if b < n - 1 else k - (b - (n - 1) + 1)
    ws = w[order]
    a, e = pos, pos
    if ws[pos - 1] == ws[pos]:
        run = np.flatnonzero(ws == ws[pos])
        a, e = int(run[0]), int(run[-1]) + 1
    return CatSplit(float(chg[b]), sorted(int(i) for i in order[:pos]), b < n - 1, False,
                    fixed=[int(i) for i in order[:a]], tie=[int(i) for i in order[a:e]],
                    m=pos - a)


def describe(block: int, s: CatSplit) -> dict:
    """The bank's answer for a platform block (permuted indices only)."""
    if s.onehot:
        return {"block": block, "onehot": s.tied}
    return {"block": block, "fixed": s.fixed, "tie": s.tie, "m": s.m,
            "default_left": s.default_left}


def resolve(desc, perm: np.ndarray) -> tuple[list[int], bool]:
    """The platform's level set (going right) and default direction from the bank's
    ``desc`` of a block whose permuted index ``i`` is level ``perm[i]``; ties resolve to
    the lowest level as XGBoost's enumeration does. Peer input: every index checked."""
    k = perm.size

    def ok(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < k

    def idx(values, what) -> list[int]:
        if not isinstance(values, list) or not all(ok(v) for v in values) or \
                len(set(values)) != len(values):
            raise ProtocolError(f"sb.split cat: {what} must be distinct indices < {k}")
        return values

    if not isinstance(desc, dict):
        raise ProtocolError("sb.split cat: expected an object per node")
    if "onehot" in desc:
        tied = desc["onehot"]
        if not isinstance(tied, list) or not tied or not all(
                isinstance(t, list) and len(t) == 2 and ok(t[0]) and isinstance(t[1], bool)
                for t in tied):
            raise ProtocolError(f"sb.split cat: onehot must list [index < {k}, "
                                "default_left]")
        level, dl = min((int(perm[t[0]]), not t[1]) for t in tied)
        return [level], not dl
    fixed, tie = idx(desc.get("fixed"), "fixed"), idx(desc.get("tie"), "tie")
    m, dl = desc.get("m"), desc.get("default_left")
    if set(fixed) & set(tie) or not isinstance(dl, bool) or not (
            isinstance(m, int) and 0 <= m <= len(tie)) or not 0 < len(fixed) + m < k:
        raise ProtocolError("sb.split cat: inconsistent partition")
    right = [int(perm[i]) for i in fixed] + sorted(int(perm[i]) for i in tie)[:m]
    return sorted(right), dl


def go_left(codes: np.ndarray, right: list[int], default_left: bool) -> np.ndarray:
    """A categorical decision: levels in ``right`` go right, NaN the default way, every
    other level (and an index the split never saw) left, as XGBoost's ``Decision``."""
    v = np.asarray(codes, dtype=np.float64)
    nan = np.isnan(v)
    left = ~np.isin(np.where(nan, -1, v), np.asarray(right, np.float64))
    return np.where(nan, default_left, left)


def split_left(nd: dict, values: np.ndarray) -> np.ndarray:
    """A bank tree node's decision on its feature's values (numeric or categorical)."""
    if "cats" in nd:
        return go_left(values, nd["cats"], nd["default_left"])
    return threshold_left(values, nd["threshold"], nd["default_left"])


def record_json(rec) -> dict:
    """A platform split record ``[feature, threshold | {"cats": [...]}, default_left]``
    as its model part stores it."""
    f, thr, dl = rec
    if isinstance(thr, dict):
        return {"feature": f, "cats": list(thr["cats"]), "default_left": dl}
    return {"feature": f, "threshold": thr, "default_left": dl}


def record_left(rec, Xf: np.ndarray) -> np.ndarray:
    """A platform split record's decision on every row of ``Xf``."""
    if isinstance(rec, dict):
        f, dl = rec["feature"], rec["default_left"]
        thr = {"cats": rec["cats"]} if "cats" in rec else rec["threshold"]
    else:
        f, thr, dl = rec
    if isinstance(thr, dict):
        return go_left(Xf[:, f], thr["cats"], dl)
    return threshold_left(Xf[:, f], thr, dl)
