"""The Okamoto-Uchiyama cipher (``cipher = "ou"``) behind the cipher interface.

Scheme (:mod:`secure_agg.ou_keys`): ``n = p^2 q``, ciphertext ``c = G^m H^r mod n``,
plaintexts signed ints mod the secret prime ``p`` (~bits/3). Additively homomorphic
like Paillier, so every protocol runs on it unchanged: ``add`` is a multiply mod n,
``mul_plain`` a power, and sums, histograms, ``X.T @ enc`` and packing are the Paillier
engine's own code (:class:`secure_agg.paillier_ops.PaillierOps`) with modulus ``n``
instead of ``n^2`` -- half-size numbers, ~3x cheaper multiply-mods, half the bytes.

Plaintext space: only ``p``'s size is public, so :attr:`OUPublicCipher.capacity_bits`
is ``bits(p) - 2 - 128`` (553 bits for a 2048-bit key): packing capacity follows from
it, and the 128-bit margin makes OU's chosen-ciphertext attack fail -- a ciphertext of
``M >= p`` decrypts to ``M mod p``, which lands inside the accepted range with
probability below ``2^-128``; :meth:`OUPrivateCipher.decrypt` refuses everything else
(:class:`~secure_agg.ou_kernels.PlaintextOutOfRange`) and never returns it.

Obfuscation (fresh for every ciphertext, drawn from the ``rng`` in the calling thread in
element order, so results do not depend on ``workers``):

* ``"djn"`` (``encrypt``): ``H^r`` with a short ``r`` (224 bits for a 2048-bit key) from
  a fixed-base table -- 28 multiply-mods mod n, or mod p^2 and q for the key holder;
* ``"djn_full"`` / ``"standard"`` (``rerandomize``): ``H^r`` with ``r`` of
  ``bits(n) + 128`` bits, statistically uniform over ``<H>``, which holds every
  obfuscator an honest key holder uses (semi-honest key holder; see docs/ou.md for why
  OU has no analogue of Paillier's ``r^n`` against a malicious one).

Precomputed obfuscators (:meth:`precompute_obfuscators`) are the Paillier engine's
batches (:class:`secure_agg.precompute.PaillierObfuscatorBatch`): background processes
compute ``H^r``; ``encrypt(m, obfuscators=batch)`` multiplies in ``G^m``.
"""

from __future__ import annotations

from gmpy2 import mpz

from secure_agg.cipher import (
    CipherVector,
    IntLike,
    ObfuscatorBatchBase,
    PrivateCipher,
    bits_of,
)
from secure_agg.framing import parse_ciphertexts, vector_request
from secure_agg.ou_kernels import OUKernel, PlaintextOutOfRange, ou_decrypt
from secure_agg.ou_keys import OUPrivateKey, OUPublicKey, generate_keypair
from secure_agg.paillier import PaillierPrivateCipher, _draw_bits, _rng
from secure_agg.paillier_ops import PaillierOps
from secure_agg.pool import chunk_bounds, flatten, resolve_workers, run_chunks
from secure_agg.precompute import PRECOMPUTE_WINDOW_BITS, PaillierObfuscatorBatch
from secure_agg.procpool import PROCESS_MIN_VALUES, get_pool

__all__ = ["CCA_MARGIN_BITS", "OUPrivateCipher", "OUPublicCipher", "PlaintextOutOfRange"]

#: the plaintext capacity stays this many bits below p (blocks the CCA key recovery)
CCA_MARGIN_BITS = 128
SCHEMES = ("djn", "djn_full", "standard")
REFRESH_OBFUSCATIONS = ("standard", "djn_full")


def _scheme(name: str) -> str:
    """The exponent scheme: OU's "standard" refresh is "djn_full" (module docstring)."""
    return "djn_full" if name == "standard" else name


class OUPublicCipher(PaillierOps):
    """Public-key OU operations on :class:`CipherVector` s of gmpy2 ciphertexts mod n.
    (:class:`PaillierOps` names its ciphertext modulus ``nsquare``: here it is ``n``.)"""

    def __init__(self, public_key: OUPublicKey, workers: int | None = None):
        if not isinstance(public_key, OUPublicKey):
            raise TypeError("public_key must be a secure_agg.ou_keys.OUPublicKey")
        self.public_key = public_key
        self.n = public_key.n
        self.nsquare = public_key.n          # the ciphertext modulus of PaillierOps
        self.key_bits = public_key.bits
        self.key_id = public_key.key_id
        self.obfuscation = "djn"
        self.workers = resolve_workers(workers)
        self._kernel = OUKernel(self.n, public_key.g, public_key.h)
        self.djn_exponent_bits = self._kernel.djn_exponent_bits

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(bits={self.key_bits}, key_id={self.key_id[:16]}, "
                f"workers={self.workers})")

    @property
    def capacity_bits(self) -> int:
        """``bits(p) - 2 - CCA_MARGIN_BITS``: |m| stays far below ``p / 2``."""
        return self.public_key.p_bits - 2 - CCA_MARGIN_BITS

    # ---- the duck-typed surface of PaillierObfuscatorBatch ------------------------
    def _spec(self) -> tuple:
        return ("ou_public", int(self.n), int(self.public_key.g), int(self.public_key.h))

    def _exp_bits(self, obfuscation: str) -> int:
        return self._kernel.exp_bits(_scheme(obfuscation))

    def _precompute_window(self, obfuscation: str) -> int:
        return 8

    def _obfuscate_parallel(self, draws: list, obfuscation: str) -> list[mpz]:
        scheme = _scheme(obfuscation)
        if self.workers <= 1 or len(draws) < PROCESS_MIN_VALUES:
            return self._kernel.obfuscate(draws, scheme)
        chunks = [draws[s:e] for s, e in chunk_bounds(len(draws), self.workers)]
        return flatten(get_pool(self.workers).obfuscate(
            self._spec(), chunks, scheme, self._exp_bits(scheme),
            self._precompute_window(scheme)))

    # ---- encryption ---------------------------------------------------------------
    def _draw(self, rng, count: int, obfuscation: str) -> list[int]:
        return _draw_bits(rng, count, self._exp_bits(obfuscation))

    def encrypt(self, m: IntLike, rng=None, bound_bits: int | None = None,
                obfuscators: ObfuscatorBatchBase | None = None) -> CipherVector:
        """``G^m H^r`` with fresh short ``r`` (or the next ``len(m)`` obfuscators of a
        precomputed batch: bit for bit the same ciphertexts for the same stream)."""
        vals = self._ints(m, "encrypt")
        bound = self._encrypt_bound(vals, bound_bits)
        if obfuscators is not None:
            if rng is not None:
                raise ValueError("encrypt: pass rng or obfuscators, not both")
            rhos = self._consume(obfuscators, len(vals), "djn", "encrypt")
            return CipherVector(self.key_id, self._kernel.apply(vals, rhos), bound)
        draws = self._draw(_rng(rng), len(vals), "djn")
        if self.workers > 1 and len(vals) >= PROCESS_MIN_VALUES:
            chunks = [(vals[s:e], draws[s:e]) for s, e in chunk_bounds(len(vals), self.workers)]
            data = flatten(get_pool(self.workers).encrypt(self._spec(), chunks,
                                                           self.djn_exponent_bits))
        else:
            data = self._kernel.encrypt(vals, draws, "djn")
        return CipherVector(self.key_id, data, bound)

    def precompute_obfuscators(self, count: int, rng=None,
                               obfuscation: str | None = None) -> PaillierObfuscatorBatch:
        """``count`` fresh obfuscators drawn now (in order: the draws ``encrypt`` or
        ``rerandomize`` would make), computed by low-priority background processes."""
        scheme = "djn" if obfuscation is None else obfuscation
        if scheme not in SCHEMES:
            raise ValueError(f"obfuscation must be one of {SCHEMES}, got {scheme!r}")
        scheme = _scheme(scheme)
        return PaillierObfuscatorBatch(self, self._draw(_rng(rng), int(count), scheme),
                                       scheme)

    def _batch_scheme(self, scheme: str) -> str:
        return _scheme(scheme)

    def rerandomize(self, a: CipherVector, rng=None, obfuscation: str = "standard",
                    obfuscators: ObfuscatorBatchBase | None = None) -> CipherVector:
        """Multiply by ``H^r``, ``r`` of ``bits(n) + 128`` bits (statistically uniform
        over ``<H>``); ``"standard"`` and ``"djn_full"`` are the same for OU."""
        self.check_same_key(a)
        if obfuscation not in REFRESH_OBFUSCATIONS:
            raise ValueError(f"rerandomize: obfuscation must be one of "
                             f"{REFRESH_OBFUSCATIONS}, got {obfuscation!r}")
        if obfuscators is not None:
            if rng is not None:
                raise ValueError("rerandomize: pass rng or obfuscators, not both")
            rhos = self._consume(obfuscators, len(a), obfuscation, "rerandomize")
        else:
            rhos = self._obfuscate_parallel(self._draw(_rng(rng), len(a), "djn_full"),
                                            "djn_full")
        n = self.n
        return CipherVector(self.key_id, [c * r % n for c, r in zip(a.data, rhos,
                                                                    strict=True)],
                            a.bound_bits)

    # ---- homomorphic operations that differ from Paillier's ----------------------
    def add_plain(self, a: CipherVector, m: IntLike) -> CipherVector:
        """``c G^m`` (``G^m`` from the fixed-base tables)."""
        self.check_same_key(a)
        vals = self._broadcast(a, m, "add_plain")
        bound = self.check_bound(max(a.bound_bits, bits_of(vals)) + 1, "add_plain")
        n = self.n
        return CipherVector(self.key_id, [c * x % n for c, x in
                                          zip(a.data, self._kernel.gpow(vals), strict=True)],
                            bound)

    def _request(self, op: str, cts: list, extra: dict, tail: bytes) -> tuple[dict, bytes]:
        return vector_request(op, self.n, self.ciphertext_bytes, cts, extra, tail,
                              mod=self.n)

    # ---- serialisation -----------------------------------------------------------
    def to_bytes(self, a: CipherVector) -> bytes:
        self.check_same_key(a)
        w = self.ciphertext_bytes
        return b"".join(mpz(c).to_bytes(w, "big") for c in a.data)

    def from_bytes(self, data: bytes, bound_bits: int) -> CipherVector:
        """Fixed-width ciphertexts, each in ``[1, n)`` and a unit mod n."""
        w = self.ciphertext_bytes
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("from_bytes: expected bytes")
        data = bytes(data)
        if len(data) % w:
            raise ValueError(f"ciphertext bytes: length {len(data)} is not a multiple of the "
                             f"{w}-byte ciphertext width of this {self.key_bits}-bit OU key")
        return self._vec(parse_ciphertexts(data, w, self.n, self.n), bound_bits, "from_bytes")


class OUPrivateCipher(OUPublicCipher, PrivateCipher):
    """The key holder's OU cipher: CRT encryption (mod p^2 and q) and range-checked
    decryption."""

    def __init__(self, private_key: OUPrivateKey, workers: int | None = None):
        if not isinstance(private_key, OUPrivateKey):
            raise TypeError("private_key must be a secure_agg.ou_keys.OUPrivateKey")
        super().__init__(private_key.public_key, workers)
        self._sk = private_key
        self._kernel = OUKernel(self.n, private_key.public_key.g, private_key.public_key.h,
                                (private_key.p, private_key.q))
        self._public: OUPublicCipher | None = None

    @classmethod
    def generate(cls, bits: int = 2048, rng=None, workers: int | None = None,
                 insecure_test_key: bool = False) -> OUPrivateCipher:
        _, sk = generate_keypair(bits, rng=rng, insecure_test_key=insecure_test_key)
        return cls(sk, workers)

    @property
    def private_key(self) -> OUPrivateKey:
        return self._sk

    def public(self) -> OUPublicCipher:
        if self._public is None:
            self._public = OUPublicCipher(self.public_key, self.workers)
        return self._public

    def _spec(self) -> tuple:
        sk = self._sk
        return ("ou_private", int(self.n), int(self.public_key.g), int(self.public_key.h),
                int(sk.p), int(sk.q))

    def _precompute_window(self, obfuscation: str) -> int:
        return PRECOMPUTE_WINDOW_BITS if _scheme(obfuscation) == "djn" else 8

    def decrypt(self, a: CipherVector) -> list[int]:
        """Signed plaintexts; refuses (:class:`PlaintextOutOfRange`) any element outside
        ``|m| < 2^a.bound_bits`` (``bound_bits`` never exceeds :attr:`capacity_bits`)."""
        self.check_same_key(a)
        sk, data, n = self._sk, a.data, self.n
        bound = min(int(a.bound_bits), self.capacity_bits)

        def work(s: int, e: int) -> list[int]:
            return ou_decrypt(data[s:e], sk.p, sk.t, sk.gp_inv, bound, offset=s, n=n)

        return flatten(run_chunks(self.workers, len(data), work, min_chunk=8))

    #: decrypt ciphertexts made by :meth:`pack` and unpack their slots (Paillier's)
    decrypt_packed = PaillierPrivateCipher.decrypt_packed
