"""PSI protocol tests: correctness vs Python sets in every mode, what crosses the
channel, bad peers, policies, caches/keys, and a run over real gRPC + mTLS."""

import os
import random
import stat

import gmpy2
import nacl.bindings as sodium
import numpy as np
import pytest

from federation.link import (
    ProtocolContext,
    ProtocolError,
    decode_payload,
    local_link_pair,
    run_two_parties,
)
from psi.cache import KeyStore
from psi.engine import times8, times8_witnessed, x25519_many
from psi.hash_to_curve import P as FP
from psi.hash_to_curve import hash_to_u_batch
from psi.ids import IdValidationError, uscc_check_char
from psi.match import match, order_by_value
from psi.protocol import PsiParams, PsiPolicyError, run_psi
from secure_agg.rng import Drbg

SEED_B, SEED_P = b"b" * 32, b"p" * 32


def code(i: int) -> str:
    body = f"913{i:014d}"
    return body + uscc_check_char(body)


def run(bank_ids, plat_ids, tmp_path=None, workers=1, bank_params=None, **kw):
    la, lb, crossed = local_link_pair("job-1")
    if tmp_path is not None:
        kw.setdefault("key_dir", str(tmp_path / "keys"))
        kw.setdefault("cache_dir", str(tmp_path / "cache"))
    p = PsiParams(batch_size=64, timeout=30, **kw)
    bp = bank_params or p
    ca = ProtocolContext(la, "job-1", Drbg(SEED_B), workers=workers)
    cb = ProtocolContext(lb, "job-1", Drbg(SEED_P), workers=workers)
    rb, rp = run_two_parties(lambda: run_psi(ca, "bank", bank_ids, bp),
                             lambda: run_psi(cb, "platform", plat_ids, p), timeout=120)
    return rb, rp, crossed


def sets(n_common, n_bank, n_plat, seed=0):
    rnd = random.Random(seed)
    ids = [code(i) for i in rnd.sample(range(10**9), n_common + n_bank + n_plat)]
    common = ids[:n_common]
    bank = common + ids[n_common:n_common + n_bank]
    plat = common + ids[n_common + n_bank:]
    rnd.shuffle(bank)
    rnd.shuffle(plat)
    return bank, plat


CASES = {"partial": (70, 50, 130), "empty": (0, 40, 60), "total": (90, 0, 0),
         "bank_subset": (40, 0, 100), "platform_subset": (40, 100, 0), "bank_empty": (0, 0, 30)}


@pytest.mark.parametrize("mode", ["balanced", "cardinality", "unbalanced"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_python_sets(mode, case, tmp_path):
    bank, plat = sets(*CASES[case], seed=len(case))
    rb, rp, _ = run(bank, plat, tmp_path, mode=mode)
    want = set(bank) & set(plat)
    assert rb.size == rp.size == len(want)
    assert rb.peer_size == len(plat) and rp.peer_size == len(bank)
    if mode == "cardinality":
        assert rb.indices is None and rp.indices is None
    else:
        got_b = [bank[i] for i in rb.indices]
        assert got_b == [plat[i] for i in rp.indices]  # one agreed order
        assert set(got_b) == want and len(got_b) == len(want)


def test_rows_refer_to_raw_input_after_drop_and_dedupe():
    bank, plat = sets(20, 10, 10, seed=3)
    bank_raw = ["bad-id", bank[0].lower(), " " + bank[0]] + bank[1:]  # invalid + dup
    plat_raw = plat + ["９" + plat[0][1:]]                               # full-width dup
    p = dict(invalid="drop", duplicates="dedupe", mode="balanced")
    rb, rp, _ = run(bank_raw, plat_raw, **p)
    assert rb.stats["n_invalid"] == 1 and rb.stats["n_duplicate"] == 1
    assert rp.stats["n_duplicate"] == 1 and rb.stats["invalid_rows_sample"] == [0]
    assert {bank_raw[i].strip().upper() for i in rb.indices} == set(bank) & set(plat)
    assert [bank_raw[i].strip().upper() for i in rb.indices] == [plat_raw[i] for i in rp.indices]


def _payload_bytes(crossed, sender):
    out = []
    for who, _kind, ptype, data in crossed:
        if who == sender:
            obj = decode_payload(ptype, data)
            out.append(obj.tobytes() if isinstance(obj, np.ndarray) else data)
    return b"".join(out)


def _assert_absent(blob, values, what):
    for v in values:
        assert v not in blob, f"{what} crossed the channel"


@pytest.mark.parametrize("mode", ["balanced", "cardinality", "unbalanced"])
def test_platform_cannot_test_bank_ids_outside_intersection(mode, tmp_path):
    bank, plat = sets(30, 40, 60, seed=7)
    rb, rp, crossed = run(bank, plat, tmp_path, mode=mode)
    to_platform = _payload_bytes(crossed, "bank")
    outside = [x for x in bank if x not in set(plat)]
    dst = PsiParams().dst.encode()
    hashes = [hash_to_u_batch([x.encode()], dst) for x in bank]
    _assert_absent(to_platform, [x.encode() for x in bank], "a raw bank ID")
    _assert_absent(to_platform, hashes, "an unblinded bank hash H(x)")
    _assert_absent(to_platform, [h[:8] for h in hashes], "a truncated H(x)")
    # values the platform could compute itself from a guessed ID, using its secret
    if mode == "unbalanced":
        k = KeyStore(tmp_path / "keys").oprf_key("bank")
    else:
        k = Drbg(SEED_P).child("psi/blind").random_bytes(32)
    own = [x25519_many(k, hash_to_u_batch([x.encode()], dst)) for x in outside]
    own += [times8(v) for v in own] + [times8(v, 2) for v in own]  # [8k].H(x), F_k(x)
    _assert_absent(to_platform, own, "k.H(x) for a bank ID outside the intersection")
    _assert_absent(to_platform, [v[:8] for v in own], "truncated k.H(x) outside the intersection")
    kinds = {k for who, k, _, _ in crossed if who == "bank"}
    assert kinds <= {"psi.hello", "psi.blinded", "psi.double", "psi.cache_req",
                     "psi.oprf_query", "psi.claim_pos", "psi.claim_val"}


def test_replay_is_bit_identical(tmp_path):
    bank, plat = sets(10, 10, 10, seed=9)
    _, _, c1 = run(bank, plat, mode="balanced")
    _, _, c2 = run(bank, plat, mode="balanced")
    key = lambda c: sorted((w, k, d) for w, k, _, d in c)  # noqa: E731
    assert key(c1) == key(c2)


def _twist_u() -> bytes:
    u = 2
    while gmpy2.jacobi((u * u * u + 486662 * u * u + u) % FP, FP) != -1:
        u += 1
    return u.to_bytes(32, "little")


def _non_subgroup_u() -> bytes:
    dst = PsiParams().dst.encode()
    for i in range(100):  # u(Q0 + Q1) before cofactor clearing: usually has torsion
        u = hash_to_u_batch([b"x%d" % i], dst)
        y = (int.from_bytes(u, "little") - 1) * pow(int.from_bytes(u, "little") + 1, -1, FP) % FP
        if not sodium.crypto_core_ed25519_is_valid_point(y.to_bytes(32, "little")):
            return u
    raise AssertionError("no non-subgroup point found")


BAD_POINTS = {"twist": _twist_u, "not_in_subgroup": _non_subgroup_u,
              "non_canonical": lambda: (2**255 - 19 + 3).to_bytes(32, "little"),
              "low_order": lambda: bytes(32), "high_bit": lambda: b"\x09" + bytes(30) + b"\x80"}


@pytest.mark.parametrize("mode", ["balanced", "unbalanced"])
@pytest.mark.parametrize("bad", list(BAD_POINTS))
def test_bad_points_from_peer_abort_without_partial_result(mode, bad, tmp_path):
    """A malicious bank sends one invalid point among valid ones."""
    plat = [code(i) for i in range(20)]
    la, lb, crossed = local_link_pair("job-1")
    p = PsiParams(mode=mode, batch_size=64, timeout=10, key_dir=str(tmp_path / "k"),
                  cache_dir=str(tmp_path / "c"))
    cb = ProtocolContext(lb, "job-1", Drbg(SEED_P))
    from psi.ids import prepare_ids
    from psi.protocol import _hello

    def evil_bank():
        la.send("psi.hello", _hello("bank", p, prepare_ids([code(i) for i in range(5)])))
        hello = la.recv_json("psi.hello", 10)
        if mode == "unbalanced":
            la.send("psi.cache_req", {"have": True})
        good = times8_witnessed(x25519_many(os.urandom(32), hash_to_u_batch(
            [b"a", b"b", b"c", b"d"], p.dst.encode())))  # u([8]W) || u(W) each
        kind = "psi.oprf_query" if mode == "unbalanced" else "psi.blinded"
        # the bad point travels with a genuine curve25519 point as its "witness"
        la.send(kind, good[:128] + BAD_POINTS[bad]() + good[32:64] + good[128:])
        return hello

    with pytest.raises(ProtocolError, match="invalid point"):
        run_two_parties(evil_bank, lambda: run_psi(cb, "platform", plat, p), timeout=60)
    sent_by_platform = [k for who, k, _, _ in crossed if who == "platform"]
    assert sent_by_platform in (["psi.hello"], ["psi.hello", "psi.blinded"])


def test_min_intersection_policy_fails_both_sides():
    bank, plat = sets(5, 10, 10, seed=11)
    la, lb, _ = local_link_pair("j")
    ca = ProtocolContext(la, "j", Drbg(SEED_B))
    cb = ProtocolContext(lb, "j", Drbg(SEED_P))
    errs = []

    def wrap(ctx, role, ids, params):
        def f():
            try:
                run_psi(ctx, role, ids, params)
            except PsiPolicyError as e:
                errs.append((role, str(e)))
        return f
    run_two_parties(wrap(ca, "bank", bank, PsiParams(batch_size=8)),
                    wrap(cb, "platform", plat, PsiParams(batch_size=8, min_intersection=6)))
    assert sorted(r for r, _ in errs) == ["bank", "platform"]
    assert "below the min_intersection policy of 6" in errs[0][1]


def test_invalid_input_aborts_before_sending_ids():
    bank, plat = sets(5, 5, 5, seed=12)
    la, lb, crossed = local_link_pair("j")
    ca = ProtocolContext(la, "j", Drbg(SEED_B))
    cb = ProtocolContext(lb, "j", Drbg(SEED_P))
    out = {}

    def platform():
        try:
            run_psi(cb, "platform", plat, PsiParams(timeout=10))
        except ProtocolError as e:
            out["p"] = str(e)
    with pytest.raises(IdValidationError, match="row\\(s\\) 0"):
        run_two_parties(lambda: run_psi(ca, "bank", ["junk"] + bank, PsiParams(timeout=10)),
                        platform)
    assert "peer aborted" in out["p"]
    assert [k for w, k, _, _ in crossed if w == "bank"] == ["psi.hello"]


def test_parameter_mismatch_is_refused():
    bank, plat = sets(5, 5, 5, seed=13)
    with pytest.raises(ProtocolError, match="psi.hello"):
        run(bank, plat, mode="balanced", bank_params=PsiParams(mode="cardinality", timeout=5))


def test_unbalanced_cache_reuse_and_invalidation(tmp_path):
    bank, plat = sets(30, 20, 50, seed=14)
    rb, rp, _ = run(bank, plat, tmp_path, mode="unbalanced")
    assert rp.stats["cache_built_now"] and rp.stats["sent_cache"]
    rb2, rp2, crossed = run(bank, plat, tmp_path, mode="unbalanced")
    assert not rp2.stats["cache_built_now"] and not rp2.stats["sent_cache"]
    assert "psi.cache_block" not in {k for _, k, _, _ in crossed}
    assert rb2.indices.tolist() == rb.indices.tolist()
    plat2 = plat + [code(10**9 + 1)]  # dataset content changed -> rebuild + resend
    bank2 = bank + [plat2[-1]]
    rb3, rp3, _ = run(bank2, plat2, tmp_path, mode="unbalanced")
    assert rp3.stats["cache_built_now"] and rp3.stats["sent_cache"] and rb3.size == 31
    assert len(os.listdir(tmp_path / "cache" / "psi-cache" / "bank")) == 1


def test_key_store_permissions(tmp_path):
    ks = KeyStore(tmp_path / "keys")
    k = ks.oprf_key("bank")
    path = ks.path("bank")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and ks.oprf_key("bank") == k
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="0600"):
        ks.oprf_key("bank")
    os.chmod(path, 0o600)
    rot = ks.rotate("bank")
    assert ks.oprf_key("bank") != k and rot.new_key_id != rot.old_key_id
    with pytest.raises(ValueError):
        ks.path("../etc")


def test_balanced_over_grpc_mtls_with_worker_pool(tmp_path):
    from federation.channel.testing import channel_pair
    ca, cb, _, _ = channel_pair(tmp_path / "tls")
    try:
        bank, plat = sets(300, 200, 500, seed=15)
        la, lb = ca.link("psi-job-1"), cb.link("psi-job-1")
        p = PsiParams(batch_size=256, timeout=60)
        ctx_b = ProtocolContext(la, "psi-job-1", Drbg(SEED_B), workers=2)
        ctx_p = ProtocolContext(lb, "psi-job-1", Drbg(SEED_P), workers=2)
        rb, rp = run_two_parties(lambda: run_psi(ctx_b, "bank", bank, p),
                                 lambda: run_psi(ctx_p, "platform", plat, p), timeout=120)
        assert [bank[i] for i in rb.indices] == [plat[i] for i in rp.indices]
        assert set(bank[i] for i in rb.indices) == set(bank) & set(plat)
        la.close()
        lb.close()
    finally:
        ca.stop(0)
        cb.stop(0)


def test_match_and_order_against_python_on_colliding_prefixes():
    """Equal-row matching and the agreed order equal Python's, also when 64-bit
    prefixes collide on either side and when a side repeats a value (the slow paths)."""
    rng = np.random.default_rng(4)

    def key(b: bytes) -> list:   # the agreed order: 4 LE uint64 words
        return np.frombuffer(b, "<u8").tolist()
    for collide in ("none", "own", "peer", "own-repeat"):
        own = rng.integers(0, 256, (300, 32), dtype=np.uint8)
        if collide == "own":
            own[1::7, :8] = own[0, :8]  # many rows share their first word
        peer = np.concatenate([own[::2], rng.integers(0, 256, (50, 32), dtype=np.uint8)])
        if collide == "peer":
            peer[3::5, :8] = peer[1, :8]
        if collide == "own-repeat":
            own[5] = own[4]
        peer = peer[rng.permutation(len(peer))]
        io, ip = match(own, peer)
        pset = {bytes(r) for r in peer}
        want = [i for i in range(len(own)) if bytes(own[i]) in pset]
        assert sorted(io.tolist()) == want and (own[io] == peer[ip]).all()
        vals = [bytes(own[i]) for i in io]
        assert vals == sorted(vals, key=key)  # io comes in the agreed order
        sub = own[io]
        assert [bytes(sub[i]) for i in order_by_value(sub)] == sorted(vals, key=key)


def test_prestarted_pool_is_adopted_by_the_next_engine():
    """A job process starts PSI's pool ahead (psi.engine.prestart, while it loads its
    data); the next Engine of that size takes it over and blinds exactly as inline;
    a pool that does not fit (another size or compute engine) is terminated."""
    from psi import engine as E
    ids = [f"9135{i:014d}" for i in range(40)]
    args = (b"dst", bytes(range(32)), 16)
    E.prestart(2)
    pool = E._started[2]
    with E.Engine(2) as eng:
        assert eng._pool is pool and E._started is None
        got = list(eng.hash_blind_witnessed_stream(ids, *args))
    assert got == list(E.Engine(1).hash_blind_witnessed_stream(ids, *args))
    E._started = (2, E.executor.generation(), FakePool())
    assert E._take_started(3) is None and E._started is None
    assert FakePool.terminated == 1


class FakePool:
    terminated = 0

    def terminate(self) -> None:
        FakePool.terminated += 1


@pytest.mark.parametrize("where", ["matching", "other"])
@pytest.mark.parametrize("bad", ["bit255", "twist"])
def test_invalid_returned_value_is_refused(where, bad):
    """A returned double-blinded value that is not a canonical curve25519 point fails
    the job, whether it replaces a value that would have matched or another one
    (psi.double values are curve-checked: a match passes by equality with a value the
    receiver computed, every other value in the workers)."""
    bank, plat = sets(20, 20, 20, seed=21)
    la, lb, _ = local_link_pair("j")
    twist = next(u for u in range(2, 100)
                 if pow((u ** 3 + 486662 * u * u + u) % FP, (FP - 1) // 2, FP) == FP - 1)
    send = lb.send

    def tamper(kind, payload):
        if kind == "psi.double":
            vals = bytearray(payload)
            if bad == "bit255":
                vals[31] |= 0x80
            else:
                vals[:32] = twist.to_bytes(32, "little")
            payload = bytes(vals)
        send(kind, payload)
    lb.send = tamper
    # which of the bank's values sits first: its send order is its shuffled set; with
    # batch 64 everything is one block, so value 0 is the bank's first sent ID
    order = Drbg(SEED_B).child("psi/shuffle").numpy().permutation(len(bank))
    first_is_common = bank[order[0]] in set(plat)
    if first_is_common != (where == "matching"):
        bank = bank[:]   # move another ID to the front of the send order
        j = next(k for k in range(1, len(bank))
                 if (bank[order[k]] in set(plat)) == (where == "matching"))
        bank[order[0]], bank[order[j]] = bank[order[j]], bank[order[0]]
    ca = ProtocolContext(la, "j", Drbg(SEED_B))
    cb = ProtocolContext(lb, "j", Drbg(SEED_P))
    p = PsiParams(batch_size=64, timeout=30)
    with pytest.raises(ProtocolError, match="invalid point: point 0"):
        run_two_parties(lambda: run_psi(ca, "bank", bank, p),
                        lambda: run_psi(cb, "platform", plat, p), timeout=60)


def test_a_bad_point_is_named_by_its_place_in_the_stream():
    """An invalid point past the first worker task, and one among the values that were
    checked because they did not match, are named by their index in the peer's stream."""
    from psi import engine
    good = engine.x25519_many(b"\x05" * 32, engine.hash_to_u_batch(
        [str(i).encode() for i in range(engine.TASK_SIZE + 10)], b"dst"))
    pts = bytearray(good)
    bad = engine.TASK_SIZE + 3
    pts[32 * bad + 31] |= 0x80                      # bit 255 set
    with engine.Engine(1) as eng, pytest.raises(ProtocolError, match=f"point {bad}: "):
        for _ in eng.check_blocks(iter([bytes(pts)]), check_subgroup=False):
            pass
    picked = np.array([7, 11, 4000])
    sub = b"".join(bytes(pts[32 * i:32 * i + 32]) for i in (1, 2, bad))
    with engine.Engine(1) as eng, pytest.raises(ProtocolError, match="point 4000: "):
        for _ in eng.check_blocks(iter([sub]), check_subgroup=False, positions=picked):
            pass
