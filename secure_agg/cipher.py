"""The additively homomorphic cipher interface every protocol codes against.

Protocols (LR, SecureBoost) never touch Paillier arithmetic directly: they call a
:class:`PublicCipher` (anyone holding the public key) or a :class:`PrivateCipher` (the
key holder). Two implementations share this interface:

* ``secure_agg.paillier`` -- the real Paillier engine (the default, >= 2048 bits);
* :class:`PlainCipher` here -- the identity "cipher" of ``cipher = "plain"`` test jobs.
  It runs exactly the same protocol code with the same plaintext modulus size, so an
  encrypted run and a plain run must produce identical numbers (a lossless check).

Plaintexts are **signed integers** ``m`` with ``|m| < n/2`` (stored mod n, decrypted by
centred lift). Floats go through :class:`secure_agg.codec.FixedPoint`; several small
values share one plaintext through :class:`secure_agg.codec.Packer`.

Overflow is never silent: every :class:`CipherVector` carries ``bound_bits``, an upper
bound on ``log2 |m| + 1`` of its plaintexts, propagated by each operation. An operation
whose result could reach ``n/2`` raises :class:`PlaintextOverflow` naming the operation
and by how many bits it exceeds the plaintext space.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IntLike = Sequence[int] | np.ndarray


class PlaintextOverflow(ArithmeticError):
    """An operation could exceed the plaintext space (it would wrap mod n)."""


class KeyMismatch(ValueError):
    """Operands were encrypted under different keys."""


class ObfuscatorsExhausted(RuntimeError):
    """A precomputed obfuscator batch was asked for more obfuscators than it has left
    (or used after :meth:`ObfuscatorBatchBase.close`): obfuscators are never reused."""


class ObfuscatorBatchBase:
    """A batch of ``count`` fresh obfuscators for one cipher, consumed in order, each
    exactly once (DESIGN.md rule 5: never reused, never multiplied together).

    Made by :meth:`PublicCipher.precompute_obfuscators`. :meth:`encrypt` (or the
    cipher's ``encrypt(m, obfuscators=batch)``) consumes ``len(m)`` of them; asking for
    more than remain, or using a closed batch, raises :class:`ObfuscatorsExhausted`.
    :meth:`close` discards whatever was not consumed (and stops background work).
    """

    def __init__(self, cipher: PublicCipher, count: int):
        if count < 0:
            raise ValueError(f"obfuscator count must be >= 0, got {count}")
        self.cipher = cipher
        self.key_id = cipher.key_id
        self.count = int(count)
        self.consumed = 0
        self.closed = False

    @property
    def remaining(self) -> int:
        return 0 if self.closed else self.count - self.consumed

    def _claim(self, k: int) -> int:
        """Reserve the next ``k`` obfuscators; returns the index of the first."""
        if self.closed:
            raise ObfuscatorsExhausted("obfuscator batch is closed (its unused obfuscators "
                                       "were discarded)")
        if k > self.count - self.consumed:
            raise ObfuscatorsExhausted(
                f"obfuscator batch has {self.count - self.consumed} of {self.count} left, "
                f"{k} requested (obfuscators are never reused)")
        start = self.consumed
        self.consumed += k
        return start

    def encrypt(self, m: IntLike, bound_bits: int | None = None) -> CipherVector:
        """Encrypt ``m`` with the next ``len(m)`` obfuscators of this batch."""
        return self.cipher.encrypt(m, bound_bits=bound_bits, obfuscators=self)

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class DeferredObfuscators(ObfuscatorBatchBase):
    """The default :meth:`PublicCipher.precompute_obfuscators`: nothing is computed
    ahead; each consumption calls ``cipher.encrypt(m, rng=...)`` with the batch's rng.
    Deterministic as long as nothing else draws from that rng meanwhile (protocols give
    each batch its own child stream)."""

    def __init__(self, cipher: PublicCipher, count: int, rng):
        super().__init__(cipher, count)
        self.rng = rng

    def encrypt(self, m: IntLike, bound_bits: int | None = None) -> CipherVector:
        vals = as_int_list(m, "encrypt")
        self._claim(len(vals))
        return self.cipher.encrypt(vals, rng=self.rng, bound_bits=bound_bits)


@dataclass
class CipherVector:
    """A 1-D vector of ciphertexts under one key.

    ``data`` is a list of integers (gmpy2.mpz for Paillier; residues mod n for the plain
    cipher). ``bound_bits`` bounds the bit length of the absolute plaintexts.
    """

    key_id: str
    data: list
    bound_bits: int

    def __len__(self) -> int:
        return len(self.data)


def bits_of(values: IntLike) -> int:
    """Bit length of ``max |v|`` (0 for an empty or all-zero input)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        if values.size == 0:
            return 0
        return int(np.abs(values.astype(np.int64)).max()).bit_length()
    m = 0
    for v in values:
        a = -int(v) if v < 0 else int(v)
        if a > m:
            m = a
    return m.bit_length()


def as_int_list(values: IntLike, what: str) -> list[int]:
    """Signed Python ints from an int ndarray or sequence; refuses floats/NaN."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "f":
            bad = ~np.isfinite(values.ravel())
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{what}: non-finite value {values.ravel()[i]} at index {i}")
            raise TypeError(f"{what}: expected integers, got float array (encode it first)")
        if values.dtype.kind == "O":
            return [int(v) for v in values.ravel()]
        return values.ravel().astype(np.int64).tolist()
    return [int(v) for v in values]


class PublicCipher(ABC):
    """Operations available with the public key alone."""

    #: plaintext modulus; plaintexts live in (-n/2, n/2)
    n: int
    key_bits: int
    key_id: str
    workers: int = 1

    # ---- capacity bookkeeping (shared by every implementation) -------------------
    @property
    def capacity_bits(self) -> int:
        """Largest ``bound_bits`` a plaintext may have: |m| < 2**capacity_bits <= n/2."""
        return self.n.bit_length() - 2

    def check_bound(self, bound_bits: int, op: str) -> int:
        if bound_bits > self.capacity_bits:
            raise PlaintextOverflow(
                f"{op}: result may need {bound_bits} bits but the {self.key_bits}-bit key's "
                f"plaintext space holds {self.capacity_bits} (exceeds by "
                f"{bound_bits - self.capacity_bits} bits)")
        return bound_bits

    def check_same_key(self, *vecs: CipherVector) -> None:
        for v in vecs:
            if v.key_id != self.key_id:
                raise KeyMismatch(
                    f"ciphertext under key {v.key_id[:16]} used with key {self.key_id[:16]}")

    # ---- primitives -----------------------------------------------------------------
    @abstractmethod
    def encrypt(self, m: IntLike, rng=None, bound_bits: int | None = None) -> CipherVector:
        """Encrypt signed ints. ``rng`` (a Drbg) supplies obfuscation randomness (fresh
        per ciphertext); ``None`` means the OS CSPRNG."""

    @abstractmethod
    def add(self, a: CipherVector, b: CipherVector) -> CipherVector:
        """Elementwise a + b (same length)."""

    @abstractmethod
    def add_plain(self, a: CipherVector, m: IntLike) -> CipherVector:
        """Elementwise a + m for signed plaintext ints m."""

    @abstractmethod
    def mul_plain(self, a: CipherVector, k: IntLike) -> CipherVector:
        """Elementwise a * k for signed ints k (len 1 broadcasts)."""

    @abstractmethod
    def sum(self, a: CipherVector) -> CipherVector:
        """Sum of all elements, as a length-1 vector."""

    @abstractmethod
    def matvec_t(self, X: np.ndarray, a: CipherVector) -> CipherVector:
        """``X.T @ a`` for an int matrix X (rows x features) and len(a) == rows."""

    @abstractmethod
    def histogram(self, a: CipherVector, bins: np.ndarray, n_bins: int,
                  rows: np.ndarray | None = None) -> CipherVector:
        """Per-feature, per-bin sums of ``a[rows]``.

        ``bins`` is an int matrix (all rows x features) of bin indices in [0, n_bins).
        Returns features * n_bins ciphertexts, feature-major (f * n_bins + b).
        """

    @abstractmethod
    def rerandomize(self, a: CipherVector, rng=None) -> CipherVector:
        """Same plaintexts, fresh obfuscation (before sending derived ciphertexts)."""

    def precompute_obfuscators(self, count: int, rng=None,
                               obfuscation: str | None = None) -> ObfuscatorBatchBase:
        """A batch of ``count`` fresh obfuscators for later :meth:`encrypt` calls
        (``batch.encrypt(m)``), computed ahead of time where the implementation can
        (the Paillier engine: in background worker processes; ``obfuscation`` selects
        a re-randomisation scheme there). This default defers: nothing is computed
        ahead, so any cipher supports the call."""
        return DeferredObfuscators(self, count, rng)

    @abstractmethod
    def to_bytes(self, a: CipherVector) -> bytes:
        """Fixed-width big-endian serialisation (width = :attr:`ciphertext_bytes`)."""

    @abstractmethod
    def from_bytes(self, data: bytes, bound_bits: int) -> CipherVector:
        """Parse and range-check bytes from a peer; ``bound_bits`` is what the protocol
        promises about the plaintexts (it cannot be checked without the key)."""

    @property
    @abstractmethod
    def ciphertext_bytes(self) -> int:
        """Serialised width of one ciphertext."""

    # ---- derived operations (implementations may override for speed) -------------
    def sub(self, a: CipherVector, b: CipherVector) -> CipherVector:
        return self.add(a, self.mul_plain(b, [-1]))

    def take(self, a: CipherVector, idx: IntLike) -> CipherVector:
        return CipherVector(a.key_id, [a.data[int(i)] for i in np.asarray(idx).ravel()],
                            a.bound_bits)

    def concat(self, vecs: Sequence[CipherVector]) -> CipherVector:
        self.check_same_key(*vecs)
        data: list = []
        for v in vecs:
            data.extend(v.data)
        return CipherVector(self.key_id, data, max((v.bound_bits for v in vecs), default=0))

    def cumsum_blocks(self, a: CipherVector, block: int) -> CipherVector:
        """Running sums within consecutive blocks of ``block`` (cumulative histograms)."""
        if len(a) % block:
            raise ValueError(f"cumsum_blocks: length {len(a)} is not a multiple of {block}")
        out = list(a.data)
        add1 = self._add_raw
        for start in range(0, len(out), block):
            for i in range(start + 1, start + block):
                out[i] = add1(out[i - 1], out[i])
        bound = self.check_bound(a.bound_bits + math.ceil(math.log2(max(block, 1))) + 1,
                                 "cumsum_blocks")
        return CipherVector(self.key_id, out, bound)

    def pack(self, a: CipherVector, slot_bits: int, per_ct: int) -> CipherVector:
        """Compress: every ``per_ct`` consecutive ciphertexts (non-negative plaintexts
        below 2**slot_bits) become one: sum_i c_i * 2**(i*slot_bits)."""
        if a.bound_bits > slot_bits:
            raise PlaintextOverflow(
                f"pack: values need {a.bound_bits} bits but the slot holds {slot_bits}")
        self.check_bound(slot_bits * per_ct, "pack")
        out = []
        for start in range(0, len(a), per_ct):
            chunk = a.data[start:start + per_ct]
            acc = chunk[-1]
            for c in reversed(chunk[:-1]):
                acc = self._add_raw(self._shift_raw(acc, slot_bits), c)
            out.append(acc)
        return CipherVector(self.key_id, out, slot_bits * per_ct)

    @abstractmethod
    def _add_raw(self, x, y):
        """Add two raw ciphertext elements."""

    @abstractmethod
    def _shift_raw(self, x, bits: int):
        """Multiply one raw ciphertext element's plaintext by 2**bits."""


class PrivateCipher(PublicCipher):
    """The key holder's cipher: also decrypts."""

    @abstractmethod
    def decrypt(self, a: CipherVector) -> list[int]:
        """Signed plaintext ints (centred lift mod n)."""

    @abstractmethod
    def public(self) -> PublicCipher:
        """The public-key-only view to hand to protocol code of the other party."""


class PlainCipher(PrivateCipher):
    """Identity cipher with a ``key_bits``-bit modulus, for ``cipher = "plain"`` tests.

    Same plaintext space, same overflow checks, same packing as Paillier of that size;
    the "ciphertext" is the plaintext residue mod n. Never used unless the node's
    policy allows insecure test jobs.
    """

    def __init__(self, key_bits: int = 2048, workers: int = 1):
        self.key_bits = key_bits
        self.n = (1 << key_bits) - 1
        self.key_id = f"plain-{key_bits}"
        self.workers = workers

    @property
    def ciphertext_bytes(self) -> int:
        return (self.n.bit_length() + 7) // 8

    def public(self) -> PlainCipher:
        return self

    def _vec(self, data: list, bound: int, op: str) -> CipherVector:
        return CipherVector(self.key_id, data, self.check_bound(bound, op))

    def encrypt(self, m: IntLike, rng=None, bound_bits: int | None = None,
                obfuscators: ObfuscatorBatchBase | None = None) -> CipherVector:
        vals = as_int_list(m, "encrypt")
        if obfuscators is not None:  # same bookkeeping as the engine, nothing to apply
            if rng is not None:
                raise ValueError("encrypt: pass rng or obfuscators, not both")
            if obfuscators.key_id != self.key_id:
                raise KeyMismatch("obfuscators were precomputed under another key")
            obfuscators._claim(len(vals))
        b = bits_of(vals) if bound_bits is None else bound_bits
        n = self.n
        return self._vec([v % n for v in vals], b, "encrypt")

    def precompute_obfuscators(self, count: int, rng=None,
                               obfuscation: str | None = None) -> ObfuscatorBatchBase:
        """No-op batch that only counts (so protocol code runs unchanged)."""
        return ObfuscatorBatchBase(self, count)

    def decrypt(self, a: CipherVector) -> list[int]:
        self.check_same_key(a)
        n, half = self.n, self.n // 2
        return [int(v) - n if v > half else int(v) for v in a.data]

    def add(self, a: CipherVector, b: CipherVector) -> CipherVector:
        self.check_same_key(a, b)
        if len(a) != len(b):
            raise ValueError(f"add: lengths differ ({len(a)} vs {len(b)})")
        n = self.n
        return self._vec([(x + y) % n for x, y in zip(a.data, b.data, strict=True)],
                         max(a.bound_bits, b.bound_bits) + 1, "add")

    def add_plain(self, a: CipherVector, m: IntLike) -> CipherVector:
        self.check_same_key(a)
        vals = as_int_list(m, "add_plain")
        if len(vals) == 1 and len(a) != 1:
            vals = vals * len(a)
        if len(vals) != len(a):
            raise ValueError(f"add_plain: lengths differ ({len(a)} vs {len(vals)})")
        n = self.n
        return self._vec([(x + y) % n for x, y in zip(a.data, vals, strict=True)],
                         max(a.bound_bits, bits_of(vals)) + 1, "add_plain")

    def mul_plain(self, a: CipherVector, k: IntLike) -> CipherVector:
        self.check_same_key(a)
        vals = as_int_list(k, "mul_plain")
        if len(vals) == 1 and len(a) != 1:
            vals = vals * len(a)
        if len(vals) != len(a):
            raise ValueError(f"mul_plain: lengths differ ({len(a)} vs {len(vals)})")
        n = self.n
        return self._vec([(x * y) % n for x, y in zip(a.data, vals, strict=True)],
                         a.bound_bits + bits_of(vals), "mul_plain")

    def sum(self, a: CipherVector) -> CipherVector:
        self.check_same_key(a)
        grow = math.ceil(math.log2(max(len(a), 1))) if len(a) > 1 else 0
        return self._vec([sum(a.data) % self.n], a.bound_bits + grow, "sum")

    def matvec_t(self, X: np.ndarray, a: CipherVector) -> CipherVector:
        self.check_same_key(a)
        if X.ndim != 2 or X.shape[0] != len(a):
            raise ValueError(f"matvec_t: X has shape {X.shape}, vector has {len(a)} rows")
        if X.dtype.kind not in "iu":
            raise TypeError("matvec_t: X must be an integer matrix (fixed-point encode it)")
        n = self.n
        vec = np.array(a.data, dtype=object)
        out = [int((X[:, j].astype(object) * vec).sum()) % n for j in range(X.shape[1])]
        grow = math.ceil(math.log2(max(X.shape[0], 1))) if X.shape[0] > 1 else 0
        return self._vec(out, a.bound_bits + bits_of(X) + grow, "matvec_t")

    def histogram(self, a: CipherVector, bins: np.ndarray, n_bins: int,
                  rows: np.ndarray | None = None) -> CipherVector:
        self.check_same_key(a)
        if bins.ndim != 2 or bins.shape[0] != len(a):
            raise ValueError(f"histogram: bins has shape {bins.shape}, vector has {len(a)}")
        idx = np.arange(len(a)) if rows is None else np.asarray(rows)
        vec = np.array(a.data, dtype=object)[idx]
        n_feat = bins.shape[1]
        out = np.zeros(n_feat * n_bins, dtype=object)
        sub = bins[idx]
        if sub.size and (sub.min() < 0 or sub.max() >= n_bins):
            raise ValueError(f"histogram: bin indices must be in [0, {n_bins})")
        for f in range(n_feat):
            np.add.at(out, f * n_bins + sub[:, f], vec)
        n = self.n
        grow = math.ceil(math.log2(max(len(idx), 1))) if len(idx) > 1 else 0
        return self._vec([int(v) % n for v in out], a.bound_bits + grow, "histogram")

    def rerandomize(self, a: CipherVector, rng=None, obfuscation: str | None = None,
                    obfuscators: ObfuscatorBatchBase | None = None) -> CipherVector:
        self.check_same_key(a)
        if obfuscators is not None:
            obfuscators._claim(len(a))
        return CipherVector(a.key_id, list(a.data), a.bound_bits)

    def to_bytes(self, a: CipherVector) -> bytes:
        self.check_same_key(a)
        w = self.ciphertext_bytes
        return b"".join(int(v).to_bytes(w, "big") for v in a.data)

    def from_bytes(self, data: bytes, bound_bits: int) -> CipherVector:
        w = self.ciphertext_bytes
        if len(data) % w:
            raise ValueError(f"ciphertext bytes: length {len(data)} is not a multiple of {w}")
        out = []
        for i in range(0, len(data), w):
            v = int.from_bytes(data[i:i + w], "big")
            if v >= self.n:
                raise ValueError(f"ciphertext {i // w} out of range (>= n)")
            out.append(v)
        return self._vec(out, bound_bits, "from_bytes")

    def _add_raw(self, x, y):
        return (x + y) % self.n

    def _shift_raw(self, x, bits: int):
        return (x << bits) % self.n
