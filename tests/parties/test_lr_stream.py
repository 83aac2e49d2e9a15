"""A batch's per-row ciphertext vectors in chunks (parties.common.lr_stream): the same
models for every chunking (binary LR with each curvature, multinomial LR, linear
regression; plain and Paillier), chunk messages bounded, and a chunk that does not
match the agreed batch refused naming the field."""

from __future__ import annotations

import numpy as np
import pytest
from support.lr import load
from support.roles import data, run_roles

from federation.link import ProtocolError, local_link_pair
from parties.common import lr_common as C
from parties.common import lr_stream as S
from secure_agg.cipher import PlainCipher
from secure_agg.paillier import PaillierPrivateCipher
from secure_agg.rng import Drbg

CHUNK = 64


@pytest.fixture(scope="module")
def breast():
    return load("breast")


def _job(d, algo, extra, chunk, monkeypatch, ciphers=None):
    monkeypatch.setattr(S, "CHUNK_ROWS", chunk)
    tr = d["train"]
    Xb, y = d["Xb"][tr], d["y"][tr]
    if algo == "linear_regression":
        Xb, y = Xb[:, 1:], Xb[:, 0]
    elif extra.get("multi_class"):
        y = y + (Xb[:, 0] > np.median(Xb[:, 0]))
    params = dict(epochs=2, batch_size=0, learning_rate=0.1, early_stopping="none",
                  seed=3, evaluate_train=False, **extra)
    kb, kp = ciphers or (PlainCipher(1024), PlainCipher(1024))
    return run_roles(algo, data(Xb, None, y), data(d["Xp"][tr], None), params,
                     bank_cipher=kb, platform_cipher=kp, job=f"stream-{chunk}")


def _same_model(a, b):
    for x, y in zip(a[:2], b[:2], strict=True):
        assert x.model.body == y.model.body
        assert [h.get("loss") for h in x.history] == [h.get("loss") for h in y.history]


@pytest.mark.parametrize("algo,extra", [
    ("logistic_regression", {}),                                      # batch-mean curvature
    ("logistic_regression", dict(platform_curvature="per_row", class_weight={"0": 1, "1": 3})),
    ("logistic_regression", dict(approximation="taylor")),            # public curvature
    ("logistic_regression", dict(multi_class="multinomial", platform_curvature="per_row")),
    ("linear_regression", {}),
])
def test_chunked_batches_give_the_same_model(breast, monkeypatch, algo, extra):
    whole = _job(breast, algo, extra, 1 << 20, monkeypatch)
    chunked = _job(breast, algo, extra, CHUNK, monkeypatch)
    _same_model(whole, chunked)
    m = int(breast["train"].sum())
    per_epoch = -(-m // CHUNK)
    parts = [(s, k, len(b)) for s, k, _, b in chunked[2] if k.endswith(S.PART)]
    assert {k for _, k, _ in parts} >= {C.K_ENC_U_PART, C.K_ENC_ZP_PART}
    assert sum(k == C.K_ENC_ZP_PART for _, k, _ in parts) == 2 * per_epoch
    width = 6 if extra.get("multi_class") else 1     # K = 3: 6 curvature entries a row
    ctb = PlainCipher(1024).ciphertext_bytes
    assert max(n for *_, n in parts) <= S.HEADER.size + CHUNK * width * ctb
    assert not any(k.endswith(S.PART) for _, k, _, _ in whole[2])


def test_chunked_paillier_gives_the_same_model(breast, monkeypatch):
    keys = tuple(PaillierPrivateCipher.generate(512, rng=Drbg(s * 16), insecure_test_key=True)
                 for s in (b"sb", b"sp"))
    extra = dict(platform_curvature="per_row")
    whole = _job(breast, "logistic_regression", extra, 1 << 20, monkeypatch, keys)
    _same_model(whole, _job(breast, "logistic_regression", extra, 128, monkeypatch, keys))


@pytest.mark.parametrize("field,header", [
    ("epoch", (1, 0, 1, 3, 4, 4)), ("batch", (0, 1, 1, 3, 4, 4)),
    ("chunk", (0, 0, 2, 3, 4, 4)), ("chunks", (0, 0, 1, 2, 4, 4)),
    ("first row", (0, 0, 1, 3, 0, 4)), ("rows", (0, 0, 1, 3, 4, 3)),
])
def test_a_chunk_off_the_agreed_batch_is_refused(field, header):
    cipher = PlainCipher(512)
    a, b, _ = local_link_pair("stream-bad")
    ch = S.Chunk(0, 0, 1, 3, 4, 8)
    vec = cipher.encrypt(list(range(4)))
    a.send(C.K_ENC_U_PART, S.HEADER.pack(*header) + cipher.to_bytes(vec))
    with pytest.raises(ProtocolError, match=f"{C.K_ENC_U_PART}: {field} "):
        S.recv(C.Peer(b), C.K_ENC_U, cipher, 4, 40, ch)


def test_a_chunk_of_the_wrong_size_is_refused():
    cipher = PlainCipher(512)
    a, b, _ = local_link_pair("stream-size")
    ch = S.Chunk(0, 0, 0, 2, 0, 4)
    a.send(C.K_ENC_ZP_PART, S.HEADER.pack(*ch.header()) +
           cipher.to_bytes(cipher.encrypt([1, 2, 3])))
    with pytest.raises(ProtocolError, match="expected 4 ciphertexts"):
        S.recv(C.Peer(b), C.K_ENC_ZP, cipher, 4, 40, ch)
    a.send(C.K_ENC_ZP_PART, b"\0" * 5)
    with pytest.raises(ProtocolError, match="24-byte chunk header"):
        S.recv(C.Peer(b), C.K_ENC_ZP, cipher, 4, 40, ch)
