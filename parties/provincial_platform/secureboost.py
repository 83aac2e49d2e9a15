"""SecureBoost, platform (passive party, feature provider) role.

The platform bins its own columns locally (XGBoost-compatible quantile cuts, see
``parties.common.binning``), receives the bank's Paillier-encrypted per-row
``g + h * 2**s`` values, and per tree level builds encrypted histograms for the nodes
the bank asks for: the smaller sibling directly (streaming over gradient chunks at the
root), the larger one as ``parent - sibling``. It turns them into cumulative split
candidates (both missing-value directions for columns with missing values), shuffles
them with a fresh private permutation per node, packs many candidates per ciphertext
and sends them. When the bank picks one of its candidates it records the real
(feature, threshold, default direction) in its private lookup table and returns the
node's left/right partition.

What the platform learns (per federated tree):
  * Paillier ciphertexts of every row's (g, h) -- nothing about their values;
  * the partition of the training rows into the tree's nodes (needed to build
    histograms), including at bank-owned splits, and which of its own candidates won
    at the nodes it splits; nothing about bank features, thresholds, labels or leaf
    values; the number of trees and the sampling/column choices sent to it;
  * with a validation set / at scoring time: which of its split records the bank
    asks about (it answers left/right for every requested row).
What it reveals: see ``parties.bank.secureboost`` (permuted cumulative histograms,
partitions at its splits, left/right answers at scoring time, anonymous labels).
Categorical features: per-level histograms in permuted blocks, the level order of
exactly tied levels (``parties.common.categorical``).

Refresh and threat model. Every packed histogram ciphertext is multiplied by a fresh
obfuscator before it goes to the bank (the key holder), which knows ``p, q`` and the
randomness of every row ciphertext it sent: without a refresh it could take discrete
logarithms of the aggregate's obfuscator modulo the 1024-bit primes (cheap when it
chose ``p - 1`` smooth) and learn which of its rows were summed into each bin -- the
platform's feature values in sorted order. A short-exponent (1024-bit) DJN factor does
not reliably hide that exponent sum from a party that can take such logarithms, so:

* ``refresh = "djn_full"`` (default): ``h_s^alpha'`` with ``alpha'`` uniform of
  ``n.bit_length() + 128`` bits, statistically uniform (distance < 2^-128) over the
  subgroup ``<h_s>`` that contains every obfuscator of an honest bank's DJN
  encryptions, so the refreshed aggregate is independent of how it was formed.
  Sound against a **semi-honest** bank (follows the protocol, tries to learn more).
* ``refresh = "standard"``: uniform ``r^n`` over all n-th residues (phe's scheme,
  ~7.5x the cost: 7.6 ms vs 1.0 ms per ciphertext on one core here): also defeats a **malicious** bank that tags its row ciphertexts
  with obfuscators outside ``<h_s>``.

The job parameter ``refresh`` selects one; the platform policy key ``refresh`` can
only make it stricter (``"standard"`` wins).

Policy (:class:`~parties.common.role.RolePolicy`): ``keys`` decides which bank keys
and ciphers are accepted (:func:`secure_agg.keypolicy.peer_public_cipher`),
``reveal_feature_names`` (default False: the bank sees ``platform_f<k>`` labels in
feature importance), ``share_importance`` (default True; False: every platform split is
labelled ``platform``), ``refresh`` (default ``"djn_full"``; ``"standard"`` forces
uniform ``r^n`` refreshes).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np

from federation.link import ProtocolContext, ProtocolError
from parties.common import secureboost_wire as W
from parties.common.artifact import ModelPart, TrainOutcome
from parties.common.binning import bin_columns
from parties.common.categorical import record_json, record_left
from parties.common.role import PartyData, RolePolicy
from parties.common.secureboost_multiclass import MULTI_OBJECTIVES, MULTICLASS_VERSION
from parties.common.secureboost_params import REFRESH_MODES, SHARED, SecureBoostParams
from parties.common.secureboost_wire import (
    PROTOCOL_VERSION,
    key_of,
    pack_bits,
    recv,
    recv_json,
    send_abort,
    unpack_bits,
)
from parties.common.tree import candidate_layout
from parties.provincial_platform.secureboost_categorical import PlatformCategorical
from parties.provincial_platform.secureboost_multiclass import PlatformMulticlass
from secure_agg.cipher import CipherVector, PublicCipher
from secure_agg.keypolicy import peer_public_cipher

ALGORITHM = "secureboost"

def _with_bound(vec: CipherVector, bits: int) -> CipherVector:
    """Re-state a vector's plaintext bound when the protocol proves a tighter one (every
    histogram entry here is a sum over a subset of at most n rows)."""
    return CipherVector(vec.key_id, vec.data, min(vec.bound_bits, bits))


def refresh_mode(params_refresh: str, policy: RolePolicy) -> str:
    """The effective refresh: ``"standard"`` if either the job or the policy asks."""
    pol = policy.refresh
    if pol not in REFRESH_MODES:
        raise ValueError(f"policy refresh = {pol!r}: expected one of {REFRESH_MODES}")
    return "standard" if "standard" in (params_refresh, pol) else "djn_full"


def _refresh(cipher: PublicCipher, vec: CipherVector, rng, mode: str) -> CipherVector:
    """Multiply in a fresh obfuscator before an aggregate goes to the key holder, so it
    cannot trace which of its own row ciphertexts (whose randomness it knows) were
    multiplied together: ``mode`` ``"djn_full"`` (statistically uniform over
    ``<h_s>``) or ``"standard"`` (uniform ``r^n``); see the module docstring."""
    return cipher.rerandomize(vec, rng, obfuscation=mode)


class _PlatformTrainer:
    restate = staticmethod(_with_bound)   # for the multiclass hooks

    def __init__(self, ctx, X, names, p, policy, X_valid, categories=None):
        self.ctx, self.link, self.p, self.policy = ctx, ctx.link, p, policy
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D matrix, got shape {X.shape}")
        if X.dtype.kind not in "biuf":
            raise ValueError(f"X: features must be numeric, got dtype {X.dtype}")
        if len(names) != X.shape[1]:
            raise ValueError(f"feature_names has {len(names)} names for {X.shape[1]} "
                             "columns")
        self.names = list(names)
        self.refresh = refresh_mode(p.refresh, policy)
        self.n, self.nf = X.shape
        is_cat = np.array([n in (categories or {}) for n in names], bool)
        self.binned = bin_columns(X, p.max_bin, p.binning, is_cat)
        self.Xf = X.astype(np.float32)
        self.n_cuts = np.array([len(c) for c in self.binned.cuts], dtype=np.int64)
        self.cat = PlatformCategorical(self.names, categories, self.n_cuts)
        all_missing = np.isnan(self.Xf).all(axis=0)
        self.usable = (self.n_cuts > 0) | (self.binned.has_missing & ~all_missing)
        for j in np.flatnonzero(~self.usable):
            ctx.log("secureboost.feature_unusable",
                    {"feature": self.names[j],
                     "reason": "all missing" if all_missing[j] else "constant"})
        if not self.usable.any():
            raise ValueError("every platform feature is constant or all missing; nothing "
                             "to contribute")
        self.Xv = None if X_valid is None else np.asarray(X_valid).astype(np.float32)
        self.B = int(self.n_cuts.max(initial=0)) + 2
        bins = self.binned.bins.astype(np.int64)
        self.hbins = np.where(bins < 0, self.B - 1, bins)
        self.lookup: dict[str, list] = {}
        self.multi: PlatformMulticlass | None = None   # multiclass jobs (handshake)
        self.timer = defaultdict(float)
        rng = ctx.rng.child("sb/labels").numpy()
        perm = rng.permutation(self.nf)
        self.anon = {f: f"platform_f{int(perm[f])}" for f in range(self.nf)}

    def handshake(self):
        init = recv_json(self.link, W.K_INIT)
        multi = self.p.objective in MULTI_OBJECTIVES
        version = MULTICLASS_VERSION if multi else PROTOCOL_VERSION
        if init.get("version") != version:
            raise ProtocolError(f"bank speaks SecureBoost protocol {init.get('version')}, "
                                f"this platform {version} for objective {self.p.objective}")
        theirs = init.get("params", {})
        for k in SHARED:
            if theirs.get(k) != getattr(self.p, k):
                raise ProtocolError(f"parameter {k} differs: bank {theirs.get(k)!r}, "
                                    f"platform {getattr(self.p, k)!r}")
        nv = int(init.get("n_valid", 0))
        self.link.send(W.K_INIT_ACK, {"n_rows": int(self.n), "n_features": int(self.nf),
                                       "n_valid": 0 if self.Xv is None else
                                       int(self.Xv.shape[0])})
        if init.get("n_rows") != self.n:
            raise ValueError(f"bank has {init.get('n_rows')} aligned rows, platform has "
                             f"{self.n}: the PSI alignment differs")
        if nv and (self.Xv is None or self.Xv.shape[0] != nv):
            raise ValueError(f"bank has a validation set of {nv} rows; platform has "
                             f"{0 if self.Xv is None else self.Xv.shape[0]}")
        self.cipher = peer_public_cipher(init.get("key", {}), self.policy.keys,
                                         self.ctx.workers)
        if multi:
            self.multi = PlatformMulticlass.from_init(self, init, self.p, self.policy)

    def run(self) -> TrainOutcome:
        t0 = time.perf_counter()
        self.handshake()
        while True:
            msg = recv_json(self.link, W.K_TREE)
            if msg.get("stop"):
                n_keep = int(msg.get("n_trees", 0))
                break
            t = int(msg["tree"])
            if msg.get("federated"):
                allowed = np.array(self.usable)
                pf = msg.get("platform_features")
                if pf is not None:
                    sel = np.zeros(self.nf, bool)
                    idx = [int(i) for i in pf]
                    if any(i < 0 or i >= self.nf for i in idx):
                        raise ProtocolError(f"column sample {idx} outside 0..{self.nf - 1}")
                    sel[idx] = True
                    allowed &= sel
                self._tree(t, allowed, None if self.multi is None else
                           self.multi.for_tree(msg))
            if self.Xv is not None:
                self._serve_routes(self.Xv, "valid")
            per_round = 1 if self.multi is None else self.multi.K   # multiclass: a tree
            if (t + 1) % per_round == 0:                             # per class and round
                self.ctx.checkpoint((t + 1) // per_round, {"splits": len(self.lookup)})
        self.lookup = {k: v for k, v in self.lookup.items()
                       if int(k.split(":")[0]) < n_keep}
        labels = {}
        for k, (f, _, _) in self.lookup.items():
            if not self.policy.share_importance:
                labels[k] = "platform"
            elif self.policy.reveal_feature_names:
                labels[k] = self.names[f]
            else:
                labels[k] = self.anon[f]
        self.link.send(W.K_LABELS, labels)
        timings = dict(self.timer)
        timings["total"] = time.perf_counter() - t0  # local only: replay must not depend on it
        count = defaultdict(int)
        for f, _, _ in self.lookup.values():
            count[self.names[f]] += 1
        body = {"splits": {k: record_json(rec) for k, rec in sorted(self.lookup.items())},
                "n_trees": n_keep, "split_count": dict(count), **self.cat.model_body()}
        model = ModelPart(ALGORITHM, "platform", self.ctx.job_id, self.p.to_dict(), body,
                          list(self.names))
        self.link.send(W.K_DIGEST, {"digest": model.digest()})
        peer = recv_json(self.link, W.K_DIGEST)
        model.peer_part_digest = str(peer.get("digest", ""))
        return TrainOutcome(model=model, timings=timings)

    # ---- one federated tree -------------------------------------------------------
    def _subset(self, allowed: np.ndarray):
        """(column indices, candidate layout, slots per feature, bins) of a column set."""
        sub = np.flatnonzero(allowed)
        layout = candidate_layout(self.n_cuts[sub], self.binned.has_missing[sub],
                                  ~self.cat.is_cat[sub])
        B = layout.width
        hb = self.hbins[:, sub]
        return sub, layout, B, np.where(hb == self.B - 1, B - 1, hb)  # subset's missing slot

    def _recv_gradients(self, what: str, n_chunks: int, chunk: int, row_bits: int,
                        hb: np.ndarray, B: int, tight: int):
        """Receive one set of row ciphertexts; returns (vector, its root histogram),
        the histogram built chunk by chunk while the bank still encrypts."""
        link, cipher, n = self.link, self.cipher, self.n
        root_hist = None
        parts = []
        w = cipher.ciphertext_bytes
        for c in range(n_chunks):
            tw = time.perf_counter()
            blob = recv(link, W.K_GRAD)
            self.timer["wait_gradients"] += time.perf_counter() - tw
            lo, hi = c * chunk, min(n, (c + 1) * chunk)
            if not isinstance(blob, bytes) or len(blob) != (hi - lo) * w:
                raise ProtocolError(f"sb.grad {what}chunk {c}: expected {(hi - lo) * w} "
                                    "bytes")
            try:
                vec = cipher.from_bytes(blob, row_bits)
            except ValueError as exc:
                raise ProtocolError(f"sb.grad {what}chunk {c}: {exc}") from None
            parts.append(vec)
            th = time.perf_counter()
            hc = cipher.histogram(vec, hb[lo:hi], B)
            root_hist = hc if root_hist is None else _with_bound(
                cipher.add(root_hist, hc), tight)
            self.timer["histograms"] += time.perf_counter() - th
        return _with_bound(cipher.concat(parts), row_bits), root_hist

    def _tree(self, t: int, allowed: np.ndarray, multi=None):
        """One federated tree. ``multi``: a multiclass class tree's hook
        (parties.provincial_platform.secureboost_multiclass), which supplies the round's
        row ciphertexts, the entry width and the masks of the other classes' slots."""
        link, cipher, n = self.link, self.cipher, self.n
        sub, layout, B, hb = self._subset(allowed)
        if multi is None:
            meta = recv_json(link, W.K_GRAD_META)
            try:
                s, row_bits = int(meta["s"]), int(meta["row_bits"])
                n_chunks, chunk = int(meta["n_chunks"]), int(meta["chunk_rows"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ProtocolError(f"sb.grad_meta malformed: {exc}") from None
            if n_chunks != (n + chunk - 1) // chunk or not 0 < s < row_bits:
                raise ProtocolError(f"sb.grad_meta inconsistent with {n} rows: {meta}")
            tight = row_bits + math.ceil(math.log2(n + 1))
            # root: stream the chunks into the histogram while the bank encrypts
            enc, root_hist = self._recv_gradients("", n_chunks, chunk, row_bits, hb, B,
                                                  tight)
            slot = tight + 1
        else:
            enc, root_hist, tight, slot = multi.tree_inputs(sub, B)
        rows = {0: np.arange(n)}
        hists: dict[int, CipherVector] = {}
        while True:
            exp = recv_json(link, W.K_EXPAND)
            frontier = [int(i) for i in exp.get("nodes", [])]
            if not frontier:
                break
            for nid in frontier:
                if nid not in rows:
                    raise ProtocolError(f"sb.expand: unknown node {nid}")
            th = time.perf_counter()
            cur = {}
            for nid in frontier:
                if nid == 0:
                    cur[0] = root_hist
                    continue
                if nid in cur:
                    continue
                sib = nid + 1 if nid % 2 else nid - 1
                parent = (nid - 1) // 2
                if sib in frontier and parent in hists:
                    small, big = (nid, sib) if rows[nid].size <= rows[sib].size else (sib, nid)
                    cur[small] = _with_bound(cipher.histogram(enc, hb, B, rows=rows[small]),
                                             tight)
                    cur[big] = _with_bound(cipher.sub(hists[parent], cur[small]), tight)
                else:
                    cur[nid] = _with_bound(cipher.histogram(enc, hb, B, rows=rows[nid]),
                                           tight)
            self.timer["histograms"] += time.perf_counter() - th
            hists = cur
            tp = time.perf_counter()
            per_ct = (max(1, cipher.capacity_bits // slot) if multi is None
                      else multi.per_ct(slot))
            blobs, n_cand, n_ct, perms, cat_sizes = [], [], [], {}, []
            nfeat = sub.size
            idx_mr = layout.gather_mr_index(nfeat)
            idx_ml = layout.gather_ml_index(nfeat)
            for nid in frontier:
                hv = cur[nid]
                cum = cipher.concat([cipher.cumsum_blocks(cipher.take(hv, idx_mr), B - 1),
                                     cipher.cumsum_blocks(cipher.take(hv, idx_ml), B)])
                perm = self.ctx.rng.child(f"sb/perm/{t}/{nid}").numpy().permutation(
                    len(layout))
                perms[nid] = perm
                cand = _with_bound(cipher.take(cum, layout.src[perm]), tight)
                cat_vec, sizes = self.cat.entries(cipher, hv, sub, B, nid,
                                                  self.ctx.rng.child(f"sb/catperm/{t}/{nid}"))
                if cat_vec is not None:
                    cand = _with_bound(cipher.concat([cand, cat_vec]) if len(layout)
                                       else cat_vec, tight)
                    cat_sizes.append(sizes)
                packed = cipher.pack(cand, slot, per_ct)
                if multi is not None:   # hide the other classes' slots from the bank
                    packed = multi.mask(packed, t, nid, len(layout) + sum(sizes), slot,
                                        per_ct)
                self.timer["pack"] += time.perf_counter() - tp
                tr = time.perf_counter()
                packed = _refresh(cipher, packed, self.ctx.rng.child(f"sb/rr/{t}/{nid}"),
                                  self.refresh)
                self.timer["rerandomize"] += time.perf_counter() - tr
                tp = time.perf_counter()
                blobs.append(cipher.to_bytes(packed))
                n_cand.append(len(layout) + sum(sizes))
                n_ct.append(len(packed))
            self.timer["pack"] += time.perf_counter() - tp
            link.send(W.K_HIST_META, {"nodes": frontier, "n_cand": n_cand, "n_ct": n_ct,
                                       "slot_bits": slot, "per_ct": per_ct,
                                       **({"cat_sizes": cat_sizes} if cat_sizes else {})})
            link.send(W.K_HIST, b"".join(blobs))
            if cat_sizes:
                self.cat.order_ties(link, self.policy.categorical_tie_order)
            tw = time.perf_counter()
            dec = recv_json(link, W.K_SPLIT)
            self.timer["wait_bank"] += time.perf_counter() - tw
            splits = dec.get("splits", [])
            bank_nodes = [int(sp[0]) for sp in splits if sp[1] == "bank"]
            masks = {}
            if bank_nodes:
                for nid in bank_nodes:
                    if nid not in frontier:
                        raise ProtocolError(f"sb.split: node {nid} was not expanded")
                got = recv(link, W.K_BANK_PARTITION)
                for nid, m in zip(bank_nodes, unpack_bits(
                        got, [rows[i].size for i in bank_nodes], W.K_BANK_PARTITION),
                        strict=True):
                    masks[nid] = m
            plat_nodes, plat_masks = [], []
            for nid, owner, cidx, ties in splits:
                nid, cidx = int(nid), int(cidx)
                if owner != "platform":
                    continue
                if nid not in perms:
                    raise ProtocolError(f"sb.split: node {nid} was not histogrammed")
                # equal-gain categorical blocks (permuted levels), then the numeric pick:
                # the lowest feature wins, as in XGBoost
                options = self.cat.options(nid, dec.get("cat"), self.binned.bins[rows[nid]])
                if cidx != -1 or not options:
                    cands = [cidx] + [int(c) for c in ties]
                    if not all(0 <= c < len(layout) for c in cands):
                        raise ProtocolError(f"sb.split: bad candidate {cidx} for node {nid}")
                    # equal-gain candidates: lowest feature, then lowest bin (as XGBoost)
                    j = int(min(perms[nid][c] for c in cands))
                    f = int(sub[layout.feature[j]])
                    ble = int(layout.bin_le[j])
                    col = self.binned.bins[rows[nid], f]
                    miss = col < 0
                    dl = bool(layout.default_left[j]) and bool(miss.any())
                    options.append((f, self.binned.threshold(f, ble), dl,
                                    np.where(miss, dl, col <= ble)))
                f, thr, dl, left = min(options, key=lambda o: o[0])
                self.lookup[key_of(t, nid)] = [f, thr, dl]
                masks[nid] = left
                plat_nodes.append(nid)
                plat_masks.append(left)
            if plat_nodes:
                link.send(W.K_PARTITION_META, {"nodes": plat_nodes,
                                                "sizes": [int(rows[i].size)
                                                          for i in plat_nodes]})
                link.send(W.K_PARTITION, pack_bits(plat_masks))
            for nid, _, _, _ in splits:
                nid = int(nid)
                r, m = rows[nid], masks[nid]
                rows[2 * nid + 1], rows[2 * nid + 2] = r[m], r[~m]

    # ---- routing --------------------------------------------------------------------
    def _serve_routes(self, Xf: np.ndarray, which: str):
        req = recv_json(self.link, W.K_ROUTE_REQUEST)
        keys = [str(k) for k in req.get("keys", [])]
        n = int(req.get("n_rows", -1))
        if req.get("set") != which or n != Xf.shape[0]:
            raise ProtocolError(f"route request for {req.get('set')!r} with {n} rows; "
                                f"expected {which!r} with {Xf.shape[0]}")
        self.link.send(W.K_ROUTE_BITS, route_bits(self.lookup, keys, Xf))


def route_bits(lookup: dict, keys: list[str], Xf: np.ndarray) -> np.ndarray:
    nb = (Xf.shape[0] + 7) // 8
    out = np.zeros((len(keys), nb), dtype=np.uint8)
    for i, k in enumerate(keys):
        rec = lookup.get(k)
        if rec is None:
            raise ProtocolError(f"the bank asked about split {k!r}, which this platform "
                                "never made")
        out[i] = np.packbits(record_left(rec, Xf))
    return out


# ----------------------------------------------------------------------------------
def train(ctx: ProtocolContext, data: PartyData, params: SecureBoostParams, cipher: None,
          policy: RolePolicy) -> TrainOutcome:
    """Train the platform's side of a SecureBoost model (see the module docstring); the
    platform holds no key (``cipher`` is None)."""
    try:
        return _PlatformTrainer(ctx, data.X, data.feature_names, params, policy,
                                data.X_valid, data.categories).run()
    except BaseException as exc:
        send_abort(ctx.link, exc)
        raise


def predict(ctx: ProtocolContext, model: ModelPart, X: np.ndarray) -> None:
    """Answer the bank's left/right questions for this platform's splits on X."""
    try:
        if model.algorithm != ALGORITHM or model.party != "platform":
            raise ValueError("predict needs the platform's SecureBoost model part")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(model.feature_names):
            raise ValueError(f"X has shape {X.shape}; the model expects "
                             f"{len(model.feature_names)} platform features")
        Xf = X.astype(np.float32)
        begin = recv_json(ctx.link, W.K_SCORE_BEGIN)
        if int(begin.get("n_rows", -1)) != X.shape[0]:
            raise ProtocolError(f"bank scores {begin.get('n_rows')} rows, platform has "
                                f"{X.shape[0]}: the PSI alignment differs")
        req = recv_json(ctx.link, W.K_ROUTE_REQUEST)
        keys = [str(k) for k in req.get("keys", [])]
        if req.get("set") != "score" or int(req.get("n_rows", -1)) != X.shape[0]:
            raise ProtocolError("unexpected route request")
        ctx.link.send(W.K_ROUTE_BITS, route_bits(model.body["splits"], keys, Xf))
        recv_json(ctx.link, W.K_SCORE_END)
    except BaseException as exc:
        send_abort(ctx.link, exc)
        raise
