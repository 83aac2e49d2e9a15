"""Fuzzing ciphertext parsing from a peer (issue 12 part 6): ``from_bytes`` of the
Paillier engine (and of the plain test cipher) either returns ciphertexts that are all
in ``[1, n^2)`` and units mod n -- which then decrypt and re-serialise to the same
bytes -- or raises ``ValueError``; nothing else. Small insecure test keys only.
Profiles: tests/conftest.py."""

from __future__ import annotations

import gmpy2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secure_agg.cipher import PlainCipher
from secure_agg.framing import parse_ciphertexts
from secure_agg.keys import generate_keypair
from secure_agg.paillier import PaillierPrivateCipher, PaillierPublicCipher
from secure_agg.rng import Drbg

SEED = bytes(range(32))


@pytest.fixture(scope="module")
def ciphers():
    pub, priv = generate_keypair(512, rng=Drbg(SEED, "fuzz512"), insecure_test_key=True)
    return PaillierPublicCipher(pub), PaillierPrivateCipher(priv), int(priv.p)


def _specials(n: int, nsq: int, p: int | None) -> list[int]:
    out = [0, 1, 2, n - 1, n, n + 1, nsq - 1, nsq, nsq + 1]
    if p:
        out += [p, 2 * p, p * p, n * 2]
    return out


def _checked(cipher, priv, data: bytes) -> None:
    w = cipher.ciphertext_bytes
    try:
        vec = cipher.from_bytes(data, 32)
    except ValueError:
        return
    assert len(data) % w == 0 and len(vec) == len(data) // w and vec.bound_bits == 32
    for c in vec.data:
        assert 0 < c < cipher.nsquare and gmpy2.gcd(c, cipher.n) == 1
    assert cipher.to_bytes(vec) == data
    assert len(priv.decrypt(priv.from_bytes(data, 32))) == len(vec)  # decryptable


@given(st.binary(max_size=300), st.data())
def test_paillier_from_bytes_arbitrary(ciphers, data, draw):
    pub, priv, p = ciphers
    _checked(pub, priv, data)
    w = pub.ciphertext_bytes
    # whole ciphertexts: random values, the edges of the range, multiples of a factor
    vals = draw.draw(st.lists(st.integers(0, 2 ** (8 * w) - 1)
                              | st.sampled_from(_specials(int(pub.n), int(pub.nsquare), p)),
                              max_size=4))
    blob = b"".join(v.to_bytes(w, "big") for v in vals if v < 2 ** (8 * w))
    _checked(pub, priv, blob)
    _checked(priv, priv, blob)


@given(st.integers(1, 3), st.data())
def test_paillier_mutated_valid_ciphertexts(ciphers, count, data):
    pub, priv, _ = ciphers
    vec = pub.encrypt(list(range(count)), rng=Drbg(SEED, "fuzz-enc"))
    blob = bytearray(pub.to_bytes(vec))
    assert pub.from_bytes(bytes(blob), vec.bound_bits).data == vec.data
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(blob) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "max"]))
        if op == "flip":
            blob[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del blob[i:]
        elif op == "insert":
            blob[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        else:
            blob[:1] = b"\xff"
        if not blob:
            break
    _checked(pub, priv, bytes(blob))


@given(st.binary(max_size=200), st.integers(1, 70))
def test_parse_ciphertexts_small_moduli(data, width):
    n = gmpy2.mpz(3 * 5 * 7 * 11 * 13)
    nsq = n * n
    try:
        out = parse_ciphertexts(data, width, n, nsq)
    except ValueError:
        return
    assert all(0 < c < nsq and gmpy2.gcd(c, n) == 1 for c in out)


@given(st.binary(max_size=200))
def test_plain_cipher_from_bytes(data):
    c = PlainCipher()
    try:
        vec = c.from_bytes(data, 16)
    except ValueError:
        return
    assert all(0 <= v < c.n for v in vec.data)
