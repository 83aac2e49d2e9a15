"""RFC 9380 hash-to-curve for curve25519 / edwards25519 (XMD:SHA-512, Elligator 2, RO).

Implements, exactly as RFC 9380 specifies them:

* ``expand_message_xmd`` (section 5.3.1) with SHA-512,
* ``hash_to_field`` (section 5.2) into GF(2^255 - 19) with L = 48,
* the straight-line Elligator 2 map for curve25519 (appendix G.2.1) and its rational
  map to edwards25519 (appendix G.2.2),
* ``hash_to_curve`` for the suites ``curve25519_XMD:SHA-512_ELL2_RO_`` and
  ``edwards25519_XMD:SHA-512_ELL2_RO_`` (sections 6.7.1, 6.8.2, 8.5), including
  ``clear_cofactor`` (h_eff = 8). Checked against the RFC's appendix J vectors in
  tests/test_psi_h2c.py.

The PSI hot path (:func:`hash_to_u_batch`) returns, for each message, the Montgomery
u-coordinate of ``R = Q0 + Q1`` -- i.e. the RFC output *before* ``clear_cofactor``.
The PSI then only ever uses ``R`` through X25519, whose scalar clamping makes every
scalar a multiple of 8, so ``X25519(k, u(R)) = u([clamp(k)] R) = u([clamp(k)/8] P)``
with ``P = hash_to_curve(msg) = [8] R``: the clamping performs the cofactor clearing
and we save three doublings per ID. (tests check this identity.)

Nothing in this module is secret-dependent except the messages themselves (IDs); field
arithmetic is variable-time (gmpy2, or the C extension that mirrors it), which leaks timing of the *hashing* of a party's own
IDs on its own machine only, never of a secret scalar (scalar multiplication happens
in OpenSSL / libsodium).

What each party learns: nothing -- this module is local computation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

from . import native

# --- field and curve constants ------------------------------------------------------

P = mpz(2**255 - 19)
P_INT = 2**255 - 19
J = mpz(486662)  # curve25519 Montgomery A; B = 1
L_ORDER = 2**252 + 27742317777372353535851937790883648493  # prime subgroup order
ED_D = mpz(-121665) * gmpy2.invert(mpz(121666), P) % P  # edwards25519 d (a = -1)

SUITE_CURVE25519 = "curve25519_XMD:SHA-512_ELL2_RO_"
SUITE_EDWARDS25519 = "edwards25519_XMD:SHA-512_ELL2_RO_"

_C1 = (P + 3) // 8
_C2 = gmpy2.powmod(2, _C1, P)  # RFC: c2 = 2^c1
_C3 = gmpy2.powmod(2, (P - 1) // 4, P)  # sqrt(-1)
_C4 = (P - 5) // 8
_TWO = mpz(2)
_ONE = mpz(1)


def _sqrt_even(a: mpz) -> mpz:
    """A square root of ``a`` with sgn0 = 0 (used for constants only)."""
    r = gmpy2.powmod(a, (P + 3) // 8, P)
    if r * r % P != a % P:
        r = r * _C3 % P
    if r * r % P != a % P:
        raise ValueError("not a square")
    return r if r % 2 == 0 else P - r


_ED_C1 = _sqrt_even(P - 486664)  # sqrt(-486664) with sgn0 = 0 (RFC G.2.2)


# --- expand_message_xmd / hash_to_field ----------------------------------------------

def expand_message_xmd(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """RFC 9380 section 5.3.1 with H = SHA-512 (b_in_bytes = 64, s_in_bytes = 128)."""
    if len(dst) > 255:
        dst = hashlib.sha512(b"H2C-OVERSIZE-DST-" + dst).digest()
    ell = -(-len_in_bytes // 64)
    if ell > 255 or len_in_bytes > 65535:
        raise ValueError("len_in_bytes too large")
    dst_prime = dst + bytes([len(dst)])
    z_pad = bytes(128)
    l_i_b = len_in_bytes.to_bytes(2, "big")
    b0 = hashlib.sha512(z_pad + msg + l_i_b + b"\x00" + dst_prime).digest()
    bi = hashlib.sha512(b0 + b"\x01" + dst_prime).digest()
    out = [bi]
    for i in range(2, ell + 1):
        bi = hashlib.sha512(bytes(x ^ y for x, y in zip(b0, bi, strict=True))
                            + bytes([i]) + dst_prime).digest()
        out.append(bi)
    return b"".join(out)[:len_in_bytes]


def hash_to_field(msg: bytes, count: int, dst: bytes) -> list[mpz]:
    """RFC 9380 section 5.2 for GF(p), m = 1, L = 48."""
    data = expand_message_xmd(msg, dst, count * 48)
    return [mpz(int.from_bytes(data[48 * i:48 * (i + 1)], "big")) % P for i in range(count)]


# --- Elligator 2 ----------------------------------------------------------------------

def map_to_curve_elligator2_curve25519(u: mpz) -> tuple[mpz, mpz, mpz]:
    """RFC 9380 G.2.1 straight-line map. Returns ``(xn, xd, y)``: affine x = xn/xd."""
    tv1 = u * u % P
    tv1 = 2 * tv1 % P
    xd = (tv1 + 1) % P
    x1n = P - J
    tv2 = xd * xd % P
    gxd = tv2 * xd % P
    gx1 = J * tv1 % P
    gx1 = gx1 * x1n % P
    gx1 = (gx1 + tv2) % P
    gx1 = gx1 * x1n % P
    tv3 = gxd * gxd % P
    tv2 = tv3 * tv3 % P
    tv3 = tv3 * gxd % P
    tv3 = tv3 * gx1 % P
    tv2 = tv2 * tv3 % P
    y11 = gmpy2.powmod(tv2, _C4, P)
    y11 = y11 * tv3 % P
    y12 = y11 * _C3 % P
    tv2 = y11 * y11 % P * gxd % P
    y1 = y11 if tv2 == gx1 else y12
    x2n = x1n * tv1 % P
    y21 = y11 * u % P * _C2 % P
    y22 = y21 * _C3 % P
    gx2 = gx1 * tv1 % P
    tv2 = y21 * y21 % P * gxd % P
    y2 = y21 if tv2 == gx2 else y22
    tv2 = y1 * y1 % P * gxd % P
    e3 = tv2 == gx1
    xn = x1n if e3 else x2n
    y = y1 if e3 else y2
    e4 = (y & 1) == 1
    if e3 ^ e4:
        y = (P - y) % P
    return xn, xd, y


# --- reference (affine) arithmetic, used for RFC outputs and tests -------------------

MontPoint = tuple[int, int] | None  # None is the point at infinity


def mont_add(p1: MontPoint, p2: MontPoint) -> MontPoint:
    """Affine addition on curve25519 (B = 1)."""
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    x1, y1 = mpz(p1[0]), mpz(p1[1])
    x2, y2 = mpz(p2[0]), mpz(p2[1])
    if x1 == x2:
        if (y1 + y2) % P == 0:
            return None
        lam = (3 * x1 * x1 + 2 * J * x1 + 1) * gmpy2.invert(2 * y1, P) % P
    else:
        lam = (y2 - y1) * gmpy2.invert((x2 - x1) % P, P) % P
    x3 = (lam * lam - J - x1 - x2) % P
    y3 = (lam * (x1 - x3) - y1) % P
    return int(x3), int(y3)


def mont_mul(k: int, pt: MontPoint) -> MontPoint:
    acc: MontPoint = None
    add = pt
    while k:
        if k & 1:
            acc = mont_add(acc, add)
        add = mont_add(add, add)
        k >>= 1
    return acc


def mont_to_edwards(pt: MontPoint) -> tuple[int, int]:
    """RFC 9380 appendix D rational map curve25519 -> edwards25519 (with exceptions)."""
    if pt is None:
        return 0, 1
    s, t = mpz(pt[0]), mpz(pt[1])
    if t == 0 or (s + 1) % P == 0:
        return 0, 1
    v = _ED_C1 * s % P * gmpy2.invert(t, P) % P
    w = (s - 1) * gmpy2.invert(s + 1, P) % P
    return int(v), int(w)


def ed_add(p1: tuple[int, int], p2: tuple[int, int]) -> tuple[int, int]:
    """Affine addition on edwards25519 (-x^2 + y^2 = 1 + d x^2 y^2)."""
    x1, y1 = mpz(p1[0]), mpz(p1[1])
    x2, y2 = mpz(p2[0]), mpz(p2[1])
    t = ED_D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + y1 * x2) * gmpy2.invert(1 + t, P) % P
    y3 = (y1 * y2 + x1 * x2) * gmpy2.invert((1 - t) % P, P) % P
    return int(x3), int(y3)


def map_to_curve25519(u: int) -> tuple[int, int]:
    xn, xd, y = map_to_curve_elligator2_curve25519(mpz(u))
    return int(xn * gmpy2.invert(xd, P) % P), int(y)


def map_to_edwards25519(u: int) -> tuple[int, int]:
    """RFC 9380 G.2.2 (the rational map applied to the curve25519 map)."""
    return mont_to_edwards(map_to_curve25519(u))


def hash_to_curve25519(msg: bytes, dst: bytes) -> MontPoint:
    """``curve25519_XMD:SHA-512_ELL2_RO_``: affine (u, v) of the prime-order output."""
    u0, u1 = hash_to_field(msg, 2, dst)
    r = mont_add(map_to_curve25519(u0), map_to_curve25519(u1))
    return mont_mul(8, r)


def hash_to_edwards25519(msg: bytes, dst: bytes) -> tuple[int, int]:
    """``edwards25519_XMD:SHA-512_ELL2_RO_``: affine (x, y) of the prime-order output."""
    u0, u1 = hash_to_field(msg, 2, dst)
    r = ed_add(map_to_edwards25519(u0), map_to_edwards25519(u1))
    for _ in range(3):
        r = ed_add(r, r)
    return r


def x25519_ref(scalar32: bytes, u: int) -> int:
    """RFC 7748 X25519 ladder in Python (slow; used only to cross-check in tests)."""
    k = int.from_bytes(scalar32, "little")
    k &= ~7
    k &= ~(128 << 8 * 31)
    k |= 64 << 8 * 31
    x1, x2, z2, x3, z3, swap = mpz(u), mpz(1), mpz(0), mpz(u), mpz(1), 0
    a24 = mpz(121665)
    for t in reversed(range(255)):
        kt = (k >> t) & 1
        swap ^= kt
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = kt
        a = x2 + z2
        aa = a * a % P
        b = x2 - z2
        bb = b * b % P
        e = aa - bb
        c = x3 + z3
        d = x3 - z3
        da = d * a % P
        cb = c * b % P
        x3 = (da + cb) ** 2 % P
        z3 = x1 * (da - cb) ** 2 % P
        x2 = aa * bb % P
        z2 = e * (aa + a24 * e) % P
    if swap:
        x2, z2 = x3, z3
    return int(x2 * gmpy2.powmod(z2, P - 2, P) % P)


# --- fast batch path (PSI) ------------------------------------------------------------

def _u_of_sum_slow(u0: mpz, u1: mpz) -> int:
    r = mont_add(map_to_curve25519(u0), map_to_curve25519(u1))
    if r is None:  # Q0 = -Q1: probability ~2^-252
        raise ValueError("hash_to_curve produced the identity")
    return r[0]


def _ell2_curve25519(u: mpz, p=P, c2=_C2, c3=_C3, c4=_C4, x1n=P - J,
                     jx1n=J * (P - J) % P, powmod=gmpy2.powmod) -> tuple[mpz, mpz, mpz]:
    """RFC 9380 G.2.1 map_to_curve_elligator2_curve25519 with one exponentiation (the
    sqrt-ratio with c4 = (p-5)/8; the second candidate tested as ``-gx1``), returning the
    projective ``x = xn / xd`` and the affine ``y`` with the RFC's sign."""
    tv1 = 2 * u * u % p
    xd = tv1 + 1
    tv2 = xd * xd % p
    gxd = tv2 * xd % p
    gx1 = (jx1n * tv1 + tv2) * x1n % p
    tv3 = gxd * gxd % p
    y = powmod(tv3 * tv3 * tv3 % p * gxd * gx1 % p, c4, p) * tv3 % p * gxd % p * gx1 % p
    t = y * y % p * gxd % p
    if t == gx1:
        xn = x1n
        if not y & 1:
            y = p - y
    elif t == p - gx1:
        xn = x1n
        y = y * c3 % p
        if not y & 1:
            y = p - y
    else:
        xn = x1n * tv1 % p
        y = y * u % p * c2 % p
        if y * y % p * gxd % p != gx1 * tv1 % p:
            y = y * c3 % p
        if y & 1:
            y = p - y
    return xn, xd, y


def hash_to_u_batch(msgs: Iterable[bytes | str] | np.ndarray, dst: bytes) -> bytes:
    """Concatenated 32-byte little-endian u(Q0 + Q1) for each message (see module doc);
    a ``str`` message is hashed as its UTF-8 bytes, and an (n, width) uint8 array holds
    n messages of ``width`` bytes, one per row (packed IDs, as the engine ships them).

    ``X25519(k, u)`` of an entry equals ``u([clamp(k)/8] * hash_to_curve(msg))``. Runs
    in the C extension (psi/native/_psi_native.c: the same steps as
    :func:`hash_to_u_batch_py` in radix-2^51 field arithmetic, its own SHA-512, eight IDs
    per step with AVX-512 IFMA) when it is built and not turned off (psi.native), else
    in :func:`hash_to_u_batch_py`.
    """
    ext = native.field()
    packed = isinstance(msgs, np.ndarray)
    if packed and (msgs.ndim != 2 or msgs.dtype != np.uint8):
        raise ValueError("packed messages must be an (n, width) uint8 array")
    if ext is None:
        if packed:
            return hash_to_u_batch_py([r.tobytes() for r in msgs], dst)
        return hash_to_u_batch_py([m.encode() if isinstance(m, str) else m for m in msgs], dst)
    if len(dst) > 255:
        dst = hashlib.sha512(b"H2C-OVERSIZE-DST-" + dst).digest()
    if packed:
        msgs = np.ascontiguousarray(msgs)
        out, special = (ext.hash_to_u_batch(msgs, dst + bytes([len(dst)]), msgs.shape[1])
                        if msgs.shape[1] else ext.hash_to_u_batch([b""] * len(msgs),
                                                                  dst + bytes([len(dst)])))
    else:
        msgs = msgs if isinstance(msgs, list | tuple) else list(msgs)
        out, special = ext.hash_to_u_batch(msgs, dst + bytes([len(dst)]))
    if not special:
        return out
    fixed = bytearray(out)
    for i in special:  # x(Q0) = x(Q1): Q0 = +-Q1, probability ~2^-252 (affine slow path)
        m = msgs[i].tobytes() if packed else \
            msgs[i].encode() if isinstance(msgs[i], str) else msgs[i]
        u0, u1 = hash_to_field(m, 2, dst)
        fixed[32 * i:32 * i + 32] = _u_of_sum_slow(u0, u1).to_bytes(32, "little")
    return bytes(fixed)


def hash_to_u_batch_py(msgs: Iterable[bytes], dst: bytes) -> bytes:
    """:func:`hash_to_u_batch` in pure Python with gmpy2 (the fallback).

    Straight-line code: expand_message_xmd with the Z_pad block hashed once,
    the RFC 9380 G.2.1 map twice (one ``powmod`` each: the sqrt-ratio with
    c4 = (p-5)/8, no y recomputation, the second candidate tested as ``-gx1``), the
    affine sum's u-coordinate only, and one batched inversion per call.
    """
    if len(dst) > 255:
        dst = hashlib.sha512(b"H2C-OVERSIZE-DST-" + dst).digest()
    dst_prime = dst + bytes([len(dst)])
    post0 = (96).to_bytes(2, "big") + b"\x00" + dst_prime
    sfx1, sfx2 = b"\x01" + dst_prime, b"\x02" + dst_prime
    h_pre = hashlib.sha512(bytes(128))  # Z_pad is one SHA-512 block: hash it once
    copy = h_pre.copy
    sha512 = hashlib.sha512
    frm = int.from_bytes
    p, j, ell2 = P, J, _ell2_curve25519
    nums: list = []
    dens: list = []
    special: dict[int, int] = {}
    idx = -1
    for msg in msgs:
        idx += 1
        h = copy()
        h.update(msg)
        h.update(post0)
        b0 = h.digest()
        b1 = sha512(b0 + sfx1).digest()
        b2 = sha512((frm(b0, "big") ^ frm(b1, "big")).to_bytes(64, "big") + sfx2).digest()
        ua = mpz(frm(b1[:48], "big")) % p
        ub = mpz(frm(b1[48:] + b2[:32], "big")) % p
        # two RFC 9380 G.2.1 maps, one exponentiation each
        xn0, xd0, y0 = ell2(ua)
        xn1, xd1, y = ell2(ub)
        dd = (xn1 * xd0 - xn0 * xd1) % p
        if not dd:
            special[idx] = _u_of_sum_slow(ua, ub)
            nums.append(mpz(0))
            dens.append(mpz(1))
            continue
        xdd = xd0 * xd1 % p
        nn = (y - y0) * xdd % p
        d2 = dd * dd % p
        nums.append((nn * nn * xdd - (j * xdd + xn0 * xd1 + xn1 * xd0) * d2) % p)
        dens.append(d2 * xdd % p)
    n = len(nums)
    if n == 0:
        return b""
    acc = [None] * n
    run = mpz(1)
    for i in range(n):
        acc[i] = run
        run = run * dens[i] % p
    inv = gmpy2.invert(run, p)
    out = bytearray(32 * n)
    for i in range(n - 1, -1, -1):
        u = nums[i] * (inv * acc[i] % p) % p
        inv = inv * dens[i] % p
        out[32 * i:32 * i + 32] = int(u).to_bytes(32, "little")
    for i, u in special.items():
        out[32 * i:32 * i + 32] = int(u).to_bytes(32, "little")
    return bytes(out)


def hash_to_u(msg: bytes, dst: bytes) -> int:
    return int.from_bytes(hash_to_u_batch([msg], dst), "little")


def hash_to_u_reference(msgs: Sequence[bytes], dst: bytes) -> bytes:
    """Slow, obviously-correct version of :func:`hash_to_u_batch` (tests)."""
    out = []
    for m in msgs:
        u0, u1 = hash_to_field(m, 2, dst)
        out.append(_u_of_sum_slow(u0, u1).to_bytes(32, "little"))
    return b"".join(out)
