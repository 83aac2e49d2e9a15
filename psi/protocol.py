"""ECDH private set intersection between the bank and the platform.

Entry point for the node's job runner::

    run_psi(ctx, role, ids, params) -> PsiResult

``H(x)`` is RFC 9380 ``curve25519_XMD:SHA-512_ELL2_RO_`` with DST ``params.dst``
(:mod:`psi.hash_to_curve`), applied to the normalised ID (:mod:`psi.ids`). Blinding
is X25519 (:mod:`psi.engine`); every received point is validated (canonical, on the
curve, in the prime-order subgroup) before it is multiplied, and an invalid point
aborts the job with :class:`ProtocolError` -- no partial result, nothing more sent.
Each party sends its blinded set in an order shuffled with its job DRBG, so the peer
never learns row positions.

Modes and exactly what each party learns
----------------------------------------

``balanced`` (both learn the intersection). Bank has X (n), platform has Y (m); per-job
secret scalars a (bank), b (platform), from ``ctx.rng``.
Every point sent to be multiplied is *witnessed* (:func:`psi.engine.validate_witnessed`):
``a.H(x)`` below travels as ``u([8]W) || u(W)`` with ``W = X25519(a, H(x))`` (so the
effective scalar is ``8 clamp(a)``), which lets the receiver check exactly, and cheaply,
that the point it multiplies is in the prime-order subgroup.
Bank -> platform: ``a.H(x)`` for x in X (shuffled), then ``a.(b.H(y))`` for the
platform's points, in the order received. Platform -> bank symmetrically.
Each party ends with ``ab.H(.)`` of both sets and intersects locally.

* bank learns: X ∩ Y (as its own rows), |Y|; nothing about Y \\ X (under DDH in the ROM).
* platform learns: X ∩ Y (as its own rows), |X|; nothing about X \\ Y. The platform
  never receives H(x) or b.H(x) for any bank x -- only a.H(x), which it cannot test a
  guessed ID against without a.
* both agree on the order: the intersection is sorted by the double-blinded value
  ``ab.H(z)``, so ``result.indices[i]`` on both sides is the same enterprise.

``cardinality`` (both learn only |X ∩ Y|). Same messages, but every party shuffles the
double-blinded values it returns, so neither can link a match to a row.

* bank learns |X ∩ Y| and |Y|; platform learns |X ∩ Y| and |X|. ``indices`` is None.

``unbalanced`` (cached OPRF; the platform's big set is processed once). The platform
holds a long-lived per-peer key k (:class:`psi.cache.KeyStore`) and a cache of
``F_k(y) = k.H(y)`` (precisely ``u([64 clamp(k)] H(y))``: query and reply each carry
the factor 8 of their witnesses) for all y, sorted by ``T(y)`` = low 64 bits of ``F_k(y)``
(:class:`psi.cache.OprfCache`). Online:

1. platform -> bank: ``{T(y)}`` (sorted, only if the bank does not hold that cache id);
2. bank -> platform: ``r.H(x)`` (fresh r from ``ctx.rng``, one per job);
   platform -> bank: ``k.(r.H(x))``; bank unblinds with ``r^-1 mod L`` to ``F_k(x)``;
3. bank looks ``T(x)`` up in ``{T(y)}`` and sends, for candidate matches only, the
   platform cache position and the full ``F_k(x)``; the platform checks it equals its
   cached ``F_k(y)`` (so the bank cannot claim rows it does not hold) and returns a
   verdict mask. Both sort the accepted matches by ``F_k`` value.

* bank learns X ∩ Y, |Y|, and the 64-bit truncations T(y) of all platform IDs: it can
  test a candidate ID z for membership in Y only by obtaining F_k(z) through an online
  query, i.e. it learns membership exactly for the IDs it queries (here: X). Across
  jobs with the same key, queries accumulate: the platform's node bounds them with a
  query budget and rotates k (docs/psi.md, "Query budget and key rotation").
* platform learns X ∩ Y (as its rows) and |X|; the blinded queries r.H(x) are uniform.
* truncation: a false candidate needs T(x) = T(y) for x ≠ y: about |X||Y| / 2^64
  expected per job (5.4e-8 for 10^5 x 10^7) and it is rejected anyway by the
  platform's full-value check.

All modes: the party sizes and the normalisation/suite strings are exchanged in the
``psi.hello``; the platform's ``min_intersection`` travels there too and both sides
fail the job with :class:`PsiPolicyError` if the intersection is smaller.

Query budget (all modes: each lets the bank test |X| IDs of its choice for membership
in Y): the platform's ``run_psi(..., budget=charge)`` calls ``charge(peer, |X|,
key_id)`` right after the bank's hello, before it sends any blinded point or processes
one of the bank's; ``charge`` raises :class:`PsiBudgetError` to refuse (the job fails,
nothing is computed for the bank's set) and returns what it recorded
(``stats["budget"]``). ``key_id`` is the OPRF key's id in unbalanced mode, '' otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from federation.link import Message, ProtocolContext, ProtocolError, declare_protocol

from .cache import KeyStore, OprfCache, PeerSetCache, clamp, key_id, scalar_for
from .engine import POINT_BYTES, WITNESS_BYTES, Engine
from .hash_to_curve import L_ORDER, SUITE_CURVE25519
from .ids import PreparedIds, norm_version, prepare_ids, raw_digest
from .match import SortedRows, order_by_value

PROTOCOL_VERSION = "fedjoint-psi-v2"  # v2: 8-divisibility witnesses
DEFAULT_DST = "FEDJOINT-PSI-V1-with-curve25519_XMD:SHA-512_ELL2_RO_"
MODES = ("balanced", "unbalanced", "cardinality")
ROLES = ("bank", "platform")
MAX_SET = 1 << 31
MAX_BATCH = 1 << 20
TRUNC_BLOCK = 1 << 18  # uint64 per psi.cache_block message (2 MiB)


class PsiPolicyError(RuntimeError):
    """The PSI finished but a policy (e.g. min_intersection) forbids using it."""


class PsiBudgetError(PsiPolicyError):
    """The platform's query budget refuses the bank's set (before any point of it is
    processed); the message names the limit and its node.toml key."""


#: the platform's budget hook: ``charge(peer, n_queries, key_id) -> record``
Budget = Callable[[str, int, str], dict]


@dataclass(frozen=True)
class PsiParams:
    mode: str = "balanced"
    id_type: str = "uscc"             # "uscc" | "string"
    invalid: str = "fail"             # invalid IDs: "fail" | "drop"
    duplicates: str = "fail"          # duplicate IDs: "fail" | "dedupe"
    min_intersection: int = 0         # this party's policy (the platform's is binding)
    batch_size: int = 1 << 16         # points per psi.blinded/psi.double message
    check_subgroup: bool = True       # full prime-order-subgroup check of received points
    dst: str = DEFAULT_DST            # hash_to_curve domain separation tag
    key_dir: str | None = None        # unbalanced, platform: KeyStore directory
    cache_dir: str | None = None      # unbalanced: platform OprfCache / bank PeerSetCache
    max_peer_set: int | None = None   # refuse a peer set larger than this (query budget)
    timeout: float = 600.0            # seconds to wait for any one peer message

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"PSI mode must be one of {MODES}, not {self.mode!r}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be in [1, {MAX_BATCH}]")
        if self.min_intersection < 0:
            raise ValueError("min_intersection must be >= 0")
        if not self.dst or len(self.dst.encode()) > 255:
            raise ValueError("dst must be 1..255 bytes")


@dataclass
class PsiResult:
    role: str
    mode: str
    size: int                        # |X ∩ Y|
    indices: np.ndarray | None       # int64 rows into this party's `ids`, agreed order
    peer_size: int                   # the peer's (prepared) set size
    norm_version: str
    suite: str
    dst: str
    stats: dict = field(default_factory=dict)


def check_min_intersection(size: int, minimum: int) -> None:
    """Raise :class:`PsiPolicyError` if ``size < minimum`` (call before training)."""
    if size < minimum:
        raise PsiPolicyError(f"intersection has {size} IDs, below the min_intersection "
                             f"policy of {minimum}; refusing to train")


# --------------------------------------------------------------------------- helpers

def _nblocks(n: int, batch: int) -> int:
    return -(-n // batch)


def _recv_points(ctx: ProtocolContext, kind: str, n: int, batch: int,
                 timeout: float, item: int = POINT_BYTES) -> Iterator[bytes]:
    """Receive ceil(n/batch) point blocks of exactly the announced lengths.

    ``item``: bytes per point (32, or 64 for witnessed points ``u(R) || u(W)``).
    """
    for i in range(_nblocks(n, batch)):
        blk = ctx.link.recv_bytes(kind, timeout)
        want = min(batch, n - i * batch) * item
        if len(blk) != want:
            raise ProtocolError(f"{kind} block {i}: {len(blk)} bytes, expected {want}")
        yield blk


def _in_order(prep: PreparedIds, perm: np.ndarray):
    """The prepared IDs in send order: packed rows when the IDs have one width (no
    per-ID Python work), else a list of str (encoded per task by the engine)."""
    if prep.packed is not None:
        return prep.packed[perm]
    return list(map(prep.ids.__getitem__, perm.tolist()))


def _as_rows(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.uint8).reshape(-1, POINT_BYTES)


def _hello(role: str, params: PsiParams, prep: PreparedIds | None, status: str = "ok",
           **extra) -> dict:
    msg = {"proto": PROTOCOL_VERSION, "role": role, "mode": params.mode,
           "suite": SUITE_CURVE25519, "dst": params.dst,
           "norm_version": norm_version(params.id_type), "status": status,
           "n": len(prep.ids) if prep is not None else 0, "batch": params.batch_size,
           "min_intersection": int(params.min_intersection)}
    msg.update(extra)
    return msg


def _check_hello(peer: dict, role: str, params: PsiParams) -> tuple[int, int]:
    if peer.get("status") != "ok":
        raise ProtocolError(f"peer aborted PSI: {str(peer.get('reason', 'unspecified'))[:200]}")
    want_role = "platform" if role == "bank" else "bank"
    expect = {"proto": PROTOCOL_VERSION, "role": want_role, "mode": params.mode,
              "suite": SUITE_CURVE25519, "dst": params.dst,
              "norm_version": norm_version(params.id_type)}
    for k, v in expect.items():
        if peer.get(k) != v:
            raise ProtocolError(f"psi.hello: peer {k}={str(peer.get(k))[:100]!r}, "
                                f"expected {v!r}")
    n, batch = peer.get("n"), peer.get("batch")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < MAX_SET:
        raise ProtocolError("psi.hello: bad set size")
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= MAX_BATCH:
        raise ProtocolError("psi.hello: bad batch size")
    mi = peer.get("min_intersection")
    if not isinstance(mi, int) or isinstance(mi, bool) or mi < 0:
        raise ProtocolError("psi.hello: bad min_intersection")
    return n, batch


def _binding_minimum(role: str, params: PsiParams, peer_hello: dict) -> int:
    """The platform's policy binds both; a bank may additionally ask for more."""
    return max(int(params.min_intersection), int(peer_hello["min_intersection"]))


# --------------------------------------------------------------------------- entry

def run_psi(ctx: ProtocolContext, role: str, ids: Sequence[str], params: PsiParams,
            engine: Engine | None = None, budget: Budget | None = None) -> PsiResult:
    """Run this party's side of the PSI over ``ctx.link``.

    ``ids``: this party's raw IDs, one per dataset row. ``PsiResult.indices`` are row
    numbers into ``ids``. Raises :class:`psi.ids.IdInputError` (local input; the peer
    gets an abort hello), :class:`ProtocolError` (peer misbehaved or aborted),
    :class:`PsiPolicyError` (intersection below min_intersection),
    :class:`PsiBudgetError` (the platform's ``budget`` refused the bank's set).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    params.validate()
    t0 = time.perf_counter()
    own_engine = engine is None
    eng = engine if engine is not None else Engine(ctx.workers)
    try:
        if params.mode == "unbalanced" and role == "platform":
            res = _unbalanced_platform(ctx, ids, params, eng, budget)
        else:
            prep = _prepare_or_abort(ctx, role, ids, params)
            if params.mode == "unbalanced":
                res = _unbalanced_bank(ctx, prep, params, eng)
            else:
                res = _balanced(ctx, role, prep, params, eng,
                            budget if role == "platform" else None)
            res.stats.update(prep.stats())
    finally:
        if own_engine:
            eng.close()
    res.stats["t_total"] = round(time.perf_counter() - t0, 3)
    ctx.log("psi.done", {"role": role, "mode": params.mode, "size": res.size,
                         "n": res.stats.get("n_used"), "peer_n": res.peer_size,
                         "t_total": res.stats["t_total"]})
    check_min_intersection(res.size, res.stats["min_intersection"])
    return res


def _prepare_or_abort(ctx: ProtocolContext, role: str, ids: Sequence[str],
                      params: PsiParams) -> PreparedIds:
    try:
        return prepare_ids(ids, params.id_type, params.invalid, params.duplicates)
    except Exception:
        ctx.link.send("psi.hello", _hello(role, params, None, status="abort",
                                          reason="local input error"))
        raise


# --------------------------------------------------------------------------- balanced

def _balanced(ctx: ProtocolContext, role: str, prep: PreparedIds, params: PsiParams,
              eng: Engine, budget: Budget | None = None) -> PsiResult:
    link, tmo, batch = ctx.link, params.timeout, params.batch_size
    dst = params.dst.encode()
    stats: dict = {}
    n = len(prep.ids)
    link.send("psi.hello", _hello(role, params, prep))
    peer = link.recv_json("psi.hello", tmo)
    m, peer_batch = _check_hello(peer, role, params)
    if params.max_peer_set is not None and m > params.max_peer_set:
        raise ProtocolError(f"peer set of {m} IDs exceeds max_peer_set={params.max_peer_set}")
    if budget is not None:   # before anything blinded is sent or processed
        stats["budget"] = budget(link.peer, m, "")
    scalar = ctx.rng.child("psi/blind").random_bytes(32)
    shuf = ctx.rng.child("psi/shuffle")
    perm = shuf.numpy().permutation(n)  # our send order -> prepared index
    t = time.perf_counter()
    sent = _in_order(prep, perm)
    for k, blk in enumerate(eng.hash_blind_witnessed_stream(sent, dst, scalar, batch)):
        link.send("psi.blinded", blk)
        if ctx.progress:
            ctx.progress("psi.blind", min(1.0, (k + 1) * batch / max(n, 1)))
    del sent
    stats["t_hash_blind"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    peer_blocks = _recv_points(ctx, "psi.blinded", m, peer_batch, tmo, WITNESS_BYTES)
    doubles: list[bytes] = []
    for out in eng.mult_witnessed_stream(peer_blocks, scalar, params.check_subgroup):
        doubles.append(out)
        if params.mode == "balanced":
            link.send("psi.double", out)
    peer_d = _as_rows(b"".join(doubles))
    peer_index = SortedRows(peer_d)   # sorted while our own values are still arriving
    if params.mode == "cardinality":
        ret = peer_d[shuf.numpy().permutation(m)] if m else peer_d
        flat = ret.tobytes()
        for i in range(0, len(flat), batch * POINT_BYTES):
            link.send("psi.double", flat[i:i + batch * POINT_BYTES])
    stats["t_peer_mult"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    own_d = _as_rows(b"".join(_recv_points(ctx, "psi.double", n, batch, tmo)))
    stats["t_recv_double"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    io, _ = peer_index.match(own_d)   # io in the agreed order (by value)
    # Every returned value gets the curve check before any result: one equal to a value
    # we computed (an X25519 output of a checked point: canonical, on the curve) passes
    # by that equality, the others go to the workers -- the same verdict, less work.
    rest = np.ones(len(own_d), dtype=bool)
    rest[io] = False
    for _ in eng.check_blocks(iter([own_d[rest].tobytes()]), check_subgroup=False,
                              positions=np.flatnonzero(rest)):
        pass
    size = int(len(io))
    indices = None
    if params.mode == "balanced":
        indices = prep.rows[perm[io]].astype(np.int64)
    stats["t_match"] = round(time.perf_counter() - t, 3)
    stats["min_intersection"] = _binding_minimum(role, params, peer)
    return PsiResult(role, params.mode, size, indices, m, prep.norm_version,
                     SUITE_CURVE25519, params.dst, stats)


# --------------------------------------------------------------------------- unbalanced

def blinding_pair(rng) -> tuple[bytes, bytes]:
    """``(r, t)``: X25519 scalars with ``clamp(t) * clamp(r) == 1 (mod L)``.

    X25519 clamps every scalar to ``2^254 + 8m`` (0 <= m < 2^251). We draw r, compute
    the inverse of clamp(r) mod L and keep it only if it has that clamped form, which
    happens for about half of all r (rejection sampling from the job DRBG), so both
    blinding and unblinding run through X25519.
    """
    while True:
        r = rng.random_bytes(32)
        t = scalar_for(pow(clamp(r), -1, L_ORDER))
        if t is not None:
            return r, t


def prepare_platform_cache(ids: Sequence[str], params: PsiParams, peer: str,
                           engine: Engine | None = None, workers: int = 1) -> OprfCache:
    """Build (or find) the platform's OPRF cache for ``peer`` ahead of any job.

    The node calls this when a dataset is registered/approved for unbalanced PSI so the
    one-off cost is not paid inside a job. Raises IdInputError on bad IDs (policy).
    """
    if not params.key_dir or not params.cache_dir:
        raise ValueError("unbalanced PSI on the platform needs key_dir and cache_dir")
    keys = KeyStore(params.key_dir)
    digest = raw_digest(ids, params.id_type, params.invalid, params.duplicates)
    nv = norm_version(params.id_type)
    with keys.using(peer):   # a rotation waits; never a cache under a retired key
        key = keys.oprf_key(peer)
        got = OprfCache.lookup(params.cache_dir, peer, key, digest, nv, params.dst)
        if got is not None:
            return got
        prep = prepare_ids(ids, params.id_type, params.invalid, params.duplicates)
        eng = engine if engine is not None else Engine(workers)
        try:
            return OprfCache.build(params.cache_dir, peer, key, prep, digest, eng,
                                   params.dst, params.batch_size)
        finally:
            if engine is None:
                eng.close()


def _unbalanced_platform(ctx: ProtocolContext, ids: Sequence[str], params: PsiParams,
                         eng: Engine, budget: Budget | None = None) -> PsiResult:
    link, tmo = ctx.link, params.timeout
    if not params.key_dir or not params.cache_dir:
        raise ValueError("unbalanced PSI on the platform needs key_dir and cache_dir")
    stats: dict = {}
    peer_name = link.peer
    t = time.perf_counter()
    keys = KeyStore(params.key_dir)
    digest = raw_digest(ids, params.id_type, params.invalid, params.duplicates)
    # key and cache are taken together under the key's shared lock: a rotation waits
    # for it, and this job then keeps the key and its memory-mapped cache to the end
    with keys.using(peer_name):
        key = keys.oprf_key(peer_name)
        cache = OprfCache.lookup(params.cache_dir, peer_name, key, digest,
                                 norm_version(params.id_type), params.dst)
        stats["cache_built_now"] = cache is None
        if cache is None:
            prep = _prepare_or_abort(ctx, "platform", ids, params)
            cache = OprfCache.build(params.cache_dir, peer_name, key, prep, digest, eng,
                                    params.dst, params.batch_size)
    stats.update(cache.meta["prep_stats"])
    stats["t_cache"] = round(time.perf_counter() - t, 3)
    t_online = time.perf_counter()
    link.send("psi.hello", {**_hello("platform", params, None), "n": cache.n,
                            "cache_id": cache.cache_id, "trunc_bits": 64,
                            "key_id": key_id(key)})
    peer = link.recv_json("psi.hello", tmo)
    m, peer_batch = _check_hello(peer, "platform", params)
    if params.max_peer_set is not None and m > params.max_peer_set:
        raise ProtocolError(f"bank set of {m} IDs exceeds max_peer_set={params.max_peer_set}")
    if budget is not None:   # before the truncated set is sent or a query processed
        stats["budget"] = budget(peer_name, m, key_id(key))
    stats["key_id"] = key_id(key)
    req = link.recv_json("psi.cache_req", tmo)
    if not isinstance(req.get("have"), bool):
        raise ProtocolError("psi.cache_req: 'have' must be a boolean")
    t = time.perf_counter()
    if not req["have"]:
        for i in range(0, cache.n, TRUNC_BLOCK):
            link.send("psi.cache_block", np.ascontiguousarray(cache.trunc[i:i + TRUNC_BLOCK]))
    stats["t_send_cache"] = round(time.perf_counter() - t, 3)
    stats["sent_cache"] = not req["have"]

    t = time.perf_counter()
    queries = _recv_points(ctx, "psi.oprf_query", m, peer_batch, tmo, WITNESS_BYTES)
    for out in eng.mult_witnessed_stream(queries, key, params.check_subgroup,
                                         witness_out=True):
        link.send("psi.oprf_reply", out)
    stats["t_oprf_eval"] = round(time.perf_counter() - t, 3)

    pos = link.recv_array("psi.claim_pos", dtype_kind="i", shape=(None,), timeout=tmo)
    vals = link.recv_array("psi.claim_val", dtype_kind="u", shape=(len(pos), 32), timeout=tmo)
    if vals.dtype != np.uint8:
        raise ProtocolError("psi.claim_val must be uint8")
    if len(pos) > m or (len(pos) and (pos.min() < 0 or pos.max() >= cache.n)):
        raise ProtocolError("psi.claim_pos: positions out of range")
    if len(np.unique(pos)) != len(pos):
        raise ProtocolError("psi.claim_pos: repeated positions")
    pos = pos.astype(np.int64)
    ok = (np.asarray(cache.full[pos]) == vals).all(axis=1) if len(pos) else \
        np.zeros(0, dtype=bool)
    link.send("psi.verdict", ok.astype(np.bool_))
    acc = pos[ok]
    order = order_by_value(np.asarray(cache.full[acc]))
    indices = np.asarray(cache.rows[acc[order]]).astype(np.int64)
    stats["n_claims_rejected"] = int((~ok).sum())
    stats["t_online"] = round(time.perf_counter() - t_online, 3)
    stats["min_intersection"] = _binding_minimum("platform", params, peer)
    return PsiResult("platform", "unbalanced", int(len(indices)), indices, m,
                     norm_version(params.id_type), SUITE_CURVE25519, params.dst, stats)


def _unbalanced_bank(ctx: ProtocolContext, prep: PreparedIds, params: PsiParams,
                     eng: Engine) -> PsiResult:
    link, tmo, batch = ctx.link, params.timeout, params.batch_size
    dst = params.dst.encode()
    stats: dict = {}
    n = len(prep.ids)
    t_online = time.perf_counter()
    link.send("psi.hello", _hello("bank", params, prep))
    peer = link.recv_json("psi.hello", tmo)
    m, _ = _check_hello(peer, "bank", params)
    cache_id = peer.get("cache_id")
    if not isinstance(cache_id, str) or len(cache_id) != 32 or \
            any(c not in "0123456789abcdef" for c in cache_id):
        raise ProtocolError("psi.hello: bad cache_id")
    if peer.get("trunc_bits") != 64:
        raise ProtocolError("psi.hello: unsupported trunc_bits")
    store = PeerSetCache(params.cache_dir) if params.cache_dir else None
    tset = store.get(link.peer, cache_id, m) if store else None
    link.send("psi.cache_req", {"have": tset is not None})
    t = time.perf_counter()
    if tset is None:
        parts, got = [], 0
        while got < m:
            arr = link.recv_array("psi.cache_block", dtype_kind="u", shape=(None,),
                                  timeout=tmo)
            if arr.dtype != np.dtype("<u8") or not 0 < len(arr) <= min(TRUNC_BLOCK, m - got):
                raise ProtocolError("psi.cache_block: bad dtype or length")
            parts.append(arr)
            got += len(arr)
        tset = np.concatenate(parts) if parts else np.zeros(0, dtype="<u8")
        if len(tset) > 1 and (tset[1:] < tset[:-1]).any():
            raise ProtocolError("psi.cache_block: platform set is not sorted")
        if store:
            store.put(link.peer, cache_id, tset)
    stats["t_recv_cache"] = round(time.perf_counter() - t, 3)

    r, tinv = blinding_pair(ctx.rng.child("psi/oprf-blind"))
    perm = ctx.rng.child("psi/shuffle").numpy().permutation(n)
    t = time.perf_counter()
    sent = _in_order(prep, perm)
    for blk in eng.hash_blind_witnessed_stream(sent, dst, r, batch):
        link.send("psi.oprf_query", blk)
    del sent
    stats["t_hash_blind"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    replies = _recv_points(ctx, "psi.oprf_reply", n, batch, tmo, WITNESS_BYTES)
    fk = _as_rows(b"".join(eng.mult_witnessed_stream(replies, tinv,
                                                     params.check_subgroup)))
    stats["t_unblind"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    q = np.ascontiguousarray(fk[:, :8]).view("<u8").ravel() if n else np.zeros(0, "<u8")
    tarr = np.asarray(tset)
    qo = np.argsort(q)   # sorted queries: each search narrows from the last (~4x less CPU)
    lo, hi = np.empty(n, dtype=np.intp), np.empty(n, dtype=np.intp)
    lo[qo], hi[qo] = (np.searchsorted(tarr, q[qo], side=s) for s in ("left", "right"))
    cnt = hi - lo
    bank_pos = np.repeat(np.arange(n, dtype=np.int64), cnt)
    starts = np.repeat(lo, cnt)
    offs = np.arange(len(bank_pos)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    plat_pos = (starts + offs).astype(np.int64)
    link.send("psi.claim_pos", plat_pos)
    link.send("psi.claim_val", np.ascontiguousarray(fk[bank_pos]))
    ok = link.recv_array("psi.verdict", dtype_kind="b", shape=(len(plat_pos),), timeout=tmo)
    acc = bank_pos[ok]
    if len(np.unique(acc)) != len(acc):
        raise ProtocolError("psi.verdict: platform accepted two rows for one bank ID")
    order = order_by_value(fk[acc])
    indices = prep.rows[perm[acc[order]]].astype(np.int64)
    stats["t_match"] = round(time.perf_counter() - t, 3)
    stats["t_online"] = round(time.perf_counter() - t_online, 3)
    stats["n_candidates"] = int(len(plat_pos))
    stats["min_intersection"] = _binding_minimum("bank", params, peer)
    return PsiResult("bank", "unbalanced", int(len(indices)), indices, m,
                     prep.norm_version, SUITE_CURVE25519, params.dst, stats)


def _points(payload) -> int:
    return len(payload) // POINT_BYTES if isinstance(payload, bytes) else 1


def _witnessed_points(payload) -> int:
    return len(payload) // WITNESS_BYTES if isinstance(payload, bytes) else 1


# What crosses in the clear or lets the receiver compute something about its own rows
# carries a disclosure, counted per job in the transcript's ledger (docs/psi.md).
TABLE = declare_protocol("psi", PROTOCOL_VERSION, [
    Message("psi.hello", "either", "json", "role, mode, set size, parameters, status",
            disclosure="set size and protocol parameters"),
    Message("psi.blinded", "either", "bin", "the sender's blinded ID points with witnesses"),
    Message("psi.double", "either", "bin", "the receiver's points blinded again by the sender",
            disclosure="double-blinded points of the receiver's own IDs (intersection)",
            count=_points),
    Message("psi.cache_req", "bank", "json", "whether the bank holds the current cache"),
    Message("psi.cache_block", "platform", "npy", "truncated OPRF values of platform IDs",
            disclosure="64-bit truncated OPRF values of platform IDs"),
    Message("psi.oprf_query", "bank", "bin", "the bank's blinded ID points with witnesses",
            disclosure="IDs the bank looked up in the platform's set (its query budget)",
            count=_witnessed_points),
    Message("psi.oprf_reply", "platform", "bin", "the platform key applied to the queries",
            disclosure="OPRF evaluations of the bank's blinded IDs", count=_witnessed_points),
    Message("psi.claim_pos", "bank", "npy", "claimed matching positions in the cache",
            disclosure="claimed intersection positions in the platform cache"),
    Message("psi.claim_val", "bank", "npy", "full OPRF values of the claimed matches"),
    Message("psi.verdict", "platform", "npy", "which claimed matches are real",
            disclosure="intersection verdicts on claimed matches"),
])
