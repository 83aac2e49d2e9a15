"""Okamoto-Uchiyama kernels: the OU cipher's arithmetic, nothing else.

A ciphertext is ``c = G^m H^r mod n`` (:mod:`secure_agg.ou_keys`). Held here:
:class:`OUKernel`, which computes ``H^r`` (obfuscators) and ``G^m`` from fixed-base
tables (:class:`secure_agg.kernels.FixedBaseTable`: one multiply-mod per window of the
exponent, no squarings; ``G^-m`` from a table of ``G^-1``), either mod ``n`` (anyone)
or, for the key holder, mod ``p^2`` and ``q`` with smaller tables recombined by CRT --
bit for bit the same values, so a replay needs no private key -- and
:func:`ou_decrypt`, the key holder's decryption with its range check.

Like :mod:`secure_agg.kernels` this runs unchanged in the parent and in the worker
processes (:mod:`secure_agg.worker`); no randomness, threads or processes here.
Vector work on ciphertexts (sums, histograms, ``X.T @ enc``) is the same
multiply-mod code as Paillier's (:mod:`secure_agg.kernels`) with modulus ``n``.
"""

from __future__ import annotations

import threading

import gmpy2
from gmpy2 import mpz

from secure_agg import native_mb
from secure_agg.kernels import DJN_FULL_EXTRA_BITS, FixedBaseTable

#: ``G^m`` tables are built for exponents rounded up to this many bits
PLAIN_TABLE_STEP = 64


class PlaintextOutOfRange(ValueError):
    """A decryption fell outside the plaintext range the protocol declared. Refused:
    it is either a corrupted ciphertext or OU's chosen-ciphertext attack (a ciphertext
    of a value ``M >= p`` whose decryption ``M mod p`` would reveal ``p``)."""


def short_exponent_bits(bits: int) -> int:
    """Obfuscator exponent length of ``encrypt`` ("djn"): 224 bits for a 2048-bit key,
    256 from 3072, 304 from 4096 (Pollard kangaroo on ``r`` costs ``2^(bits/2)``,
    matching the key's strength; SecretFlow HEU uses 110 / 128)."""
    return 224 if bits < 3072 else 256 if bits < 4096 else 304


class OUKernel:
    """``G^m H^r`` for one key. ``parts`` lists ``(modulus, G mod it, H mod it)``: one
    part ``n`` for the public kernel, ``p^2`` and ``q`` for the key holder (recombined by
    CRT). Schemes: ``"djn"`` (short ``r``, :func:`short_exponent_bits`) and
    ``"djn_full"`` (``r`` of ``bits(n) + 128`` bits: statistically uniform over ``<H>``,
    whose order is below ``n``); ``"standard"`` is ``"djn_full"`` (OU has no
    obfuscator that is uniform over every encryption of zero without the factors)."""

    def __init__(self, n: int, g: int, h: int, factors: tuple | None = None):
        self.n, self.g, self.h = mpz(n), mpz(g), mpz(h)
        self.width = (int(self.n.bit_length()) + 7) // 8
        self.djn_exponent_bits = short_exponent_bits(int(self.n.bit_length()))
        self._lock = threading.Lock()
        self._tables: dict[tuple, FixedBaseTable] = {}
        if factors is None:
            self.parts = [(self.n, self.g, self.h)]
            self._h_orders = None
        else:
            p, q = mpz(factors[0]), mpz(factors[1])
            psq = p * p
            if psq * q != self.n:
                raise ValueError("OU kernel: p^2 q does not equal n")
            self.parts = [(psq, self.g % psq, self.h % psq), (q, self.g % q, self.h % q)]
            self._q, self._qinv = q, gmpy2.invert(q, psq)
            self._h_orders = self._orders(p, q)

    def _orders(self, p: mpz, q: mpz) -> tuple | None:
        """Multiples of the order of ``H`` mod ``p^2`` and mod ``q`` (the key holder's
        ``H^r`` reduces ``r`` by them: the same values from smaller tables): ``p - 1``
        when ``H^(p-1) = 1 mod p^2`` (every valid key: the order divides ``t``), else
        ``p (p - 1)``, and ``q - 1``; None when ``H`` is not a unit mod ``n``."""
        if gmpy2.gcd(self.h, self.n) != 1:
            return None
        psq, hp = self.parts[0][0], self.parts[0][2]
        return (p - 1 if gmpy2.powmod(hp, p - 1, psq) == 1 else p * (p - 1), q - 1)

    def exp_bits(self, scheme: str) -> int:
        if scheme == "djn":
            return self.djn_exponent_bits
        return int(self.n.bit_length()) + DJN_FULL_EXTRA_BITS

    def _table(self, which: str, i: int, bits: int, window: int = 8) -> FixedBaseTable:
        key = (which, i, bits, window)
        with self._lock:
            t = self._tables.get(key)
            if t is None:
                mod, g, h = self.parts[i]
                base = h if which == "h" else g if which == "g" else gmpy2.invert(g, mod)
                t = self._tables[key] = FixedBaseTable(base, mod, bits, 1, window)
            return t

    def _combine(self, per_part: list[list[mpz]]) -> list[mpz]:
        if len(per_part) == 1:
            return per_part[0]
        psq = self.parts[0][0]
        q, qinv = self._q, self._qinv
        return [b + q * ((a - b) * qinv % psq) for a, b in zip(*per_part, strict=True)]

    def _h_parts(self, draws: list, scheme: str, window: int) -> list[list[mpz]]:
        """``H^r`` per part; the key holder reduces an ``r`` longer than a part's order
        multiple (:meth:`_orders`: ``djn_full``'s 2176 bits to 683 and 683 for a
        2048-bit key, ~3x cheaper; bench/ou.py)."""
        bits = self.exp_bits(scheme)
        orders = self._h_orders
        out = []
        for i in range(len(self.parts)):
            exps, b = draws, bits
            if orders is not None and bits > orders[i].bit_length():
                o = orders[i]
                exps, b = [mpz(r) % o for r in draws], int(o.bit_length())
            out.append(self._table("h", i, b, window).pow_many(exps))
        return out

    def _g_parts(self, vals: list[int]) -> list[list[mpz]]:
        """``G^m`` per part: non-negative ``m`` from the ``G`` table, negative from the
        ``G^-1`` table."""
        pos = [i for i, v in enumerate(vals) if v > 0]
        neg = [i for i, v in enumerate(vals) if v < 0]
        out = []
        for k in range(len(self.parts)):
            col = [mpz(1)] * len(vals)
            for which, idx in (("g", pos), ("gi", neg)):
                if not idx:
                    continue
                exps = [abs(vals[i]) for i in idx]
                bits = -(-max(e.bit_length() for e in exps) // PLAIN_TABLE_STEP) \
                    * PLAIN_TABLE_STEP
                for i, x in zip(idx, self._table(which, k, bits).pow_many(exps), strict=True):
                    col[i] = x
            out.append(col)
        return out

    def obfuscate(self, draws: list, scheme: str, window: int = 8) -> list[mpz]:
        """``H^r mod n`` for each exponent ``r``."""
        if not draws:
            return []
        return self._combine(self._h_parts(draws, scheme, window))

    def gpow(self, vals: list[int]) -> list[mpz]:
        """``G^m mod n`` for signed ``m``."""
        if not vals:
            return []
        return self._combine(self._g_parts(vals))

    def encrypt(self, vals: list[int], draws: list, scheme: str) -> list[mpz]:
        """``G^m H^r mod n``."""
        if not vals:
            return []
        gs, hs = self._g_parts(vals), self._h_parts(draws, scheme, 8)
        per = [[x * y % mod for x, y in zip(g, h, strict=True)]
               for (mod, _, _), g, h in zip(self.parts, gs, hs, strict=True)]
        return self._combine(per)

    def apply(self, vals: list[int], rhos: list) -> list[mpz]:
        """``G^m rho mod n`` for precomputed obfuscators ``rho``."""
        n = self.n
        return [x * r % n for x, r in zip(self.gpow(vals), rhos, strict=True)]


def decrypt_powers(cts: list, t: mpz, psq: mpz, n: mpz | None = None) -> list[mpz]:
    """``[c^t mod p^2]``. With ``n`` (a multiple of ``p^2``) and 8-lane modexp available
    at its size (:func:`secure_agg.native_mb.use_mb`, ``FEDJOINT_PAILLIER_MODEXP``),
    ``c^t mod n`` on ``mbx_exp_mb8`` reduced mod ``p^2`` -- the same values, about twice
    as fast here as gmpy2 mod ``p^2`` (the library has no ~bits(n)*2/3-bit moduli:
    bench/ou.py prints both); else gmpy2 mod ``p^2``."""
    if n is not None and len(cts) >= native_mb.MB_MIN_LANES and \
            native_mb.use_mb(int(n).bit_length()):
        return [x % psq for x in native_mb.powmod_list([c % n for c in cts], t, n)]
    return gmpy2.powmod_base_list([c % psq for c in cts], t, psq)


def ou_decrypt(cts: list, p: mpz, t: mpz, gp_inv: mpz, bound_bits: int,
               offset: int = 0, n: mpz | None = None) -> list[int]:
    """Signed plaintexts ``m = L(c^t mod p^2) / L(G^t mod p^2) mod p`` (centred lift).

    Refuses (:class:`PlaintextOutOfRange`) any ciphertext whose ``c^t`` is not ``1 mod
    p`` (no OU ciphertext) or whose plaintext is not below ``2^bound_bits`` in absolute
    value. The second check is what blocks OU's chosen-ciphertext attack: a ciphertext
    of ``M >= p`` decrypts to ``M mod p``, and ``gcd(M - (M mod p), n)`` is ``p``; with
    ``bound_bits`` at least 128 bits below ``p``'s size, such a decryption passes with
    probability below ``2^-128`` and is otherwise never returned. ``offset`` numbers
    the ciphertexts in messages; ``n`` lets the powers run mod ``n`` on 8-lane modexp
    (:func:`decrypt_powers`, identical values)."""
    psq, half = p * p, p // 2
    limit = mpz(1) << bound_bits
    xs = decrypt_powers(cts, t, psq, n)
    out = []
    for i, x in enumerate(xs, offset):
        if x % p != 1:
            raise PlaintextOutOfRange(f"ciphertext {i} is not a valid OU ciphertext under "
                                      "this key: refused")
        m = (x - 1) // p * gp_inv % p
        if m > half:
            m -= p
        if not -limit < m < limit:
            raise PlaintextOutOfRange(
                f"ciphertext {i} decrypts outside the expected range (|m| < 2^{bound_bits}):"
                " refused (a value beyond the plaintext space, as in OU's chosen-ciphertext"
                " attack, or a corrupted ciphertext)")
        out.append(int(m))
    return out
