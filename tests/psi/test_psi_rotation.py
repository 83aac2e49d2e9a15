"""OPRF key rotation and the query-budget hook of unbalanced PSI (psi/cache.py,
psi/protocol.py): the re-encrypted cache equals a fresh build under the new key, the
intersection stays equal to Python's set intersection, a job in flight at rotation
finishes under its own key, and a refused budget stops the platform before any
blinded value crosses."""

import os
import random
import stat
import threading

import numpy as np
import pytest

from federation.link import Link, ProtocolContext, local_link_pair
from psi.cache import KeyStore, OprfCache, clamp, key_id, scalar_for
from psi.engine import Engine
from psi.hash_to_curve import L_ORDER
from psi.ids import prepare_ids, raw_digest
from psi.protocol import PsiBudgetError, PsiParams, prepare_platform_cache, run_psi
from secure_agg.rng import Drbg


def _ids(n: int, seed: int) -> list[str]:
    return [f"ent-{v}" for v in random.Random(seed).sample(range(10**9), n)]


def _params(tmp_path, **kw) -> PsiParams:
    kw = {"timeout": 30.0, **kw}
    return PsiParams(mode="unbalanced", id_type="string", batch_size=64,
                     key_dir=str(tmp_path / "keys"), cache_dir=str(tmp_path / "cache"),
                     **kw)


class _Hooked(Link):
    """The platform's link, calling ``hook()`` once before it receives ``kind``."""

    def __init__(self, link: Link, kind: str, hook):
        self._link, self._kind, self._hook = link, kind, hook
        self.job_id, self.party, self.peer = link.job_id, link.party, link.peer

    def send(self, kind, payload):
        self._link.send(kind, payload)

    def recv(self, kind, timeout=None):
        if kind == self._kind and self._hook is not None:
            hook, self._hook = self._hook, None
            hook()
        return self._link.recv(kind, timeout)


def _run(bank_ids, plat_ids, tmp_path, hook=None, budget=None):
    la, lb, crossed = local_link_pair("job-r")
    if hook is not None:
        lb = _Hooked(lb, *hook)
    p = _params(tmp_path)
    bp = _params(tmp_path / "bank")
    out: dict = {}

    def side(role, ctx, ids, params):
        try:
            out[role] = run_psi(ctx, role, ids, params, budget=budget)
        except BaseException as exc:  # noqa: BLE001 - asserted by the tests
            out[role] = exc
    ts = [threading.Thread(target=side, args=("bank", ProtocolContext(
              la, "job-r", Drbg(b"b" * 32)), bank_ids, bp)),
          threading.Thread(target=side, args=("platform", ProtocolContext(
              lb, "job-r", Drbg(b"p" * 32)), plat_ids, p))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return out["bank"], out["platform"], crossed


def _check_equal_to_sets(rb, rp, bank, plat):
    want = set(bank) & set(plat)
    got = [bank[i] for i in rb.indices]
    assert set(got) == want and len(got) == len(want) == rb.size == rp.size
    assert got == [plat[i] for i in rp.indices]


def test_scalar_for_gives_a_clamped_scalar_of_that_residue():
    rnd = random.Random(5)
    hits = 0
    for _ in range(400):
        x = rnd.randrange(L_ORDER)
        s = scalar_for(x)
        if s is not None:
            hits += 1
            assert clamp(s) % L_ORDER == x and clamp(s) == int.from_bytes(s, "little")
    assert 150 < hits < 250   # about half of all residues


def test_reencrypted_cache_equals_a_fresh_build_under_the_new_key(tmp_path):
    plat = _ids(700, 1)
    p = _params(tmp_path)
    old = prepare_platform_cache(plat, p, "bank")
    keys = KeyStore(p.key_dir)
    k_old = keys.oprf_key("bank")
    old_dir, old_trunc = old.directory, np.array(old.trunc)
    rot = keys.rotate("bank", p.cache_dir, workers=1)
    k_new = keys.oprf_key("bank")
    assert rot.old_key_id == key_id(k_old) != rot.new_key_id == key_id(k_new)
    assert rot.n_ids == 700 and len(rot.caches) == 1
    # the old key is gone from disk (no leftover), the new one is 0600
    names = os.listdir(p.key_dir)
    assert sorted(names) == ["psi-oprf-bank.key", "psi-oprf-bank.lock"]
    assert stat.S_IMODE(os.stat(keys.path("bank")).st_mode) == 0o600
    assert not os.path.exists(old_dir)
    got = OprfCache.lookup(p.cache_dir, "bank", k_new, old.meta["dataset_digest"],
                           old.meta["norm_version"], p.dst)
    # reference: hash every ID again under the new key (independent code path)
    prep = prepare_ids(plat, "string", "fail", "fail")
    with Engine(1) as eng:
        ref = OprfCache.build(str(tmp_path / "ref"), "bank", k_new, prep,
                              raw_digest(plat, "string", "fail", "fail"), eng, p.dst, 64)
    assert np.array_equal(got.trunc, ref.trunc) and np.array_equal(got.full, ref.full)
    assert np.array_equal(got.rows, ref.rows) and got.cache_id == ref.cache_id
    assert got.cache_id == rot.caches[0] != old.cache_id
    assert not set(old_trunc.tolist()) & set(np.asarray(got.trunc).tolist())
    # only while the key is still the one named
    assert keys.rotate("bank", p.cache_dir, if_key_id=rot.old_key_id) is None


def test_rotation_changes_outputs_and_keeps_the_intersection(tmp_path):
    bank, plat = _ids(120, 2)[:80], _ids(120, 2)[40:] + _ids(300, 3)
    rb1, rp1, crossed1 = _run(bank, plat, tmp_path)
    _check_equal_to_sets(rb1, rp1, bank, plat)
    KeyStore(tmp_path / "keys").rotate("bank", str(tmp_path / "cache"))
    rb2, rp2, crossed2 = _run(bank, plat, tmp_path)
    _check_equal_to_sets(rb2, rp2, bank, plat)
    assert rp1.stats["key_id"] != rp2.stats["key_id"]
    assert not rp2.stats["cache_built_now"] and rp2.stats["sent_cache"]  # re-encrypted
    sets = [{bytes(d) for who, k, _, d in c if k == "psi.cache_block"}
            for c in (crossed1, crossed2)]
    assert sets[0] and sets[1] and not sets[0] & sets[1]
    # the agreed order is by F_k, so it changes with the key; the set does not
    assert sorted(rb1.indices.tolist()) == sorted(rb2.indices.tolist())


def test_job_in_flight_at_rotation_finishes_under_its_own_key(tmp_path):
    bank, plat = _ids(200, 4)[:90], _ids(200, 4)[50:]
    prepare_platform_cache(plat, _params(tmp_path), "bank")
    keys = KeyStore(tmp_path / "keys")
    before = key_id(keys.oprf_key("bank"))
    rots = []
    # the platform has sent its hello and truncated set under the old key; the
    # rotation runs before it reads the bank's queries
    hook = ("psi.oprf_query",
            lambda: rots.append(keys.rotate("bank", str(tmp_path / "cache"))))
    rb, rp, _ = _run(bank, plat, tmp_path, hook=hook)
    assert rots and rots[0].old_key_id == before
    _check_equal_to_sets(rb, rp, bank, plat)        # finished, one key throughout
    assert rp.stats["key_id"] == before and rp.stats["n_claims_rejected"] == 0
    rb2, rp2, _ = _run(bank, plat, tmp_path)        # the next job: the new key only
    assert rp2.stats["key_id"] == rots[0].new_key_id and not rp2.stats["cache_built_now"]
    _check_equal_to_sets(rb2, rp2, bank, plat)


@pytest.mark.parametrize("mode", ["unbalanced", "balanced"])
def test_refused_budget_stops_the_platform_before_any_blinded_value(mode, tmp_path):
    bank, plat = _ids(60, 6)[:40], _ids(60, 6)[20:]
    seen = []

    def budget(peer, n, kid):
        seen.append((peer, n, kid))
        raise PsiBudgetError("over budget")

    la, lb, crossed = local_link_pair("job-b")
    p = PsiParams(mode=mode, id_type="string", batch_size=16, timeout=30,
                  key_dir=str(tmp_path / "k"), cache_dir=str(tmp_path / "c"))
    res: dict = {}
    t = threading.Thread(target=lambda: res.setdefault("bank", _catch(
        run_psi, ProtocolContext(la, "job-b", Drbg(b"b" * 32)), "bank", bank,
        PsiParams(mode=mode, id_type="string", batch_size=16, timeout=1.0))))
    t.start()
    with pytest.raises(PsiBudgetError, match="over budget"):
        run_psi(ProtocolContext(lb, "job-b", Drbg(b"p" * 32)), "platform", plat, p,
                budget=budget)
    t.join(30)
    assert seen == [("bank", 40, key_id(KeyStore(p.key_dir).oprf_key("bank"))
                     if mode == "unbalanced" else "")]
    from_platform = [k for who, k, _, _ in crossed if who == "platform"]
    assert from_platform == ["psi.hello"]      # no truncated set, reply or blinded point
    assert isinstance(res["bank"], Exception)


def _catch(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        return exc
