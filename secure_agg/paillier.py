"""The Paillier engine: vectors of gmpy2 ciphertexts behind the cipher interface.

Scheme: phe-compatible Paillier with ``g = n + 1``, so ``g^m = 1 + m*n (mod n^2)`` and a
ciphertext is ``c = (1 + m*n) * rho (mod n^2)`` for an *obfuscator* ``rho``, an n-th
residue. Plaintexts are signed ints ``|m| < n/2`` (stored mod n, centred lift on
decryption). Every engine ciphertext decrypts with phe's private key and vice versa.

Obfuscation (fresh for every ciphertext; never reused, never pooled and multiplied):

* ``"djn"`` (default for :meth:`encrypt`) -- Damgard-Jurik-Nielsen short exponent, as
  in the DJN paper and SecretFlow HEU: ``rho = h_s^alpha`` with ``h_s = (-x^2)^n mod
  n^2`` and ``alpha`` uniform in ``[0, 2^ceil(k/2))`` (1024 bits for a 2048-bit key).
  ``h_s`` is public; ``x`` is derived from ``n`` by SHAKE-256 ("nothing up my sleeve"),
  so every party gets the same ``h_s`` without extra key material. Because the base is
  fixed, ``h_s^alpha`` is computed from a precomputed table (``alpha`` read in bytes:
  ``ceil(k/16)`` multiplications, no squarings) -- about 17x fewer operations than
  phe's ``r^n``. Its semantic security rests on DCR plus the DJN short-exponent
  assumption for parties *without* the factorisation -- which is who reads the
  ciphertexts a party encrypts under its own key.
* ``"standard"`` -- ``rho = r^n mod n^2`` with ``r`` uniform in ``Z_n^*``: exactly
  phe's scheme, statistically uniform over all n-th residues.

:meth:`rerandomize` never uses short exponents: it exists to hide from the *key
holder* how a ciphertext was derived (which rows went into a histogram bin). The key
holder knows ``p, q``: it can strip the plaintext, take n-th roots, and solve discrete
logarithms modulo the 1024-bit primes far below the key's nominal security -- which
would expose a short DJN exponent sum. Modes: ``"standard"`` (default) -- uniform
``r^n``, nothing left to test even when the factors of an aggregate come from
different bases (power-residue symbols tell cosets of ``<h_s>`` apart for free);
``"djn_full"`` -- ``h_s^alpha'`` with ``alpha'`` of ``bits(n) + 128`` bits,
statistically uniform over ``<h_s>`` (semi-honest key holder), ~7.5x cheaper on
gmpy2 (~1.4x where ``r^n`` runs on libcrypto_mb, :mod:`secure_agg.native_mb`).

Precomputation (:meth:`PaillierPublicCipher.precompute_obfuscators`,
:class:`PaillierObfuscatorBatch`): obfuscators are drawn up front and computed by
low-priority background processes; each is consumed exactly once, and the ciphertexts
equal those of ``encrypt(m, rng)`` with the same stream.

The key holder (:class:`PaillierPrivateCipher`) computes the same ``h_s^alpha``
modulo ``p^2`` and ``q^2`` with half-size tables and recombines by CRT: the ciphertexts
are bit-for-bit those of the public path for the same random stream (auditor replay
does not need the private key), ~1.45x cheaper. Decryption is phe's CRT decryption.

Randomness: every ``alpha``/``r`` is drawn from the ``rng`` argument (a
:class:`secure_agg.rng.Drbg`) in the calling thread and in element order before any
work is farmed out, so results are identical for any ``workers``. ``rng=None`` uses a
Drbg freshly seeded from the OS CSPRNG.

Parallelism: ``workers`` (default: the cores this process may use). Which operation
uses threads, worker processes (:mod:`secure_agg.procpool`) or only the calling thread
is explained in :mod:`secure_agg.pool`.

This module is the engine's public face (the two ciphers, key and randomness handling,
serialisation). The rest, each importing only what lies below it:
:mod:`secure_agg.paillier_ops` (the homomorphic vector operations, the ciphers' base),
:mod:`secure_agg.precompute` (precomputed obfuscator batches),
:mod:`secure_agg.procpool` (the parent's worker-process pools),
:mod:`secure_agg.worker` (the worker process), :mod:`secure_agg.framing` (ciphertext
bytes and the pipe format) and :mod:`secure_agg.kernels` (the arithmetic).
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2
from gmpy2 import mpz

from secure_agg.cipher import (
    CipherVector,
    IntLike,
    ObfuscatorBatchBase,
    PrivateCipher,
)
from secure_agg.framing import parse_ciphertexts
from secure_agg.kernels import (
    FixedBaseTable,
    PrivateKernel,
    PublicKernel,
    crt_decrypt,
    djn_base,
)
from secure_agg.keys import PaillierPrivateKey, PaillierPublicKey
from secure_agg.paillier_ops import PaillierOps
from secure_agg.pool import chunk_bounds, flatten, resolve_workers, run_chunks
from secure_agg.precompute import PRECOMPUTE_WINDOW_BITS, PaillierObfuscatorBatch
from secure_agg.procpool import PROCESS_MIN_VALUES, get_pool
from secure_agg.rng import Drbg

__all__ = ["OBFUSCATIONS", "REFRESH_OBFUSCATIONS", "FixedBaseTable", "PaillierObfuscatorBatch",
           "PaillierPrivateCipher", "PaillierPublicCipher", "djn_base"]

OBFUSCATIONS = ("djn", "standard")
#: what :meth:`PaillierPublicCipher.rerandomize` accepts (see the module docstring)
REFRESH_OBFUSCATIONS = ("standard", "djn_full")


def _rng(rng) -> Drbg:
    return Drbg.fresh("paillier") if rng is None else rng


def _draw_bits(rng, count: int, bits: int) -> list[int]:
    """``count`` uniform ``bits``-bit ints; the same stream as ``count`` randbits calls."""
    if bits % 8 == 0 and hasattr(rng, "random_bytes"):
        w = bits // 8
        buf = rng.random_bytes(w * count)
        fb = int.from_bytes
        return [fb(buf[i:i + w], "big") for i in range(0, w * count, w)]
    return [rng.randbits(bits) for _ in range(count)]


def _draw_units(rng, count: int, n: mpz) -> list[mpz]:
    """``count`` uniform elements of Z_n^* (rejection sampling)."""
    out = []
    for _ in range(count):
        while True:
            r = mpz(rng.randbelow(int(n)))
            if r > 1 and gmpy2.gcd(r, n) == 1:
                out.append(r)
                break
    return out


class PaillierPublicCipher(PaillierOps):
    """Public-key operations on :class:`CipherVector` s of gmpy2 ciphertexts."""

    def __init__(self, public_key: PaillierPublicKey, obfuscation: str = "djn",
                 workers: int | None = None):
        if obfuscation not in OBFUSCATIONS:
            raise ValueError(f"obfuscation must be one of {OBFUSCATIONS}, got {obfuscation!r}")
        if not isinstance(public_key, PaillierPublicKey):
            raise TypeError("public_key must be a secure_agg.keys.PaillierPublicKey "
                            "(use PaillierPublicKey.from_phe for phe keys)")
        self.public_key = public_key
        self.n = public_key.n
        self.nsquare = public_key.nsquare
        self.key_bits = public_key.bits
        self.key_id = public_key.key_id
        self.obfuscation = obfuscation
        self.workers = resolve_workers(workers)
        self._kernel: PublicKernel = PublicKernel(self.n)
        #: DJN exponent length: ceil(k/2) bits (DJN paper; HEU uses key_size/2)
        self.djn_exponent_bits = self._kernel.djn_exponent_bits

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(bits={self.key_bits}, key_id={self.key_id[:16]}, "
                f"obfuscation={self.obfuscation!r}, workers={self.workers})")

    # ---- obfuscators ------------------------------------------------------------------
    @property
    def h_s(self) -> mpz:
        """The DJN base ``(-x^2)^n mod n^2``."""
        return self._kernel.h_s

    def _exp_bits(self, obfuscation: str) -> int:
        """Exponent bits of a DJN-type scheme (0 for standard)."""
        return self._kernel.exp_bits(obfuscation)

    def _draw(self, rng, count: int, obfuscation: str) -> list:
        if obfuscation in ("djn", "djn_full"):
            return _draw_bits(rng, count, self._exp_bits(obfuscation))
        return _draw_units(rng, count, self.n)

    def _obfuscate_local(self, draws: list, obfuscation: str, window: int = 8) -> list[mpz]:
        """``rho mod n^2`` for each draw, in this thread (also what a worker runs)."""
        return self._kernel.obfuscate(draws, obfuscation, window)

    def _precompute_window(self, obfuscation: str) -> int:
        return 8  # public-key tables are mod n^2: wider windows cost too much memory

    def _obfuscate_parallel(self, draws: list, obfuscation: str) -> list[mpz]:
        """Obfuscators for ``draws`` on the (normal-priority) worker processes, or here
        when there are few of them or one worker."""
        if self.workers <= 1 or len(draws) < PROCESS_MIN_VALUES:
            return self._obfuscate_local(draws, obfuscation)
        chunks = [draws[s:e] for s, e in chunk_bounds(len(draws), self.workers)]
        return flatten(get_pool(self.workers).obfuscate(
            self._spec(), chunks, obfuscation, self._exp_bits(obfuscation),
            self._precompute_window(obfuscation)))

    def _apply(self, vals: list[int], rhos: list) -> list[mpz]:
        return self._kernel.apply(vals, rhos)

    # ---- encryption -------------------------------------------------------------------
    def encrypt(self, m: IntLike, rng=None, bound_bits: int | None = None,
                obfuscators: ObfuscatorBatchBase | None = None) -> CipherVector:
        """Encrypt signed ints. With ``obfuscators`` (a batch from
        :meth:`precompute_obfuscators`), the next ``len(m)`` obfuscators of the batch
        are consumed instead of drawing from ``rng``; the result is bit for bit what
        ``encrypt(m, rng=...)`` gives with the rng the batch was drawn from."""
        vals = self._ints(m, "encrypt")
        bound = self._encrypt_bound(vals, bound_bits)
        if obfuscators is not None:
            if rng is not None:
                raise ValueError("encrypt: pass rng or obfuscators, not both")
            rhos = self._consume(obfuscators, len(vals), self.obfuscation, "encrypt")
            return CipherVector(self.key_id, self._apply(vals, rhos), bound)
        draws = self._draw(_rng(rng), len(vals), self.obfuscation)
        data = self._encrypt_with(vals, draws, self.obfuscation)
        return CipherVector(self.key_id, data, bound)

    def precompute_obfuscators(self, count: int, rng=None,
                               obfuscation: str | None = None) -> PaillierObfuscatorBatch:
        """Start computing ``count`` fresh obfuscators in the background.

        The random exponents (or units) are drawn from ``rng`` **now**, in this thread
        and in order -- exactly the draws ``encrypt(m, rng)`` would make for
        ``count`` values -- so the ciphertexts later made with the batch do not depend
        on timing. The powers are computed in chunks by low-priority worker processes
        (:class:`secure_agg.procpool.BackgroundPool`); a consumer that needs a chunk
        nobody has started computes it itself at normal priority. ``obfuscation``:
        the cipher's scheme by default (what :meth:`encrypt` uses); ``"djn_full"`` or
        ``"standard"`` for :meth:`rerandomize`."""
        scheme = self.obfuscation if obfuscation is None else obfuscation
        if scheme not in OBFUSCATIONS + ("djn_full",):
            raise ValueError(f"obfuscation must be one of {OBFUSCATIONS + ('djn_full',)}, "
                             f"got {scheme!r}")
        draws = self._draw(_rng(rng), int(count), scheme)
        return PaillierObfuscatorBatch(self, draws, scheme)

    def _spec(self) -> tuple:
        """What a worker process needs to rebuild this key's kernel (secure_agg.framing)."""
        return ("public", int(self.n))

    def _encrypt_with(self, vals: list[int], draws: list, obfuscation: str) -> list[mpz]:
        if (obfuscation == "djn" and self.workers > 1
                and len(vals) >= PROCESS_MIN_VALUES):
            chunks = [(vals[s:e], draws[s:e])
                      for s, e in chunk_bounds(len(vals), self.workers)]
            return flatten(get_pool(self.workers).encrypt(self._spec(), chunks,
                                                           self.djn_exponent_bits))
        return self._encrypt_local(vals, draws, obfuscation)

    def _encrypt_local(self, vals: list[int], draws: list, obfuscation: str) -> list[mpz]:
        """Encrypt in this process: DJN in the calling thread (multiply-mod grained:
        threads would fight over the GIL), standard (powmod grained) on threads."""
        kernel = self._kernel
        if obfuscation == "djn":
            return kernel.encrypt(vals, draws, obfuscation)
        return flatten(run_chunks(
            self.workers, len(vals),
            lambda s, e: kernel.encrypt(vals[s:e], draws[s:e], obfuscation), min_chunk=4))

    def encrypt_zero_obfuscators(self, count: int, rng=None) -> list[mpz]:
        """Fresh obfuscators (encryptions of zero) with the cipher's scheme."""
        draws = self._draw(_rng(rng), count, self.obfuscation)
        return self._encrypt_with([0] * count, draws, self.obfuscation)

    def rerandomize(self, a: CipherVector, rng=None, obfuscation: str = "standard",
                    obfuscators: ObfuscatorBatchBase | None = None) -> CipherVector:
        """Multiply by a fresh obfuscator that statistically hides how ``a`` was formed
        from the key holder (see the module docstring):

        * ``"standard"`` (default): uniform ``r^n`` -- uniform over all n-th residues,
          so it also hides tags a *malicious* key holder put outside ``<h_s>``;
        * ``"djn_full"``: ``h_s^alpha`` with ``alpha`` of ``n.bit_length() + 128``
          bits -- statistically uniform over ``<h_s>``, which holds every obfuscator
          an honest key holder's DJN encryptions use (semi-honest model); a fixed-base
          table makes it ~5x cheaper than ``r^n`` on gmpy2 (~1.4x on libcrypto_mb).

        ``obfuscators``: a batch precomputed with the same ``obfuscation``."""
        self.check_same_key(a)
        if obfuscation not in REFRESH_OBFUSCATIONS:
            raise ValueError(f"rerandomize: obfuscation must be one of "
                             f"{REFRESH_OBFUSCATIONS}, got {obfuscation!r}")
        if obfuscators is not None:
            if rng is not None:
                raise ValueError("rerandomize: pass rng or obfuscators, not both")
            rhos = self._consume(obfuscators, len(a), obfuscation, "rerandomize")
        elif obfuscation == "djn_full":
            rhos = self._obfuscate_local(self._draw(_rng(rng), len(a), obfuscation),
                                         obfuscation)
        else:
            draws = self._draw(_rng(rng), len(a), "standard")
            rhos = self._encrypt_with([0] * len(a), draws, "standard")
        nsq = self.nsquare
        return CipherVector(self.key_id, [c * r % nsq for c, r in zip(a.data, rhos,
                                                                        strict=True)],
                            a.bound_bits)

    # ---- serialisation -----------------------------------------------------------------
    def to_bytes(self, a: CipherVector) -> bytes:
        self.check_same_key(a)
        w = self.ciphertext_bytes
        return b"".join(mpz(c).to_bytes(w, "big") for c in a.data)

    def from_bytes(self, data: bytes, bound_bits: int) -> CipherVector:
        """Parse fixed-width ciphertexts, range- and unit-checked
        (:func:`secure_agg.framing.parse_ciphertexts`)."""
        w = self.ciphertext_bytes
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("from_bytes: expected bytes")
        data = bytes(data)
        if len(data) % w:
            raise ValueError(f"ciphertext bytes: length {len(data)} is not a multiple of the "
                             f"{w}-byte ciphertext width of this {self.key_bits}-bit key")
        out = parse_ciphertexts(data, w, self.n, self.nsquare)
        return self._vec(out, bound_bits, "from_bytes")

    # ---- phe interop --------------------------------------------------------------------
    def to_phe(self, a: CipherVector, exponent: int = 0) -> list:
        """phe EncryptedNumbers (phe's value = plaintext * 16**exponent; a FixedPoint with
        frac_bits divisible by 4 maps to ``exponent = -frac_bits // 4``)."""
        from phe import paillier
        self.check_same_key(a)
        pk = self.public_key.to_phe()
        return [paillier.EncryptedNumber(pk, int(c), exponent) for c in a.data]

    def from_phe(self, numbers: Sequence, bound_bits: int) -> CipherVector:
        """Raw ciphertexts of phe EncryptedNumbers (all must share one exponent)."""
        exps = {x.exponent for x in numbers}
        if len(exps) > 1:
            raise ValueError(f"from_phe: mixed exponents {sorted(exps)}; align them first")
        for x in numbers:
            if int(x.public_key.n) != int(self.n):
                raise ValueError("from_phe: EncryptedNumber under a different key")
        data = self.to_bytes(CipherVector(self.key_id,
                                          [mpz(x.ciphertext(be_secure=False)) for x in numbers],
                                          0))
        return self.from_bytes(data, bound_bits)


class PaillierPrivateCipher(PaillierPublicCipher, PrivateCipher):
    """The key holder's cipher: CRT encryption and decryption."""

    def __init__(self, private_key: PaillierPrivateKey, obfuscation: str = "djn",
                 workers: int | None = None):
        if not isinstance(private_key, PaillierPrivateKey):
            raise TypeError("private_key must be a secure_agg.keys.PaillierPrivateKey "
                            "(use PaillierPrivateKey.from_phe for phe keys)")
        super().__init__(private_key.public_key, obfuscation, workers)
        self._sk = private_key
        self._kernel = PrivateKernel(self.n, private_key.p, private_key.q)
        self._public: PaillierPublicCipher | None = None

    @classmethod
    def generate(cls, bits: int = 2048, rng=None, obfuscation: str = "djn",
                 workers: int | None = None,
                 insecure_test_key: bool = False) -> PaillierPrivateCipher:
        from secure_agg.keys import generate_keypair
        _, sk = generate_keypair(bits, rng=rng, insecure_test_key=insecure_test_key)
        return cls(sk, obfuscation, workers)

    @property
    def private_key(self) -> PaillierPrivateKey:
        return self._sk

    def public(self) -> PaillierPublicCipher:
        if self._public is None:
            pub = PaillierPublicCipher(self.public_key, self.obfuscation, self.workers)
            pub._kernel._hs = self._kernel._hs
            self._public = pub
        return self._public

    def _precompute_window(self, obfuscation: str) -> int:
        return PRECOMPUTE_WINDOW_BITS if obfuscation == "djn" else 8

    def _spec(self) -> tuple:
        return ("private", int(self.n), int(self._sk.p), int(self._sk.q))

    def decrypt(self, a: CipherVector) -> list[int]:
        """CRT decryption (phe's ``raw_decrypt``) with centred lift to signed ints."""
        self.check_same_key(a)
        sk, n, data = self._sk, self.n, a.data
        return flatten(run_chunks(
            self.workers, len(data),
            lambda s, e: crt_decrypt(data[s:e], n, sk.p, sk.q, sk.hp, sk.hq, sk.p_inv_q),
            min_chunk=2))

    def decrypt_packed(self, a: CipherVector, slot_bits: int, n_slots: int,
                       count: int | None = None) -> list[int]:
        """Decrypt ciphertexts made by :meth:`pack` and unpack their slots in order
        (slot 0 of ciphertext 0 first); ``count`` trims the padding of the last one."""
        from secure_agg.codec import Packer
        cols = Packer(slot_bits, n_slots).unpack(self.decrypt(a))
        flat = [cols[k][i] for i in range(len(a)) for k in range(n_slots)]
        return flat if count is None else flat[:count]
