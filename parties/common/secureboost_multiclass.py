"""Multiclass SecureBoost (``multi:softprob`` / ``multi:softmax``): the packing both roles
share.

Per boosting round the bank builds K trees, one per class (XGBoost's default
``multi_strategy = "one_output_per_tree"``), from the softmax gradients of the round's
margins. It encrypts each row's K gradient pairs together: class ``j``'s fixed-point
value ``v_j = g_j + h_j * 2**s`` (:class:`~parties.common.tree.GradCodec`) sits in slot
``j`` of ``class_bits`` bits, so a row costs ``groups = ceil(K / per_row)`` encryptions
per round (one for K = 4 with a 2048-bit key) instead of K::

    row plaintext of a group = sum_j v_j * 2**(j * class_bits)

The platform sums the packed row ciphertexts per (class tree, node, bin) exactly as for
one tree: a histogram entry of class tree ``k`` holds the sums of every class of its
group over the node's rows in that bin, but only slot ``k`` belongs to the tree. Before
packing entries for decryption the platform adds, to every other slot, a fresh uniform
mask of ``sum_bits + MASK_BITS`` bits (statistical distance < 2**-MASK_BITS from
uniform), so the bank reads its tree's ``(G_L, H_L)`` and nothing else: what it learns
per class tree is what K separate binary-style trees would tell it. ``class_bits =
sum_bits + MASK_BITS + 2`` leaves room for a masked slot without carrying into the next
one. Entries are ``m * class_bits`` wide (``m`` classes in the group), so a decryption
carries ``capacity // (m * class_bits)`` candidates instead of ``capacity //
(sum_bits + 1)``: decryption count per class tree grows about K-fold in exchange for
one encryption per row instead of K (docs/secureboost.md, cost model).

What the platform learns beyond a binary job: K (the number of class trees per round,
announced in ``sb.init``) and the partitions of each class tree, as K trees would show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from federation.link import ProtocolError
from parties.common.tree import GradCodec, unpack_entries

#: statistical hiding of the masked (other-class) slots of a histogram entry
MASK_BITS = 80
#: headroom kept below the plaintext capacity (cumulative sums add a few bits of bound)
_HEADROOM = 16
#: the in-band protocol version of a multiclass job (binary/regression jobs stay at 2)
MULTICLASS_VERSION = 3
MULTI_OBJECTIVES = ("multi:softprob", "multi:softmax")


@dataclass(frozen=True)
class ClassPacking:
    """Where each class's ``g + h * 2**s`` sits in a row's plaintext (both roles derive
    it from ``num_class``, ``row_bits``, ``n_rows`` and the key's capacity)."""

    num_class: int
    row_bits: int      # |v_j| of one row < 2**row_bits (GradCodec.row_bits)
    n_rows: int
    per_row: int       # classes per row ciphertext

    @classmethod
    def plan(cls, num_class: int, row_bits: int, n_rows: int, capacity_bits: int
             ) -> ClassPacking:
        probe = cls(num_class, row_bits, n_rows, 1)
        per_row = min(num_class, (capacity_bits - _HEADROOM) // probe.class_bits)
        if per_row < 1:
            raise ValueError(f"one class slot needs {probe.class_bits + _HEADROOM} bits; "
                             f"the key's plaintext space holds {capacity_bits}: use a "
                             "larger key or lower precision_bits")
        return cls(num_class, row_bits, n_rows, per_row)

    @property
    def sum_bits(self) -> int:
        """Bound on one class's slot summed over any subset of the rows."""
        return self.row_bits + max(1, math.ceil(math.log2(self.n_rows + 1)))

    @property
    def class_bits(self) -> int:
        return self.sum_bits + MASK_BITS + 2

    @property
    def groups(self) -> int:
        return -(-self.num_class // self.per_row)

    def group_of(self, k: int) -> tuple[int, int]:
        """(row-ciphertext group, slot within it) of class ``k``."""
        return divmod(k, self.per_row)

    def width(self, group: int) -> int:
        """Classes in ``group``."""
        return min(self.per_row, self.num_class - group * self.per_row)

    def row_bound(self, group: int) -> int:
        """Bound bits of one row's packed plaintext in ``group``."""
        return (self.width(group) - 1) * self.class_bits + self.row_bits + 1

    def sum_bound(self, group: int) -> int:
        """Bound bits of a sum of ``group``'s row plaintexts over a subset of rows."""
        return (self.width(group) - 1) * self.class_bits + self.sum_bits + 1

    def entry_bits(self, group: int) -> int:
        """Width of one (masked) histogram entry of a class tree of ``group``."""
        return self.width(group) * self.class_bits

    def meta(self) -> dict:
        return {"num_class": self.num_class, "class_bits": self.class_bits,
                "per_row": self.per_row, "groups": self.groups}

    def check_meta(self, meta: dict) -> None:
        """The platform: the bank's announced packing must be the one derived here."""
        if {k: meta.get(k) for k in self.meta()} != self.meta():
            raise ProtocolError(f"sb.grad_meta: multiclass packing "
                                f"{ {k: meta.get(k) for k in self.meta()} } differs from "
                                f"the one this key and these rows give {self.meta()}")

    # ---- bank ---------------------------------------------------------------------
    def encode_rows(self, v: np.ndarray, group: int) -> list[int]:
        """Row plaintexts of ``group`` from ``v`` (rows x K python ints g + h << s)."""
        lo = group * self.per_row
        cb = self.class_bits
        out = []
        for row in v[:, lo:lo + self.width(group)].tolist():
            acc = 0
            for j in range(len(row) - 1, -1, -1):
                acc = (acc << cb) + row[j]
            out.append(acc)
        return out

    def view(self, codec: GradCodec, k: int) -> ClassView:
        group, slot = self.group_of(k)
        return ClassView(codec, self.class_bits, self.width(group), slot)

    # ---- platform -----------------------------------------------------------------
    def masks(self, rng, k: int, n_entries: int, per_ct: int) -> list[int]:
        """Plaintexts to add to the ``ceil(n_entries / per_ct)`` packed ciphertexts of a
        class-``k`` tree node: a uniform ``sum_bits + MASK_BITS``-bit mask in every slot
        of every entry but slot ``k``'s (``rng``: a Drbg, fresh per node)."""
        group, keep = self.group_of(k)
        m, cb, eb = self.width(group), self.class_bits, self.entry_bits(group)
        bits = self.sum_bits + MASK_BITS
        out = []
        for start in range(0, n_entries, per_ct):
            acc = 0
            for e in range(min(per_ct, n_entries - start)):
                for j in range(m):
                    if j != keep:
                        acc += rng.randbits(bits) << (e * eb + j * cb)
            out.append(acc)
        return out


@dataclass(frozen=True)
class ClassView:
    """The bank's reading of class tree ``k``'s histogram entries: slot ``slot`` of a
    ``width``-class entry, decoded as ``(G, H)`` by the round's :class:`GradCodec`
    (the interface ``_recv_histograms`` uses for a binary tree's codec)."""

    codec: GradCodec
    class_bits: int
    width: int
    slot: int

    @property
    def frac_bits(self) -> int:
        return self.codec.frac_bits

    @property
    def s(self) -> int:
        return self.codec.s

    def decode_sum(self, e: int) -> tuple[int, int]:
        v = unpack_entries([e], self.class_bits, self.width, self.width)[self.slot]
        return self.codec.decode_sum(v)


def softmax(margin: np.ndarray) -> np.ndarray:
    z = margin - margin.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def grad_hess(y: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """XGBoost's softmax gradients: ``g = p - onehot(y)``, ``h = max(2 p (1 - p),
    1e-16)`` per row and class (rows x K)."""
    p = softmax(margin)
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y.astype(np.int64)] = 1.0
    return p - onehot, np.maximum(2.0 * p * (1.0 - p), 1e-16)


def probabilities(body: dict, outputs: list[np.ndarray], n_rows: int) -> np.ndarray:
    """(n, K) class probabilities from a bank model body and each tree's leaf values
    (tree ``i`` adds to class ``i % K``, XGBoost's order)."""
    K = int(body["num_class"])
    margin = np.tile(np.asarray(body["base_margin"], dtype=np.float64), (n_rows, 1))
    for i, out in enumerate(outputs):
        margin[:, i % K] += out
    return softmax(margin)


def base_margin(base_score: float | None, y: np.ndarray, num_class: int) -> np.ndarray:
    """The K starting margins as XGBoost 3 estimates them: the centred log class
    frequencies ``log(f_k + 1e-6) - mean_j log(f_j + 1e-6)``; a given ``base_score``
    is every class's margin."""
    if base_score is not None:
        return np.full(num_class, float(base_score))
    freq = np.bincount(y.astype(np.int64), minlength=num_class) / max(y.size, 1)
    logf = np.log(freq + 1e-6)
    return logf - logf.mean()
