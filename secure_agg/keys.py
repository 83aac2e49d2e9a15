"""Paillier keys: generation, fingerprints, JSON key files, phe conversion.

* ``n = p*q`` with ``p, q`` primes of ``bits/2`` bits, both ``= 3 mod 4`` (Blum primes,
  as SecretFlow HEU generates them), ``n`` of exactly ``bits`` bits,
  ``gcd(n, (p-1)(q-1)) = 1`` and ``|p - q|`` of at least ``bits/2 - 2`` bits. ``g = n+1``.
* Sizes: 2048 (default), 3072 and 4096 bits; anything from 2048 up (even) is accepted.
  Smaller keys are refused unless ``insecure_test_key=True`` (tests only).
* Deterministic generation: with ``rng`` (a :class:`secure_agg.rng.Drbg`) every
  candidate comes from the stream and ``gmpy2.next_prime`` is deterministic, so the
  same seed gives the same key (job replay). ``rng=None`` seeds a Drbg from the OS.
* ``key_id`` is the fingerprint ``sha256(n as big-endian bytes)`` in hex; it is the
  :attr:`CipherVector.key_id` of every ciphertext under the key.
* Key files are JSON (:mod:`secure_agg.keyfile`, shared with OU). The private file is
  created with mode 0600 and refused on load if group/other can read it. No
  ``repr``/``str`` shows ``p`` or ``q``.
"""

from __future__ import annotations

import hashlib
import json
import os

import gmpy2
from gmpy2 import mpz

from secure_agg import keyfile
from secure_agg.rng import Drbg

MIN_KEY_BITS = 2048
SUPPORTED_KEY_BITS = (2048, 3072, 4096)
MIN_TEST_KEY_BITS = 128

_PUB_KIND = "fedjoint-paillier-public-key"
_PRIV_KIND = "fedjoint-paillier-private-key"


class InsecureKeyError(ValueError):
    """A key below the minimum size without ``insecure_test_key=True``."""


def _check_bits(bits: int, insecure_test_key: bool) -> None:
    if bits % 2 or bits < MIN_TEST_KEY_BITS:
        raise ValueError(f"Paillier key size must be even and >= {MIN_TEST_KEY_BITS}, "
                         f"got {bits}")
    if bits < MIN_KEY_BITS and not insecure_test_key:
        raise InsecureKeyError(
            f"Paillier keys below {MIN_KEY_BITS} bits are refused ({bits} requested); "
            f"insecure_test_key=True is for tests only")


def fingerprint(n: int) -> str:
    """sha256 of n (big-endian, minimal length), hex."""
    n = int(n)
    return hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).hexdigest()


class PaillierPublicKey:
    """n (and derived n^2); g = n + 1 implicitly."""

    __slots__ = ("n", "nsquare", "bits", "key_id", "max_abs")

    def __init__(self, n: int, insecure_test_key: bool = False):
        n = mpz(n)
        if n < 3 or n % 2 == 0:
            raise ValueError("Paillier modulus must be an odd integer > 2")
        _check_bits(n.bit_length() + (n.bit_length() & 1), insecure_test_key)
        self.n = n
        self.nsquare = n * n
        self.bits = int(n.bit_length())
        self.key_id = fingerprint(n)
        #: plaintexts are signed ints with |m| <= max_abs (< n/2)
        self.max_abs = (n - 1) // 2

    def __repr__(self) -> str:
        return f"PaillierPublicKey(bits={self.bits}, key_id={self.key_id[:16]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PaillierPublicKey) and self.n == other.n

    def __hash__(self) -> int:
        return hash(self.key_id)

    # ---- serialisation ------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"kind": _PUB_KIND, "version": 1, "bits": self.bits,
                           "key_id": self.key_id, "n": format(int(self.n), "x")})

    @classmethod
    def from_json(cls, text: str, insecure_test_key: bool = False) -> PaillierPublicKey:
        d = keyfile.load_json(text, _PUB_KIND)
        key = cls(keyfile.hex_field(d, "n"), insecure_test_key=insecure_test_key)
        if d.get("key_id") not in (None, key.key_id):
            raise ValueError("public key file: key_id does not match n")
        return key

    def save(self, path: str | os.PathLike) -> None:
        keyfile.write_public(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike, insecure_test_key: bool = False) -> PaillierPublicKey:
        return cls.from_json(keyfile.read_public(path), insecure_test_key=insecure_test_key)

    # ---- phe interop ----------------------------------------------------------------
    def to_phe(self):
        from phe import paillier
        return paillier.PaillierPublicKey(int(self.n))

    @classmethod
    def from_phe(cls, pk, insecure_test_key: bool = False) -> PaillierPublicKey:
        if int(pk.g) != int(pk.n) + 1:
            raise ValueError("only g = n + 1 phe keys are supported")
        return cls(pk.n, insecure_test_key=insecure_test_key)


class PaillierPrivateKey:
    """The factorisation plus the CRT constants used by encryption and decryption."""

    __slots__ = ("public_key", "p", "q", "psquare", "qsquare", "hp", "hq",
                 "p_inv_q", "qsq_inv_psq")

    def __init__(self, public_key: PaillierPublicKey, p: int, q: int):
        p, q = mpz(p), mpz(q)
        if p * q != public_key.n:
            raise ValueError("private key: p * q does not equal the public modulus")
        if p == q:
            raise ValueError("private key: p and q must differ")
        if q < p:  # phe's convention: p < q
            p, q = q, p
        self.public_key = public_key
        self.p, self.q = p, q
        self.psquare, self.qsquare = p * p, q * q
        n = public_key.n
        g = n + 1
        # hp = L_p(g^(p-1) mod p^2)^-1 mod p, exactly as phe computes it
        self.hp = gmpy2.invert((gmpy2.powmod(g, p - 1, self.psquare) - 1) // p, p)
        self.hq = gmpy2.invert((gmpy2.powmod(g, q - 1, self.qsquare) - 1) // q, q)
        self.p_inv_q = gmpy2.invert(p, q)
        self.qsq_inv_psq = gmpy2.invert(self.qsquare, self.psquare)

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    def __repr__(self) -> str:  # never p or q
        return f"PaillierPrivateKey(bits={self.public_key.bits}, key_id={self.key_id[:16]})"

    __str__ = __repr__

    def __reduce__(self):  # keep the factorisation out of pickles
        raise TypeError("PaillierPrivateKey cannot be pickled; use save()")

    # ---- serialisation ------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"kind": _PRIV_KIND, "version": 1, "bits": self.public_key.bits,
                           "key_id": self.key_id, "n": format(int(self.public_key.n), "x"),
                           "p": format(int(self.p), "x"), "q": format(int(self.q), "x")})

    @classmethod
    def from_json(cls, text: str, insecure_test_key: bool = False) -> PaillierPrivateKey:
        d = keyfile.load_json(text, _PRIV_KIND)
        pub = PaillierPublicKey(keyfile.hex_field(d, "n"), insecure_test_key=insecure_test_key)
        if d.get("key_id") not in (None, pub.key_id):
            raise ValueError("private key file: key_id does not match n")
        p, q = keyfile.hex_field(d, "p"), keyfile.hex_field(d, "q")
        if not (gmpy2.is_prime(p) and gmpy2.is_prime(q)):
            raise ValueError("private key file: p and q must be prime")
        return cls(pub, p, q)

    def save(self, path: str | os.PathLike) -> None:
        """Write the key as JSON with mode 0600 (also tightening an existing file)."""
        keyfile.write_private(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike, insecure_test_key: bool = False,
             check_permissions: bool = True) -> PaillierPrivateKey:
        return cls.from_json(keyfile.read_private(path, check_permissions),
                             insecure_test_key=insecure_test_key)

    # ---- phe interop ----------------------------------------------------------------
    def to_phe(self):
        from phe import paillier
        return paillier.PaillierPrivateKey(self.public_key.to_phe(), int(self.p), int(self.q))

    @classmethod
    def from_phe(cls, sk, insecure_test_key: bool = False) -> PaillierPrivateKey:
        return cls(PaillierPublicKey.from_phe(sk.public_key, insecure_test_key),
                   sk.p, sk.q)


def _blum_prime(bits: int, rng: Drbg) -> mpz:
    """A prime = 3 mod 4 of exactly ``bits`` bits with its top two bits set."""
    while True:
        cand = mpz(rng.randbits(bits)) | (mpz(3) << (bits - 2)) | 3
        p = gmpy2.next_prime(cand)
        if p.bit_length() == bits and p % 4 == 3:
            return p


def generate_keypair(bits: int = 2048, rng: Drbg | None = None,
                     insecure_test_key: bool = False
                     ) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """Generate a Paillier key pair (deterministic in ``rng`` when one is given)."""
    _check_bits(bits, insecure_test_key)
    if rng is None:
        rng = Drbg.fresh("paillier-keygen")
    half = bits // 2
    while True:
        p = _blum_prime(half, rng)
        q = _blum_prime(half, rng)
        if p == q or abs(p - q).bit_length() < half - 2:
            continue
        n = p * q
        if n.bit_length() != bits or gmpy2.gcd(n, (p - 1) * (q - 1)) != 1:
            continue
        pub = PaillierPublicKey(n, insecure_test_key=insecure_test_key)
        return pub, PaillierPrivateKey(pub, p, q)
