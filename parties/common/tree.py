"""Tree logic both SecureBoost roles share: split candidates, gains, the gradient codec,
the tree structure and its post-pruning, routing.

Nothing here talks to the peer. The split arithmetic follows XGBoost's ``hist`` updater
(``src/tree/hist/evaluate_splits.h``, ``param.h``) so that, given the same bins, the
federated trees are XGBoost's trees:

* gain of a node ``G^2 / (H + lambda)`` (0 when ``H < min_child_weight``);
* ``loss_chg = gain(L) + gain(R) - gain(parent)``; a split needs ``loss_chg > 1e-6``
  and ``H_L, H_R >= min_child_weight`` (and > 0);
* leaf / base weight ``-G / (H + lambda)``, scaled by ``learning_rate`` at the leaves;
* nodes are post-pruned bottom-up when ``loss_chg < gamma`` (XGBoost's ``prune``);
* missing values: per feature both directions are enumerated when the feature has
  missing values ("missing right": left = bins <= b; "missing left": left = missing +
  bins <= b); when the node has no missing rows the direction is "right", as XGBoost.

Split candidates (one per (feature, bin_le, default_left)) are laid out by
:func:`candidate_layout`; a candidate is described to the gain code only by its left
sums ``(G_L, H_L)`` -- the right side is the node total minus the left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RT_EPS = 1e-6


# ---------------------------------------------------------------------------------
# candidates
@dataclass
class CandidateLayout:
    """Candidates of one party's features, in the party's own (unpermuted) order.

    The party's histogram has ``B = max_bins + 1`` slots per feature: bins
    ``0..max_bins-1`` then the missing slot. Cumulative sums are taken over two
    layouts: ``mr`` (bins in order, ``B - 1`` per feature) and ``ml`` (missing first,
    then bins, ``B`` per feature); ``src`` indexes ``concat(cum_mr, cum_ml)``.
    """

    feature: np.ndarray       # int, per candidate
    bin_le: np.ndarray        # int, left = bins <= bin_le (-1: no bin)
    default_left: np.ndarray  # bool, missing rows go left
    src: np.ndarray           # int, index into concat(cum_mr, cum_ml)
    width: int                # B = slots per feature in the raw histogram

    def __len__(self) -> int:
        return int(self.feature.size)

    def gather_mr_index(self, n_features: int) -> np.ndarray:
        """Raw-histogram indices feeding the ``mr`` layout (bins only)."""
        B = self.width
        return (np.arange(n_features)[:, None] * B + np.arange(B - 1)[None, :]).ravel()

    def gather_ml_index(self, n_features: int) -> np.ndarray:
        """Raw-histogram indices feeding the ``ml`` layout (missing slot first)."""
        B = self.width
        order = np.r_[B - 1, np.arange(B - 1)]
        return (np.arange(n_features)[:, None] * B + order[None, :]).ravel()


def candidate_layout(n_cuts: np.ndarray, has_missing: np.ndarray,
                     allowed: np.ndarray | None = None) -> CandidateLayout:
    """All split candidates of features with ``n_cuts`` interior cuts (``n_cuts + 1``
    bins). ``allowed`` (bool per feature) restricts to a column sample."""
    n_cuts = np.asarray(n_cuts, dtype=np.int64)
    p = n_cuts.size
    B = int(n_cuts.max(initial=0)) + 2      # bins (K+1) + missing slot
    off_ml = p * (B - 1)
    feat, ble, dl, src = [], [], [], []
    for f in range(p):
        if allowed is not None and not allowed[f]:
            continue
        K = int(n_cuts[f])
        miss = bool(has_missing[f])
        top = K + 1 if miss else K           # b = K: everything non-missing left
        for b in range(0, top):
            feat.append(f)
            ble.append(b)
            dl.append(False)
            src.append(f * (B - 1) + b)
        if miss:
            # from the highest bin down, as XGBoost enumerates them: among equal gains
            # the first (highest threshold) wins, so unseen rows route as XGBoost's
            for b in range(K - 1, -2, -1):
                feat.append(f)
                ble.append(b)
                dl.append(True)
                src.append(off_ml + f * B + b + 1)
    return CandidateLayout(np.asarray(feat, np.int64), np.asarray(ble, np.int64),
                           np.asarray(dl, bool), np.asarray(src, np.int64), B)


def raw_histogram(bins: np.ndarray, rows: np.ndarray, values: np.ndarray,
                  width: int) -> np.ndarray:
    """Plaintext histogram ``(n_features * width,)`` of ``values`` (int64 or float64)
    over ``rows``; missing (bin -1) goes to the last slot of each feature."""
    sub = bins[rows].astype(np.int64)
    sub = np.where(sub < 0, width - 1, sub)
    p = bins.shape[1]
    flat = (sub + (np.arange(p) * width)[None, :]).ravel()
    v = np.repeat(values[rows][:, None], p, axis=1).ravel().astype(np.float64)
    return np.bincount(flat, weights=v, minlength=p * width)


def plain_candidates(hist: np.ndarray, layout: CandidateLayout, n_features: int
                     ) -> np.ndarray:
    """Left sums of every candidate from a plaintext raw histogram."""
    B = layout.width
    mr = hist[layout.gather_mr_index(n_features)].reshape(n_features, B - 1)
    ml = hist[layout.gather_ml_index(n_features)].reshape(n_features, B)
    cum = np.concatenate([np.cumsum(mr, axis=1).ravel(), np.cumsum(ml, axis=1).ravel()])
    return cum[layout.src]


# ---------------------------------------------------------------------------------
# gains
@dataclass(frozen=True)
class SplitRule:
    """XGBoost's split gain and leaf weight (``reg_alpha``: L1 soft threshold of G;
    ``max_delta_step``: cap on |weight|, the gain then taken at the capped weight)."""

    reg_lambda: float = 1.0
    min_child_weight: float = 1.0
    gamma: float = 0.0
    reg_alpha: float = 0.0
    max_delta_step: float = 0.0

    def _l1(self, G):
        if not self.reg_alpha:
            return G
        return np.sign(G) * np.maximum(np.abs(G) - self.reg_alpha, 0.0)

    def _weights(self, G, H):
        w = -self._l1(G) / (H + self.reg_lambda)
        if self.max_delta_step:
            w = np.clip(w, -self.max_delta_step, self.max_delta_step)
        return w

    def gain(self, G, H):
        G = np.asarray(G, dtype=np.float64)
        H = np.asarray(H, dtype=np.float64)
        ok = (H >= self.min_child_weight) & (H > 0)
        den = np.where(ok, H + self.reg_lambda, 1.0)
        if self.max_delta_step:
            w = self._weights(G, den - self.reg_lambda)
            return np.where(ok, -(2.0 * G * w + den * w * w), 0.0)
        T = self._l1(G)
        return np.where(ok, T * T / den, 0.0)

    def weight(self, G: float, H: float) -> float:
        if H < self.min_child_weight or H <= 0:
            return 0.0
        if not (self.reg_alpha or self.max_delta_step):
            return -G / (H + self.reg_lambda)
        return float(self._weights(np.float64(G), np.float64(H)))

    def loss_chg(self, GL: np.ndarray, HL: np.ndarray, G: float, H: float) -> np.ndarray:
        """Loss change per candidate; ``-inf`` where the split is not allowed."""
        GL = np.asarray(GL, dtype=np.float64)
        HL = np.asarray(HL, dtype=np.float64)
        GR, HR = G - GL, H - HL
        chg = self.gain(GL, HL) + self.gain(GR, HR) - float(self.gain(G, H))
        ok = ((HL >= self.min_child_weight) & (HR >= self.min_child_weight)
              & (HL > 0) & (HR > 0) & (chg > RT_EPS))
        return np.where(ok, chg, -np.inf)


# ---------------------------------------------------------------------------------
# gradient codec: (g, h) of one row -> one signed plaintext  g + h * 2**s
@dataclass(frozen=True)
class GradCodec:
    """Fixed-point packing of ``(g, h)`` into one plaintext: ``g_int + h_int << s``.

    ``g_int`` is signed; a sum of up to ``n_rows`` packed values decodes exactly as
    long as ``|sum g_int| < 2**(s-1)``, which ``s`` guarantees. The key holder decodes a
    sum ``v`` as ``G = centred(v mod 2**s)``, ``H = (v - G) >> s``.
    """

    frac_bits: int
    s: int             # bits of the g slot (signed)
    row_bits: int      # bound on |plaintext| of one row

    @classmethod
    def for_gradients(cls, g_int: np.ndarray, h_int: np.ndarray, n_rows: int,
                      frac_bits: int) -> GradCodec:
        gb = int(np.abs(g_int).max(initial=0)).bit_length()
        hb = int(np.abs(h_int).max(initial=0)).bit_length()
        grow = max(1, math.ceil(math.log2(n_rows + 1)))
        s = gb + grow + 2
        return cls(frac_bits, s, s + hb + 1)

    def encode_rows(self, g_int: np.ndarray, h_int: np.ndarray) -> list[int]:
        s = self.s
        return [g + (h << s) for g, h in zip(g_int.tolist(), h_int.tolist(), strict=True)]

    def decode_sum(self, v: int) -> tuple[int, int]:
        s = self.s
        low = v & ((1 << s) - 1)
        if low >= 1 << (s - 1):
            low -= 1 << s
        return low, (v - low) >> s


def quantize(x: np.ndarray, frac_bits: int, what: str) -> np.ndarray:
    """Round to fixed point (int64); refuse values that do not fit."""
    scaled = np.rint(np.asarray(x, np.float64) * float(1 << frac_bits))
    if not np.isfinite(scaled).all():
        raise ValueError(f"{what}: non-finite value")
    if scaled.size and np.abs(scaled).max() >= 2.0 ** 62:
        raise ValueError(f"{what}: values up to {np.abs(x).max():.3g} do not fit "
                         f"{frac_bits} fractional bits; scale the label or lower "
                         f"precision_bits")
    return scaled.astype(np.int64)


def unpack_entries(values: list[int], slot_bits: int, per_ct: int, count: int
                   ) -> list[int]:
    """Split decrypted packed plaintexts into ``count`` signed entries."""
    out: list[int] = []
    half, mask, full = 1 << (slot_bits - 1), (1 << slot_bits) - 1, 1 << slot_bits
    for v in values:
        for _ in range(per_ct):
            if len(out) == count:
                break
            e = v & mask
            if e >= half:
                e -= full
            out.append(e)
            v = (v - e) >> slot_bits
        if v not in (0,) and len(out) < count:
            pass
    if len(out) != count:
        raise ValueError(f"packed histogram holds {len(out)} entries, expected {count}")
    return out


# ---------------------------------------------------------------------------------
# tree structure
@dataclass
class Node:
    id: int
    depth: int
    G: float = 0.0
    H: float = 0.0
    n: int = 0
    owner: str = ""            # "" leaf, "bank", "platform"
    feature: int = -1          # bank feature index (bank splits)
    threshold: float = 0.0     # bank threshold (x < threshold goes left)
    default_left: bool = False
    key: str = ""              # platform lookup key (platform splits)
    left: int = -1
    right: int = -1
    loss_chg: float = 0.0
    value: float = 0.0         # leaf value (eta-scaled)
    cats: list | None = None   # bank categorical split: levels going right

    def to_json(self) -> dict:
        d = {"id": self.id, "depth": self.depth, "G": self.G, "H": self.H, "n": self.n}
        if self.owner:
            d.update(owner=self.owner, left=self.left, right=self.right,
                     loss_chg=self.loss_chg, default_left=self.default_left)
            if self.owner == "bank":
                d.update(feature=self.feature, threshold=self.threshold)
                if self.cats is not None:
                    d["cats"] = list(self.cats)
            else:
                d.update(key=self.key)
        else:
            d["value"] = self.value
        return d

    @classmethod
    def from_json(cls, d: dict) -> Node:
        return cls(**{k: v for k, v in d.items()})


def prune(nodes: dict[int, Node], rule: SplitRule, eta: float) -> list[int]:
    """XGBoost-style post-pruning: collapse splits with ``loss_chg < gamma`` whose
    children are leaves, bottom-up. Returns the ids of nodes that became leaves."""
    collapsed = []
    if rule.gamma <= 0:
        return collapsed
    changed = True
    while changed:
        changed = False
        for nid in sorted(nodes, reverse=True):
            nd = nodes.get(nid)
            if nd is None or not nd.owner:
                continue
            lch, rch = nodes[nd.left], nodes[nd.right]
            if not lch.owner and not rch.owner and nd.loss_chg < rule.gamma:
                del nodes[nd.left], nodes[nd.right]
                nd.owner, nd.left, nd.right = "", -1, -1
                nd.value = eta * rule.weight(nd.G, nd.H)
                collapsed.append(nid)
                changed = True
    return collapsed


def route(nodes: list[dict], n_rows: int, go_left_bank, go_left_platform) -> np.ndarray:
    """Leaf value per row. ``go_left_bank(node, rows)`` / ``go_left_platform(key, rows)``
    return a bool array (True = left) for the given rows."""
    by_id = {d["id"]: d for d in nodes}
    out = np.zeros(n_rows, dtype=np.float64)
    stack = [(0, np.arange(n_rows))]
    while stack:
        nid, rows = stack.pop()
        nd = by_id[nid]
        if "owner" not in nd:
            out[rows] = nd["value"]
            continue
        if rows.size == 0:
            continue
        left = (go_left_bank(nd, rows) if nd["owner"] == "bank"
                else go_left_platform(nd["key"], rows))
        stack.append((nd["left"], rows[left]))
        stack.append((nd["right"], rows[~left]))
    return out


def threshold_left(values: np.ndarray, threshold: float, default_left: bool) -> np.ndarray:
    """XGBoost's decision: ``x < threshold`` (float32) goes left; NaN by default."""
    v = np.asarray(values, dtype=np.float32)
    nan = np.isnan(v)
    left = v < np.float32(threshold)
    return np.where(nan, default_left, left)


def bits_to_bool(packed: np.ndarray, n: int, what: str) -> np.ndarray:
    """Unpack a uint8 bit array of exactly ``ceil(n/8)`` bytes."""
    from federation.link import ProtocolError
    if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != (n + 7) // 8:
        raise ProtocolError(f"{what}: expected {(n + 7) // 8} packed bytes for {n} rows, "
                            f"got {packed.size} ({packed.dtype})")
    return np.unpackbits(packed, count=n).astype(bool)
