"""SecureBoost, bank role: categorical features (``parties.common.categorical``).

The bank's own categorical features are split in plaintext from its per-level
histograms. For the platform's, ``sb.hist_meta`` announces per node the sizes of the
categorical blocks that follow the numeric candidates (``cat_sizes``); the bank sorts
each block's permuted levels by weight, finds XGBoost's best one-hot or partition split
over the permuted indices and, if a block wins the node, answers in ``sb.split``'s
``cat`` field with permuted indices only. The bank learns each block's per-level
``(G, H)`` in a fresh order per node and its size, never the levels (see the
categorical module's docstring).
"""

from __future__ import annotations

import numpy as np

from federation.link import ProtocolError
from parties.common import secureboost_wire as W
from parties.common.categorical import (
    CatSplit,
    best_split,
    describe,
    go_left,
    mixed_ties,
)


class BankCategorical:
    """The bank's categorical state for one training job."""

    def __init__(self, names: list[str], categories: dict | None, n_cuts: np.ndarray,
                 params, rule):
        cats = dict(categories or {})
        unknown = sorted(set(cats) - set(names))
        if unknown:
            raise ValueError(f"categories given for unknown feature(s) {unknown}")
        self.is_cat = np.array([n in cats for n in names], dtype=bool)
        self.levels = {n: list(cats[n]) for n in names if n in cats}
        self.k = np.asarray(n_cuts, np.int64) + 1
        self.p, self.rule = params, rule
        self.sizes: dict[int, list[int]] = {}   # node -> the platform's block sizes
        self.keys: dict[tuple[int, int], np.ndarray] = {}   # (node, block) -> tie order

    def _split(self, Gc, Hc, G, H, key=None) -> CatSplit | None:
        return best_split(Gc, Hc, G, H, self.rule, self.p.max_cat_to_onehot,
                          self.p.max_cat_threshold, key)

    def _blocks(self, nid: int, pg: np.ndarray):
        """(block, start, size) of the node's categorical blocks."""
        sizes = self.sizes.get(nid, [])
        pos = pg.size - sum(sizes)
        for b, k in enumerate(sizes):
            yield b, pos, k
            pos += k

    def order_ties(self, link, plat: dict) -> None:
        """Partitions search levels sorted by weight, equal weights in level order
        (XGBoost's stable sort): ask the platform to order the permuted levels whose
        weights tie while their sums differ (``sb.cat_ties`` / ``sb.cat_order``; sent
        in every level of a job with platform categorical features, runs may be empty)."""
        self.keys = {}
        if not self.sizes:
            return
        runs = []
        for nid in self.sizes:
            pg, ph = plat[nid]
            for b, pos, k in self._blocks(nid, pg):
                if k >= self.p.max_cat_to_onehot:   # one-hot splits do not sort
                    runs += [[nid, b, r] for r in mixed_ties(pg[pos:pos + k],
                                                             ph[pos:pos + k], self.rule)]
        link.send(W.K_CAT_TIES, {"runs": runs})
        got = W.recv_json(link, W.K_CAT_ORDER).get("runs")
        if not isinstance(got, list) or len(got) != len(runs):
            raise ProtocolError(f"sb.cat_order: expected {len(runs)} ordered runs")
        for (nid, b, run), order in zip(runs, got, strict=True):
            if not isinstance(order, list) or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in order) \
                    or sorted(order) != sorted(run):
                raise ProtocolError("sb.cat_order: a run is not a reordering of the asked "
                                    "levels")
            key = self.keys.setdefault((nid, b), np.arange(self.sizes[nid][b]))
            key[np.asarray(order, np.int64)] = np.arange(len(order))

    def own_best(self, hg: np.ndarray, hh: np.ndarray, width: int, G: float, H: float,
                 allowed: np.ndarray) -> tuple[float, int, CatSplit] | None:
        """Best split over the bank's allowed categorical features from the node's raw
        histograms (``width`` slots per feature, already unscaled)."""
        best = None
        for f in np.flatnonzero(self.is_cat & allowed).tolist():
            lo = f * width
            s = self._split(hg[lo:lo + self.k[f]], hh[lo:lo + self.k[f]], G, H)
            if s is not None and (best is None or s.loss_chg > best[0]):
                best = (s.loss_chg, f, s)
        return best

    @staticmethod
    def apply_own(nd, own: tuple, bins: np.ndarray) -> tuple[int, np.ndarray]:
        """Make ``nd`` the bank's categorical split ``own`` = (gain, feature, split);
        returns the feature and the left mask over ``bins`` (the node's bin rows)."""
        f, cs = own[1], own[2]
        nd.feature, nd.default_left, nd.cats = f, cs.default_left, cs.right
        col = bins[:, f]
        return f, go_left(np.where(col < 0, np.nan, col), cs.right, cs.default_left)

    @staticmethod
    def platform_pick(nid: int, plat: tuple | None, owner: str, best_val: float,
                      answers: dict) -> bool:
        """Record the platform blocks' answers for node ``nid`` in ``answers`` when they
        win or tie a platform numeric pick (the platform keeps the lowest feature);
        True if a block beats everything so far."""
        if plat is None:
            return False
        if plat[0] > best_val or (owner == "platform" and plat[0] == best_val):
            answers[str(nid)] = plat[1]
        return plat[0] > best_val

    @staticmethod
    def prefer(cat, best_val: float, num_feature: int) -> bool:
        """Does the categorical best beat the numeric one (ties: lower feature)?"""
        return cat is not None and (cat[0] > best_val or (
            cat[0] == best_val and cat[1] < num_feature))

    def read_sizes(self, meta: dict, nodes: list[int], n_cand: list[int]) -> None:
        """The block sizes of ``sb.hist_meta`` (absent: no platform categorical)."""
        self.sizes = {}
        raw = meta.get("cat_sizes")
        if raw is None:
            return
        if not isinstance(raw, list) or len(raw) != len(nodes):
            raise ProtocolError("sb.hist_meta: cat_sizes must list the block sizes per node")
        for nid, sizes, c in zip(nodes, raw, n_cand, strict=True):
            if not isinstance(sizes, list) or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1
                    for v in sizes) or sum(sizes) > c:
                raise ProtocolError(f"sb.hist_meta: cat_sizes {sizes!r} do not fit {c} "
                                    "candidates")
            self.sizes[nid] = list(sizes)

    def platform_best(self, nid: int, pg: np.ndarray, ph: np.ndarray, G: float, H: float):
        """Split the node's decrypted platform entries into numeric candidates and
        categorical blocks: ``(pg, ph, best)``, ``best`` = (gain, the answers of every
        block with that gain) or None."""
        sizes = self.sizes.get(nid)
        if not sizes:
            return pg, ph, None
        n_num = pg.size - sum(sizes)
        best = None
        for b, pos, k in self._blocks(nid, pg):
            s = self._split(pg[pos:pos + k], ph[pos:pos + k], G, H, self.keys.get((nid, b)))
            if s is None:
                continue
            if best is None or s.loss_chg > best[0]:
                best = (s.loss_chg, [describe(b, s)])
            elif s.loss_chg == best[0]:   # the platform keeps the lowest feature
                best[1].append(describe(b, s))
        return pg[:n_num], ph[:n_num], best

    def model_body(self) -> dict:
        """What the bank's model part adds: its categorical levels (none: nothing)."""
        return {"categories": self.levels} if self.levels else {}
