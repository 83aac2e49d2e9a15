"""Paillier engine: correctness against phe (the reference), interop, codecs, keys.

Uses insecure 512/768-bit test keys (generated deterministically once per module) and
a single 2048-bit key for the default-size check, so the file stays fast.
"""

from __future__ import annotations

import json
import os
import stat

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier as phe

from secure_agg.cipher import CipherVector, KeyMismatch, PlaintextOverflow
from secure_agg.codec import FixedPoint, Packer
from secure_agg.keys import (
    InsecureKeyError,
    PaillierPrivateKey,
    PaillierPublicKey,
    fingerprint,
    generate_keypair,
)
from secure_agg.masking import mask, unmask
from secure_agg.paillier import PaillierPrivateCipher, PaillierPublicCipher
from secure_agg.rng import Drbg

SEED = bytes(range(32))


@pytest.fixture(scope="module")
def key512():
    return generate_keypair(512, rng=Drbg(SEED, "k512"), insecure_test_key=True)


@pytest.fixture(scope="module")
def key768():
    return generate_keypair(768, rng=Drbg(SEED, "k768"), insecure_test_key=True)


@pytest.fixture(scope="module", params=["djn", "standard"])
def cipher(request, key512):
    return PaillierPrivateCipher(key512[1], obfuscation=request.param, workers=2)


def _vals(c):
    rng = np.random.default_rng(7)
    big = 1 << c.capacity_bits
    return ([0, 1, -1, 2, -2, big - 1, -(big - 1), big // 3, -big // 5]
            + rng.integers(-(1 << 62), 1 << 62, 40).tolist())


# ---- keys --------------------------------------------------------------------------
def test_keygen_deterministic_sizes_and_refusals():
    a = generate_keypair(512, rng=Drbg(SEED, "x"), insecure_test_key=True)
    b = generate_keypair(512, rng=Drbg(SEED, "x"), insecure_test_key=True)
    c = generate_keypair(512, rng=Drbg(SEED, "y"), insecure_test_key=True)
    assert a[0] == b[0] and a[0] != c[0]
    assert a[0].bits == 512 and a[1].p % 4 == 3 and a[1].q % 4 == 3
    assert a[0].key_id == fingerprint(a[0].n) and len(a[0].key_id) == 64
    for bits in (512, 1024, 1536):
        with pytest.raises(InsecureKeyError, match="refused"):
            generate_keypair(bits)
    with pytest.raises(ValueError):
        generate_keypair(2047)
    with pytest.raises(InsecureKeyError):
        PaillierPublicKey(a[0].n)  # loading a small key needs the flag too
    for bits in (2048, 3072, 4096):  # supported sizes load without the flag
        assert PaillierPublicKey((1 << (bits - 1)) | 1).bits == bits


def test_default_2048_key_roundtrip():
    pub, sk = generate_keypair(rng=Drbg(SEED, "2048"))
    assert pub.bits == 2048
    c = PaillierPrivateCipher(sk, workers=1)
    vals = [0, -1, 123456789, -(1 << 2000)]
    enc = c.encrypt(vals, rng=Drbg(SEED, "e"))
    assert c.decrypt(enc) == vals
    assert c.ciphertext_bytes == 512
    psk = sk.to_phe()
    assert [psk.raw_decrypt(int(x)) for x in enc.data] == [v % int(pub.n) for v in vals]


def test_key_files_permissions_and_no_leak(tmp_path, key512):
    pub, sk = key512
    path = tmp_path / "bank.key.json"
    sk.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o644)
    sk.save(path)  # rewriting tightens an existing file
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = PaillierPrivateKey.load(path, insecure_test_key=True)
    assert loaded.p == sk.p and loaded.public_key == pub
    os.chmod(path, 0o640)
    with pytest.raises(PermissionError, match="chmod 600"):
        PaillierPrivateKey.load(path, insecure_test_key=True)
    pub.save(tmp_path / "bank.pub.json")
    assert PaillierPublicKey.load(tmp_path / "bank.pub.json", insecure_test_key=True) == pub
    for text in (repr(sk), str(sk), repr(pub), repr(PaillierPrivateCipher(sk))):
        assert str(int(sk.p)) not in text and format(int(sk.p), "x") not in text
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(sk)
    bad = json.loads(sk.to_json())
    bad["q"] = format(int(sk.q) + 2, "x")
    with pytest.raises(ValueError):
        PaillierPrivateKey.from_json(json.dumps(bad), insecure_test_key=True)


def test_phe_key_conversion(key512):
    pub, sk = key512
    ppk, psk = pub.to_phe(), sk.to_phe()
    assert ppk.n == int(pub.n) and {psk.p, psk.q} == {int(sk.p), int(sk.q)}
    back = PaillierPrivateKey.from_phe(psk, insecure_test_key=True)
    assert back.public_key == pub and back.p == sk.p
    p2, s2 = phe.generate_paillier_keypair(n_length=512)
    assert PaillierPublicKey.from_phe(p2, insecure_test_key=True).n == p2.n


# ---- round trips and identities -------------------------------------------------------
def test_roundtrip_random_negative_tiny_huge(cipher):
    vals = _vals(cipher)
    enc = cipher.encrypt(vals, rng=Drbg(SEED))
    assert cipher.decrypt(enc) == vals
    assert cipher.decrypt(cipher.public().encrypt(vals)) == vals
    with pytest.raises(PlaintextOverflow, match="encrypt.*exceeds by 1 bits"):
        cipher.encrypt([1 << cipher.capacity_bits])


def test_homomorphic_identities(cipher):
    rng = np.random.default_rng(3)
    x = rng.integers(-(1 << 40), 1 << 40, 30)
    y = rng.integers(-(1 << 40), 1 << 40, 30)
    k = rng.integers(-1000, 1000, 30)
    pub = cipher.public()
    ex, ey = pub.encrypt(x), pub.encrypt(y)
    d = cipher.decrypt
    assert d(pub.add(ex, ey)) == (x + y).tolist()
    assert d(pub.sub(ex, ey)) == (x - y).tolist()
    assert d(pub.add_plain(ex, y)) == (x + y).tolist()
    assert d(pub.add_plain(ex, [-5])) == (x - 5).tolist()
    assert d(pub.mul_plain(ex, k)) == (x * k).tolist()
    assert d(pub.mul_plain(ex, [0])) == [0] * 30
    assert d(pub.sum(ex)) == [int(x.sum())]
    assert d(pub.cumsum_blocks(ex, 10)) == np.cumsum(x.reshape(3, 10), axis=1).ravel().tolist()
    r = pub.rerandomize(ex, rng=Drbg(SEED, "rr"))
    assert d(r) == x.tolist() and all(a != b for a, b in zip(r.data, ex.data, strict=True))
    assert d(pub.take(ex, [3, 1])) == [x[3], x[1]]
    with pytest.raises(PlaintextOverflow, match="mul_plain.*exceeds by"):
        pub.mul_plain(ex, [1 << (cipher.capacity_bits - 20)])


def test_matvec_t_matches_numpy_and_phe(cipher):
    rng = np.random.default_rng(5)
    fp = FixedPoint(16)
    X = fp.encode(rng.standard_normal((300, 4)))
    X[:, 3] = 0
    X[::7, 2] = -X[::7, 2]
    v = rng.integers(-(1 << 30), 1 << 30, 300)
    ev = cipher.encrypt(v)
    want = [int(s) for s in (X.astype(object).T @ v.astype(object))]
    for w in (1, 2, 3):
        pub = PaillierPublicCipher(cipher.public_key, workers=w)
        assert cipher.decrypt(pub.matvec_t(X, ev)) == want
    # phe's per-element loop on the same ciphertexts gives the same plaintexts
    pn = cipher.public().to_phe(ev)
    ref = [sum(pn[i] * int(X[i, j]) for i in range(300)) for j in range(2)]
    psk = cipher.private_key.to_phe()
    assert [psk.decrypt(r) for r in ref] == want[:2]
    with pytest.raises(TypeError):
        cipher.matvec_t(X.astype(float), ev)


def test_histogram_joint_binning_plans(key512):
    """Many rows and few bins make the engine bin 2 or 3 features jointly."""
    from secure_agg.kernels import group_plan
    assert group_plan(10, 32, 100_000) == 2 and group_plan(10, 4, 3000) == 3
    assert group_plan(10, 32, 500) == 1
    c = PaillierPrivateCipher(key512[1], workers=2)
    rng = np.random.default_rng(11)
    n, feats, nb = 3000, 5, 4
    g = rng.integers(0, 1000, n)
    bins = rng.integers(0, nb, (n, feats))
    eg = CipherVector(c.key_id, c.encrypt(g[:50]).data * 60, 10)
    g = np.tile(g[:50], 60)
    want = [int(g[bins[:, f] == b].sum()) for f in range(feats) for b in range(nb)]
    assert c.decrypt(c.histogram(eg, bins, nb)) == want


def test_histogram_matches_phe_loop(cipher):
    rng = np.random.default_rng(9)
    n, feats, nb = 200, 3, 8
    g = rng.integers(0, 1 << 20, n)
    bins = rng.integers(0, nb, (n, feats))
    bins[:, 2] = 0  # a feature with one populated bin
    rows = np.sort(rng.choice(n, 150, replace=False))
    eg = cipher.encrypt(g)
    want = [int(g[rows][bins[rows, f] == b].sum()) for f in range(feats) for b in range(nb)]
    for w in (1, 2):
        pub = PaillierPublicCipher(cipher.public_key, workers=w)
        h = pub.histogram(eg, bins, nb, rows=rows)
        assert cipher.decrypt(h) == want
    pn = cipher.public().to_phe(eg)
    acc = pn[int(rows[0])] * 0
    for i in rows:
        if bins[i, 0] == 1:
            acc = acc + pn[int(i)]
    assert cipher.private_key.to_phe().decrypt(acc) == want[1]
    with pytest.raises(ValueError, match="bin indices"):
        cipher.histogram(eg, bins + nb, nb)


def test_pack_and_packed_decrypt(cipher):
    vals = list(range(0, 1000, 7))
    slot = Packer.slot_bits_for(10, 3)
    per = Packer.max_slots(slot, cipher.capacity_bits)
    enc = cipher.encrypt(vals)
    packed = cipher.public().pack(enc, slot, per)
    assert len(packed) == -(-len(vals) // per)
    assert cipher.decrypt_packed(packed, slot, per, len(vals)) == vals
    # agrees with the interface's generic packing
    generic = super(PaillierPublicCipher, cipher.public()).pack(enc, slot, per)
    assert cipher.decrypt(generic) == cipher.decrypt(packed)
    with pytest.raises(PlaintextOverflow, match="pack"):
        cipher.pack(enc, slot, per + 1)
    with pytest.raises(PlaintextOverflow, match="slot holds"):
        cipher.pack(enc, 5, 2)


def test_masking_roundtrip(cipher):
    pub = cipher.public()
    x = [-5, 7, 1 << 30]
    ex = pub.encrypt(x, bound_bits=31)
    masked, r = mask(pub, ex, Drbg(SEED, "mask"))
    got = cipher.decrypt(masked)
    assert got != x and unmask(got, r) == x


# ---- phe interop ------------------------------------------------------------------------
@pytest.mark.parametrize("obf", ["djn", "standard"])
def test_phe_interop_both_ways(key768, obf):
    pub, sk = key768
    psk, ppk = sk.to_phe(), pub.to_phe()
    fp = FixedPoint(40)
    x = np.array([0.0, 1.5, -2.25, 3.14159, -1e6, 1e-9, 123456.789])
    for c in (PaillierPrivateCipher(sk, obfuscation=obf, workers=1),
              PaillierPublicCipher(pub, obfuscation=obf, workers=2)):
        enc = c.encrypt(fp.encode(x))
        nums = c.to_phe(enc, exponent=-fp.frac_bits // 4)
        assert np.allclose([psk.decrypt(e) for e in nums], x, rtol=0, atol=1e-11)
        # and phe arithmetic on engine ciphertexts
        assert psk.decrypt(nums[1] + nums[2]) == pytest.approx(-0.75)
    # phe ciphertexts decrypt with the engine
    eng = PaillierPrivateCipher(sk, obfuscation=obf)
    ints = [0, 5, -5, 1 << 200, -(1 << 200)]
    pe = [ppk.encrypt(v) for v in ints]
    assert eng.decrypt(eng.from_phe(pe, 201)) == ints
    floats = [ppk.encrypt(v, precision=2.0 ** -40) for v in x]
    common = min(f.exponent for f in floats)
    floats = [f.decrease_exponent_to(common) for f in floats]
    got = eng.decrypt(eng.from_phe(floats, 200))
    assert np.allclose(np.array(got, dtype=float) * 16.0 ** common, x, atol=1e-9)


# ---- determinism and workers ---------------------------------------------------------
def test_deterministic_with_drbg_and_worker_independent(key512):
    pub, sk = key512
    vals = list(range(-40, 41))  # >= PROCESS_MIN_VALUES: workers > 1 use processes
    outs = []
    for w in (1, 2, 3):
        for c in (PaillierPrivateCipher(sk, workers=w), PaillierPublicCipher(pub, workers=w)):
            e = c.encrypt(vals, rng=Drbg(SEED, "job"))
            r = c.rerandomize(e, rng=Drbg(SEED, "rr"))
            outs.append((e.data, r.data))
    assert all(o == outs[0] for o in outs)
    s = PaillierPrivateCipher(sk, obfuscation="standard")
    a = s.encrypt(vals, rng=Drbg(SEED, "job")).data
    b = PaillierPublicCipher(pub, obfuscation="standard").encrypt(vals, rng=Drbg(SEED, "job"))
    assert a == b.data and a != outs[0][0]
    fresh = PaillierPrivateCipher(sk).encrypt([0, 0])
    assert fresh.data[0] != fresh.data[1]


# ---- bad input ---------------------------------------------------------------------------
def test_bad_input_errors(key512, key768):
    pub, sk = key512
    c = PaillierPrivateCipher(sk, workers=1)
    with pytest.raises(ValueError, match="index 2"):
        c.encrypt(np.array([1.0, 2.0, np.nan, np.inf]))
    with pytest.raises(ValueError, match="index 1"):
        c.encrypt(FixedPoint(20).encode([0.5, float("inf")]))
    with pytest.raises(TypeError, match="encode it first"):
        c.encrypt(np.array([1.0, 2.0]))
    from secure_agg.cipher import PlainCipher
    with pytest.raises(ValueError, match="index 2"):  # same error from the plain cipher
        PlainCipher(512).encrypt(np.array([1.0, 2.0, np.inf]))
    e = c.encrypt([1, 2, 3])
    blob = c.to_bytes(e)
    assert len(blob) == 3 * c.ciphertext_bytes
    assert c.decrypt(c.from_bytes(blob, 2)) == [1, 2, 3]
    with pytest.raises(ValueError, match="not a multiple"):
        c.from_bytes(blob[:-1], 2)
    w = c.ciphertext_bytes
    too_big = blob[:w] + int(c.nsquare).to_bytes(w, "big")
    with pytest.raises(ValueError, match="ciphertext 1 out of range"):
        c.from_bytes(too_big, 2)
    with pytest.raises(ValueError, match="out of range"):
        c.from_bytes(bytes(w), 2)
    shared = blob + int(sk.p * 12345).to_bytes(w, "big")
    with pytest.raises(ValueError, match="ciphertext 3 is not coprime"):
        c.from_bytes(shared, 2)
    other = PaillierPrivateCipher(key768[1])
    with pytest.raises(KeyMismatch):
        other.add(other.encrypt([1]), e)
    with pytest.raises(KeyMismatch):
        c.decrypt(other.encrypt([1]))
    with pytest.raises(KeyMismatch):
        c.add(e, CipherVector("plain-512", [1, 2, 3], 2))
    with pytest.raises(ValueError, match="lengths differ"):
        c.add(e, c.encrypt([1]))
    with pytest.raises(PlaintextOverflow, match="bound_bits=1"):
        c.encrypt([5], bound_bits=1)
    with pytest.raises(ValueError, match="obfuscation"):
        PaillierPublicCipher(pub, obfuscation="none")
    assert gmpy2.gcd(c.nsquare, c.from_bytes(blob, 2).data[0]) == 1


# ---- codecs (property tests) -------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), max_size=20),
       st.integers(min_value=1, max_value=60))
def test_fixed_point_roundtrip(xs, frac):
    fp = FixedPoint(frac)
    got = fp.decode(fp.encode(xs))
    assert np.allclose(got, xs, rtol=0, atol=2.0 ** -frac)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=80), st.integers(min_value=1, max_value=12),
       st.data())
def test_packer_roundtrip_and_sums(value_bits, n_slots, data):
    adds = data.draw(st.integers(min_value=1, max_value=50))
    slot = Packer.slot_bits_for(value_bits, adds)
    p = Packer(slot, n_slots)
    rows = data.draw(st.integers(min_value=1, max_value=5))
    cols = [[data.draw(st.integers(0, (1 << value_bits) - 1)) for _ in range(rows)]
            for _ in range(n_slots)]
    packed = p.pack(cols)
    assert p.unpack(packed) == cols
    # `adds` sums of packed values never carry between slots
    summed = [v * adds for v in packed]
    assert p.unpack(summed) == [[v * adds for v in c] for c in cols]


def test_packer_capacity_errors(key512):
    c = PaillierPrivateCipher(key512[1])
    with pytest.raises(OverflowError, match="exceeds by"):
        Packer(64, 9, capacity_bits=c.capacity_bits)
    assert Packer.max_slots(64, c.capacity_bits) == c.capacity_bits // 64
    with pytest.raises(OverflowError, match="slot 1 row 0"):
        Packer(8, 2).pack([[1], [256]])


def test_process_offload_matches_single_thread(key512, monkeypatch):
    """histogram / X.T @ enc / sum with the parent + worker-process split give exactly
    the single-thread ciphertexts; a failing worker request is a clear error."""
    import secure_agg.paillier_ops as ops
    from secure_agg.procpool import get_pool

    pub, sk = key512
    c1 = PaillierPrivateCipher(sk, workers=1)
    rng = np.random.default_rng(21)
    v = rng.integers(-(1 << 20), 1 << 20, 120)
    ev = c1.encrypt(v, rng=Drbg(SEED, "off"))
    X = rng.integers(-500, 500, (120, 3))
    bins = rng.integers(0, 5, (120, 4))
    rows = np.arange(3, 120, 2)
    ev2 = c1.encrypt(v[::-1], rng=Drbg(SEED, "off2"))
    single = (c1.matvec_t(X, ev).data, c1.histogram(ev, bins, 5, rows=rows).data,
              c1.sum(ev).data, c1.add(ev, ev2).data)
    monkeypatch.setattr(ops, "PROCESS_MIN_ROWS", 8)
    for w in (2, 3):
        cw = PaillierPublicCipher(pub, workers=w)
        assert (cw.matvec_t(X, ev).data, cw.histogram(ev, bins, 5, rows=rows).data,
                cw.sum(ev).data, cw.add(ev, ev2).data) == single
    assert c1.decrypt(CipherVector(ev.key_id, single[2], 80)) == [int(v.sum())]
    with pytest.raises(RuntimeError, match="unknown op"):
        get_pool(2).run([({"op": "bogus"}, b"")])
    assert PaillierPublicCipher(pub, workers=2).sum(ev).data == single[2]  # pool recovers


def test_worker_speaks_framing_and_imports_only_kernels(key512):
    """The worker loop, fed in-process: its ciphertexts are the cipher's; a vector
    request with an out-of-range ciphertext is refused and the loop carries on. In a
    fresh interpreter the worker module loads the kernels and the pipe format only
    (never the ciphers or the parent's pool). Empty encryptions work for both ciphers."""
    import io
    import subprocess
    import sys

    from secure_agg.framing import (
        encrypt_request,
        frame_request,
        read_response,
        split_reply,
        vector_request,
    )
    from secure_agg.worker import serve

    pub, sk = key512
    c = PaillierPrivateCipher(sk, workers=1)
    vals, draws = [5, -7, 0], c._draw(Drbg(SEED, "w"), 3, "djn")
    want = c._encrypt_local(vals, draws, "djn")
    w = c.ciphertext_bytes
    bad = vector_request("product", c.n, w, [c.nsquare], {}, b"")
    good = vector_request("product", c.n, w, want, {}, b"")
    stdin = io.BytesIO(b"".join(frame_request(h, b) for h, b in (
        encrypt_request(c._spec(), vals, draws, c.djn_exponent_bits), bad, good)))
    stdout = io.BytesIO()
    serve(stdin, stdout)
    stdout.seek(0)
    assert split_reply(read_response(stdout), w, 3, "encryption") == want
    with pytest.raises(RuntimeError, match="out of range"):
        read_response(stdout)
    assert split_reply(read_response(stdout), w, 1, "product") == c.sum(
        CipherVector(c.key_id, want, 8)).data
    code = ("import sys, secure_agg.worker; print(*sorted(m for m in sys.modules "
            "if m.startswith('secure_agg.')))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=root).stdout.split()
    assert out == ["secure_agg.framing", "secure_agg.kernels", "secure_agg.native_mb",
                   "secure_agg.ou_kernels", "secure_agg.worker"]
    for cw in (c, c.public()):
        assert cw.encrypt([]).data == [] and cw.encrypt_zero_obfuscators(0) == []


# ---- precomputed obfuscators -------------------------------------------------------------
@pytest.mark.parametrize("obf", ["djn", "standard"])
def test_precomputed_obfuscators_match_rng_encryption(key512, obf):
    """Same rng -> bit-for-bit the ciphertexts of encrypt(m, rng), consumed in pieces,
    whether the background or the consumer computed them."""
    from secure_agg import paillier as P
    pub, sk = key512
    vals = list(range(-150, 150))
    for c in (PaillierPrivateCipher(sk, obfuscation=obf, workers=2),
              PaillierPublicCipher(pub, obfuscation=obf, workers=2)):
        ref = c.encrypt(vals, rng=Drbg(SEED, "pre")).data
        batch = c.precompute_obfuscators(len(vals), rng=Drbg(SEED, "pre"))
        assert batch.wait(60) and batch.ready
        got = []
        for lo, hi in ((0, 7), (7, 7), (7, 200), (200, 300)):
            got += c.encrypt(vals[lo:hi], obfuscators=batch).data
        assert got == ref
        # consumer computes everything itself (background disabled, small chunks)
        b2 = P.PaillierObfuscatorBatch(c, c._draw(Drbg(SEED, "pre"), len(vals), obf), obf,
                                       chunk=64)
        b2._bg_ok = False
        assert b2.encrypt(vals[:100]).data + b2.encrypt(vals[100:]).data == ref
        fresh = c.encrypt(vals[:5], obfuscators=c.precompute_obfuscators(5))  # rng=None
        assert PaillierPrivateCipher(sk, workers=1).decrypt(fresh) == vals[:5]


def test_precomputed_obfuscators_used_once(key512, key768):
    from secure_agg.cipher import ObfuscatorsExhausted
    pub, sk = key512
    c = PaillierPrivateCipher(sk, workers=2)
    batch = c.precompute_obfuscators(80, rng=Drbg(SEED, "once"))
    a = c.encrypt([1] * 50, obfuscators=batch)
    b = c.encrypt([1] * 30, obfuscators=batch)
    assert len(set(a.data + b.data)) == 80  # every obfuscator distinct, none reused
    with pytest.raises(ObfuscatorsExhausted, match="0 of 80 left"):
        c.encrypt([1], obfuscators=batch)
    batch = c.precompute_obfuscators(10, rng=Drbg(SEED, "once"))
    with pytest.raises(ObfuscatorsExhausted, match="5 requested"):
        batch.take(5) and batch.take(5) and batch.take(5)
    batch.close()
    with pytest.raises(ObfuscatorsExhausted, match="closed"):
        batch.encrypt([1])
    with pytest.raises(ValueError, match="not both"):
        c.encrypt([1], rng=Drbg(SEED, "x"), obfuscators=c.precompute_obfuscators(1))
    other = PaillierPrivateCipher(key768[1], workers=1)
    with pytest.raises(KeyMismatch):
        other.encrypt([1], obfuscators=c.precompute_obfuscators(1))
    with pytest.raises(ValueError, match="djn_full"):  # scheme must match the use
        c.encrypt([1], obfuscators=c.precompute_obfuscators(1, obfuscation="djn_full"))


def test_plain_and_default_batches():
    from secure_agg.cipher import DeferredObfuscators, ObfuscatorsExhausted, PlainCipher
    p = PlainCipher(512)
    batch = p.precompute_obfuscators(3, rng=Drbg(SEED, "p"))
    assert p.decrypt(p.encrypt([4, -5], obfuscators=batch)) == [4, -5]
    assert p.decrypt(batch.encrypt([6])) == [6]
    with pytest.raises(ObfuscatorsExhausted):
        p.encrypt([1], obfuscators=batch)
    # the ABC's default defers to encrypt(m, rng) (any cipher supports the API)
    pub, sk = generate_keypair(512, rng=Drbg(SEED, "k512"), insecure_test_key=True)
    c = PaillierPrivateCipher(sk, workers=1)
    d = DeferredObfuscators(c, 4, Drbg(SEED, "d"))
    assert d.encrypt([1, 2]).data + d.encrypt([3, 4]).data == \
        c.encrypt([1, 2, 3, 4], rng=Drbg(SEED, "d")).data
    with pytest.raises(ObfuscatorsExhausted):
        d.encrypt([5])


def test_rerandomize_djn_full_and_wide_tables(key512):
    from secure_agg.paillier import FixedBaseTable
    pub, sk = key512
    c = PaillierPrivateCipher(sk, workers=2)
    pc = c.public()
    vals = list(range(-20, 20))
    enc = c.encrypt(vals, rng=Drbg(SEED, "e"))
    outs = {}
    for mode in ("standard", "djn_full"):
        r = pc.rerandomize(enc, rng=Drbg(SEED, "rr"), obfuscation=mode)
        assert c.decrypt(r) == vals and not set(r.data) & set(enc.data)
        assert r.data == pc.rerandomize(enc, rng=Drbg(SEED, "rr"), obfuscation=mode).data
        b = pc.precompute_obfuscators(len(vals), rng=Drbg(SEED, "rr"), obfuscation=mode)
        assert pc.rerandomize(enc, obfuscation=mode, obfuscators=b).data == r.data
        outs[mode] = r.data
    assert outs["standard"] != outs["djn_full"]
    assert pc._exp_bits("djn_full") == pub.n.bit_length() + 128
    with pytest.raises(ValueError, match="obfuscation"):
        pc.rerandomize(enc, obfuscation="djn")
    # wider windows: same powers
    m = sk.psquare
    for w in (5, 8, 12):
        t = FixedBaseTable(gmpy2.mpz(7), m, 300, window_bits=w)
        es = [0, 1, (1 << 300) - 1, 12345678901234567890, 2 ** 299 + 17]
        assert t.pow_many(es) == [gmpy2.powmod(7, e, m) for e in es]


def test_phe_known_answer_vectors():
    """Ciphertexts phe 1.5.0 produced for fixed (m, r) on a fixed 1024-bit test key
    (tests/data/kat/phe_paillier_1024.json): the engine reads them as its own bytes,
    decrypts them, adds them homomorphically, and computes the same c from (m, r)."""
    import json
    from pathlib import Path
    kat = json.loads((Path(__file__).resolve().parents[1] / "data" / "kat" /
                      "phe_paillier_1024.json").read_text())
    n, p, q = (int(kat[k], 16) for k in ("n", "p", "q"))
    pub = PaillierPublicKey(n, insecure_test_key=True)
    cipher = PaillierPrivateCipher(PaillierPrivateKey(pub, p, q))
    width = cipher.ciphertext_bytes
    ms = [int(v["m"]) for v in kat["vectors"]]
    cs = [int(v["c"], 16) for v in kat["vectors"]]
    blob = b"".join(c.to_bytes(width, "big") for c in cs)
    vec = cipher.from_bytes(blob, bound_bits=max(m.bit_length() for m in ms) + 1)
    assert cipher.decrypt(vec) == ms
    assert cipher.to_bytes(vec) == blob
    total = cipher.sum(vec)
    assert cipher.decrypt(total) == [sum(ms)]
    n2 = n * n
    for v, m, c in zip(kat["vectors"], ms, cs, strict=True):
        r = int(v["r"], 16)
        assert (1 + n * (m % n)) * pow(r, n, n2) % n2 == c
