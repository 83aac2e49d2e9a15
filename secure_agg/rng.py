"""Deterministic random bit generator for protocol randomness.

Every random value a party uses in a job (Paillier obfuscation, masks, PSI scalars,
row subsampling) is drawn from a :class:`Drbg` seeded with a 32-byte per-job seed kept
in the party's own vault. In production the seed comes from ``os.urandom`` (the OS
CSPRNG), so the stream is cryptographically strong; because it is a deterministic
function of the seed, an auditor holding the party's vault can replay the party's side
of a job and reproduce every ciphertext bit for bit (DESIGN.md rule 5, issue 7).

Construction: AES-256 in CTR mode (``cryptography``) keyed with
``SHA-256("fedjoint-drbg-v1" || seed || label)``. Independent sub-streams are derived
with :meth:`Drbg.child` by label, so a protocol can hand each worker or each step its
own stream and results do not depend on thread scheduling.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32
_CHUNK = 1 << 16


class Drbg:
    """AES-256-CTR keystream with integer helpers. Not thread-safe: one per consumer."""

    def __init__(self, seed: bytes, label: str = ""):
        if not isinstance(seed, (bytes, bytearray)) or len(seed) < 16:
            raise ValueError("Drbg seed must be at least 16 bytes")
        self._seed = bytes(seed)
        self._label = label
        key = hashlib.sha256(b"fedjoint-drbg-v1\0" + self._seed + b"\0" +
                             label.encode()).digest()
        self._enc = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
        self._buf = b""

    @classmethod
    def fresh(cls, label: str = "") -> Drbg:
        """A generator seeded from the OS CSPRNG (not replayable)."""
        return cls(os.urandom(SEED_BYTES), label)

    def child(self, label: str) -> Drbg:
        """An independent stream for ``label`` (same seed, domain-separated key)."""
        return Drbg(self._seed, f"{self._label}/{label}")

    def random_bytes(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must be >= 0")
        if len(self._buf) < n:
            need = max(n - len(self._buf), _CHUNK)
            self._buf += self._enc.update(b"\0" * need)
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def randbits(self, k: int) -> int:
        """Uniform integer in [0, 2**k)."""
        if k <= 0:
            return 0
        nbytes = (k + 7) // 8
        v = int.from_bytes(self.random_bytes(nbytes), "big")
        return v >> (nbytes * 8 - k)

    def randbelow(self, n: int) -> int:
        """Uniform integer in [0, n) by rejection sampling."""
        if n <= 0:
            raise ValueError("n must be positive")
        k = n.bit_length()
        while True:
            v = self.randbits(k)
            if v < n:
                return v

    def randrange(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi)."""
        return lo + self.randbelow(hi - lo)

    def numpy(self) -> np.random.Generator:
        """A numpy Generator seeded from this stream (for shuffles and subsampling)."""
        return np.random.Generator(np.random.PCG64(
            int.from_bytes(self.random_bytes(32), "big")))
