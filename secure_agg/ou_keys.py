"""Okamoto-Uchiyama keys: generation, fingerprints, JSON key files, peer-key checks.

The accelerated variant (Coron-Naccache-Paillier, "Accelerating Okamoto-Uchiyama's
public-key cryptosystem", 1999; the key shape of SecretFlow HEU's OU):

* ``n = p^2 q`` of exactly ``bits`` bits; ``p`` of ``ceil(bits/3)`` bits with its top two
  bits set, ``p - 1 = t u`` for a prime ``t`` of :func:`subgroup_bits` bits (224 for a
  2048-bit key), ``q`` prime with ``gcd(p t, q - 1) = 1``.
* ``G = g^u mod n`` for a unit ``g`` with ``g^(p-1) != 1 mod p^2``: ``G mod p^2`` has
  order ``p t`` and ``G^t mod p^2 = g^(p-1)`` has order ``p``, so a ciphertext
  ``c = G^m H^r mod n`` decrypts as ``m = L(c^t mod p^2) / L(G^t mod p^2) mod p`` with
  ``L(x) = (x - 1) / p`` -- a 224-bit exponent mod p^2 instead of Paillier's two
  1024-bit ones mod p^2, q^2.
* ``H = h^(n u) mod n`` for a random unit ``h``: ``H mod p^2`` has order ``t`` (so it
  vanishes in ``c^t``), ``H mod q`` is a random power. Obfuscators are powers of ``H``.
* Plaintexts live mod ``p`` (~bits/3): the public side knows only ``p``'s size, which
  is what packing capacity derives from (:func:`plaintext_prime_bits`).
* Deterministic generation from ``rng`` (a :class:`secure_agg.rng.Drbg`): every
  candidate comes from the stream, so an auditor's replay regenerates the key.
* ``key_id`` = sha256 over ``("fedjoint-ou-v1", n, G, H)`` in hex. Private key files
  are JSON written 0600 and refused when group/other-readable; ``repr`` never shows a
  factor; private keys refuse pickling.

Public keys from a peer (:meth:`OUPublicKey.from_fields`) are range-checked: ``n`` odd
of the declared size, ``1 < G, H < n`` and both units mod ``n``.
"""

from __future__ import annotations

import hashlib
import json
import os

import gmpy2
from gmpy2 import mpz

from secure_agg import keyfile
from secure_agg.keys import InsecureKeyError
from secure_agg.rng import Drbg

MIN_KEY_BITS = 2048
MIN_TEST_KEY_BITS = 384
_PUB_KIND = "fedjoint-ou-public-key"
_PRIV_KIND = "fedjoint-ou-private-key"


def _check_bits(bits: int, insecure_test_key: bool) -> None:
    if bits < MIN_TEST_KEY_BITS:
        raise ValueError(f"OU key size must be >= {MIN_TEST_KEY_BITS}, got {bits}")
    if bits < MIN_KEY_BITS and not insecure_test_key:
        raise InsecureKeyError(
            f"OU keys below {MIN_KEY_BITS} bits are refused ({bits} requested); "
            f"insecure_test_key=True is for tests only")


def plaintext_prime_bits(bits: int) -> int:
    """Bits of the secret prime ``p`` (the plaintext modulus) of a ``bits``-bit key."""
    return (bits + 2) // 3


def subgroup_bits(bits: int) -> int:
    """Bits of the prime ``t`` dividing ``p - 1`` (the decryption exponent): 224 below
    3072-bit keys, 256 below 4096, 304 from 4096 (NIST-equivalent strengths 112 / 128 /
    ~152 against Pollard rho on ``t``); at most a third of ``p`` for test keys."""
    t = 224 if bits < 3072 else 256 if bits < 4096 else 304
    return min(t, plaintext_prime_bits(bits) // 3)


def fingerprint(n: int, g: int, h: int) -> str:
    w = (int(n).bit_length() + 7) // 8
    data = b"fedjoint-ou-v1\0" + b"".join(int(v).to_bytes(w, "big") for v in (n, g, h))
    return hashlib.sha256(data).hexdigest()


class OUPublicKey:
    """``n``, the plaintext base ``G`` and the obfuscator base ``H``."""

    __slots__ = ("n", "g", "h", "bits", "p_bits", "key_id")

    def __init__(self, n: int, g: int, h: int, insecure_test_key: bool = False):
        n, g, h = mpz(n), mpz(g), mpz(h)
        if n < 3 or n % 2 == 0:
            raise ValueError("OU modulus must be an odd integer > 2")
        _check_bits(int(n.bit_length()), insecure_test_key)
        for name, v in (("G", g), ("H", h)):
            if not 1 < v < n:
                raise ValueError(f"OU public key: {name} must be in (1, n)")
            if gmpy2.gcd(v, n) != 1:
                raise ValueError(f"OU public key: {name} is not a unit mod n")
        self.n, self.g, self.h = n, g, h
        self.bits = int(n.bit_length())
        #: bits of the plaintext prime p (public: fixed by the key size)
        self.p_bits = plaintext_prime_bits(self.bits)
        self.key_id = fingerprint(n, g, h)

    def __repr__(self) -> str:
        return f"OUPublicKey(bits={self.bits}, key_id={self.key_id[:16]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OUPublicKey) and self.key_id == other.key_id

    def __hash__(self) -> int:
        return hash(self.key_id)

    def fields(self) -> dict:
        """``n``, ``g``, ``h`` in hex (the wire and file form)."""
        return {k: format(int(getattr(self, k)), "x") for k in ("n", "g", "h")}

    @classmethod
    def from_fields(cls, d: dict, insecure_test_key: bool = False,
                    max_hex: int = 4096) -> OUPublicKey:
        """From ``n``, ``g``, ``h`` hex strings (a peer's or a file's), range-checked."""
        vals = []
        for k in ("n", "g", "h"):
            v = d.get(k)
            if not isinstance(v, str) or not 0 < len(v) <= max_hex:
                raise ValueError(f"OU public key: field {k!r} must be a hex string of at "
                                 f"most {max_hex} digits")
            try:
                vals.append(mpz(v, 16))
            except ValueError:
                raise ValueError(f"OU public key: field {k!r} is not hex") from None
        key = cls(*vals, insecure_test_key=insecure_test_key)
        if d.get("key_id") not in (None, key.key_id):
            raise ValueError("OU public key: key_id does not match n, g, h")
        return key

    def to_json(self) -> str:
        return json.dumps({"kind": _PUB_KIND, "version": 1, "bits": self.bits,
                           "key_id": self.key_id, **self.fields()})

    @classmethod
    def from_json(cls, text: str, insecure_test_key: bool = False) -> OUPublicKey:
        return cls.from_fields(keyfile.load_json(text, _PUB_KIND), insecure_test_key)

    def save(self, path: str | os.PathLike) -> None:
        keyfile.write_public(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike, insecure_test_key: bool = False) -> OUPublicKey:
        return cls.from_json(keyfile.read_public(path), insecure_test_key=insecure_test_key)


class OUPrivateKey:
    """``p, q, t`` and the decryption constants."""

    __slots__ = ("public_key", "p", "q", "t", "psquare", "gp_inv", "q_inv_psq")

    def __init__(self, public_key: OUPublicKey, p: int, q: int, t: int):
        p, q, t = mpz(p), mpz(q), mpz(t)
        if p * p * q != public_key.n:
            raise ValueError("OU private key: p^2 q does not equal the public modulus")
        if (p - 1) % t:
            raise ValueError("OU private key: t does not divide p - 1")
        psq = p * p
        gp = gmpy2.powmod(public_key.g % psq, t, psq)
        if gp == 1 or gp % p != 1:
            raise ValueError("OU private key: G^t mod p^2 must have order p")
        if gmpy2.powmod(public_key.h % psq, t, psq) != 1:
            raise ValueError("OU private key: H mod p^2 must have order dividing t")
        self.public_key = public_key
        self.p, self.q, self.t, self.psquare = p, q, t, psq
        #: L(G^t mod p^2)^-1 mod p
        self.gp_inv = gmpy2.invert((gp - 1) // p, p)
        self.q_inv_psq = gmpy2.invert(q, psq)

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    def __repr__(self) -> str:  # never a factor
        return f"OUPrivateKey(bits={self.public_key.bits}, key_id={self.key_id[:16]})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("OUPrivateKey cannot be pickled; use save()")

    def to_json(self) -> str:
        return json.dumps({"kind": _PRIV_KIND, "version": 1, "bits": self.public_key.bits,
                           "key_id": self.key_id, **self.public_key.fields(),
                           **{k: format(int(getattr(self, k)), "x") for k in "pqt"}})

    @classmethod
    def from_json(cls, text: str, insecure_test_key: bool = False) -> OUPrivateKey:
        d = keyfile.load_json(text, _PRIV_KIND)
        pub = OUPublicKey.from_fields(d, insecure_test_key)
        p, q, t = keyfile.hex_field(d, "p"), keyfile.hex_field(d, "q"), keyfile.hex_field(d, "t")
        if not all(gmpy2.is_prime(x) for x in (p, q, t)):
            raise ValueError("OU private key file: p, q and t must be prime")
        return cls(pub, p, q, t)

    def save(self, path: str | os.PathLike) -> None:
        """Write the key as JSON with mode 0600 (also tightening an existing file)."""
        keyfile.write_private(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike, insecure_test_key: bool = False) -> OUPrivateKey:
        return cls.from_json(keyfile.read_private(path), insecure_test_key=insecure_test_key)


def _prime(bits: int, rng: Drbg) -> mpz:
    """A prime of exactly ``bits`` bits."""
    while True:
        cand = mpz(rng.randbits(bits)) | (mpz(1) << (bits - 1)) | 1
        p = gmpy2.next_prime(cand)
        if p.bit_length() == bits:
            return p


def _unit(rng: Drbg, n: mpz) -> mpz:
    while True:
        r = mpz(rng.randbelow(int(n)))
        if r > 1 and gmpy2.gcd(r, n) == 1:
            return r


def generate_keypair(bits: int = 2048, rng: Drbg | None = None,
                     insecure_test_key: bool = False) -> tuple[OUPublicKey, OUPrivateKey]:
    """An OU key pair (deterministic in ``rng`` when one is given)."""
    _check_bits(bits, insecure_test_key)
    rng = Drbg.fresh("ou-keygen") if rng is None else rng
    a, tb = plaintext_prime_bits(bits), subgroup_bits(bits)
    t = _prime(tb, rng)
    lo, hi = (mpz(3) << (a - 2)), mpz(1) << a   # p in [0.75 * 2^a, 2^a)
    while True:   # p = t u + 1, u even, p prime of a bits with the top two bits set
        u = (lo // t + mpz(rng.randbelow(int((hi - lo) // t)))) & ~mpz(1)
        p = t * u + 1
        if lo <= p < hi and gmpy2.is_prime(p, 40):
            break
    psq = p * p
    qlo, qhi = -(-(mpz(1) << (bits - 1)) // psq), (mpz(1) << bits) // psq
    while True:   # q such that n = p^2 q has exactly ``bits`` bits
        q = gmpy2.next_prime(qlo + mpz(rng.randbelow(int(qhi - qlo))))
        if q < qhi and q != p and gmpy2.gcd(p * t, q - 1) == 1:
            break
    n = psq * q
    while True:
        g = _unit(rng, n)
        if gmpy2.powmod(g % psq, p - 1, psq) != 1:
            break
    G = gmpy2.powmod(g, u, n)
    while True:
        H = gmpy2.powmod(_unit(rng, n), n * u, n)
        if H % psq != 1 and H > 1:
            break
    pub = OUPublicKey(n, G, H, insecure_test_key=insecure_test_key)
    return pub, OUPrivateKey(pub, p, q, t)
