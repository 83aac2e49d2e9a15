"""Fuzzing PSI's received-point validation (issue 12 part 6): arbitrary and mutated
blocks of points are either accepted -- and then every point is canonical, on
curve25519 and (when checked) in the prime-order subgroup, as libsodium says -- or
refused with exactly :class:`psi.engine.PointError`. Profiles: tests/conftest.py."""

from __future__ import annotations

import os

import gmpy2
import nacl.bindings as sodium
import pytest
from hypothesis import given
from hypothesis import strategies as st

from psi import hash_to_curve as h2c
from psi.engine import (
    POINT_BYTES,
    PointError,
    times8_witnessed,
    validate_points,
    validate_witnessed,
    x25519_many,
)

# every test here runs once per compute path (tests/psi/conftest.py)
pytestmark = pytest.mark.usefixtures("psi_backend")

P = h2c.P_INT
DST = b"fedjoint-fuzz-points"
_SCALAR = os.urandom(32)
# honest points as a peer sends them: hashed, blinded, with their subgroup witnesses
_HONEST = x25519_many(_SCALAR, h2c.hash_to_u_batch([b"%d" % i for i in range(16)], DST))
_WITNESSED = times8_witnessed(_HONEST)


def _on_curve(u: int) -> bool:
    return gmpy2.jacobi((u * u * u + 486662 * u * u + u) % P, P) == 1


def _in_subgroup(u: int) -> bool:
    y = (u - 1) * pow(u + 1, -1, P) % P  # the edwards25519 y of u, as libsodium reads it
    return bool(sodium.crypto_core_ed25519_is_valid_point(y.to_bytes(32, "little")))


def _points_checked(blob: bytes, check_subgroup: bool) -> None:
    try:
        validate_points(blob, check_subgroup)
    except PointError:
        return
    assert len(blob) % POINT_BYTES == 0
    for i in range(0, len(blob), 32):
        u = int.from_bytes(blob[i:i + 32], "little")
        assert 0 < u < P - 1 and _on_curve(u)
        assert not check_subgroup or _in_subgroup(u)


def _witnessed_checked(blob: bytes, check_subgroup: bool) -> None:
    try:
        r = validate_witnessed(blob, check_subgroup)
    except PointError:
        return
    assert len(blob) % 64 == 0 and len(r) == len(blob) // 2
    for i in range(len(blob) // 64):
        assert r[32 * i:32 * i + 32] == blob[64 * i:64 * i + 32]
        u = int.from_bytes(blob[64 * i:64 * i + 32], "little")
        assert 0 < u < P - 1 and _on_curve(u)
        assert not check_subgroup or _in_subgroup(u)


_special = st.sampled_from([0, 1, 2, P - 2, P - 1, P, P + 1, 2 ** 255 - 1, 2 ** 255,
                            2 ** 256 - 1]).map(lambda u: (u % 2 ** 256).to_bytes(32, "little"))
_point = st.binary(min_size=32, max_size=32) | _special
_blocks = st.lists(_point, max_size=6).map(b"".join) | st.binary(max_size=200)


def _mutate(blob: bytes, draw) -> bytes:
    b = bytearray(blob)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        i = draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=3))
        else:
            j = (i // 32) * 32
            b[j:j + 32] = draw(_special)
        if not b:
            break
    return bytes(b)


@given(_blocks, st.booleans())
def test_validate_points_arbitrary(blob, check_subgroup):
    _points_checked(blob, check_subgroup)


@given(_blocks, st.booleans())
def test_validate_witnessed_arbitrary(blob, check_subgroup):
    _witnessed_checked(blob, check_subgroup)


@given(st.data(), st.booleans())
def test_mutated_honest_points(data, check_subgroup):
    validate_points(_HONEST, True)  # the honest block passes
    _points_checked(_mutate(_HONEST, data.draw), check_subgroup)


@given(st.data(), st.booleans())
def test_mutated_honest_witnessed(data, check_subgroup):
    assert validate_witnessed(_WITNESSED) == b"".join(
        _WITNESSED[i:i + 32] for i in range(0, len(_WITNESSED), 64))
    _witnessed_checked(_mutate(_WITNESSED, data.draw), check_subgroup)
