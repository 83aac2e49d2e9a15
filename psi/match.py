"""Matching 32-byte PSI values and the agreed order, on sorted 64-bit keys.

The values are X25519 outputs (uniform in practice), so their first little-endian
64-bit word almost always identifies them: both sides are matched by sorting that
word (``numpy.argsort``) and one merge (``searchsorted`` of sorted needles), and
equality is then confirmed on the other three words. Where first words repeat (about
n^2 / 2^65 pairs for honest values) a dict of the full values is used instead; results
are the same either way (tested against Python sets).

The agreed order of an intersection is by value, lexicographically over the 4 LE
uint64 words (:func:`order_by_value`): both parties hold the same double-blinded
values for the intersection, so both get the same order without exchanging anything.

What each party learns: nothing -- local computation on values it already holds.
"""

from __future__ import annotations

import numpy as np


def _words(rows: np.ndarray) -> np.ndarray:
    """(k, 32) uint8 rows as a (k, 4) little-endian uint64 view (copied if needed)."""
    return np.ascontiguousarray(rows, dtype=np.uint8).view("<u8").reshape(-1, 4)


def _distinct_sorted(s: np.ndarray) -> bool:
    return not (s[1:] == s[:-1]).any()


def order_by_value(vals: np.ndarray) -> np.ndarray:
    """argsort of 32-byte values (k, 32) lexicographically by their 4 LE uint64 words."""
    w = _words(vals)
    first = w[:, 0].copy()
    order = np.argsort(first)
    if _distinct_sorted(first[order]):  # the first word decides (all but ~n^2/2^64)
        return order
    return np.lexsort((w[:, 3], w[:, 2], w[:, 1], w[:, 0]))


class SortedRows:
    """One side's values (the peer's), sorted by first word once, to match against.

    Built as soon as those values are complete (the balanced protocol does it while
    the other side's values are still arriving), so :meth:`match` costs one sort of
    the other side and a merge.
    """

    def __init__(self, rows: np.ndarray):
        self.rows = rows
        self.words = _words(rows)
        key = self.words[:, 0].copy()
        self.order = np.argsort(key)
        self.keys = key[self.order]
        self.distinct = _distinct_sorted(self.keys)

    def match(self, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(own_idx, peer_idx)`` of the rows of ``own`` equal to one of ours, with
        ``own_idx`` in the agreed order (:func:`order_by_value` of ``own[own_idx]``)."""
        m = len(self.keys)
        if len(own) == 0 or m == 0:
            e = np.zeros(0, dtype=np.int64)
            return e, e
        wo = _words(own)
        ko = wo[:, 0].copy()
        so = np.argsort(ko, kind="stable")  # equal rows stay in row order
        kos = ko[so]
        if not self.distinct:
            return self._match_dict(own)
        pos = np.minimum(np.searchsorted(self.keys, kos), m - 1)  # sorted needles: a merge
        hit = np.flatnonzero(self.keys[pos] == kos)
        io, ip = so[hit], self.order[pos[hit]]
        ok = np.ones(len(io), dtype=bool)
        for k in (1, 2, 3):
            ok &= wo[io, k] == self.words[ip, k]
        io, ip = io[ok].astype(np.int64), ip[ok].astype(np.int64)
        if not _distinct_sorted(kos[hit[ok]]):  # equal first words among the matches
            order = order_by_value(own[io])
            io, ip = io[order], ip[order]
        return io, ip

    def _match_dict(self, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = {bytes(r): i for i, r in enumerate(self.rows)}  # 64-bit prefixes collide
        pairs = [(i, index[bytes(r)]) for i, r in enumerate(own) if bytes(r) in index]
        io = np.array([p[0] for p in pairs], dtype=np.int64)
        ip = np.array([p[1] for p in pairs], dtype=np.int64)
        order = order_by_value(own[io])
        return io[order], ip[order]


def match(own: np.ndarray, peer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(own_idx, peer_idx)`` of equal 32-byte rows, ``own_idx`` in the
    agreed order."""
    return SortedRows(peer).match(own)
