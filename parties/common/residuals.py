"""Residual strategies of the linear-model protocol: what differs between logistic
regression (binary, multinomial, one-vs-rest) and linear regression.

The protocol (``parties/bank/linear_loop.py``, docs/lr.md) trains ``K`` linear
predictors at once (``K = 1``: binary LR, linear regression; ``K`` classes: multiclass
LR). Per batch row the bank computes, from its own ``z_b`` (``K`` values), the label and
the row's weight only, a residual in the platform's ``K`` partial predictors ``z_p``:

    d_k  = u_k + sum_j a_kj z_pj                       (the residual of column k)
    loss = c0 + sum_k u_k z_pk + z_p^T A z_p / 2

``u`` goes to the platform encrypted per row and column; the curvature ``A`` (symmetric,
``K x K``) either is public (nothing crosses), or crosses encrypted as its batch mean or
per row, restricted to its ``pattern`` (the entries ``k <= j`` that are not always 0).
A strategy is the bank's map ``(z_b, y, weights) -> (c0, u, A)`` plus the fixed-point
:class:`Layout` both parties derive from the job's params and ``K``:

* :class:`Sigmoid`: binary LR, linearized around ``z_b`` or Taylor around 0
  (:func:`residual_coefficients`); ``pattern = ((0, 0),)``.
* :class:`Softmax`: multinomial LR, the softmax linearized around ``z_b``:
  ``u = s (softmax(z_b) - onehot(y))``, ``A = s (diag(p) - p p^T)`` (full pattern).
* :class:`OneVsRest`: ``K`` binary residuals side by side (diagonal pattern).
* :class:`Squared`: linear regression's exact ``u = z_b - y``, ``A = 1`` (public).

Nothing here is party-specific or crosses the wire by itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from parties.common import lr_common as C


# ---- the binary residual's approximation -----------------------------------------------
def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def residual_coefficients(approximation: str, zb: np.ndarray, y: np.ndarray,
                          sw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row ``(c0, u, a)`` so that, with the platform's partial predictor ``z_p``,

    * residual   ``d  = u + a * z_p``          (approximates ``s * (sigmoid(z) - y)``)
    * loss       ``l  = c0 + u*z_p + a*z_p**2 / 2``  (approximates ``s * logloss``)

    ``linearized``: first-order expansion of the sigmoid around the bank's own
    ``z_b`` (exact in ``z_b``, linear in ``z_p``). ``taylor``: the classic expansion
    around 0, ``sigmoid(z) ~ 1/2 + z/4``.
    """
    if approximation == "taylor":
        c0 = math.log(2.0) + (0.5 - y) * zb + 0.125 * zb * zb
        u = 0.5 + 0.25 * zb - y
        a = np.full_like(zb, 0.25)
    else:
        s = sigmoid(zb)
        c0 = softplus(zb) - y * zb
        u = s - y
        a = s * (1.0 - s)
    return sw * c0, sw * u, sw * a


def curvature_mode(p: C.LRParams) -> str:
    """How the platform gets the curvature ``a``: ``public`` (the constant 1/4 of the
    unweighted Taylor residual), ``mean`` (one ciphertext ``[[mean(a)]]`` per batch) or
    ``row`` (``[[a_i]]`` per row)."""
    if p.approximation == "taylor" and p.class_weight is None:
        return "public"
    return "row" if p.platform_curvature == "per_row" else "mean"


def weight_bits(sw_max: float) -> int:
    """Bits announced for the largest sample weight (only its power of two crosses)."""
    return max(0, math.ceil(math.log2(sw_max))) if sw_max > 1 else 0


def u_bits(approximation: str, wbits: int) -> int:
    """Bound bits of U = round(u * 2**(FD + FZ))."""
    extra = C.ZB - 1 if approximation == "taylor" else 1
    return C.FD + wbits + extra + 1 + C.FZ


def a_bits(wbits: int) -> int:
    return C.FD + wbits - 1


@dataclass(frozen=True)
class Layout:
    """Fixed point and curvature of one job (identical on both sides)."""

    k: int                          #: residual columns (classes; 1: binary / regression)
    u_frac: int                     #: U = round(u * 2**u_frac)
    a_frac: int                     #: curvature entries at a_frac bits (0: identity)
    loss_frac: int                  #: fractional bits of the loss slot
    u_bits: int                     #: bound bits of U
    a_bits: int                     #: bound bits of an encoded curvature entry
    curvature: str                  #: "public" | "mean" | "row" (:func:`curvature_mode`)
    pattern: tuple[tuple[int, int], ...]  #: curvature entries (k, j), k <= j, that cross
    public: tuple[int, ...] = ()    #: curvature == "public": the entries, encoded
    identity: bool = False          #: A = I: the bank adds z_p to u, no multiplication

    @property
    def zq_frac(self) -> int:
        """Fractional bits of z_p in the loss's quadratic term."""
        return (self.loss_frac - self.a_frac) // 2

    def a_count(self, rows: int) -> int:
        """Curvature ciphertexts the bank sends per batch of ``rows``."""
        return {"row": rows * len(self.pattern), "mean": len(self.pattern)}.get(
            self.curvature, 0)

    def entry(self, k: int, j: int) -> int | None:
        """Index of entry (k, j) (either order) in the pattern, or None if it is 0."""
        key = (min(k, j), max(k, j))
        return self.pattern.index(key) if key in self.pattern else None

    def mult(self, e: int) -> int:
        """How often pattern entry ``e`` occurs in the symmetric matrix (1 or 2)."""
        k, j = self.pattern[e]
        return 1 if k == j else 2


def full_pattern(k: int) -> tuple[tuple[int, int], ...]:
    return tuple((a, b) for a in range(k) for b in range(a, k))


def diagonal_pattern(k: int) -> tuple[tuple[int, int], ...]:
    return tuple((a, a) for a in range(k))


class Sigmoid:
    """Binary logistic regression (one column)."""

    def __init__(self, p, wbits: int):
        self.approximation = p.approximation
        curv = curvature_mode(p)
        public = tuple(int(v) for v in C.encode(np.array([0.25]), C.FD)) \
            if curv == "public" else ()
        self.layout = Layout(1, C.FD + C.FZ, C.FD, C.FD + C.FZ,
                             u_bits(p.approximation, wbits), a_bits(wbits), curv,
                             ((0, 0),), public)

    def coefficients(self, zb: np.ndarray, y: np.ndarray, sw: np.ndarray):
        c0, u, a = residual_coefficients(self.approximation, zb[:, 0], y, sw)
        return 2.0 * float(c0.sum()), u[:, None], {(0, 0): a}


class OneVsRest(Sigmoid):
    """``K`` binary residuals, class k against the rest (``y``: class indices)."""

    def __init__(self, p, wbits: int, k: int):
        super().__init__(p, wbits)
        lay = self.layout
        self.layout = Layout(k, lay.u_frac, lay.a_frac, lay.loss_frac, lay.u_bits,
                             lay.a_bits, lay.curvature, diagonal_pattern(k),
                             lay.public * k)

    def coefficients(self, zb, y, sw):
        two_c0, us, a = 0.0, [], {}
        for k in range(self.layout.k):
            c0, u, ak = residual_coefficients(self.approximation, zb[:, k],
                                                (y == k).astype(np.float64), sw)
            two_c0 += 2.0 * float(c0.sum())
            us.append(u)
            a[(k, k)] = ak
        return two_c0, np.column_stack(us), a


class Softmax:
    """Multinomial logistic regression over ``K`` classes (``y``: class indices)."""

    def __init__(self, p, wbits: int, k: int):
        self.approximation = p.approximation
        self.k = k
        curv = curvature_mode(p)
        pattern = full_pattern(k)
        public = ()
        if curv == "public":   # Taylor around 0: A = I/K - 1/K^2, the same for every row
            j0 = self._taylor_a()
            public = tuple(int(C.encode(np.array([j0[a, b]]), C.FD)[0]) for a, b in pattern)
        # |u| <= 1 + |J0 z_b| < 1 + 2**(ZB + 1) / K with Taylor, <= 1 linearized
        extra = 2 if self.approximation == "taylor" else 0
        self.layout = Layout(k, C.FD + C.FZ, C.FD, C.FD + C.FZ,
                             u_bits(p.approximation, wbits) + extra, a_bits(wbits),
                             curv, pattern, public)

    def _taylor_a(self) -> np.ndarray:
        k = self.k
        return np.eye(k) / k - 1.0 / (k * k)

    def coefficients(self, zb, y, sw):
        m, k = zb.shape
        onehot = np.zeros((m, k))
        onehot[np.arange(m), y.astype(np.int64)] = 1.0
        if self.approximation == "taylor":
            j0 = self._taylor_a()
            zj = zb @ j0
            c0 = math.log(k) + ((1.0 / k - onehot) * zb).sum(1) + 0.5 * (zj * zb).sum(1)
            u = 1.0 / k + zj - onehot
            a = {(i, j): np.full(m, j0[i, j]) for i, j in self.layout.pattern}
        else:
            top = zb.max(1, keepdims=True)
            ez = np.exp(zb - top)
            prob = ez / ez.sum(1, keepdims=True)
            lse = top[:, 0] + np.log(ez.sum(1))
            c0 = lse - (onehot * zb).sum(1)
            u = prob - onehot
            a = {(i, j): (prob[:, i] if i == j else 0.0) - prob[:, i] * prob[:, j]
                 for i, j in self.layout.pattern}
        return (2.0 * float((sw * c0).sum()), sw[:, None] * u,
                {e: sw * v for e, v in a.items()})


class Squared:
    """Linear regression: the exact squared-loss residual ``u = z_b - y``, ``A = 1``."""

    def __init__(self, u_bits: int):
        self.layout = Layout(1, C.FZ, 0, 2 * C.FZ, u_bits, 0, "public", ((0, 0),), (1,),
                             identity=True)

    def coefficients(self, zb, y, sw):
        u = zb[:, 0] - y
        return float(u @ u), u[:, None], None


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, K) scores."""
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def ovr_proba(z: np.ndarray) -> np.ndarray:
    """One-vs-rest class probabilities: each column's sigmoid, rows renormalised (as
    scikit-learn's ``LogisticRegression(multi_class="ovr").predict_proba``)."""
    p = sigmoid(z)
    return p / p.sum(1, keepdims=True)
