"""Shamir t-of-n secret sharing over a prime field (Python ints).

A secret ``s < p`` is the constant term of a random polynomial ``f`` of degree ``t-1``
whose other coefficients are uniform in ``[0, p)``; party ``x`` (``0 < x < p``) holds
``f(x)``. Any ``t`` shares determine ``f`` (Lagrange interpolation at 0); any ``t-1``
are consistent with every secret, each with the same number of polynomials, so they
reveal nothing. :func:`reconstruct` also checks that shares beyond the first ``t`` lie
on the same polynomial, so a corrupted share is detected when more than ``t`` arrive.

The default field is NIST P-384's prime (2^384 - 2^128 - 2^96 + 2^32 - 1), large
enough for the 256-bit secrets of secure aggregation; tests pass small primes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache

#: the P-384 field prime (FIPS 186-4, D.1.2.4)
PRIME = 2**384 - 2**128 - 2**96 + 2**32 - 1
SHARE_BYTES = 48


class ShamirError(ValueError):
    """Bad parameters, a share out of range, or shares not on one polynomial."""


def _uniform_below(p: int, random_bytes: Callable[[int], bytes]) -> int:
    nbytes = (p.bit_length() + 7) // 8 + 8  # 64 extra bits: bias < 2**-64
    return int.from_bytes(random_bytes(nbytes), "big") % p


def split(secret: int, xs: list[int], t: int, random_bytes: Callable[[int], bytes],
          p: int = PRIME) -> dict[int, int]:
    """Shares ``{x: f(x)}`` of ``secret`` for the distinct nonzero points ``xs``."""
    if not 0 <= secret < p:
        raise ShamirError(f"secret out of range [0, p) for a {p.bit_length()}-bit prime")
    if not 1 <= t <= len(xs):
        raise ShamirError(f"threshold {t} must be in [1, {len(xs)}] (number of shares)")
    if len(set(xs)) != len(xs) or any(not 0 < x < p for x in xs):
        raise ShamirError("share points must be distinct and in [1, p)")
    coeffs = [secret] + [_uniform_below(p, random_bytes) for _ in range(t - 1)]
    out = {}
    for x in xs:
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % p
        out[x] = acc
    return out


@lru_cache(maxsize=256)
def _weights(xs: tuple[int, ...], at: int, p: int) -> tuple[int, ...]:
    """Lagrange weights ``w_i`` with ``f(at) = sum w_i f(x_i)`` (cached: a round
    rebuilds every client's secrets from the same set of points)."""
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (at - xj) % p
                den = den * (xi - xj) % p
        out.append(num * pow(den, -1, p) % p)
    return tuple(out)


def _lagrange_at(points: list[tuple[int, int]], at: int, p: int) -> int:
    w = _weights(tuple(x for x, _ in points), at, p)
    return sum(wi * y for wi, (_, y) in zip(w, points, strict=True)) % p


def reconstruct(shares: Mapping[int, int], t: int, p: int = PRIME) -> int:
    """The secret from at least ``t`` shares ``{x: y}``; extra shares are checked."""
    if t < 1 or len(shares) < t:
        raise ShamirError(f"{len(shares)} shares given, threshold is {t}")
    for x, y in shares.items():
        if not 0 < x < p or not 0 <= y < p:
            raise ShamirError(f"share at point {x} is out of range for the field")
    pts = sorted(shares.items())
    base = pts[:t]
    for x, y in pts[t:]:
        if _lagrange_at(base, x, p) != y:
            raise ShamirError(f"share at point {x} is not on the polynomial of the "
                              f"shares at points {[b[0] for b in base]}")
    return _lagrange_at(base, 0, p)
