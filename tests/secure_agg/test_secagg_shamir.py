"""Shamir sharing and the secure-aggregation primitives against outside references.

References: gmpy2's primality test and a P-384 public key from ``cryptography`` (its
coordinates satisfy the curve equation modulo our prime); brute-force enumeration of
every polynomial over a small field; RFC 7748 (X25519), RFC 5869 (HKDF) and the GCM
specification's test vectors; ``cryptography``'s raw AES-ECB for the CTR keystream.
"""

import itertools
import os

import gmpy2
import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secure_agg import secagg_core as core
from secure_agg import shamir
from secure_agg.rng import Drbg

P384_B = int("b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875a"
             "c656398d8a2ed19d2a85c8edd3ec2aef", 16)


def test_prime_is_the_p384_field_prime():
    assert gmpy2.is_prime(shamir.PRIME, 50) and shamir.PRIME.bit_length() == 384
    for _ in range(2):
        pub = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
        x, y, p = pub.x, pub.y, shamir.PRIME
        assert (y * y - (x**3 - 3 * x + P384_B)) % p == 0


def test_any_t_shares_reconstruct_and_extra_shares_are_checked():
    rb = Drbg(b"k" * 32).random_bytes
    secret = int.from_bytes(os.urandom(32), "big")
    xs = [1, 2, 5, 9, 12]
    sh = shamir.split(secret, xs, 3, rb)
    for sub in itertools.combinations(xs, 3):
        assert shamir.reconstruct({x: sh[x] for x in sub}, 3) == secret
    assert shamir.reconstruct(sh, 3) == secret
    bad = dict(sh)
    bad[9] = (bad[9] + 1) % shamir.PRIME
    with pytest.raises(shamir.ShamirError, match="not on the polynomial"):
        shamir.reconstruct(bad, 3)
    # t-1 shares give a wrong value, not an error
    two = {x: sh[x] for x in xs[:2]}
    assert shamir.reconstruct(two, 2) != secret


@pytest.mark.parametrize("t", [2, 3])
def test_t_minus_one_shares_are_consistent_with_every_secret(t):
    """Over GF(31): for fixed t-1 shares, each secret has the same number of
    degree-(t-1) polynomials through them (enumerated, not computed)."""
    p = 31
    sh = shamir.split(17, [3, 7, 11][:t], t, Drbg(b"q" * 32).random_bytes, p=p)
    seen = {x: sh[x] for x in [3, 7, 11][:t - 1]}
    counts = [0] * p
    for coeffs in itertools.product(range(p), repeat=t):
        if all(sum(c * x**i for i, c in enumerate(coeffs)) % p == y
               for x, y in seen.items()):
            counts[coeffs[0]] += 1
    assert set(counts) == {p ** (t - 1 - len(seen))}


def test_shamir_refuses_bad_input():
    rb = Drbg(b"k" * 32).random_bytes
    with pytest.raises(shamir.ShamirError):
        shamir.split(shamir.PRIME, [1, 2], 2, rb)
    with pytest.raises(shamir.ShamirError):
        shamir.split(1, [1, 1], 2, rb)
    with pytest.raises(shamir.ShamirError):
        shamir.split(1, [0, 1], 2, rb)
    with pytest.raises(shamir.ShamirError):
        shamir.split(1, [1, 2], 3, rb)
    with pytest.raises(shamir.ShamirError, match="threshold is 3"):
        shamir.reconstruct({1: 1, 2: 2}, 3)
    with pytest.raises(shamir.ShamirError, match="out of range"):
        shamir.reconstruct({1: shamir.PRIME, 2: 2}, 2)


def test_x25519_rfc7748_vector():
    a = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    b = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    ka, kb = core.private_key(a), core.private_key(b)
    assert core.public_bytes(ka).hex() == \
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert core.public_bytes(kb).hex() == \
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert core._agree(ka, core.public_bytes(kb), "t").hex() == shared
    # the derived key is symmetric and equals HKDF-SHA256 of that secret
    k_ab = core.derive_key(ka, core.public_bytes(kb), b"mask", b"s1", 4, 9, "t")
    k_ba = core.derive_key(kb, core.public_bytes(ka), b"mask", b"s1", 9, 4, "t")
    info = b"fedjoint-secagg-v1/mask/\x02s1" + (4).to_bytes(8, "big") + (9).to_bytes(8, "big")
    ref = HKDF(hashes.SHA256(), 32, None, info).derive(bytes.fromhex(shared))
    assert k_ab == k_ba == ref
    assert core.derive_key(ka, core.public_bytes(kb), b"enc", b"s1", 4, 9, "t") != ref


def test_x25519_low_order_point_is_refused():
    k = core.private_key(b"\x01" * 32)
    with pytest.raises(core.SecAggError, match="key agreement failed"):
        core._agree(k, b"\x00" * 32, "client 3")


def test_hkdf_rfc5869_case_3():
    okm = core.hkdf(b"\x0b" * 22, b"", 42)
    assert okm.hex() == ("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c73"
                         "8d2d9d201395faa4b61a96c8")


def test_aes_gcm_vectors_and_tamper_detection():
    # GCM spec test cases 1 and 2 (AES-128, zero key and IV)
    z = b"\0" * 16
    assert core.seal(z, b"\0" * 12, b"", b"")[12:].hex() == "58e2fccefa7e3061367f1d57a4e7455a"
    assert core.seal(z, b"\0" * 12, z, b"")[12:].hex() == (
        "0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf")
    key, aad = os.urandom(32), core.share_aad(b"", 1, 2)
    blob = core.seal(key, os.urandom(12), b"share", aad)
    assert AESGCM(key).decrypt(blob[:12], blob[12:], aad) == b"share"
    assert core.open_sealed(key, blob, aad) == b"share"
    assert core.open_sealed(key, blob, core.share_aad(b"", 2, 1)) is None
    assert core.open_sealed(key, blob[:-1] + bytes([blob[-1] ^ 1]), aad) is None


@pytest.mark.parametrize("mod_bits", [20, 32, 48, 64])
def test_prg_is_the_aes_ctr_keystream(mod_bits):
    p = core.SecAggParams(num_clients=2, threshold=2, dim=37, bits=4, mod_bits=mod_bits)
    key = os.urandom(32)
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    stream = b"".join(ecb.update(i.to_bytes(16, "big")) for i in range(40))
    wb = 4 if mod_bits <= 32 else 8
    want = [int.from_bytes(stream[i * wb:(i + 1) * wb], "little") % 2**mod_bits
            for i in range(37)]
    assert core.prg(key, p).tolist() == want
    assert core.prg(key, p).dtype == np.uint64
