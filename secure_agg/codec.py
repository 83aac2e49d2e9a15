"""Fixed-point and packing codecs between floats and the ciphers' signed integers.

:class:`FixedPoint` maps a float ``x`` to the integer ``round(x * 2**frac_bits)``.
A product of two encoded values carries ``2 * frac_bits`` fractional bits; decode it
with ``decode(m, frac_bits=2 * fp.frac_bits)``.

:class:`Packer` puts several non-negative integers ("slots") into one plaintext:
``p = sum_k v_k * 2**(k * slot_bits)``. The slot width is derived from the value width
plus the number of additions the slots must absorb (each addition can carry one bit),
so sums of packed plaintexts stay exact. Signed values are made non-negative by the
caller with an offset (e.g. ``g + offset``) and corrected after unpacking
(``sum - count * offset``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class FixedPoint:
    """Float <-> signed int with an explicit binary scale."""

    def __init__(self, frac_bits: int = 40):
        if not 1 <= frac_bits <= 200:
            raise ValueError("frac_bits must be in [1, 200]")
        self.frac_bits = frac_bits

    def encode(self, x: np.ndarray | Sequence[float], what: str = "values") -> np.ndarray:
        """Encode floats; returns an int64 array when it fits, else an object array."""
        arr = np.asarray(x, dtype=np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            first = int(np.flatnonzero(bad.ravel())[0])
            raise ValueError(f"{what}: non-finite value {arr.ravel()[first]} at index {first}")
        scaled = np.rint(arr * float(1 << self.frac_bits))
        if scaled.size == 0 or np.abs(scaled).max() < 2.0 ** 62:
            return scaled.astype(np.int64)
        scale = 1 << self.frac_bits
        return np.array([int(round(float(v) * scale)) for v in arr.ravel()],
                        dtype=object).reshape(arr.shape)

    def decode(self, m: Sequence[int] | np.ndarray, frac_bits: int | None = None) -> np.ndarray:
        f = self.frac_bits if frac_bits is None else frac_bits
        vals = m.ravel().tolist() if isinstance(m, np.ndarray) else list(m)
        # exact for big ints: split into integer and fractional parts before float().
        out = np.empty(len(vals), dtype=np.float64)
        mask = (1 << f) - 1
        for i, v in enumerate(vals):
            v = int(v)
            sign = -1.0 if v < 0 else 1.0
            a = -v if v < 0 else v
            out[i] = sign * (float(a >> f) + float(a & mask) / float(1 << f))
        return out

    def value_bits(self, max_abs: float) -> int:
        """Bits needed for an encoded value of magnitude ``max_abs``."""
        return int(math.floor(abs(max_abs) * (1 << self.frac_bits))).bit_length() + 1


class Packer:
    """Several non-negative slots of ``slot_bits`` each in one plaintext integer."""

    def __init__(self, slot_bits: int, n_slots: int, capacity_bits: int | None = None):
        if slot_bits < 1 or n_slots < 1:
            raise ValueError("slot_bits and n_slots must be positive")
        if capacity_bits is not None and slot_bits * n_slots > capacity_bits:
            raise OverflowError(
                f"packing {n_slots} slots of {slot_bits} bits needs {slot_bits * n_slots} "
                f"bits but the plaintext space holds {capacity_bits} (exceeds by "
                f"{slot_bits * n_slots - capacity_bits} bits)")
        self.slot_bits = slot_bits
        self.n_slots = n_slots

    @staticmethod
    def slot_bits_for(value_bits: int, additions: int) -> int:
        """Slot width so that ``additions`` sums of values < 2**value_bits never carry."""
        return value_bits + max(1, math.ceil(math.log2(additions + 1)))

    @classmethod
    def max_slots(cls, slot_bits: int, capacity_bits: int) -> int:
        return capacity_bits // slot_bits

    def pack(self, columns: Sequence[Sequence[int] | np.ndarray]) -> list[int]:
        """Pack ``n_slots`` equal-length columns of non-negative ints (slot 0 lowest)."""
        if len(columns) != self.n_slots:
            raise ValueError(f"pack: expected {self.n_slots} columns, got {len(columns)}")
        cols = [[int(v) for v in c] for c in columns]
        limit = 1 << self.slot_bits
        for k, c in enumerate(cols):
            for i, v in enumerate(c):
                if v < 0 or v >= limit:
                    raise OverflowError(
                        f"pack: slot {k} row {i} value needs {v.bit_length()} bits; "
                        f"slot holds {self.slot_bits} and must be non-negative")
        out = []
        for row in zip(*cols, strict=True):
            p = 0
            for v in reversed(row):
                p = (p << self.slot_bits) | v
            out.append(p)
        return out

    def unpack(self, packed: Sequence[int]) -> list[list[int]]:
        """Inverse of :meth:`pack`: ``n_slots`` lists of slot values."""
        mask = (1 << self.slot_bits) - 1
        cols: list[list[int]] = [[] for _ in range(self.n_slots)]
        for p in packed:
            p = int(p)
            if p < 0:
                raise OverflowError("unpack: negative packed value (slot underflow)")
            for k in range(self.n_slots):
                cols[k].append(p & mask)
                p >>= self.slot_bits
            if p:
                raise OverflowError("unpack: packed value exceeds the declared slots")
        return cols
