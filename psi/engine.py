"""Batch EC work for PSI: hashing to the curve, X25519 blinding, point validation.

Points on the wire are 32-byte little-endian Montgomery u-coordinates of curve25519
(RFC 7748 encoding). Scalar multiplication is X25519: Intel's multi-buffer
``mbx_x25519_mb8`` where the CPU and the installed ``fedjoint[native]`` extra allow it,
else OpenSSL's through ``cryptography`` (measured faster here than libsodium's ed25519
primitives, see docs/psi.md); the field work below runs in the C extension when it was
built, else in gmpy2 (psi/native/__init__.py chooses; results are byte-identical).
X25519 clamps scalars to multiples of 8, which clears the cofactor, so
blinding commutes: ``X25519(a, X25519(b, u)) == X25519(b, X25519(a, u))``.

Validation of every received point we multiply:

1. canonical encoding: top bit clear and ``u < p``;
2. on curve25519, not its twist: ``u^3 + A u^2 + u`` is a non-zero square (Jacobi);
3. in the prime-order subgroup (``check_subgroup``, default on), by an *8-divisibility
   witness* (:func:`validate_witnessed`): curve25519's group E(F_p) is cyclic of order
   8L, so its order-L subgroup is exactly ``8 E(F_p)``. Every point R that a party
   sends to be multiplied travels with a witness W, and the receiver checks that W is a
   canonical u-coordinate on curve25519 (not the twist) and that ``u([8]W) == u(R)``
   (three x-only doublings, no inversion). Then ``R = [8](±W)`` with ``W`` in E(F_p),
   so R is in the prime-order subgroup; conversely a point with a non-trivial 8-torsion
   component has no such W, whatever the sender does. An honest sender gets W for free:
   it blinds with X25519 (``W = X25519(k, H)``) and sends ``R = [8]W``, i.e. its
   effective blinding scalar is ``8 clamp(k)``. ~4 us per point instead of ~32 us for
   libsodium's ``crypto_core_ed25519_is_valid_point`` (which :func:`validate_points`
   still uses for single points without a witness; tests compare both).
4. the X25519 result must not be the all-zero value (OpenSSL refuses it).

Work is spread over a process pool (``workers`` > 1), in tasks of TASK_SIZE IDs
(vectorised batches: one C call per task and step). Workers receive the per-job scalar over
a local pipe to a child process of this party, or, with the Ray engine, in the task's
arguments inside the party's own Ray cluster; nothing here touches the peer.

What each party learns: nothing -- local computation.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

import gmpy2
import nacl.bindings as sodium
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from gmpy2 import mpz

from federation.link import ProtocolError
from secure_agg import executor

from . import native
from .hash_to_curve import J, P, hash_to_u_batch

Ids = Sequence[str | bytes] | np.ndarray  # IDs, or packed: one per row of a uint8 matrix
POINT_BYTES = 32
TASK_SIZE = 1 << 13  # IDs per worker task


class PointError(ValueError):
    """A received point failed validation (turned into ProtocolError by the caller)."""


def validate_points(blob: bytes, check_subgroup: bool = True) -> None:
    """Raise :class:`PointError` naming the first bad point (index in ``blob``)."""
    if len(blob) % POINT_BYTES:
        raise PointError(f"point block of {len(blob)} bytes is not a multiple of 32")
    n = len(blob) // POINT_BYTES
    ext = native.field()
    if ext is not None:
        bad = ext.check_points(blob)
        if bad >= 0:
            raise PointError(f"point {bad >> 3}: {_REASONS[bad & 7]}")
        if not check_subgroup or not n:
            return
    us = []
    p, j, jacobi = P, J, gmpy2.jacobi
    for i in range(n):
        chunk = blob[POINT_BYTES * i:POINT_BYTES * (i + 1)]
        if ext is not None:
            us.append(mpz(int.from_bytes(chunk, "little")))
            continue
        if chunk[31] & 0x80:
            raise PointError(f"point {i}: non-canonical encoding (bit 255 set)")
        u = mpz(int.from_bytes(chunk, "little"))
        if u >= p:
            raise PointError(f"point {i}: non-canonical encoding (u >= p)")
        if u == 0 or u == p - 1:
            raise PointError(f"point {i}: low-order or exceptional point")
        if jacobi((u * u + j * u + 1) * u % p, p) != 1:
            raise PointError(f"point {i}: not on curve25519 (twist point)")
        us.append(u)
    if not check_subgroup or not us:
        return
    # batch-invert (u + 1), map to edwards25519 y, ask libsodium for [L]P == O
    acc = []
    run = mpz(1)
    for u in us:
        acc.append(run)
        run = run * (u + 1) % p
    inv = gmpy2.invert(run, p)
    is_valid = sodium.crypto_core_ed25519_is_valid_point
    for i in range(n - 1, -1, -1):
        u = us[i]
        y = (u - 1) * (inv * acc[i] % p) % p
        inv = inv * (u + 1) % p
        if not is_valid(int(y).to_bytes(32, "little")):
            raise PointError(f"point {i}: not in the prime-order subgroup")


WITNESS_BYTES = 2 * POINT_BYTES  # a witnessed point on the wire: u(R) || u(W)
# the C extension's reason codes (psi/native/_psi_native.c), same texts as the Python
_REASONS = {1: "non-canonical encoding (bit 255 set)", 2: "non-canonical encoding (u >= p)",
            3: "low-order or exceptional point", 4: "not on curve25519 (twist point)",
            5: "non-canonical subgroup witness", 6: "subgroup witness not on curve25519"}
_A24 = mpz(121666)  # (A + 2) / 4


def _times8_xz(w: mpz) -> tuple[mpz, mpz]:
    """``[8]W`` in projective x-only form (X : Z): three Montgomery doublings of the
    affine u-coordinate ``w`` (Z = 1 to start)."""
    p, a24 = P, _A24
    t1 = (w + 1) * (w + 1)
    t2 = (w - 1) * (w - 1)
    t3 = 4 * w
    x = t1 * t2 % p
    z = t3 * (t2 + a24 * t3) % p
    for _ in range(2):
        t1 = (x + z) * (x + z) % p
        t2 = (x - z) * (x - z) % p
        t3 = t1 - t2
        x = t1 * t2 % p
        z = t3 * (t2 + a24 * t3) % p
    return x, z


def _diagnose(r: mpz, i: int) -> str:
    """Reason for rejecting point ``i`` whose witness check failed (error text only)."""
    p = P
    if r == 0 or r == p - 1:
        return f"point {i}: low-order or exceptional point"
    if gmpy2.jacobi((r * r + J * r + 1) * r % p, p) != 1:
        return f"point {i}: not on curve25519 (twist point)"
    return f"point {i}: not in the prime-order subgroup (no 8-divisibility witness)"


def validate_witnessed(blob: bytes, check_subgroup: bool = True) -> bytes:
    """Check ``(u(R), u(W))`` pairs; return the concatenated ``u(R)`` (32 bytes each).

    Accepts iff R is canonical and on curve25519 and, with ``check_subgroup``, W is a
    canonical curve25519 (not twist) u-coordinate with ``u([8]W) == u(R)`` -- which
    holds iff R is in the prime-order subgroup (E(F_p) is cyclic of order 8L, so that
    subgroup is ``8 E(F_p)``). Without ``check_subgroup``: R canonical and on curve.
    Raises :class:`PointError` naming the first bad point.
    """
    if len(blob) % WITNESS_BYTES:
        raise PointError(f"witnessed point block of {len(blob)} bytes is not a multiple "
                         f"of {WITNESS_BYTES}")
    ext = native.field()
    if ext is not None:
        res = ext.validate_witnessed(blob, check_subgroup)
        if isinstance(res, int):
            i, code = res >> 3, res & 7
            if code == 7:
                raise PointError(_diagnose(mpz(int.from_bytes(
                    blob[WITNESS_BYTES * i:WITNESS_BYTES * i + 32], "little")), i))
            raise PointError(f"point {i}: {_REASONS[code]}")
        return res
    n = len(blob) // WITNESS_BYTES
    mv = memoryview(blob)
    out = bytearray(POINT_BYTES * n)
    p, j, jacobi, frm = P, J, gmpy2.jacobi, int.from_bytes
    pm1 = p - 1
    for i in range(n):
        o = WITNESS_BYTES * i
        rb = mv[o:o + 32]
        r = mpz(frm(rb, "little"))
        if r >= p or r == 0 or r == pm1:  # also catches bit 255 (r >= 2^255 > p)
            if r >> 255:
                raise PointError(f"point {i}: non-canonical encoding (bit 255 set)")
            if r >= p:
                raise PointError(f"point {i}: non-canonical encoding (u >= p)")
            raise PointError(f"point {i}: low-order or exceptional point")
        out[32 * i:32 * i + 32] = rb
        if not check_subgroup:
            if jacobi((r * r + j * r + 1) * r % p, p) != 1:
                raise PointError(f"point {i}: not on curve25519 (twist point)")
            continue
        w = mpz(frm(mv[o + 32:o + 64], "little"))
        if w >= p:
            raise PointError(f"point {i}: non-canonical subgroup witness")
        if w == 0 or jacobi((w * w + j * w + 1) * w % p, p) != 1:
            raise PointError(f"point {i}: subgroup witness not on curve25519")
        x, z = _times8_xz(w)
        if z == 0 or (x - r * z) % p:
            raise PointError(_diagnose(r, i))
    return bytes(out)


def times8_witnessed(blob: bytes) -> bytes:
    """For each 32-byte ``u(W)``: ``u([8]W) || u(W)`` (the wire form a sender emits).

    ``W`` must be a point of order > 8 on curve25519 (X25519 outputs are). Three x-only
    doublings each, one batched inversion per call.
    """
    n = len(blob) // POINT_BYTES
    if n == 0:
        return b""
    ext = native.field()
    if ext is not None:
        res = ext.times8_witnessed(blob)
        if res is None:
            raise PointError("times8: a point of order <= 8")
        return res
    mv = memoryview(blob)
    p, frm = P, int.from_bytes
    xs = [mpz(0)] * n
    zs = [mpz(0)] * n
    for i in range(n):
        w = mpz(frm(mv[32 * i:32 * i + 32], "little"))
        xs[i], zs[i] = _times8_xz(w)
    acc = [mpz(0)] * n
    run = mpz(1)
    for i in range(n):
        acc[i] = run
        run = run * zs[i] % p
    if run == 0:
        raise PointError("times8: a point of order <= 8")
    inv = gmpy2.invert(run, p)
    out = bytearray(WITNESS_BYTES * n)
    for i in range(n - 1, -1, -1):
        o = WITNESS_BYTES * i
        out[o:o + 32] = int(xs[i] * (inv * acc[i] % p) % p).to_bytes(32, "little")
        out[o + 32:o + 64] = mv[32 * i:32 * i + 32]
        inv = inv * zs[i] % p
    return bytes(out)


def times8(blob: bytes, rounds: int = 1) -> bytes:
    """``u([8^rounds] W)`` for each 32-byte ``u(W)`` (drops the witnesses)."""
    for _ in range(rounds):
        wit = times8_witnessed(blob)
        blob = b"".join(wit[i:i + 32] for i in range(0, len(wit), WITNESS_BYTES))
    return blob


def x25519_many(scalar: bytes, blob: bytes) -> bytes:
    """``X25519(scalar, u)`` for each 32-byte ``u`` in ``blob`` (no validation), through
    the backend psi.native selects (multi-buffer or OpenSSL; identical results)."""
    kind, addr = native.x25519_backend()
    if kind == "mb" and blob:
        res = native.field().x25519_mb8(addr, scalar, blob)
        if not isinstance(res, tuple):
            return res
        i, status = res
        if status == _MBX_STATUS_LOW_ORDER_ERR:
            raise PointError(f"point {i}: X25519 result is zero (low-order input)")
        native.log.warning("psi: mbx_x25519_mb8 lane status %d at point %d; this batch "
                           "runs through OpenSSL X25519", status, i)
    return x25519_many_openssl(scalar, blob)


_MBX_STATUS_LOW_ORDER_ERR = 4  # crypto_mb/status.h


def x25519_many_openssl(scalar: bytes, blob: bytes) -> bytes:
    """:func:`x25519_many` through OpenSSL (``cryptography``), whatever the backend."""
    priv = X25519PrivateKey.from_private_bytes(scalar)
    ex, frompub = priv.exchange, X25519PublicKey.from_public_bytes
    out = []
    for i in range(0, len(blob), POINT_BYTES):
        try:
            out.append(ex(frompub(blob[i:i + POINT_BYTES])))
        except ValueError:
            raise PointError(f"point {i // POINT_BYTES}: X25519 result is zero "
                             "(low-order input)") from None
    return b"".join(out)


# --- worker task functions (module level: picklable by name) --------------------------

def task_hash_blind(ids: list[bytes], dst: bytes, scalar: bytes) -> bytes:
    return x25519_many(scalar, hash_to_u_batch(ids, dst))


def task_hash_blind_witnessed(ids: list[bytes], dst: bytes, scalar: bytes) -> bytes:
    """``u([8]W) || u(W)`` with ``W = X25519(scalar, H(id))`` per ID (64 bytes each)."""
    return times8_witnessed(x25519_many(scalar, hash_to_u_batch(ids, dst)))


def task_hash_blind_times64(ids: list[bytes], dst: bytes, scalar: bytes) -> bytes:
    """``u([64] X25519(scalar, H(id)))``: OPRF cache values (see psi/protocol.py)."""
    return times8(x25519_many(scalar, hash_to_u_batch(ids, dst)), 2)


def task_hash(ids: list[bytes], dst: bytes) -> bytes:
    return hash_to_u_batch(ids, dst)


def task_mult(blob: bytes, scalar: bytes, check_subgroup: bool) -> tuple[bool, bytes | str]:
    try:
        validate_points(blob, check_subgroup)
        return True, x25519_many(scalar, blob)
    except PointError as exc:
        return False, str(exc)


def task_mult_witnessed(blob: bytes, scalar: bytes, check_subgroup: bool,
                        witness_out: bool) -> tuple[bool, bytes | str]:
    """Validate ``(R, W)`` pairs, return ``X25519(scalar, R)`` (witnessed if asked)."""
    try:
        out = x25519_many(scalar, validate_witnessed(blob, check_subgroup))
        return True, times8_witnessed(out) if witness_out else out
    except PointError as exc:
        return False, str(exc)


def task_check(blob: bytes, check_subgroup: bool) -> tuple[bool, str]:
    try:
        validate_points(blob, check_subgroup)
        return True, ""
    except PointError as exc:
        return False, str(exc)


_POINT_AT = re.compile(r"point (\d+): ")


def _at(msg: str, offset: int, positions: np.ndarray | None = None) -> str:
    """A task's ``point i: ...`` as the stream's: ``i + offset`` (mapped through
    ``positions`` when the checked points were a selection)."""
    m = _POINT_AT.match(msg)
    if m is None:
        return msg
    i = offset + int(m.group(1))
    if positions is not None and i < len(positions):
        i = int(positions[i])
    return f"point {i}: {msg[m.end():]}"


def _chunks(seq: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def _id_chunks(ids: Ids) -> Iterator[list[str | bytes] | np.ndarray]:
    """TASK_SIZE-sized lists of IDs; str IDs are hashed as UTF-8 by the worker
    (hash_to_u_batch), so this process does not encode them. Packed IDs (an (n, width)
    uint8 array, :attr:`psi.ids.PreparedIds.packed`) go as row blocks: one buffer per
    task, no per-ID object on either side of the pipe."""
    for c in _chunks(ids, TASK_SIZE):
        yield c if isinstance(c, np.ndarray) else list(c)


_started: tuple | None = None  # (workers, executor generation, pool) from prestart()
_started_lock = threading.Lock()


def prestart(workers: int) -> None:
    """Start this process's PSI worker pool now, in the background, so that the next
    ``Engine(workers)`` adopts it already running: a job process calls this before it
    loads its data, and the workers' start-up (~0.3 s of CPU each: spawn, imports)
    overlaps that instead of delaying the first blinding. A pool never adopted (the
    job failed first) is terminated with the process, like any multiprocessing pool."""
    global _started
    workers = max(1, int(workers))
    with _started_lock:
        if workers > 1 and _started is None:
            _started = (workers, executor.generation(), executor.map_pool(workers))


def _take_started(workers: int):
    """The prestarted pool if it fits (same size, same compute engine), else None."""
    global _started
    with _started_lock:
        got, _started = _started, None
    if got is None:
        return None
    if got[:2] == (workers, executor.generation()):
        return got[2]
    got[2].terminate()
    return None


class Engine:
    """Runs PSI point work inline (``workers <= 1``) or on the engine's pool
    (:func:`secure_agg.executor.map_pool`: local spawn-context processes or Ray tasks;
    one started ahead by :func:`prestart` is adopted)."""

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))
        self._pool = None
        if self.workers > 1:
            self._pool = _take_started(self.workers) or executor.map_pool(self.workers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- ordered streaming maps ----------------------------------------------------
    def hash_blind_stream(self, ids: Ids, dst: bytes, scalar: bytes,
                          batch: int) -> Iterator[bytes]:
        """Yield blinded point blocks of ``batch`` IDs each, in order."""
        yield from self._regroup(
            self._map(task_hash_blind, ((c, dst, scalar) for c in _id_chunks(ids))), batch)

    def hash_blind_witnessed_stream(self, ids: Ids, dst: bytes, scalar: bytes,
                                    batch: int) -> Iterator[bytes]:
        """Like :meth:`hash_blind_stream` but 64-byte ``u([8]W) || u(W)`` entries."""
        yield from self._regroup(
            self._map(task_hash_blind_witnessed, ((c, dst, scalar) for c in _id_chunks(ids))),
            batch, WITNESS_BYTES)

    def hash_blind_times64_stream(self, ids: Ids, dst: bytes, scalar: bytes,
                                  batch: int) -> Iterator[bytes]:
        yield from self._regroup(
            self._map(task_hash_blind_times64, ((c, dst, scalar) for c in _id_chunks(ids))), batch)

    def hash_stream(self, ids: Ids, dst: bytes, batch: int) -> Iterator[bytes]:
        yield from self._regroup(
            self._map(task_hash, ((c, dst) for c in _id_chunks(ids))), batch)

    def mult_stream(self, blocks: Iterator[bytes], scalar: bytes,
                    check_subgroup: bool) -> Iterator[bytes]:
        """Validate-and-multiply each incoming block; yields results in order.

        Blocks are pulled from ``blocks`` (e.g. as they arrive from the peer) and
        submitted to the pool as soon as they are read, so work overlaps with receiving.
        Raises ProtocolError on the first invalid point (nothing partial is yielded
        for the bad block or after it).
        """
        def tasks():
            for blk in blocks:
                yield [(blk[i:i + POINT_BYTES * TASK_SIZE], scalar, check_subgroup)
                       for i in range(0, len(blk), POINT_BYTES * TASK_SIZE)] or \
                    [(b"", scalar, check_subgroup)]
        yield from self._joined(self._map_grouped(task_mult, tasks()), POINT_BYTES)

    def mult_witnessed_stream(self, blocks: Iterator[bytes], scalar: bytes,
                              check_subgroup: bool, witness_out: bool = False
                              ) -> Iterator[bytes]:
        """:meth:`mult_stream` for blocks of witnessed points (:func:`validate_witnessed`).

        Yields ``X25519(scalar, R)`` (32 bytes per point) or, with ``witness_out``, the
        witnessed form ``u([8]Z) || u(Z)`` of each result ``Z``.
        """
        step = WITNESS_BYTES * TASK_SIZE

        def tasks():
            for blk in blocks:
                yield [(blk[i:i + step], scalar, check_subgroup, witness_out)
                       for i in range(0, len(blk), step)] or \
                    [(b"", scalar, check_subgroup, witness_out)]
        yield from self._joined(self._map_grouped(task_mult_witnessed, tasks()),
                                WITNESS_BYTES if witness_out else POINT_BYTES)

    @staticmethod
    def _joined(groups: Iterator[list], out_item: int) -> Iterator[bytes]:
        seen = 0   # points of the stream before this group
        for parts in groups:
            out = []
            for j, (ok, val) in enumerate(parts):
                if not ok:
                    raise ProtocolError("peer sent an invalid point: " +
                                        _at(val, seen + j * TASK_SIZE))
                out.append(val)
            blk = b"".join(out)
            seen += len(blk) // out_item
            yield blk

    def check_blocks(self, blocks: Iterator[bytes], check_subgroup: bool,
                     positions: np.ndarray | None = None) -> Iterator[bytes]:
        """Validate incoming blocks (no multiplication); yields each block once checked.
        An error names the point's place in the stream, or ``positions[place]`` (where
        the checked points were picked from a longer sequence)."""
        held: deque = deque()
        seen = 0

        step = POINT_BYTES * TASK_SIZE

        def tasks():   # TASK_SIZE points per task: a block's checks use every worker
            for blk in blocks:
                held.append(blk)
                yield [(blk[i:i + step], check_subgroup)
                       for i in range(0, len(blk), step)] or [(blk, check_subgroup)]
        for parts in self._map_grouped(task_check, tasks()):
            blk = held.popleft()
            for j, (ok, msg) in enumerate(parts):
                if not ok:
                    raise ProtocolError("peer sent an invalid point: " +
                                        _at(msg, seen + j * TASK_SIZE, positions))
            seen += len(blk) // POINT_BYTES
            yield blk

    # -- plumbing ------------------------------------------------------------------
    def _map(self, fn, arglist: Iterable[tuple]) -> Iterator:
        if self._pool is None:
            for args in arglist:
                yield fn(*args)
            return
        pending: deque = deque()
        it = iter(arglist)
        window = 4 * self.workers
        for args in it:
            pending.append(self._pool.apply_async(fn, args))
            if len(pending) >= window:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def _map_grouped(self, fn, groups: Iterator[list[tuple]]) -> Iterator[list]:
        """Submit each group's tasks as soon as the group is produced; yield in order."""
        if self._pool is None:
            for grp in groups:
                yield [fn(*args) for args in grp]
            return
        pending: deque = deque()
        for grp in groups:
            pending.append([self._pool.apply_async(fn, args) for args in grp])
            # yield whatever is already finished at the head, without blocking
            while pending and all(r.ready() for r in pending[0]):
                yield [r.get() for r in pending.popleft()]
        while pending:
            yield [r.get() for r in pending.popleft()]

    @staticmethod
    def _regroup(parts: Iterator[bytes], batch: int,
                 item: int = POINT_BYTES) -> Iterator[bytes]:
        buf: list[bytes] = []
        size = 0
        limit = batch * item
        for part in parts:
            buf.append(part)
            size += len(part)
            while size >= limit:
                joined = b"".join(buf)
                yield joined[:limit]
                rest = joined[limit:]
                buf, size = ([rest] if rest else []), len(rest)
        if size:
            yield b"".join(buf)
