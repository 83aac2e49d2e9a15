"""Shared foundations: payload codec, DRBG, plain cipher, codecs, metrics."""

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score, roc_curve

from federation.link import (
    ProtocolError,
    decode_payload,
    encode_payload,
    local_link_pair,
    run_two_parties,
)
from parties.common import metrics
from secure_agg.cipher import PlainCipher, PlaintextOverflow
from secure_agg.codec import FixedPoint, Packer
from secure_agg.masking import mask, unmask
from secure_agg.rng import Drbg


def test_payload_roundtrip_and_refusals():
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)
    for p in (b"\x00\x01", arr, {"a": [1, 2], "b": "x"}):
        got = decode_payload(*encode_payload(p))
        if isinstance(p, np.ndarray):
            assert np.array_equal(got, p) and got.dtype == p.dtype
        else:
            assert got == p
    with pytest.raises(TypeError):
        encode_payload(np.array([object()], dtype=object))
    with pytest.raises(TypeError):
        encode_payload([1, 2])
    with pytest.raises(ProtocolError):
        decode_payload("pickle", b"x")
    with pytest.raises(ProtocolError):
        decode_payload("npy", b"\x93NUMPY garbage")
    with pytest.raises(ProtocolError):
        decode_payload("json", b"[1,2]")


def test_local_link_kind_mismatch_and_shape_checks():
    a, b, crossed = local_link_pair()

    def bank():
        a.send("t.one", np.zeros((2, 3)))
        a.send("t.two", {"x": 1})

    def platform():
        arr = b.recv_array("t.one", dtype_kind="f", shape=(2, None))
        with pytest.raises(ProtocolError):
            b.recv("t.three")
        return arr.shape

    _, shape = run_two_parties(bank, platform)
    assert shape == (2, 3)
    assert [c[1] for c in crossed] == ["t.one", "t.two"]


def test_drbg_deterministic_and_domain_separated():
    seed = bytes(range(32))
    a, b = Drbg(seed), Drbg(seed)
    assert a.random_bytes(100) == b.random_bytes(100)
    assert Drbg(seed).child("x").randbits(128) != Drbg(seed).child("y").randbits(128)
    r = Drbg(seed)
    vals = [r.randbelow(7) for _ in range(2000)]
    assert set(vals) == set(range(7))
    with pytest.raises(ValueError):
        Drbg(b"short")


def test_plain_cipher_identities_and_overflow():
    c, fp = PlainCipher(256), FixedPoint(20)
    x = np.array([1.5, -2.25, 0.0, 1e3])
    ex = c.encrypt(fp.encode(x))
    assert np.allclose(fp.decode(c.decrypt(c.add(ex, ex))), 2 * x)
    assert np.allclose(fp.decode(c.decrypt(c.mul_plain(ex, [-3]))), -3 * x)
    assert np.allclose(fp.decode(c.decrypt(c.sum(ex))), [x.sum()])
    X = np.array([[1, 2], [3, 4], [5, 6], [7, 8]])
    assert np.allclose(fp.decode(c.decrypt(c.matvec_t(X, ex))), X.T @ x)
    with pytest.raises(PlaintextOverflow, match="mul_plain.*exceeds by"):
        c.mul_plain(ex, [1 << 240])
    with pytest.raises(ValueError, match="index 1"):
        fp.encode([1.0, float("nan")])


def test_histogram_pack_and_masking():
    c = PlainCipher(512)
    rng = np.random.default_rng(1)
    vals = rng.integers(0, 1000, 50)
    bins = rng.integers(0, 4, (50, 3))
    h = c.histogram(c.encrypt(vals), bins, 4)
    want = [int(vals[bins[:, f] == b].sum()) for f in range(3) for b in range(4)]
    assert c.decrypt(h) == want
    packed = c.pack(h, 20, 5)
    cols = Packer(20, 5).unpack(c.decrypt(packed) + [0] * 0)
    flat = [cols[k][i] for i in range(len(packed)) for k in range(5)][: len(want)]
    assert flat == want
    masked, r = mask(c, c.encrypt([-5, 7]), Drbg(b"0" * 32))
    assert unmask(c.decrypt(masked), r) == [-5, 7]


def test_packer_capacity_error():
    with pytest.raises(OverflowError, match="exceeds by"):
        Packer(100, 30, capacity_bits=2046)
    p = Packer(Packer.slot_bits_for(10, 1000), 2)
    assert p.unpack(p.pack([[1, 2], [1023, 0]])) == [[1, 2], [1023, 0]]


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(np.round(rng.random(500) * 0.5 + y * 0.3, 2), 0.01, 0.99)
    assert metrics.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, p)
    assert metrics.ks(y, p) == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    assert metrics.log_loss(y, p) == pytest.approx(sk_log_loss(y, p), abs=1e-12)
