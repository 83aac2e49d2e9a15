"""SecureBoost, bank (active party, label holder) role.

The bank holds the labels and the Paillier private key. Per tree it computes the
gradients ``g`` and hessians ``h``, packs each row's pair into one fixed-point
plaintext ``g_int + h_int * 2**s`` and streams the encryptions to the platform (the
platform starts its root histogram on the first chunk while later chunks are being
encrypted). Level by level it decrypts the platform's packed cumulative histograms,
scores every candidate of both parties (its own in plaintext), picks the best split
per node and tells the platform which; leaf weights never leave the bank.

What the bank learns about the platform (per federated tree):
  * for every node the platform histograms: the cumulative sums ``(G_L, H_L)`` of
    every platform split candidate, in an order freshly permuted per node by the
    platform (it does not learn which feature or threshold a candidate is, nor how
    many bins a feature has -- only the number of candidates);
  * at platform-owned splits: which of the node's rows go left (the partition);
  * with a validation set / at scoring time: the left/right decision of every
    platform split for every validation / scored row;
  * at the end: an anonymous label per platform split (``platform_f<k>``, the same
    label for splits on the same feature) or the real feature name if the platform's
    policy sets ``reveal_feature_names``; used for feature importance.
It never receives platform feature values or thresholds. Categorical features (both
parties'): ``parties.common.categorical`` (what crosses, what the bank learns).

Overlap: the obfuscators of tree t+1's gradient encryptions do not depend on the data,
so they are drawn (from the per-tree stream ``sb/enc/<t+1>``, in order) when tree t
starts and computed by low-priority background processes while tree t is built -- the
bank mostly waits for the platform's histograms then. Tree 0's are started before the
handshake. The ciphertexts are the same whatever the timing (same draws, exact
arithmetic), so an audit replay reproduces them bit for bit.

What the bank reveals to the platform: the public key; the encrypted ``(g, h)`` of
every row (Paillier, fresh randomness per ciphertext); the membership of rows in
every tree node (the partition at bank splits is needed by the platform to build
the children's histograms); which nodes are split by whom and which of the
platform's (permuted) candidates won. Not labels, gradients, leaf values,
bank features or thresholds.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np

from federation.link import ProtocolContext, ProtocolError
from parties.bank import secureboost_exchange as XC
from parties.bank import secureboost_objectives as O
from parties.bank.secureboost_categorical import BankCategorical
from parties.bank.secureboost_multiclass import BankMulticlass
from parties.common import secureboost_multiclass as MC
from parties.common import secureboost_wire as W
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.binning import bin_columns
from parties.common.categorical import split_left
from parties.common.role import PartyData, RolePolicy
from parties.common.secureboost_multiclass import MULTI_OBJECTIVES
from parties.common.secureboost_params import SHARED, SecureBoostParams
from parties.common.secureboost_wire import (
    PROTOCOL_VERSION,
    key_of,
    pack_bits,
    recv,
    recv_json,
    send_abort,
    unpack_bits,
)
from parties.common.tree import (
    GradCodec,
    Node,
    candidate_layout,
    plain_candidates,
    prune,
    quantize,
    raw_histogram,
    route,
)
from secure_agg.cipher import PrivateCipher
from secure_agg.keypolicy import describe_public_key

ALGORITHM = "secureboost"


class _Timer:
    def __init__(self):
        self.t = defaultdict(float)

    def add(self, k, dt):
        self.t[k] += dt


class _BankTrainer:
    def __init__(self, ctx: ProtocolContext, X, y, names, p: SecureBoostParams,
                 cipher: PrivateCipher, X_valid, y_valid, categories=None):
        self.ctx, self.link, self.p, self.cipher = ctx, ctx.link, p, cipher
        self.y, self.names = y, list(names)
        self.n = y.size
        if p.objective == "binary:logistic" and not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("label y must be 0/1 for objective binary:logistic")
        is_cat = np.array([n in (categories or {}) for n in names], bool)
        self.binned = bin_columns(X, p.max_bin, p.binning, is_cat)
        self.Xf = X.astype(np.float32)
        self.n_cuts = np.array([len(c) for c in self.binned.cuts])
        self.cat = BankCategorical(self.names, categories, self.n_cuts, p, p.split_rule())
        all_missing = np.isnan(self.Xf).all(axis=0)
        self.usable = (self.n_cuts > 0) | (self.binned.has_missing & ~all_missing)
        for j in np.flatnonzero(~self.usable):
            kind = "all missing" if all_missing[j] else "constant"
            ctx.log("secureboost.feature_unusable",
                    {"feature": self.names[j], "reason": kind})
        self.rule = p.split_rule()
        self.weights = p.row_weights(y)   # class weights of g and h (None: unweighted)
        self.Xv = self.yv = None
        if X_valid is not None or y_valid is not None:
            if X_valid is None or y_valid is None:
                raise ValueError("validation set needs both X_valid and y_valid")
            Xv, yv = O.check_inputs(X_valid, y_valid, names, "X_valid")
            self.Xv, self.yv = Xv.astype(np.float32), yv
        if p.early_stopping_rounds and self.Xv is None:
            raise ValueError("early_stopping_rounds needs a validation set "
                             "(X_valid, y_valid)")
        self.timer = _Timer()
        self.init_extra: dict = {}   # multiclass: version 3 and num_class in sb.init
        self.multi: BankMulticlass | None = None   # multiclass: drives the rounds
        self.importance = {"count": defaultdict(int), "gain": defaultdict(float)}
        self.platform_keys_gain: dict[str, float] = {}

    # ---- protocol -----------------------------------------------------------------
    def handshake(self):
        p = self.p
        self.link.send(W.K_INIT, {
            "version": PROTOCOL_VERSION, "n_rows": int(self.n),
            "params": {k: getattr(p, k) for k in SHARED},
            "key": describe_public_key(self.cipher, form="full"),
            "n_valid": 0 if self.Xv is None else int(self.Xv.shape[0]),
            **self.init_extra,
        })
        ack = recv_json(self.link, W.K_INIT_ACK)
        if ack.get("n_rows") != self.n:
            raise ProtocolError(f"platform has {ack.get('n_rows')} aligned rows, bank has "
                                f"{self.n}: the PSI alignment differs")
        self.n_platform = int(ack.get("n_features", 0))
        if not self.usable.any() and self.n_platform == 0:
            raise ValueError("no usable feature on either side (all constant or missing)")

    def _federated(self, t: int) -> bool:
        return t >= self.p.complete_secure

    def _precompute(self, t: int) -> None:
        """Start the obfuscators of tree ``t``'s gradient encryption (if it will send
        any); one batch per tree, drawn from the tree's own stream."""
        if self.multi is not None:
            return self.multi.precompute(t)
        if t < self.p.n_trees and self._federated(t) and t not in self._obf:
            self._obf[t] = self.cipher.precompute_obfuscators(
                self.n, rng=self.ctx.rng.child(f"sb/enc/{t}"))

    def _close_obfuscators(self) -> None:
        for b in self._obf.values():
            b.close()
        self._obf.clear()

    def run(self) -> TrainOutcome:
        self._obf: dict = {}
        try:
            return self._train(self if self.multi is None else self.multi)
        finally:
            self._close_obfuscators()  # unused ones (early stop, failure) are discarded

    def _train(self, s) -> TrainOutcome:
        """The round loop of binary and regression jobs (``s`` is the trainer: one tree a
        round) and of multiclass ones (``s`` a BankMulticlass: K class trees a round)."""
        p = self.p
        t0 = time.perf_counter()
        self._precompute(0)
        self.handshake()
        if self.n_platform == 0:
            self._close_obfuscators()
        base = s.base_margin()
        margin = s.margins(base, self.n)
        vmargin = None if self.Xv is None else s.margins(base, self.Xv.shape[0])
        trees, history, contribs = [], [], []
        best, best_it, since = math.inf, -1, 0
        rng_np = p.sampling_rng(self.ctx.rng)
        for r in range(p.n_trees):
            tt = time.perf_counter()
            federated = self._federated(r) and self.n_platform > 0
            if self.n_platform > 0:
                self._precompute(r)
                self._precompute(r + 1)  # computed in the background while r is built
            new, contrib, n_leaves = s.grow(r, margin, vmargin, rng_np, federated)
            trees += new
            contribs.append(contrib)
            margin += contrib
            rec = {"tree": r, "federated": federated, "seconds": time.perf_counter() - tt,
                   "train": s.round_report("train", margin), "n_leaves": n_leaves}
            if vmargin is not None:
                rec["valid"] = s.round_report("valid", vmargin)
                loss = s.stop_loss(rec["valid"])
                if loss < best - 1e-12:
                    best, best_it, since = loss, r, 0
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
            trees = trees[:n_keep * s.K]
        self.link.send(W.K_TREE, {"tree": len(history) * s.K, "stop": True,
                                  "n_trees": n_keep * s.K, "federated": False,
                                  "platform_features": None})
        labels = recv_json(self.link, W.K_LABELS)
        model = s.model_part(trees, base, labels, n_keep)
        # final predictions of the kept trees (the in-training predictions)
        final = base + np.sum(contribs[:n_keep], axis=0)
        outcome_metrics = {"train": s.final_report(final)}
        if self.Xv is not None:
            outcome_metrics["valid"] = history[n_keep - 1]["valid"]
        outcome_metrics["best_iteration"] = n_keep - 1
        self.link.send(W.K_DIGEST, {"digest": model.digest()})
        peer = recv_json(self.link, W.K_DIGEST)
        model.peer_part_digest = str(peer.get("digest", ""))
        timings = dict(self.timer.t)
        timings["total"] = time.perf_counter() - t0
        self.final_margin = final
        return TrainOutcome(model=model, metrics=outcome_metrics, history=history,
                            timings=timings)

    # ---- the binary / regression rounds (one tree each) -------------------------------
    K = 1

    def base_margin(self) -> float:
        return O.base_margin(self.p, self.y)

    def margins(self, base: float, rows: int) -> np.ndarray:
        return np.full(rows, base)

    def grow(self, t, margin, vmargin, rng_np, federated):
        p = self.p
        g, h = O.grad_hess(p.objective, self.y, margin, p.huber_slope)
        g, h = self._sample(g, h, rng_np)
        bank_allowed, plat_allowed = self._colsample(rng_np)
        self.link.send(W.K_TREE, {"tree": t, "federated": federated, "stop": False,
                                  "platform_features": plat_allowed})
        tree, contrib, n_leaves, vcontrib = self.grow_tree(t, g, h, bank_allowed, federated)
        if vmargin is not None:
            vmargin += vcontrib
        return [tree], contrib, n_leaves

    def round_report(self, which: str, margin: np.ndarray) -> dict:
        y = self.y if which == "train" else self.yv
        return O.report(self.p.objective, y, O.transform(self.p.objective, margin))

    def stop_loss(self, rep: dict) -> float:
        return rep["log_loss"] if self.p.objective == "binary:logistic" else rep["rmse"]

    def final_report(self, final: np.ndarray) -> dict:
        return self.round_report("train", final)

    def model_part(self, trees, base, labels, n_keep) -> ModelPart:
        return self._model(trees, base, labels, n_keep)

    def grow_tree(self, t, g, h, bank_allowed, federated, codec=None):
        """Tree ``t`` (after its ``sb.tree``): its JSON, its leaf value per training row,
        its leaf count and, with a validation set, its value per validation row."""
        nodes, leaf_of = self._build_tree(t, g, h, bank_allowed, federated, codec)
        tree = {"nodes": [nodes[k].to_json() for k in sorted(nodes)]}
        leaf_val = {i: nd.value for i, nd in nodes.items() if not nd.owner}
        contrib = np.array([leaf_val[i] for i in leaf_of.tolist()])
        vcontrib = None if self.Xv is None else self._route_tree(tree, self.Xv, t, "valid")
        return tree, contrib, len(leaf_val), vcontrib

    # ---- sampling -------------------------------------------------------------------
    def _sample(self, g, h, rng):
        p = self.p
        if self.weights is not None:
            g, h = g * self.weights, h * self.weights
        if p.goss:
            n = self.n
            top_n = int(p.top_rate * n)
            rand_n = int(p.other_rate * n)
            order = np.argsort(-np.abs(g), kind="stable")
            keep = np.zeros(n, bool)
            keep[order[:top_n]] = True
            rest = order[top_n:]
            pick = rng.choice(rest, size=min(rand_n, rest.size), replace=False)
            w = np.zeros(n)
            w[order[:top_n]] = 1.0
            w[pick] = (1.0 - p.top_rate) / p.other_rate
            return g * w, h * w
        if p.subsample < 1:
            keep = rng.random(self.n) < p.subsample
            return np.where(keep, g, 0.0), np.where(keep, h, 0.0)
        return g, h

    def _colsample(self, rng):
        p = self.p
        nb = len(self.names)
        if p.colsample_bytree >= 1:
            return np.ones(nb, bool), None
        total = nb + self.n_platform
        k = max(1, int(math.floor(p.colsample_bytree * total + 0.5)))
        chosen = rng.choice(total, size=k, replace=False)
        bank = np.zeros(nb, bool)
        bank[chosen[chosen < nb]] = True
        plat = sorted(int(c - nb) for c in chosen if c >= nb)
        return bank, plat

    # ---- one tree ---------------------------------------------------------------------
    def _build_tree(self, t, g, h, bank_allowed, federated, codec=None):
        """One tree from ``g``, ``h``; ``codec``: the round's histogram decoding when the
        gradients already crossed (a multiclass class tree), else they are sent here."""
        p, link, timer = self.p, self.link, self.timer
        fb = p.precision_bits
        g_int = quantize(g, fb, "gradients")
        h_int = quantize(h, fb, "hessians")
        scale = float(1 << fb)
        gq, hq = g_int.astype(np.float64), h_int.astype(np.float64)
        layout = candidate_layout(self.n_cuts, self.binned.has_missing,
                                  bank_allowed & self.usable & ~self.cat.is_cat)
        nf = self.n_cuts.size
        if federated and codec is None:
            codec = GradCodec.for_gradients(g_int, h_int, self.n, fb)
            XC.send_gradients(self, t, t, codec, lambda _, lo, hi: (
                codec.encode_rows(g_int[lo:hi], h_int[lo:hi]), codec.row_bits))
        rows = {0: np.arange(self.n)}
        nodes = {0: Node(0, 0, float(gq.sum() / scale), float(hq.sum() / scale), self.n)}
        frontier = [0]
        for depth in range(p.max_depth):
            frontier = [i for i in frontier if nodes[i].H >= 2 * max(p.min_child_weight, 0)
                        and nodes[i].n >= 2]
            if federated:
                link.send(W.K_EXPAND, {"depth": depth, "nodes": frontier})
            if not frontier:
                break
            # own candidates (computed while the platform builds its histograms)
            tl = time.perf_counter()
            own = {}
            for nid in frontier:
                r = rows[nid]
                hg = raw_histogram(self.binned.bins, r, gq, layout.width)
                hh = raw_histogram(self.binned.bins, r, hq, layout.width)
                own[nid] = (plain_candidates(hg, layout, nf) / scale,
                            plain_candidates(hh, layout, nf) / scale,
                            self.cat.own_best(hg / scale, hh / scale, layout.width,
                                              nodes[nid].G, nodes[nid].H,
                                              bank_allowed & self.usable))
            timer.add("bank_local", time.perf_counter() - tl)
            plat = XC.recv_histograms(self, frontier, codec) if federated else {}
            if federated:
                self.cat.order_ties(link, plat)   # platform categorical blocks only
            splits, bank_masks, plat_nodes, cat_answers = [], [], [], {}
            for nid in frontier:
                nd = nodes[nid]
                gl, hl, own_cat = own[nid]
                chg = self.rule.loss_chg(gl, hl, nd.G, nd.H)
                best_own = int(np.argmax(chg)) if chg.size else -1
                best_val = chg[best_own] if chg.size else -np.inf
                owner, cand, ties = "bank", best_own, []
                num_f = int(layout.feature[best_own]) if chg.size else len(self.names)
                if self.cat.prefer(own_cat, best_val, num_f):
                    best_val, cand = own_cat[0], -1
                if nid in plat:
                    pg, ph, plat_cat = self.cat.platform_best(nid, *plat[nid], nd.G, nd.H)
                    pchg = self.rule.loss_chg(pg, ph, nd.G, nd.H)
                    if pchg.size:
                        bp = int(np.argmax(pchg))
                        if pchg[bp] > best_val:
                            owner, cand, best_val = "platform", bp, pchg[bp]
                            # equal-gain candidates: the platform breaks the tie as
                            # XGBoost does (lowest feature, then lowest bin)
                            ties = [int(i) for i in np.flatnonzero(pchg == pchg[bp])]
                    if self.cat.platform_pick(nid, plat_cat, owner, best_val, cat_answers):
                        owner, cand, best_val, ties = "platform", -1, plat_cat[0], []
                if not np.isfinite(best_val):
                    continue
                nd.owner, nd.loss_chg = owner, float(best_val)
                nd.left, nd.right = 2 * nid + 1, 2 * nid + 2
                if owner == "bank":
                    if cand < 0:   # categorical bank split
                        f, left = self.cat.apply_own(nd, own_cat, self.binned.bins[rows[nid]])
                    else:
                        f = int(layout.feature[cand])
                        ble = int(layout.bin_le[cand])
                        dl = bool(layout.default_left[cand])
                        col = self.binned.bins[rows[nid], f]
                        miss = col < 0
                        if not miss.any():
                            dl = False
                        left = np.where(miss, dl, col <= ble)
                        nd.feature, nd.default_left = f, dl
                        nd.threshold = self.binned.threshold(f, ble)
                    bank_masks.append(left)
                    self.importance["count"][self.names[f]] += 1
                    self.importance["gain"][self.names[f]] += float(best_val)
                else:
                    nd.key = key_of(t, nid)
                    plat_nodes.append(nid)
                    self.platform_keys_gain[nd.key] = float(best_val)
                splits.append([nid, owner, cand if owner == "platform" else 0,  # bank: no
                               ties if len(ties) > 1 else []])          # feature/bin
            if federated:
                link.send(W.K_SPLIT, {"depth": depth, "splits": splits,
                                      **({"cat": cat_answers} if cat_answers else {})})
                if bank_masks:
                    link.send(W.K_BANK_PARTITION, pack_bits(bank_masks))
            masks = {}
            bi = 0
            for nid, owner, _, _ in splits:
                if owner == "bank":
                    masks[nid] = bank_masks[bi]
                    bi += 1
            if plat_nodes:
                tw = time.perf_counter()
                meta = recv_json(link, W.K_PARTITION_META)
                got = recv(link, W.K_PARTITION)
                timer.add("wait_partition", time.perf_counter() - tw)
                if meta.get("nodes") != plat_nodes:
                    raise ProtocolError(f"partition for nodes {meta.get('nodes')}, "
                                        f"expected {plat_nodes}")
                sizes = [int(s) for s in meta.get("sizes", [])]
                expect = [int(rows[i].size) for i in plat_nodes]
                if sizes != expect:
                    raise ProtocolError(f"platform partition lengths {sizes} disagree with "
                                        f"the node sizes {expect}")
                for nid, m in zip(plat_nodes, unpack_bits(got, expect, W.K_PARTITION),
                                  strict=True):
                    masks[nid] = m
            nxt = []
            for nid, _, _, _ in splits:
                nd, r, m = nodes[nid], rows[nid], masks[nid]
                for cid, sel in ((nd.left, r[m]), (nd.right, r[~m])):
                    rows[cid] = sel
                    nodes[cid] = Node(cid, depth + 1, float(gq[sel].sum() / scale),
                                      float(hq[sel].sum() / scale), int(sel.size))
                    nxt.append(cid)
                if nodes[nd.left].n == 0 or nodes[nd.right].n == 0:
                    raise ProtocolError(f"split of node {nid} left a child empty")
            frontier = nxt
        else:
            if federated:
                link.send(W.K_EXPAND, {"depth": p.max_depth, "nodes": []})
        # leaves
        for nd in nodes.values():
            if not nd.owner:
                nd.value = p.learning_rate * self.rule.weight(nd.G, nd.H)
        for nid in prune(nodes, self.rule, p.learning_rate):
            for k in list(self.platform_keys_gain):
                if k == key_of(t, nid):
                    del self.platform_keys_gain[k]
        leaf_of = np.zeros(self.n, dtype=np.int64)
        for nid, r in rows.items():
            if nid in nodes and not nodes[nid].owner:
                leaf_of[r] = nid
        return nodes, leaf_of

    # ---- routing ----------------------------------------------------------------------
    def _route_tree(self, tree: dict, Xf: np.ndarray, t: int, which: str) -> np.ndarray:
        keys = [nd["key"] for nd in tree["nodes"] if nd.get("owner") == "platform"]
        decisions = XC.request_routes(self.link, keys, Xf.shape[0], which)
        return route(tree["nodes"], Xf.shape[0],
                     lambda nd, r: split_left(nd, Xf[r, nd["feature"]]),
                     lambda key, r: decisions[key][r])

    def _model(self, trees, base, labels, n_keep) -> ModelPart:
        p = self.p
        imp_count = dict(self.importance["count"])
        imp_gain = dict(self.importance["gain"])
        kept_keys = {nd["key"] for tr in trees for nd in tr["nodes"]
                     if nd.get("owner") == "platform"}
        for key, gain in self.platform_keys_gain.items():
            if key not in kept_keys:
                continue
            label = str(labels.get(key, "platform"))
            imp_count[label] = imp_count.get(label, 0) + 1
            imp_gain[label] = imp_gain.get(label, 0.0) + gain
        body = {
            "objective": p.objective, "base_margin": base, "n_trees": n_keep,
            "learning_rate": p.learning_rate, "max_depth": p.max_depth,
            "trees": trees,
            "importance": {"split_count": imp_count, "total_gain": imp_gain},
            **self.cat.model_body(),
        }
        return ModelPart(ALGORITHM, "bank", self.ctx.job_id, p.to_dict(), body,
                         list(self.names))


# ----------------------------------------------------------------------------------
def train(ctx: ProtocolContext, data: PartyData, params: SecureBoostParams,
          cipher: PrivateCipher, policy: RolePolicy) -> TrainOutcome:
    """Train the bank's side of a SecureBoost model (see the module docstring). The bank
    receives no key in SecureBoost, so ``policy`` is not consulted."""
    try:
        X, y = O.check_inputs(data.X, data.y, data.feature_names)
        trainer = _BankTrainer(ctx, X, y, data.feature_names, params, cipher, data.X_valid,
                               data.y_valid, data.categories)
        if params.objective in MULTI_OBJECTIVES:   # K class trees per round
            trainer.multi = BankMulticlass(trainer, data.classes)
        return trainer.run()
    except BaseException as exc:
        send_abort(ctx.link, exc)
        raise


def predict(ctx: ProtocolContext, model: ModelPart, X: np.ndarray) -> np.ndarray:
    """Federated scoring: the platform answers left/right for its splits; returns
    probabilities (binary:logistic) or predicted values."""
    try:
        if model.algorithm != ALGORITHM or model.party != "bank":
            raise ValueError("predict needs the bank's SecureBoost model part")
        body = model.body
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(model.feature_names):
            raise ValueError(f"X has shape {X.shape}; the model expects "
                             f"{len(model.feature_names)} bank features")
        Xf = X.astype(np.float32)
        keys = sorted({nd["key"] for tr in body["trees"] for nd in tr["nodes"]
                       if nd.get("owner") == "platform"})
        ctx.link.send(W.K_SCORE_BEGIN, {"n_rows": int(X.shape[0])})
        decisions = XC.request_routes(ctx.link, keys, X.shape[0], "score")
        outputs = [route(tr["nodes"], X.shape[0],
                         lambda nd, r: split_left(nd, Xf[r, nd["feature"]]),
                         lambda key, r: decisions[key][r]) for tr in body["trees"]]
        ctx.link.send(W.K_SCORE_END, {"n_rows": int(X.shape[0])})
        if body["objective"] in MULTI_OBJECTIVES:   # (n, K) class probabilities
            return MC.probabilities(body, outputs, X.shape[0])
        margin = np.full(X.shape[0], float(body["base_margin"]))
        for out in outputs:
            margin += out
        return O.transform(body["objective"], margin)
    except BaseException as exc:
        send_abort(ctx.link, exc)
        raise
