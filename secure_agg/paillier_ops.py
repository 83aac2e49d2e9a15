"""The Paillier engine's homomorphic vector operations (anyone with the public key).

Held here: :class:`PaillierOps`, the base of :class:`secure_agg.paillier.PaillierPublicCipher`
-- ``add``, ``add_plain``, ``mul_plain``, ``sum``, ``matvec_t``, ``histogram`` and
``pack`` on :class:`CipherVector` s of ciphertexts mod n^2, with their bound checks and
their split of the work between threads, the calling process and worker processes
(:mod:`secure_agg.pool` says which operation uses which). They need neither randomness
nor key material beyond ``n``, which is why they live apart from encryption.
The arithmetic itself is in :mod:`secure_agg.kernels`.
"""

from __future__ import annotations

import math

import gmpy2
import numpy as np
from gmpy2 import mpz

from secure_agg.cipher import (
    CipherVector,
    IntLike,
    KeyMismatch,
    ObfuscatorBatchBase,
    PlaintextOverflow,
    PublicCipher,
    as_int_list,
    bits_of,
)
from secure_agg.framing import split_ciphertexts, vector_request
from secure_agg.kernels import ONE, histogram_chunk, matvec_chunk, mul_pairs, product
from secure_agg.pool import chunk_bounds, flatten, run_chunks
from secure_agg.precompute import PaillierObfuscatorBatch
from secure_agg.procpool import get_pool

#: histogram / X.T @ enc / sum: the parent computes one chunk and workers - 1
#: processes the others from this many rows up (below, one thread does it all)
PROCESS_MIN_ROWS = 2048


def _grow(count: int) -> int:
    """Extra bits a sum of ``count`` values can need."""
    return math.ceil(math.log2(count)) if count > 1 else 0


class PaillierOps(PublicCipher):
    """Vector operations on ciphertexts mod ``self.nsquare``. A subclass sets ``n``,
    ``nsquare``, ``key_id`` and ``workers`` and supplies encryption."""

    n: mpz
    nsquare: mpz
    workers: int

    # ---- helpers ------------------------------------------------------------------------
    def _vec(self, data: list, bound: int, op: str) -> CipherVector:
        return CipherVector(self.key_id, data, self.check_bound(bound, op))

    def _encrypt_bound(self, vals: list[int], bound_bits: int | None) -> int:
        """The bound of a fresh encryption of ``vals``: the declared ``bound_bits`` (which
        must cover them) or their own bit length, checked against the plaintext space."""
        actual = bits_of(vals)
        if bound_bits is not None and actual > bound_bits:
            raise PlaintextOverflow(
                f"encrypt: values need {actual} bits but bound_bits={bound_bits} was declared")
        return self.check_bound(actual if bound_bits is None else bound_bits, "encrypt")

    def _batch_scheme(self, scheme: str) -> str:
        """The exponent scheme a precomputed batch must have for ``scheme``."""
        return scheme

    def _consume(self, batch: ObfuscatorBatchBase, k: int, scheme: str, op: str) -> list:
        """The next ``k`` obfuscators of a batch precomputed under this key for ``scheme``."""
        if not isinstance(batch, PaillierObfuscatorBatch):
            raise TypeError(f"{op}: obfuscators must come from precompute_obfuscators")
        if batch.key_id != self.key_id:
            raise KeyMismatch(f"{op}: obfuscators were precomputed under key "
                              f"{batch.key_id[:16]}, not {self.key_id[:16]}")
        if batch.scheme != self._batch_scheme(scheme):
            raise ValueError(f"{op}: obfuscators are {batch.scheme!r}, {scheme!r} needed")
        return batch.take(k)

    def _ints(self, values: IntLike, what: str) -> list[int]:
        return as_int_list(values, what)  # NaN/inf: ValueError naming the first index

    def _broadcast(self, a: CipherVector, values: IntLike, op: str) -> list[int]:
        vals = self._ints(values, op)
        if len(vals) == 1 and len(a) != 1:
            vals = vals * len(a)
        if len(vals) != len(a):
            raise ValueError(f"{op}: lengths differ ({len(a)} vs {len(vals)})")
        return vals

    @property
    def ciphertext_bytes(self) -> int:
        return (self.nsquare.bit_length() + 7) // 8

    # ---- homomorphic operations ---------------------------------------------------------
    def add(self, a: CipherVector, b: CipherVector) -> CipherVector:
        self.check_same_key(a, b)
        if len(a) != len(b):
            raise ValueError(f"add: lengths differ ({len(a)} vs {len(b)})")
        bound = self.check_bound(max(a.bound_bits, b.bound_bits) + 1, "add")
        nsq, A, B = self.nsquare, a.data, b.data
        # One multiply-mod (~4 us of GMP) per element, in the calling thread: measured on
        # 2 cores, threads lose to GIL hand-offs at this grain (0.75x) and worker
        # processes to moving the operands (0.7x), so ``workers`` is not used here.
        return CipherVector(self.key_id, mul_pairs(A, B, nsq), bound)

    def add_plain(self, a: CipherVector, m: IntLike) -> CipherVector:
        self.check_same_key(a)
        vals = self._broadcast(a, m, "add_plain")
        bound = self.check_bound(max(a.bound_bits, bits_of(vals)) + 1, "add_plain")
        n, nsq, A = self.n, self.nsquare, a.data

        # (1 + m n) c = c + n (m c mod n)  (mod n^2): no full-size multiplication. ~1.5 us
        # per element -- less than moving it to another process; threads lose to GIL
        # hand-offs at this grain, so it runs in the calling thread.
        return CipherVector(self.key_id, [(c + n * (v * c % n)) % nsq
                                          for c, v in zip(A, vals, strict=True)], bound)

    def mul_plain(self, a: CipherVector, k: IntLike) -> CipherVector:
        """``c^k``; gmpy2.powmod inverts ``c`` for negative ``k`` (cheaper than ``k mod
        n``, a full-size exponent)."""
        self.check_same_key(a)
        vals = self._broadcast(a, k, "mul_plain")
        bound = self.check_bound(a.bound_bits + bits_of(vals), "mul_plain")
        nsq, A = self.nsquare, a.data
        pm = gmpy2.powmod

        def work(s: int, e: int) -> list[mpz]:
            return [pm(c, v, nsq) for c, v in zip(A[s:e], vals[s:e], strict=True)]

        return CipherVector(self.key_id,
                            flatten(run_chunks(self.workers, len(A), work, 16)), bound)

    def sum(self, a: CipherVector) -> CipherVector:
        self.check_same_key(a)
        bound = self.check_bound(a.bound_bits + _grow(len(a)), "sum")
        return CipherVector(self.key_id, [self._prod(a.data)], bound)

    def _prod(self, data: list) -> mpz:
        nsq = self.nsquare
        parts = self._split_work(
            len(data), lambda s, e: product(data[s:e], nsq),
            lambda s, e: self._request("product", data[s:e], {}, b""),
            lambda p: self._decode(p)[0], PROCESS_MIN_ROWS)
        acc = ONE
        for part in parts:
            acc = acc * part % nsq
        return acc

    # ---- process offload (parent computes one chunk, workers - 1 processes the rest) --
    def _split_work(self, count: int, local, remote, decode, min_items: int) -> list:
        if self.workers <= 1 or count < min_items:
            return [local(0, count)]
        bounds = chunk_bounds(count, self.workers)
        s0, e0 = bounds[0]
        requests = [remote(s, e) for s, e in bounds[1:]]
        payloads, mine = get_pool(self.workers).run(requests, lambda: local(s0, e0))
        return [mine] + [decode(p) for p in payloads]

    def _request(self, op: str, cts: list, extra: dict, tail: bytes) -> tuple[dict, bytes]:
        return vector_request(op, self.n, self.ciphertext_bytes, cts, extra, tail)

    def _decode(self, payload: bytes, allow_empty: bool = False) -> list:
        return split_ciphertexts(payload, self.ciphertext_bytes, allow_empty)

    def matvec_t(self, X: np.ndarray, a: CipherVector) -> CipherVector:
        """``X.T @ a`` by bucketed multi-exponentiation (Pippenger), positive and
        negative coefficients separately, one inversion per column."""
        self.check_same_key(a)
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] != len(a):
            raise ValueError(f"matvec_t: X has shape {X.shape}, vector has {len(a)} rows")
        if X.dtype.kind not in "iu":
            raise TypeError("matvec_t: X must be an integer matrix (fixed-point encode it)")
        rows, feats = X.shape
        xbits = bits_of(X)
        bound = self.check_bound(a.bound_bits + xbits + _grow(rows), "matvec_t")
        if rows == 0:
            return CipherVector(self.key_id, [ONE] * feats, bound)
        if xbits > 62:
            raise ValueError("matvec_t: coefficients must fit in 62 bits")
        X = np.ascontiguousarray(X, dtype=np.int64)
        nsq, data = self.nsquare, a.data
        parts = self._split_work(
            rows, lambda s, e: matvec_chunk(data[s:e], X[s:e], nsq),
            lambda s, e: self._request("matvec", data[s:e], {"feats": feats},
                                       X[s:e].astype("<i8").tobytes()),
            self._decode, PROCESS_MIN_ROWS)
        out = []
        for j in range(feats):
            pos, neg = ONE, ONE
            for part in parts:
                pos = pos * part[2 * j] % nsq
                neg = neg * part[2 * j + 1] % nsq
            out.append(pos if neg == 1 else pos * gmpy2.invert(neg, nsq) % nsq)
        return CipherVector(self.key_id, out, bound)

    def histogram(self, a: CipherVector, bins: np.ndarray, n_bins: int,
                  rows: np.ndarray | None = None) -> CipherVector:
        self.check_same_key(a)
        bins = np.asarray(bins)
        if bins.ndim != 2 or bins.shape[0] != len(a):
            raise ValueError(f"histogram: bins has shape {bins.shape}, vector has {len(a)}")
        idx = np.arange(len(a)) if rows is None else np.asarray(rows, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= len(a)):
            raise ValueError(f"histogram: row indices must be in [0, {len(a)})")
        n_feat = bins.shape[1]
        sub = bins[idx]
        if sub.size and (sub.min() < 0 or sub.max() >= n_bins):
            raise ValueError(f"histogram: bin indices must be in [0, {n_bins})")
        bound = self.check_bound(a.bound_bits + _grow(len(idx)), "histogram")
        size = n_feat * n_bins
        data, nsq = a.data, self.nsquare
        idx_list = idx.tolist()

        sub32 = np.ascontiguousarray(sub, dtype="<i4")
        parts = self._split_work(
            len(idx_list),
            lambda s, e: histogram_chunk([data[i] for i in idx_list[s:e]], sub32[s:e],
                                          n_bins, nsq),
            lambda s, e: self._request("histogram", [data[i] for i in idx_list[s:e]],
                                       {"feats": n_feat, "nbins": n_bins},
                                       sub32[s:e].tobytes()),
            lambda p: self._decode(p, allow_empty=True), PROCESS_MIN_ROWS)
        H: list = [None] * size
        for part in parts:
            for k, v in enumerate(part):
                if v is not None:
                    H[k] = v if H[k] is None else H[k] * v % nsq
        return CipherVector(self.key_id, [ONE if h is None else h for h in H], bound)

    def pack(self, a: CipherVector, slot_bits: int, per_ct: int) -> CipherVector:
        if a.bound_bits > slot_bits:
            raise PlaintextOverflow(
                f"pack: values need {a.bound_bits} bits but the slot holds {slot_bits}")
        self.check_bound(slot_bits * per_ct, "pack")
        self.check_same_key(a)
        nsq, data = self.nsquare, a.data
        shift = mpz(1) << slot_bits
        starts = list(range(0, len(data), per_ct))

        def work(s: int, e: int) -> list[mpz]:
            out = []
            for start in starts[s:e]:
                chunk = data[start:start + per_ct]
                acc = chunk[-1]
                for c in reversed(chunk[:-1]):
                    acc = gmpy2.powmod(acc, shift, nsq) * c % nsq
                out.append(acc)
            return out

        return CipherVector(self.key_id, flatten(run_chunks(self.workers, len(starts), work)),
                            slot_bits * per_ct)

    def _add_raw(self, x, y):
        return x * y % self.nsquare

    def _shift_raw(self, x, bits: int):
        return gmpy2.powmod(x, mpz(1) << bits, self.nsquare)
