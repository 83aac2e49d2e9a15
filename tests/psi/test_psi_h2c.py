"""RFC 9380 appendix J vectors for the curve25519 / edwards25519 SHA-512 ELL2 RO suites,
RFC 7748 section 5.2 X25519 vectors, and the identities the PSI fast path relies on.

The known answers live in tests/data/kat/*.json (suite, DST and RFC section included)."""

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from psi import hash_to_curve as h2c
from psi.engine import x25519_many

# every test here runs once per compute path (tests/psi/conftest.py)
pytestmark = pytest.mark.usefixtures("psi_backend")

KAT = Path(__file__).resolve().parent.parent / "data" / "kat"


def _load(name: str) -> dict:
    return json.loads((KAT / name).read_text(encoding="utf-8"))


CURVE_KAT = _load("rfc9380_curve25519_ro.json")      # J.4.1: u0, u1, Q0.x, Q1.x, P.x, P.y
EDWARDS_KAT = _load("rfc9380_edwards25519_ro.json")  # J.5.1: u0, u1, P.x, P.y
X25519_KAT = _load("rfc7748_x25519.json")            # 5.2: single-step and iterated

MSGS = [v["msg"] for v in CURVE_KAT["vectors"]]
CURVE25519_RO = {v["msg"]: v for v in CURVE_KAT["vectors"]}
EDWARDS25519_RO = {v["msg"]: v for v in EDWARDS_KAT["vectors"]}

DST_M = CURVE_KAT["dst"].encode()
DST_E = EDWARDS_KAT["dst"].encode()


def test_kat_files_are_the_rfc_suites():
    assert (CURVE_KAT["rfc"], CURVE_KAT["section"]) == ("RFC 9380", "J.4.1")
    assert (EDWARDS_KAT["rfc"], EDWARDS_KAT["section"]) == ("RFC 9380", "J.5.1")
    assert DST_M == b"QUUX-V01-CS02-with-curve25519_XMD:SHA-512_ELL2_RO_"
    assert DST_E == b"QUUX-V01-CS02-with-edwards25519_XMD:SHA-512_ELL2_RO_"
    assert CURVE_KAT["suite"] == "curve25519_XMD:SHA-512_ELL2_RO_"
    assert EDWARDS_KAT["suite"] == "edwards25519_XMD:SHA-512_ELL2_RO_"
    assert MSGS == ["", "abc", "abcdef0123456789", "q128_" + "q" * 128, "a512_" + "a" * 512]
    assert list(EDWARDS25519_RO) == MSGS


@pytest.mark.parametrize("msg", MSGS)
def test_curve25519_ro_vectors(msg):
    v = CURVE25519_RO[msg]
    u0, u1, q0x, q1x, px, py = (int(v[k], 16) for k in ("u0", "u1", "Q0.x", "Q1.x", "P.x", "P.y"))
    assert h2c.hash_to_field(msg.encode(), 2, DST_M) == [u0, u1]
    assert h2c.map_to_curve25519(u0)[0] == q0x
    assert h2c.map_to_curve25519(u1)[0] == q1x
    assert h2c.hash_to_curve25519(msg.encode(), DST_M) == (px, py)


@pytest.mark.parametrize("msg", MSGS)
def test_edwards25519_ro_vectors(msg):
    v = EDWARDS25519_RO[msg]
    u0, u1, px, py = (int(v[k], 16) for k in ("u0", "u1", "P.x", "P.y"))
    assert h2c.hash_to_field(msg.encode(), 2, DST_E) == [u0, u1]
    assert h2c.hash_to_edwards25519(msg.encode(), DST_E) == (px, py)


def _cryptography_x25519(k: bytes, u: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(k).exchange(X25519PublicKey.from_public_bytes(u))


@pytest.mark.parametrize("x25519", [x25519_many, _cryptography_x25519],
                         ids=["psi.engine.x25519_many", "cryptography"])
def test_rfc7748_x25519_vectors(x25519):
    assert (X25519_KAT["rfc"], X25519_KAT["section"]) == ("RFC 7748", "5.2")
    single = X25519_KAT["single"]
    assert len(single) == 2
    for v in single:  # the second u has its top bit set: X25519 must ignore it
        k, u, out = (bytes.fromhex(v[f]) for f in ("scalar", "u", "output"))
        assert x25519(k, u) == out
    it = X25519_KAT["iterated"]
    want = {r["iterations"]: bytes.fromhex(r["k"]) for r in it["results"]}
    assert sorted(want) == [1, 1000]
    k = u = bytes.fromhex(it["start"])
    for i in range(1, max(want) + 1):
        k, u = x25519(k, u), k
        if i in want:
            assert k == want[i], f"after {i} iterations"


def test_rfc7748_x25519_many_batches_and_reference():
    """A blob of several points is processed point by point; the pure-Python ladder agrees."""
    v1, v2 = X25519_KAT["single"]
    for v in (v1, v2):
        k, u, out = (bytes.fromhex(v[f]) for f in ("scalar", "u", "output"))
        assert x25519_many(k, u + u + u) == out * 3
        u_int = int.from_bytes(u, "little") & ((1 << 255) - 1)
        assert h2c.x25519_ref(k, u_int) == int.from_bytes(out, "little")
    k1, u2 = bytes.fromhex(v1["scalar"]), bytes.fromhex(v2["u"])
    assert x25519_many(k1, u2) == _cryptography_x25519(k1, u2)
    assert x25519_many(k1, b"") == b""


def test_fast_batch_matches_reference_and_rfc():
    msgs = [m.encode() for m in MSGS] + [os.urandom(i % 40) for i in range(300)]
    fast = h2c.hash_to_u_batch(msgs, DST_M)
    assert fast == h2c.hash_to_u_reference(msgs, DST_M)
    assert h2c.hash_to_u_batch([], DST_M) == b""
    # clear_cofactor of the fast output's point gives the RFC's P
    for m in MSGS:
        u = int.from_bytes(h2c.hash_to_u_batch([m.encode()], DST_M), "little")
        u0, u1 = h2c.hash_to_field(m.encode(), 2, DST_M)
        r = h2c.mont_add(h2c.map_to_curve25519(u0), h2c.map_to_curve25519(u1))
        assert r[0] == u
        assert h2c.mont_mul(8, r)[0] == int(CURVE25519_RO[m]["P.x"], 16)


def test_x25519_on_uncleared_point_equals_scalar_over_8_on_rfc_output():
    """X25519(k, u(R)) == u([clamp(k)/8] P) with P = hash_to_curve = [8]R."""
    for m in MSGS[:3]:
        k = os.urandom(32)
        u = h2c.hash_to_u_batch([m.encode()], DST_M)
        got = X25519PrivateKey.from_private_bytes(k).exchange(
            X25519PublicKey.from_public_bytes(u))
        c = int.from_bytes(k, "little")
        c = (c & ~7 & ~(1 << 255)) | (1 << 254)
        p = h2c.hash_to_curve25519(m.encode(), DST_M)
        assert int.from_bytes(got, "little") == h2c.mont_mul(c // 8, p)[0]
        assert h2c.x25519_ref(k, int.from_bytes(u, "little")) == int.from_bytes(got, "little")


def test_blinding_commutes_and_unblinding_pair():
    from psi.protocol import blinding_pair
    from secure_agg.rng import Drbg
    u = h2c.hash_to_u_batch([b"913502000728319549", b"x"], DST_M)
    a, b = os.urandom(32), os.urandom(32)
    assert x25519_many(a, x25519_many(b, u)) == x25519_many(b, x25519_many(a, u))
    r, t = blinding_pair(Drbg(b"s" * 32))
    assert x25519_many(t, x25519_many(a, x25519_many(r, u))) == x25519_many(a, u)
