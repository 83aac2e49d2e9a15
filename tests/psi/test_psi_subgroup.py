"""The 8-divisibility witness check (psi.engine.validate_witnessed) against libsodium.

curve25519's E(F_p) is cyclic of order 8L, so its order-L subgroup is exactly
8 E(F_p): R is in it iff R = [8]W for some W on the curve. The receiver checks the
sender's W; these tests compare its verdict with libsodium's
crypto_core_ed25519_is_valid_point on subgroup points, twist points, small-order points
and points with each possible small-order component, trying every candidate witness
an attacker could derive (all eighth "roots" of the prime-order part, the point
itself, random curve points).
"""

import os

import gmpy2
import pytest

from psi import hash_to_curve as h2c
from psi.engine import (
    PointError,
    times8,
    times8_witnessed,
    validate_points,
    validate_witnessed,
    x25519_many,
)

# every test here runs once per compute path (tests/psi/conftest.py)
pytestmark = pytest.mark.usefixtures("psi_backend")

P, L = h2c.P_INT, h2c.L_ORDER
INV8 = pow(8, -1, L)


def enc(u: int) -> bytes:
    return int(u).to_bytes(32, "little")


def libsodium_ok(u: int) -> bool:
    try:
        validate_points(enc(u), check_subgroup=True)
        return True
    except PointError:
        return False


def witness_ok(r: int, w: int) -> bool:
    try:
        validate_witnessed(enc(r) + enc(w))
        return True
    except PointError:
        return False


def random_curve_point(rnd_bytes=os.urandom):
    while True:
        u = int.from_bytes(rnd_bytes(32), "little") % P
        g = (u * u * u + 486662 * u * u + u) % P
        if u and gmpy2.jacobi(g, P) == 1:
            return u, int(h2c._sqrt_even(gmpy2.mpz(g)))


def twist_u() -> int:
    while True:
        u = int.from_bytes(os.urandom(32), "little") % P
        if gmpy2.jacobi((u * u * u + 486662 * u * u + u) % P, P) == -1:
            return u


@pytest.fixture(scope="module")
def torsion():
    """[T0=O, T1, ..., T7]: multiples of a generator of the 8-torsion E(F_p)[8]."""
    while True:
        g = h2c.mont_mul(L, random_curve_point())
        if h2c.mont_mul(4, g) is not None:
            return [h2c.mont_mul(k, g) for k in range(8)]


def test_group_is_cyclic_of_order_8l(torsion):
    assert torsion[0] is None and all(t is not None for t in torsion[1:])
    assert h2c.mont_mul(8, torsion[1]) is None
    # one rational point of order 2 only (x^2 + A x + 1 has no root): E[2](F_p) = Z/2
    assert gmpy2.jacobi(486662 ** 2 - 4, P) == -1
    assert torsion[4] == (0, 0)


def test_honest_witnesses_pass_and_agree_with_libsodium():
    dst = b"QUUX-V01-CS02-with-curve25519_XMD:SHA-512_ELL2_RO_"
    w = x25519_many(os.urandom(32), h2c.hash_to_u_batch([b"%d" % i for i in range(300)], dst))
    wit = times8_witnessed(w)
    r = validate_witnessed(wit)
    validate_points(r, check_subgroup=True)  # libsodium: all in the subgroup
    assert r == times8(w)
    # [8]W computed by x-only doubling equals the affine reference
    for i in range(0, 300, 37):
        u = int.from_bytes(w[32 * i:32 * i + 32], "little")
        y = h2c._sqrt_even(gmpy2.mpz((u ** 3 + 486662 * u * u + u) % P))
        pt = (u, int(y))
        assert enc(h2c.mont_mul(8, pt)[0]) == r[32 * i:32 * i + 32]


@pytest.mark.parametrize("trial", range(3))
def test_verdict_equals_libsodium_on_all_torsion_components(torsion, trial):
    a_pre = random_curve_point()
    a = h2c.mont_mul(8, a_pre)                      # prime-order point
    roots = [h2c.mont_add(h2c.mont_mul(INV8, a), t) for t in torsion]  # all W, [8]W = ±A
    for k, t in enumerate(torsion):
        pt = h2c.mont_add(a, t)                     # A + T_k
        r = pt[0]
        expect = libsodium_ok(r)
        assert expect == (k == 0)
        cands = [w[0] for w in roots if w is not None] + [r, random_curve_point()[0],
                                                          a_pre[0]]
        verdicts = [witness_ok(r, w) for w in cands]
        if expect:
            assert all(verdicts[:8])                # any eighth root works
        else:
            assert not any(verdicts), f"torsion component T{k} accepted"


def test_small_order_and_twist_points_are_refused_like_libsodium(torsion):
    smalls = [t[0] for t in torsion[1:]] + [1, P - 1]
    curve_w = [random_curve_point()[0] for _ in range(4)]
    for r in smalls + [twist_u() for _ in range(5)]:
        assert not libsodium_ok(r)
        for w in curve_w + [t[0] for t in torsion[1:]] + [r]:
            assert not witness_ok(r, w)


def test_bad_witness_encodings_are_refused():
    dst = b"QUUX-V01-CS02-with-curve25519_XMD:SHA-512_ELL2_RO_"
    wit = times8_witnessed(x25519_many(os.urandom(32), h2c.hash_to_u_batch([b"x"], dst)))
    r, w = wit[:32], int.from_bytes(wit[32:], "little")
    for bad_w, msg in [(enc(w + P) if w + P < 2**256 else enc(P), "non-canonical"),
                       (enc(twist_u()), "witness not on curve25519"),
                       (enc(0), "witness not on curve25519"),
                       (enc(1), "not in the prime-order subgroup")]:
        with pytest.raises(PointError, match=msg):
            validate_witnessed(r + bad_w)
    with pytest.raises(PointError, match="not a multiple"):
        validate_witnessed(wit[:40])
    with pytest.raises(PointError, match="bit 255"):
        validate_witnessed(bytes(31) + b"\x80" + wit[32:])
