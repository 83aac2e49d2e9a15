"""Masked decryption: let the key holder decrypt a value without learning it.

Party A holds ``[[x]]`` under B's key and needs ``x``. A adds a fresh uniform mask
``r`` drawn from ``[0, 2**(bound_bits + STAT_BITS))``, sends ``[[x + r]]`` to B, B
decrypts and returns ``x + r``, and A subtracts ``r``. Because ``|x| < 2**bound_bits``,
``x + r`` is statistically close (distance <= 2**-STAT_BITS per value) to uniform on
the mask range, so B learns nothing about ``x`` beyond its declared bound. The masked
value must fit the plaintext space; the cipher's overflow check enforces that.
"""

from __future__ import annotations

from collections.abc import Sequence

from secure_agg.cipher import CipherVector, PublicCipher

#: statistical hiding parameter: masks are this many bits wider than the masked value
STAT_BITS = 40


def mask(cipher: PublicCipher, a: CipherVector, rng) -> tuple[CipherVector, list[int]]:
    """Add fresh uniform masks (one per element, from ``rng``) and re-randomise."""
    width = a.bound_bits + STAT_BITS
    masks = [rng.randbits(width) for _ in range(len(a))]
    # add_plain alone keeps the old obfuscation: the key holder could link the masked
    # ciphertext to ciphertexts it made. Re-randomising hides the derivation.
    return cipher.rerandomize(cipher.add_plain(a, masks), rng), masks


def unmask(values: Sequence[int], masks: Sequence[int]) -> list[int]:
    if len(values) != len(masks):
        raise ValueError(f"unmask: {len(values)} values for {len(masks)} masks")
    return [int(v) - r for v, r in zip(values, masks, strict=True)]
