"""The compiled PSI paths (psi/native) against Python integers, the pure-Python code and
OpenSSL: field arithmetic, RFC 9380 hashing, witnesses and point checks (same bytes,
same refusals, same messages), multi-buffer X25519 (RFC 7748 in test_psi_h2c.py, random
points and low-order refusals here), whole PSI runs byte-identical across paths, and
the documented fallbacks when the library or the extension is missing."""

import logging
import os
import random
from importlib import metadata

import numpy as np
import pytest
from conftest import PATHS, mb_reason, restore, set_path
from test_psi_protocol import run, sets

from federation.link import ProtocolError
from psi import engine, native
from psi import hash_to_curve as h2c

P = 2**255 - 19
DST = b"QUUX-V01-CS02-with-curve25519_XMD:SHA-512_ELL2_RO_"
EXT = native.field()
needs_ext = pytest.mark.skipif(EXT is None, reason="C extension not built")
needs_mb = pytest.mark.skipif(bool(mb_reason()), reason=f"no multi-buffer X25519: {mb_reason()}")


def in_path(name, fn, *args):
    old = set_path(name)
    try:
        return fn(*args)
    finally:
        restore(old)


def outcome(name, fn, *args):
    """(True, result) or (False, PointError text) of ``fn(*args)`` on compute path ``name``."""
    try:
        return True, in_path(name, fn, *args)
    except engine.PointError as exc:
        return False, str(exc)


def test_mb_loads_where_it_should():
    """On an AVX-512 IFMA CPU with the fedjoint[native] extra installed, the fast path
    must load (a silent fallback there would hide a broken binding)."""
    try:
        metadata.version("ipp-crypto")
    except metadata.PackageNotFoundError:
        pytest.skip("ipp-crypto (fedjoint[native]) not installed")
    if not native.cpu_has_ifma():
        pytest.skip("CPU without AVX-512 IFMA")
    assert mb_reason() == ""
    assert in_path("mb", native.describe) == {"x25519": "mb", "field": "c+ifma",
                                              "cpu_avx512ifma": True}
    assert in_path("openssl", native.describe)["field"] == "c"


@needs_ext
def test_field_ops_match_python_integers():
    rnd = random.Random(7)
    edge = [0, 1, 2, 19, P - 1, P, P + 1, P + 18, 2**255 - 1, 2**252, 486662]
    vals = edge + [rnd.randrange(2**255) for _ in range(400)]
    for a in vals:
        b = rnd.choice(vals)
        out = EXT.fe_ops(a.to_bytes(32, "little"), b.to_bytes(32, "little"))
        got = [int.from_bytes(out[32 * i:32 * i + 32], "little") for i in range(7)]
        x, y = a % P, b % P
        leg = {1: 1, 0: 0, P - 1: -1}[pow(x, (P - 1) // 2, P)]
        assert got == [(x + y) % P, (x - y) % P, x * y % P, x * x % P, pow(x, P - 2, P),
                       pow(x, (P - 5) // 8, P), leg + 1], hex(a)


@needs_ext
@pytest.mark.parametrize("simd", [True, False], ids=["ifma", "scalar"])
def test_batch_exponentiation_matches_python_integers(simd):
    rnd = random.Random(8)
    vals = [0, 1, 2, P - 1, P, P + 1, 2**255 - 1, 2**255 - 20, 2**52 - 1, 2**52]
    vals += [rnd.randrange(2**255) for _ in range(301)]  # 8-lane groups and a remainder
    blob = b"".join(v.to_bytes(32, "little") for v in vals)
    if simd and not EXT.simd(True):
        native.field()
        pytest.skip("no AVX-512 IFMA on this CPU")
    try:
        EXT.simd(simd)
        got = EXT.pow22523_batch(blob)
    finally:
        native.field()  # back to the environment's setting
    assert got == b"".join(pow(v % P, (P - 5) // 8, P).to_bytes(32, "little") for v in vals)


@needs_ext
def test_hash_to_u_batch_c_equals_python():
    rnd = random.Random(3)
    msgs = [b"", b"abc", b"\x00" * 200, "全角ＩＤ".encode()]
    msgs += [rnd.randbytes(rnd.randrange(300)) for _ in range(1500)]
    # runs of equal lengths: SHA-512 eight lanes at a time (one to four blocks; 500: too
    # long for the lanes, scalar)
    msgs += [rnd.randbytes(n) for n in (0, 18, 60, 61, 200, 400, 500) for _ in range(17)]
    for dst in (DST, b"fedjoint-psi", b"D" * 256):  # 256: RFC 9380 oversize-DST rule
        want = h2c.hash_to_u_batch_py(msgs, dst)
        assert in_path("mb", h2c.hash_to_u_batch, msgs, dst) == want  # IFMA if the CPU has it
        assert in_path("openssl", h2c.hash_to_u_batch, msgs, dst) == want
        assert in_path("openssl", h2c.hash_to_u_batch, iter(msgs), dst) == want
    assert in_path("openssl", h2c.hash_to_u_batch, [], DST) == b""


@pytest.mark.parametrize("path", list(PATHS))
def test_packed_ids_hash_like_bytes(path):
    """An (n, width) uint8 matrix hashes row by row exactly as the bytes of each row
    (widths on and off the eight-lane SHA-512 runs; a width-0 matrix is n empty IDs)."""
    rnd = random.Random(5)
    for width, n in ((18, 8 * 5 + 3), (1, 9), (200, 11), (0, 3)):
        rows = [rnd.randbytes(width) for _ in range(n)]
        mat = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(n, width)
        assert in_path(path, h2c.hash_to_u_batch, mat, DST) == \
            h2c.hash_to_u_batch_py(rows, DST)
    with pytest.raises(ValueError, match="uint8"):
        h2c.hash_to_u_batch(np.zeros((2, 3), dtype=np.int32), DST)


@pytest.mark.parametrize("path", list(PATHS))
def test_str_ids_hash_as_utf8(path):
    ids = ["913502000728319549", "全角ＩＤ", ""]
    assert in_path(path, h2c.hash_to_u_batch, ids, DST) == \
        h2c.hash_to_u_batch_py([i.encode() for i in ids], DST)
    with pytest.raises(UnicodeEncodeError):
        in_path(path, h2c.hash_to_u_batch, ["\udc80"], DST)


def _witnessed(n, seed):
    rnd = random.Random(seed)
    u = h2c.hash_to_u_batch_py([rnd.randbytes(9) for _ in range(n)], DST)
    return engine.x25519_many_openssl(rnd.randbytes(32), u)


# C field code with the IFMA exponentiations ("mb" path) and without ("openssl" path)
C_PATHS = ("mb", "openssl")


@needs_ext
@pytest.mark.parametrize("path", C_PATHS)
def test_witness_and_checks_c_equal_python(path):
    w = _witnessed(300, 1)
    wit = in_path("python", engine.times8_witnessed, w)
    assert in_path(path, engine.times8_witnessed, w) == wit
    for sub in (True, False):
        assert outcome(path, engine.validate_witnessed, wit, sub) == \
            outcome("python", engine.validate_witnessed, wit, sub)
        assert outcome(path, engine.validate_points, w, sub) == (True, None)
    assert in_path(path, engine.times8, w, 2) == in_path("python", engine.times8, w, 2)


def _bad_blocks():
    """Witnessed blocks with one bad entry each (index 2), every refusal reason."""
    good = in_path("python", engine.times8_witnessed, _witnessed(4, 2))
    pm1 = (P - 1).to_bytes(32, "little")
    twist = next(u for u in range(2, 99) if pow((u * u + 486662 * u + 1) * u % P,
                                                (P - 1) // 2, P) == P - 1)
    twist = twist.to_bytes(32, "little")
    r0, w0 = good[128:160], good[160:192]
    order2 = (0).to_bytes(32, "little")
    torsion = next(u for u in range(2, 999) if pow((u * u + 486662 * u + 1) * u % P,
                                                   (P - 1) // 2, P) == 1)
    cases = {"bit255": bytes(31) + b"\x80" + w0, "u>=p": P.to_bytes(32, "little") + w0,
             "zero": order2 + w0, "p-1": pm1 + w0, "twist-r": twist + w0,
             "witness>=p": r0 + (P + 1).to_bytes(32, "little"),
             "witness-twist": r0 + twist, "witness-zero": r0 + order2,
             "mismatch": r0 + good[224:256],
             "no-subgroup": torsion.to_bytes(32, "little") + torsion.to_bytes(32, "little")}
    return {k: good[:128] + v + good[192:] for k, v in cases.items()}


@needs_ext
@pytest.mark.parametrize("path", C_PATHS)
@pytest.mark.parametrize("case", list(_bad_blocks()))
def test_refusals_identical_in_c_and_python(case, path):
    blob = _bad_blocks()[case]
    for sub in (True, False):
        c = outcome(path, engine.validate_witnessed, blob, sub)
        assert c == outcome("python", engine.validate_witnessed, blob, sub)
        if sub or case in ("bit255", "u>=p", "zero", "p-1", "twist-r"):
            assert not c[0] and c[1].startswith("point 2: "), c
        plain = b"".join(blob[i:i + 32] for i in range(0, len(blob), 64))
        assert outcome(path, engine.validate_points, plain, False) == \
            outcome("python", engine.validate_points, plain, False)


@needs_ext
@pytest.mark.parametrize("path", C_PATHS)
def test_refusals_in_every_lane(path):
    """The first bad point is named wherever it sits: in either half of a 16-point step
    of the IFMA checks, in a partial last step, after an earlier bad point of the other
    kind (a twist witness after a mismatch and the reverse)."""
    wit = in_path("python", engine.times8_witnessed, _witnessed(21, 4))
    twist = next(u for u in range(2, 99) if pow((u * u + 486662 * u + 1) * u % P,
                                                (P - 1) // 2, P) == P - 1)
    cases = []
    for n, pos in ((1, 0), (7, 6), (9, 8), (16, 15), (17, 16), (21, 3), (21, 12)):
        for kind in ("twist", "mismatch"):
            rows = [wit[64 * i:64 * i + 64] for i in range(n)]
            other = wit[64 * (pos + 1) + 32:64 * (pos + 2)]  # another point's witness
            w = twist.to_bytes(32, "little") if kind == "twist" else other
            rows[pos] = rows[pos][:32] + w
            if pos + 1 < n:  # a later bad point of the other kind must not be named
                later = rows[pos + 1]
                rows[pos + 1] = later[:32] + (rows[0][32:] if kind == "twist" else
                                              twist.to_bytes(32, "little"))
            cases.append((b"".join(rows), pos))
    for blob, pos in cases:
        got = outcome(path, engine.validate_witnessed, blob, True)
        assert got == outcome("python", engine.validate_witnessed, blob, True)
        assert not got[0] and got[1].startswith(f"point {pos}: "), got
        plain = b"".join(blob[i + 32:i + 64] for i in range(0, len(blob), 64))
        assert outcome(path, engine.validate_points, plain, False) == \
            outcome("python", engine.validate_points, plain, False)
    assert in_path(path, engine.times8_witnessed, _witnessed(13, 5)) == \
        in_path("python", engine.times8_witnessed, _witnessed(13, 5))


@needs_mb
def test_mb_x25519_equals_openssl_and_refuses_low_order():
    rnd = random.Random(5)
    for n in (1, 7, 8, 9, 64, 1001):  # partial last group of 8 lanes
        k = rnd.randbytes(32)
        pts = engine.x25519_many_openssl(rnd.randbytes(32), h2c.hash_to_u_batch_py(
            [rnd.randbytes(5) for _ in range(n)], DST))
        assert in_path("mb", engine.x25519_many, k, pts) == engine.x25519_many_openssl(k, pts)
    pts = engine.x25519_many_openssl(b"k" * 32, bytes([9]) + bytes(31)) * 10
    order8 = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
    for low in (bytes(32), (1).to_bytes(32, "little"), order8):
        blob = pts[:32 * 3] + low + pts[32 * 3:]
        want = outcome("openssl", engine.x25519_many, b"s" * 32, blob)
        assert want == (False, "point 3: X25519 result is zero (low-order input)")
        assert outcome("mb", engine.x25519_many, b"s" * 32, blob) == want


@needs_mb
@pytest.mark.parametrize("case", ["twist-r", "no-subgroup", "mismatch", "bit255"])
def test_fast_path_engine_refuses_bad_points(case):
    blob = _bad_blocks()[case]
    old = set_path("mb")
    try:
        with engine.Engine(1) as eng, pytest.raises(ProtocolError, match="point 2: "):
            list(eng.mult_witnessed_stream(iter([blob]), b"s" * 32, True))
    finally:
        restore(old)


def _list(a):
    return None if a is None else [int(i) for i in a]


@pytest.mark.parametrize("mode", ["balanced", "cardinality", "unbalanced"])
def test_psi_byte_identical_across_paths(mode, tmp_path):
    """Same seeds and keys -> the same bytes cross the channel and the same result,
    whatever path."""
    bank, plat = sets(60, 40, 90, seed=11)
    seen = {}
    for name in PATHS:
        if name == "mb" and mb_reason():
            continue
        old = set_path(name)
        try:
            # one platform key for all paths (unbalanced), a cold cache for each
            rb, rp, crossed = run(bank, plat, mode=mode, key_dir=str(tmp_path / "keys"),
                                  cache_dir=str(tmp_path / name))
        finally:
            restore(old)
        sent = {party: [(kind, ptype, bytes(data)) for p, kind, ptype, data in crossed
                        if p == party] for party in {m[0] for m in crossed}}
        seen[name] = (rb.size, _list(rb.indices), _list(rp.indices), sent)
    first = next(iter(seen.values()))
    assert len(seen) >= 2 and all(v == first for v in seen.values()), \
        {k: [v[i] == first[i] for i in range(4)] for k, v in seen.items()}
    assert first[0] == len(set(bank) & set(plat))


def test_missing_library_falls_back_with_a_log_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(native, "_lib_dirs", lambda: [str(tmp_path)])
    monkeypatch.setattr(native, "cpu_has_ifma", lambda: True)
    native._load_mb.cache_clear()
    native._note.cache_clear()
    try:
        monkeypatch.setenv(native.BACKEND_ENV, "auto")
        with caplog.at_level(logging.INFO, logger="fedjoint.psi"):
            assert native.x25519_backend() == ("openssl", 0)
        if EXT is not None:
            assert "multi-buffer X25519 unavailable (libcrypto_mb not installed" in caplog.text
        k, u = os.urandom(32), _witnessed(5, 9)
        assert engine.x25519_many(k, u) == engine.x25519_many_openssl(k, u)
        monkeypatch.setenv(native.BACKEND_ENV, "mb")
        with pytest.raises(native.BackendUnavailable, match="FEDJOINT_PSI_BACKEND=mb"):
            native.x25519_backend()
        monkeypatch.setenv(native.BACKEND_ENV, "fast")
        with pytest.raises(native.BackendUnavailable, match="expected one of"):
            native.x25519_backend()
    finally:
        native._load_mb.cache_clear()


@needs_ext
def test_cpu_without_ifma_falls_back_with_a_log_line(monkeypatch, caplog):
    monkeypatch.setattr(native, "cpu_has_ifma", lambda: False)
    native._load_mb.cache_clear()
    native._note.cache_clear()
    try:
        monkeypatch.setenv(native.BACKEND_ENV, "auto")
        with caplog.at_level(logging.INFO, logger="fedjoint.psi"):
            assert native.x25519_backend() == ("openssl", 0)
        assert "multi-buffer X25519 unavailable (this CPU has no AVX-512 IFMA)" in caplog.text
        monkeypatch.setenv(native.BACKEND_ENV, "mb")
        with pytest.raises(native.BackendUnavailable, match="no AVX-512 IFMA"):
            native.x25519_backend()
    finally:
        native._load_mb.cache_clear()


def test_missing_extension_falls_back_with_a_log_line(monkeypatch, caplog):
    monkeypatch.setattr(native, "_load_ext", lambda: (None, "C extension not built (test)"))
    native._note.cache_clear()
    monkeypatch.setenv(native.BACKEND_ENV, "auto")
    with caplog.at_level(logging.INFO, logger="fedjoint.psi"):
        assert native.describe()["field"] == "python"
        assert native.x25519_backend() == ("openssl", 0)
    assert "using the pure-Python field code" in caplog.text
    msgs = [b"a", b"b"]
    assert h2c.hash_to_u_batch(msgs, DST) == h2c.hash_to_u_batch_py(msgs, DST)
